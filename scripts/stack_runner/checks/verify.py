"""`verify`, run as the workshop runs it (`docker compose run --rm verify`; here `stack.py run
verify`): the product's own proof of the whole stack — health, every signal in its backend,
Grafana's provisioning through its API, the correlations on real ids, the query catalogs, the
rule groups, Alertmanager → alert-log — through the services' HTTP APIs only. The stack check
does not repeat any of it: it runs verify and reads its JSON report.

Where Loki or Tempo is a stand-in (LOKI_BIN / TEMPO_BIN not set), the checks that need their
query APIs cannot pass: verify's report names the services each check needs, and those are
reported skipped with that reason, as every such check of this runner is. Any other ✗ fails.

`check_stopped` (the last group before the soak) stops one backend — Loki when it runs for
real, else Pyroscope — and runs verify again: it must fail, every ✗ must be one of that
backend's checks and name it, and the checks that do not need it must still pass. Then the
backend is started again.
"""

from __future__ import annotations

import json
import subprocess
import time

from .base import CheckFailed, Stack

HEALTHY_WAIT = "4m"
STOPPED_WAIT = "20s"
MINIMUM_CHECKS = 40


def run_verify(stack: Stack, *args: str, timeout: float = 600) -> tuple[int, dict, float]:
    """(exit code, JSON report, seconds) of `stack.py run verify --json ARGS`."""
    started = time.monotonic()
    done = subprocess.run(stack.command("run", "verify", "--json", *args), capture_output=True, text=True,
                          timeout=timeout)
    took = time.monotonic() - started
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise CheckFailed(f"`stack.py run verify --json` printed no report (exit {done.returncode}): "
                          f"{done.stdout[-300:]!r} {done.stderr.strip().splitlines()[-3:]}")
    return done.returncode, report, took


def stand_ins(stack: Stack) -> dict[str, str]:
    """Backends whose query API verify reads but that run as stand-ins here: name → reason."""
    return {name: f"{name.upper()}_BIN not set" for name in ("loki", "tempo") if not stack.real(name)}


def line(check: dict) -> str:
    return f"verify {check['id']}: {check['detail']}"


def check(stack: Stack) -> None:
    print("verify: `stack.py run verify` (docker compose run --rm verify) on the healthy stack")
    code, report, took = run_verify(stack, "--wait", HEALTHY_WAIT)
    skipped = stand_ins(stack)
    failed = 0
    for result in report["checks"]:
        explained = [skipped[n] for n in result["needs"] if n in skipped]
        if result["passed"]:
            stack.ledger.ok(line(result))
        elif explained:
            stack.ledger.skip(f"verify {result['id']}", ", ".join(sorted(set(explained))))
        else:
            failed += 1
            stack.ledger.fail(line(result) + (f" (likely cause: {result['cause']})" if result.get("cause") else ""))
    stack.ledger.check(len(report["checks"]) >= MINIMUM_CHECKS,
                       f"verify ran {len(report['checks'])} checks (at least {MINIMUM_CHECKS}): "
                       f"{report['passed']} passed, {report['failed']} failed, in {took:.0f} s")
    stack.ledger.check((code == 0) == (report["failed"] == 0) and (failed == 0 or code == 1),
                       f"verify's exit status ({code}) says whether anything failed")


def wait_running(stack: Stack, name: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.refresh()
        service = stack.service(name)
        if service["status"] == "running" and (service["health_mode"] == "none" or service["health"] == "healthy"):
            return True
        time.sleep(1)
    return False


def check_stopped(stack: Stack) -> None:
    backend = "loki" if stack.real("loki") else "pyroscope"
    print(f"verify: with {backend} stopped, only {backend}'s checks fail, and they name it")
    subprocess.run(stack.command("stop", backend), check=True, capture_output=True, timeout=60)
    stack.started_again[backend] = stack.started_again.get(backend, 0) + 1
    try:
        code, report, took = run_verify(stack, "--wait", STOPPED_WAIT)
    finally:
        subprocess.run(stack.command("start", backend), capture_output=True, timeout=60)
        stack.ledger.check(wait_running(stack, backend), f"{backend} started again and is healthy")
    skipped = set(stand_ins(stack))
    failing = [c for c in report["checks"] if not c["passed"]]
    passing = [c for c in report["checks"] if c["passed"]]
    not_its = [c for c in failing if backend not in c["needs"] and not skipped & set(c["needs"])]
    unnamed = [c for c in failing if backend not in c["needs"] or backend not in c["detail"].lower()
               and backend not in c["name"].lower()]
    unnamed = [c for c in unnamed if not skipped & set(c["needs"])]
    independent = [c for c in report["checks"] if backend not in c["needs"] and not skipped & set(c["needs"])]
    stack.ledger.check(code == 1 and any(backend in c["needs"] for c in failing),
                       f"verify fails (exit {code}) with {backend} stopped: {len(failing)} ✗ in {took:.0f} s")
    stack.ledger.check(not not_its, f"every ✗ is a check that needs {backend} "
                                    f"({'; '.join(line(c) for c in not_its[:2]) or 'none other'})")
    stack.ledger.check(not unnamed, f"every ✗ of {backend}'s names it ({'; '.join(line(c) for c in unnamed[:2]) or 'all do'})")
    stack.ledger.check(bool(independent) and all(c["passed"] for c in independent),
                       f"the {len(independent)} checks that do not need {backend} still pass "
                       f"({len(passing)} passed in all; failing: {[c['id'] for c in independent if not c['passed']][:3]})")
