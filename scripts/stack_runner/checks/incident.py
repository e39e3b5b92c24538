"""An incident, the way a workshop starts one: the compose `scenario` service run as a one-off
container (`docker compose run --rm scenario fault-tour`, time-scaled), so every fault kind
leaves its evidence for the query checks that follow — and the lab path itself (no Rust
toolchain, in-network URLs, its client spans to Tempo) is proven to work."""

from __future__ import annotations

import subprocess
import time

from .base import Stack, get_json

SCENARIO = "fault-tour"


def check(stack: Stack) -> None:
    # Each fault phase must outlast a few 10 s scrapes, or its gauges and annotations are never
    # seen: the tour runs at half speed (25 s phases → 12.5 s) whatever the stack's time scale.
    scale = "0.5"
    print(f"incident: `scenario {SCENARIO} --time-scale {scale}` as a one-off compose container")
    done = subprocess.run(stack.scenario_command(SCENARIO, scale), capture_output=True, text=True, timeout=900)
    stack.incident_ended = time.monotonic()
    stack.count_oneoff(done.stdout, done.stderr)
    tail = done.stderr.strip().splitlines()[-3:]
    stack.ledger.check(done.returncode == 0, f"the scenario service ran {SCENARIO} and exited 0 ({tail})")
    for service in ("sample-app", "sample-app-downstream"):
        view = get_json(f"{stack.url(service, 8080)}/admin/faults")
        stack.ledger.check(view.get("plan") is None, f"{service}: the scenario cleared its faults at the end")
