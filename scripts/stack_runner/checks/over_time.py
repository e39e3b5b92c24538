"""Compose behaviour over time: the stack's own `load-gen` command (time-scaled) runs several
`--repeat` iterations without exiting or restarting (verify proves Prometheus scrapes it), every request is a
trace with a root (load-gen's client span) and no trace id is ever reused — across requests,
iterations or runs. Checked in real Tempo (TraceQL) when it runs, else in the stand-in's spans.
"""

from __future__ import annotations

import re
import time
from collections import Counter

from .backends import Tempo
from .base import CheckFailed, Stack, get_json, wait_for

ITERATIONS = 4
SETTLED = 30     # seconds: a trace younger than this may still miss spans in a batch


def iterations(stack: Stack) -> int:
    found = [int(m.group(1)) for line in stack.log_lines("load-gen")
             if (m := re.search(r"scenario \S+ iteration (\d+)", line))]
    return max(found, default=0)


def scenario_seconds(stack: Stack) -> float | None:
    argv = stack.service("load-gen")["argv"]
    if "--time-scale" not in argv or "scenario" not in argv:
        return None
    scale = float(argv[argv.index("--time-scale") + 1])
    name = argv[argv.index("run") + 1]
    text = (stack.root / "load-gen/scenarios" / f"{name}.toml").read_text()
    duration = re.search(r'duration = "(\d+)([smh])"', text)
    return int(duration.group(1)) * {"s": 1, "m": 60, "h": 3600}[duration.group(2)] * scale


def last_error(stack: Stack) -> str:
    lines = [line.strip() for line in stack.log_lines("load-gen") if "error" in line.lower()]
    return lines[-1] if lines else "no error line"


def check(stack: Stack) -> None:
    print(f"over time: the stack's own load-gen command through {ITERATIONS} --repeat iterations")
    seconds = scenario_seconds(stack)
    if seconds is None:
        stack.ledger.skip("load-gen --repeat iterations", "load-gen is not time-scaled: start with `up --time-scale X`")
    else:
        def done_or_exited():
            stack.refresh()
            return iterations(stack) >= ITERATIONS or stack.service("load-gen")["exits"]

        try:
            wait_for(f"load-gen's iteration {ITERATIONS}", done_or_exited, timeout=ITERATIONS * seconds * 3 + 60)
        except CheckFailed as failure:
            stack.ledger.fail(str(failure))
        service = stack.service("load-gen")
        stack.ledger.check(service["starts"] == 1 and not service["exits"],
                           f"load-gen ran {iterations(stack)} iterations in one process, never exited or restarted "
                           f"({service['starts']} starts; last error: {last_error(stack) if service['exits'] else 'none'})")
    if stack.real("tempo"):
        traces_in_tempo(stack)
    else:
        traces_in_stand_in(stack)


def traces_in_tempo(stack: Stack) -> None:
    tempo = Tempo(stack.url("tempo", 3200))
    try:
        wait_for("load-gen traces in Tempo", lambda: tempo.search('{resource.service.name="load-gen"}'), timeout=90)
        stack.ledger.ok("load-gen's client spans are in Tempo")
    except CheckFailed as failure:
        stack.ledger.fail(f"load-gen exports no client spans: {failure}")
    # One request, one trace: a trace id used twice would put two requests' spans in one trace.
    for service in ("load-gen", "sample-app"):
        query = f'{{resource.service.name="{service}" && kind={"client" if service == "load-gen" else "server"}}} | count() > 1'
        reused = tempo.search(query, limit=20)
        stack.ledger.check(not reused, f"no trace id was used twice: TraceQL `{query}` matched {len(reused)} traces")
    time.sleep(max(0, SETTLED - 5))
    now = int(time.time())
    body = get_json(f"{tempo.url}/api/search", q='{resource.service.name="sample-app" && kind=server}',
                    limit=200, start=now - 900, end=now - SETTLED)
    traces = body.get("traces") or []
    roots = Counter(t.get("rootServiceName") for t in traces)
    stack.ledger.check(bool(traces) and "<root span not yet received>" not in roots,
                       f"every settled sample-app trace has its root span (roots of {len(traces)}: {dict(roots)})")


def traces_in_stand_in(stack: Stack) -> None:
    spans = get_json(f"{stack.url('tempo', 3200)}/stand-in/spans")
    load_gen = [s for s in spans if s["service"] == "load-gen"]
    if not stack.ledger.check(bool(load_gen), f"load-gen exported {len(load_gen)} client spans to the Tempo stand-in"):
        return
    for service, kind in (("load-gen", 3), ("sample-app", 2)):
        ids = Counter(s["trace_id"] for s in spans if s["service"] == service and s["kind"] == kind)
        reused = [t for t, n in ids.items() if n > 1]
        stack.ledger.check(not reused, f"no trace id was used twice: {service}'s {sum(ids.values())} spans of kind "
                                       f"{kind} are in {len(ids)} traces ({reused[:3]})")
    known = {s["span_id"] for s in spans}
    settled = time.time_ns() - SETTLED * 10**9
    server = [s for s in spans if s["service"] == "sample-app" and s["kind"] == 2 and s["start_ns"] < settled]
    orphans = [s for s in server if s["parent_span_id"] and s["parent_span_id"] not in known]
    stack.ledger.check(bool(server) and not orphans,
                       f"every settled sample-app server span has its parent exported ({len(orphans)} of {len(server)} do not)")
