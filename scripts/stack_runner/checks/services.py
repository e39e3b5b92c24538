"""Every service comes up as compose would bring it up: each healthcheck is a command that exists
in its image and passes once the service is ready (run for real where its program runs here),
nothing restarted or was OOM-killed, and the published ports answer on the host."""

from __future__ import annotations

import os
import time

from ..compose import read_env_file
from .base import CheckFailed, Stack, http

HEALTHY_DEADLINE = 180.0


def wait_healthy(stack: Stack) -> None:
    deadline = time.monotonic() + HEALTHY_DEADLINE
    while True:
        stack.refresh()
        services = stack.state["services"]
        waiting = {n: s for n, s in services.items() if s["health_mode"] != "none" and s["health"] != "healthy"}
        broken = {n: s for n, s in waiting.items() if s["health"] == "unhealthy"}
        if not waiting:
            return
        if broken or time.monotonic() > deadline:
            for name, s in (broken or waiting).items():
                stack.ledger.fail(f"{name} is {s['health']}: {s['health_detail']}")
            raise CheckFailed(f"{len(broken or waiting)} service(s) never became healthy")
        time.sleep(1)


def check(stack: Stack) -> None:
    print("services: every healthcheck exists in its image and passes; nothing restarted")
    wait_healthy(stack)
    one_shots = stack.one_shots()
    for name, s in stack.state["services"].items():
        if name in one_shots:
            stack.ledger.check(s["status"] == "exited" and s["starts"] == 1
                               and [e["code"] for e in s["exits"]] == [0],
                               f"{name} ran once and exited 0 before what depends on it started ({s['exits']})")
            continue
        mode = {"executed": "ran in the container", "validated": "checked against the image, answered by the stand-in",
                "none": "none"}[s["health_mode"]]
        if s["health_mode"] != "none":
            stack.ledger.ok(f"{name} is healthy (healthcheck {mode})")
        stack.ledger.check(s["status"] == "running" and s["starts"] == 1 and not s["exits"],
                           f"{name} is running, started once, never exited ({s['exits'] or 'no exits'})")
        for warning in s.get("warnings", []):
            print(f"  note  {name}: {warning}")
    env = {**read_env_file(stack.root / ".env"), **os.environ}
    for published in stack.state.get("published", []):
        if published["service"] == "grafana":
            body = http(f"http://{published['host']}/api/health")
            stack.ledger.check(b'"database"' in body, f"grafana answers on its published port {published['host']}")
    stack.ledger.check(bool(stack.state.get("published")) and "GRAFANA_PORT" in env,
                       f"{len(stack.state.get('published', []))} ports published on 127.0.0.1, from .env variables")
