"""Loki's ruler, for real: known log lines pushed into Loki must come out as the values they
imply — the recording rules' series in Prometheus (remote write), the log alerts pending and
firing in Loki's rules API, then in Alertmanager, then as a notification in alert-log's log —
and a quiet stream of the same volume, without errors or panics, must trip nothing.

The lines go under a test label set of the stack's own label names (docs/contracts.md, Loki
labels), each with its own trace_id as structured metadata like the services' lines:
`service_name="ruler-check"` (error lines, one Rust panic message) and
`service_name="ruler-check-quiet"` (access lines only). Both streams carry 8 lines per second on
a fixed 125 ms grid, pushed ahead of time and back to two minutes before the check starts, so
every window the ruler evaluates is full from its first evaluation:
- rate over 1m = 480 lines / 60 s = 8.0 per second, ±1 line at the window's edges (±1/60);
- the quiet stream's duration_ms cycles through 1…480 ms, so every 1m window holds each value
  once and its p99 is the 475.21st smallest (Prometheus' and Loki's interpolation:
  rank 0.99 × 479), 0.47521 s, ±0.5 ms for a window one line longer or shorter.
AlertmanagerNotificationsFailing is proven on its own expression: the rule's query, with its
stream selector pointed at lines in both Alertmanager log formats (0.25 logfmt, 0.34 slog), run
by Loki's query API.

Meanwhile the lab's scenario runs as the workshop runs it (`docker compose run --rm scenario
error-logs`, at half speed): real error lines from sample-app must trip ErrorLogBurst, and
load-gen's verifier must see it through Loki's rules API (and SampleAppHighErrorRatio through
Prometheus').
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse

import yaml

from .base import CheckFailed, Prometheus, Stack, get_json, http

STEP_NS = 125_000_000          # 8 lines per second per stream
CYCLE = 480                    # one minute of lines: duration_ms = 1 … 480
BACKFILL_S = 125               # the longest window of the rules (2m), and a few seconds more
AHEAD_S = 5                    # lines are pushed this far ahead: a window ending now is complete
EXPECTED_RATE = 8.0
RATE_TOLERANCE = 1 / 60
EXPECTED_P99 = (475 + 0.21 * (476 - 475)) / 1000
P99_TOLERANCE = 0.0005
DEADLINE_S = 150.0
QUIET_DEADLINE_S = 300.0
TEST, QUIET, AM_LINES = "ruler-check", "ruler-check-quiet", "ruler-check-alertmanager"
# The lab's scenario, at half speed: its fault still outlasts the 2m window's threshold.
SCENARIO, SCENARIO_SCALE = "error-logs", "0.5"
# The lines Alertmanager writes when it gives up on a notification (dispatch/dispatch.go,
# notify/notify.go at v0.25.0; dispatch/dispatch.go, notify/retry_stage.go at v0.34.0).
AM_FAILURES = [
    'ts=2026-11-21T07:01:23.861Z caller=dispatch.go:352 level=error component=dispatcher msg="Notify for alerts failed" '
    'num_alerts=1 err="page/webhook[0]: notify retry canceled after 7 attempts: Post \\"http://alert-log:9095/notify/page\\": '
    'dial tcp: lookup alert-log: no such host"',
    'time=2026-11-21T07:01:24.000Z level=ERROR source=dispatch.go:589 msg="Notify for alerts failed" component=dispatcher '
    'num_alerts=2 err="ticket/email[0]: notify retry canceled due to unrecoverable error after 1 attempts: establish '
    'connection to server: dial tcp: lookup smtp.example.invalid: no such host"',
]


def line(kind: str, k: int) -> tuple[dict, str]:
    """The k-th line of the grid for a stream: (labels, JSON line)."""
    if kind == "error":
        return {"service_name": TEST, "level": "error"}, json.dumps(
            {"level": "error", "target": "ruler_check", "message": "a known error line", "n": k})
    return {"service_name": QUIET, "level": "info"}, json.dumps(
        {"level": "info", "target": "access", "message": "request completed", "method": "GET", "route": "/ruler-check",
         "status": 200, "duration_ms": k % CYCLE + 1})


class Pusher(threading.Thread):
    """Keeps both streams filled on the grid up to AHEAD_S seconds from now, until stopped."""

    def __init__(self, loki: str):
        super().__init__(daemon=True)
        self.loki, self.stop, self.error = loki, threading.Event(), None
        now = time.time_ns()
        self.next_k = (now - BACKFILL_S * 10**9) // STEP_NS

    def push_until(self, end_ns: int) -> int:
        streams: dict[str, list] = {"error": [], "info": []}
        while self.next_k * STEP_NS < end_ns:
            for kind in streams:
                # Each line with its own trace_id as structured metadata, as the services' lines
                # have: a rule that does not sum before label_replace then meets one series per
                # line and fails past Loki's max_query_series (500), as it would in the workshop.
                streams[kind].append([str(self.next_k * STEP_NS), line(kind, self.next_k)[1],
                                      {"trace_id": f"{kind == 'error':01x}{self.next_k:031x}"}])
            self.next_k += 1
        body = {"streams": [{"stream": line(kind, 0)[0], "values": values} for kind, values in streams.items() if values]}
        if body["streams"]:
            push(self.loki, body)
        return sum(len(v) for v in streams.values())

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.push_until(time.time_ns() + AHEAD_S * 10**9)
            except Exception as error:   # reported by the check, which then fails
                self.error = error
                return
            self.stop.wait(1.0)


def push(loki: str, body: dict) -> None:
    http(f"{loki}/loki/api/v1/push", json.dumps(body).encode(), headers={"content-type": "application/json"})


def rules(stack: Stack) -> dict[str, dict]:
    """name → rule of every file in loki/rules/fake/ (the tenant `fake`: auth is off)."""
    out = {}
    for path in sorted((stack.root / "loki/rules/fake").glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out[rule.get("alert") or rule["record"]] = rule
    return out


def loki_alerts(loki: str) -> list[dict]:
    return get_json(f"{loki}/prometheus/api/v1/alerts")["data"]["alerts"]


def ours(alerts: list[dict], service: str, name: str | None = None) -> list[dict]:
    return [a for a in alerts if a["labels"].get("service") == service and name in (None, a["labels"].get("alertname"))]


def check(stack: Stack) -> None:
    print("ruler: known lines → Loki's ruler → recorded series in Prometheus, alerts in Loki, Alertmanager and alert-log")
    if not stack.real("loki"):
        stack.ledger.skip("the Loki ruler: recording rules, log alerts, their notifications", "LOKI_BIN not set")
        return
    loki = stack.url("loki", 3100)
    began = time.monotonic()
    # load-gen counts only alerts its run caused: one still active from an earlier incident (the
    # incident check's, whose errors sit in the rules' windows for minutes) would fail the lab's
    # verdict. Wait, as the workshop says to between labs, until neither alert is active.
    stack.ledger.check(resolved_in_time(stack, loki), f"ErrorLogBurst and SampleAppHighErrorRatio are not active for sample-app "
                                           f"before {SCENARIO} starts (waited {time.monotonic() - began:.0f} s)")
    scenario = start_scenario(stack)
    try:
        known_lines(stack, loki)
    finally:
        scenario_verdict(stack, scenario)
    print(f"  ..    the ruler check took {time.monotonic() - began:.0f} s (its scenario included)")


def resolved_in_time(stack: Stack, loki: str) -> bool:
    """Whether, within QUIET_DEADLINE_S (ErrorLogBurst's 2m window and `for`, and a few
    evaluations more), no alert the lab's scenario expects is active for sample-app."""
    prometheus = Prometheus(stack.url("prometheus", 9090))
    start = time.monotonic()
    while time.monotonic() - start < QUIET_DEADLINE_S:
        active = ours(loki_alerts(loki), "sample-app", "ErrorLogBurst") + \
            ours(prometheus.api("alerts")["alerts"], "sample-app", "SampleAppHighErrorRatio")
        if not active:
            return True
        time.sleep(5)
    return False


