"""The checks of the whole running stack, in order, and the one summary line: which services ran
for real and which were stand-ins, how many queries of each language returned data, what was
skipped and why, what failed. Exit 0 only when nothing failed."""

from __future__ import annotations

import traceback
from pathlib import Path

from . import (history, incident, logs_pipeline, one_off, over_time, queries, rejected, ruler, runner_cli, services, soak,
               verify, verify_stopped)
from .base import CheckFailed, Ledger, Stack

GROUPS = [services, history, over_time, logs_pipeline, verify, rejected, incident, ruler, queries, one_off, runner_cli,
          verify_stopped]


def summary(stack: Stack) -> str:
    real = [f"{n} ({s['version']})" if s["version"] and "workspace" not in s["version"] else n
            for n, s in stack.state["services"].items() if s["program"] == "real"]
    stand_ins = [f"{n} ({s['why']})" for n, s in stack.state["services"].items() if s["program"] == "stand-in"]
    counts = ", ".join(f"{lang} {p}/{t}" for lang, (p, t) in sorted(stack.ledger.counts.items()))
    ledger = stack.ledger
    network = "network namespaces" if stack.state.get("network") == "netns" else "LOOPBACK FALLBACK (configs rewritten)"
    return (f"stack ({network}): real: {', '.join(real)}; stand-ins: {', '.join(stand_ins)}; "
            f"queries with data: {counts or 'none'}; "
            f"{len(ledger.passed)} passed, {len(ledger.skipped)} skipped, {len(ledger.failed)} failed")


def main(root: Path, state_dir: Path, state: dict | None, soak_seconds: float = 0) -> int:
    if not state or state.get("phase") != "running":
        print("stack check: the stack is not up (`scripts/stack.py up` first)")
        return 2
    stack = Stack(root, state_dir, state, Ledger())
    groups = [(g, g.check) for g in GROUPS]
    if soak_seconds:
        # Last: it stops the traffic to count exactly.
        groups.append((soak, lambda s: soak.check(s, soak_seconds)))
    for group, run in groups:
        try:
            run(stack)
        except CheckFailed as failure:
            stack.ledger.fail(f"{group.__name__.rsplit('.', 1)[-1]}: {failure}")
        except Exception as error:   # a broken check is a failure, with where it broke
            stack.ledger.fail(f"{group.__name__.rsplit('.', 1)[-1]}: {type(error).__name__}: {error}\n"
                              + "".join(traceback.format_exc(limit=3)))
    for failure in stack.ledger.failed:
        print(f"FAILED: {failure}")
    print(summary(stack))
    return 1 if stack.ledger.failed else 0
