"""Compose healthchecks, run the way Docker runs them — and checked against the image first.

Before a healthcheck runs, its command is checked against what the image really contains
(`docs/contracts.md`, "Images", or our Dockerfiles): a command the image lacks (`curl` in a
distroless image) or a subcommand its program does not have (`alloy healthcheck`) makes the
service unhealthy at once, naming the problem — in Docker it would fail every probe.

Then it runs inside the container (`nsenter`, as the image's user) every `interval`, with its
`timeout`; `retries` consecutive failures after `start_period` make the service unhealthy, one
success makes it healthy. A command whose program cannot run here (a stand-in's own binary,
e.g. `profilecli ready`) is *validated* only — its program, subcommand and flags checked against
the image's facts — and readiness is then taken from the stand-in's `/stand-in/ready`.
"""

from __future__ import annotations

import shutil
import urllib.request
from dataclasses import dataclass

from .compose import Healthcheck
from .images import ImageFacts
from .programs import Program


@dataclass
class HealthPlan:
    mode: str              # "executed", "validated" or "none"
    problem: str = ""      # set when the command cannot work in the image


def plan(check: Healthcheck | None, facts: ImageFacts, program: Program) -> HealthPlan:
    if check is None:
        return HealthPlan("none")
    argv = check.test
    command = argv[0]
    if not facts.has_command(command):
        have = ", ".join(sorted(facts.commands))
        return HealthPlan("executed", f"its healthcheck runs `{command}`, which image {facts.image} "
                                      f"does not have (it has: {have}; source: {facts.source})")
    known = facts.subcommands.get(command)
    if known is not None:
        sub = next((a for a in argv[1:] if not a.startswith("-")), None)
        if sub not in known:
            return HealthPlan("executed", f"its healthcheck runs `{command} {sub}`, but `{sub}` is not a "
                                          f"command of {facts.image} (it has: {', '.join(known)}; "
                                          f"source: {facts.source})")
    if command in program.binds or command in facts.binaries:
        return HealthPlan("executed")
    if not command.startswith("/") or command in ("/bin/sh", "/bin/bash"):
        # A general tool (busybox's wget, a shell): the same command exists here.
        name = command.rsplit("/", 1)[-1]
        return HealthPlan("executed" if shutil.which(name) else "validated")
    return HealthPlan("validated")


def stand_in_ready(address: str, port: int, timeout: float) -> tuple[bool, str]:
    url = f"http://{address}:{port}/stand-in/ready"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, f"{url}: {response.status}"
    except OSError as error:
        return False, f"{url}: {error}"