def known_lines(stack: Stack, loki: str) -> None:
    # That Loki's ruler loaded every group of loki/rules/fake and evaluates it without error is
    # verify's to prove (its rules.loki.* checks).
    expected = rules(stack)
    before = loki_alerts(loki)
    stack.ledger.check(not ours(before, TEST) and not ours(before, QUIET),
                       f"before any test line, no alert about {TEST} or {QUIET} ({len(before)} alerts active)")
    pusher = Pusher(loki)
    pushed = pusher.push_until(time.time_ns() + AHEAD_S * 10**9)
    push(loki, {"streams": [{"stream": {"service_name": TEST}, "values": [
        [str(time.time_ns()), "thread 'actix-rt|system:0|arbiter:0' panicked at sample-app/src/ruler_check.rs:1:5:"]]}]})
    # Evaluations from now on see only full windows of test lines.
    pushed_ns = time.time_ns()
    start = time.monotonic()
    pusher.start()
    print(f"  ..    pushed {pushed} lines ({BACKFILL_S} s back, {AHEAD_S} s ahead) and one panic message; pushing 8 lines/s per stream")
    try:
        timings = follow_alerts(stack, loki, start)
        recorded_values(stack, pushed_ns, start)
        timings["recorded values read"] = time.monotonic() - start
        notifications_failing(stack, loki, expected["AlertmanagerNotificationsFailing"]["expr"])
    finally:
        pusher.stop.set()
        pusher.join(timeout=5)
    if pusher.error:
        stack.ledger.fail(f"pushing the test lines to Loki failed: {pusher.error}")
    print("  ..    after the first push: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def start_scenario(stack: Stack) -> subprocess.Popen:
    return subprocess.Popen(stack.scenario_command(SCENARIO, SCENARIO_SCALE), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def scenario_verdict(stack: Stack, scenario: subprocess.Popen) -> None:
    """The lab's scenario, verified by load-gen through Prometheus' and Loki's rules APIs."""
    try:
        stdout, stderr = scenario.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        scenario.kill()
        stdout, stderr = scenario.communicate()
    stack.count_oneoff(stdout, stderr)
    verdicts = [l for l in stderr.splitlines() if l.startswith(("PASS", "FAIL"))]
    for alert, source in (("ErrorLogBurst", "Loki ruler"), ("SampleAppHighErrorRatio", "Prometheus")):
        line = next((l for l in verdicts if f" {alert} " in l), f"{alert}: no verdict ({stderr.strip().splitlines()[-3:]})")
        stack.ledger.check(line.startswith("PASS") and f"({source})" in line, f"`scenario {SCENARIO}`: {line}")
    stack.ledger.check(scenario.returncode == 0, f"`scenario {SCENARIO} --time-scale {SCENARIO_SCALE}` exited "
                                                 f"{scenario.returncode} ({stderr.strip().splitlines()[-1:]})")


def follow_alerts(stack: Stack, loki: str, start: float) -> dict[str, float]:
    """Polls Loki, Alertmanager and alert-log until each step of both alerts' paths is seen."""
    steps = ["ErrorLogBurst pending in Loki", "ServicePanicked firing in Loki", "ServicePanicked in Alertmanager",
             "ServicePanicked notified by alert-log"]
    seen: dict[str, float] = {}
    am = stack.url("alertmanager", 9093)
    quiet_alerts: list[dict] = []
    while not set(steps) <= set(seen) and time.monotonic() - start < DEADLINE_S:
        alerts = loki_alerts(loki)
        quiet_alerts += ours(alerts, QUIET)
        at = time.monotonic() - start
        if any(a["state"] in ("pending", "firing") for a in ours(alerts, TEST, "ErrorLogBurst")) and steps[0] not in seen:
            seen[steps[0]] = at
            stack.ledger.check(not ours(alerts, QUIET), f"the evaluation that raised it for {TEST} raised nothing for {QUIET}")
        if any(a["state"] == "firing" for a in ours(alerts, TEST, "ServicePanicked")):
            seen.setdefault("ServicePanicked firing in Loki", at)
        in_am = [a for a in get_json(f"{am}/api/v2/alerts") if a["labels"].get("alertname") == "ServicePanicked"
                 and a["labels"].get("service") == TEST]
        if in_am and "ServicePanicked in Alertmanager" not in seen:
            seen["ServicePanicked in Alertmanager"] = at
            source = urllib.parse.unquote_plus(in_am[0].get("generatorURL", ""))
            stack.ledger.check(source.startswith("http://localhost:3000/explore?") and '"uid":"loki"' in source
                               and "panicked at" in source,
                               f"its source link opens the rule's LogQL in Grafana's Explore on Loki ({source[:90]}…)")
        notified = [r for r in stack.json_log("alert-log") if r.get("alertname") == "ServicePanicked"
                    and r.get("service") == TEST and r.get("status") == "firing"]
        if notified:
            seen.setdefault("ServicePanicked notified by alert-log", at)
            seen.setdefault(f"receiver {notified[0].get('receiver')}", at)
        time.sleep(1)
    for step in steps:
        stack.ledger.check(step in seen, f"{step}" + (f" {seen[step]:.0f} s after the first push" if step in seen else
                                                      f": not within {DEADLINE_S:.0f} s"))
    stack.ledger.check("receiver page" in seen, "the critical panic alert reached Alertmanager's page receiver (alert-log /notify/page)")
    stack.ledger.check(not quiet_alerts, f"no alert ever for {QUIET}, which logs as much but no error or panic ({quiet_alerts[:1]})")
    return {k: v for k, v in seen.items() if k in steps}


def recorded_values(stack: Stack, pushed_ns: int, start: float) -> None:
    """The recording rules' samples in Prometheus, evaluated over windows full of test lines."""
    prom = Prometheus(stack.url("prometheus", 9090))
    series = {
        f'service_level:log_lines:rate1m{{service="{TEST}", level="error"}}': (EXPECTED_RATE, RATE_TOLERANCE),
        f'service_level:log_lines:rate1m{{service="{QUIET}", level="info"}}': (EXPECTED_RATE, RATE_TOLERANCE),
        f'service:log_request_duration_seconds:p99_1m{{service="{QUIET}"}}': (EXPECTED_P99, P99_TOLERANCE),
    }
    for selector, (want, tolerance) in series.items():
        value = None
        while time.monotonic() - start < DEADLINE_S:
            stamp = prom.value(f"timestamp({selector})")
            # A sample evaluated after the first push: its window held only grid lines.
            if stamp is not None and stamp * 1e9 > pushed_ns:
                value = prom.value(selector)
                break
            time.sleep(2)
        stack.ledger.check(value is not None and abs(value - want) <= tolerance,
                           f"Prometheus holds {selector} = {value} (remote-written by Loki's ruler; "
                           f"the lines imply {want:.5f} ± {tolerance:.4f})")


def notifications_failing(stack: Stack, loki: str, expr: str) -> None:
    """AlertmanagerNotificationsFailing's own query over lines in both Alertmanager formats."""
    now = time.time_ns()
    push(loki, {"streams": [{"stream": {"service_name": AM_LINES},
                             "values": [[str(now - 2_000_000_000 + i), text] for i, text in enumerate(AM_FAILURES)]}]})
    query = expr.replace('{service_name="alertmanager"}', f'{{service_name="{AM_LINES}"}}')
    if query == expr:
        raise CheckFailed("AlertmanagerNotificationsFailing no longer selects {service_name=\"alertmanager\"}")
    result = get_json(f"{loki}/loki/api/v1/query", query=query, time=str(time.time_ns()))["data"]["result"]
    got = {(r["metric"].get("receiver"), r["metric"].get("integration")): float(r["value"][1]) for r in result}
    stack.ledger.check(got == {("page", "webhook"): 1.0, ("ticket", "email"): 1.0},
                       f"AlertmanagerNotificationsFailing's query finds one failure per receiver in both formats ({got})")
