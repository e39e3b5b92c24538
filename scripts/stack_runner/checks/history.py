"""A week of history at start (docs/history.md): the `history` and `backfill` one-shots ran
before Prometheus, so within a minute of the stack being healthy Prometheus answers for six
days ago — the request metrics with `origin="history"`, and the recording rules evaluated over
them (the 30-day error budget already counts the week's incidents). Run again on the same
volumes, each one-shot says so and backfills nothing."""

from __future__ import annotations

import subprocess
import time

from .base import CheckFailed, Prometheus, Stack, wait_for

WITHIN = 60.0
SIX_DAYS = 6 * 86400


def check(stack: Stack) -> None:
    print("history: a week of request metrics backfilled before Prometheus started, once")
    prometheus = Prometheus(stack.url("prometheus", 9090))
    six_days_ago = time.time() - SIX_DAYS

    def at_six_days() -> float | None:
        result = prometheus.api("query", query='sum(rate(http_server_request_duration_seconds_count'
                                '{origin="history", service="sample-app"}[5m]))', time=f"{six_days_ago:.0f}")["result"]
        return float(result[0]["value"][1]) if result else None

    started = time.monotonic()
    rate = wait_for("request metrics six days old", at_six_days, timeout=WITHIN)
    stack.ledger.ok(f"history: sample-app served {rate:.1f} requests/s six days ago, origin=\"history\" "
                    f"(answered {time.monotonic() - started:.0f} s after healthy)")
    def recorded_six_days_ago() -> list:
        return prometheus.api("query", query='service:slo_availability_errors:ratio_rate1h{service="sample-app"}',
                              time=f"{six_days_ago:.0f}")["result"]

    recorded = wait_for("the SLO recording rules six days old", recorded_six_days_ago, timeout=WITHIN)
    stack.ledger.ok(f"history: the SLO recording rules have values six days old "
                    f"(service:slo_availability_errors:ratio_rate1h = {float(recorded[0]['value'][1]):.4f}), "
                    f"answered {time.monotonic() - started:.0f} s after healthy")
    budget = wait_for("the 30-day error budget", lambda: prometheus.value(
        'service:slo_availability_error_budget_remaining:ratio30d{service="sample-app"}'), timeout=WITHIN)
    stack.ledger.check(0 < budget < 1, f"history: the SLO rules count the week's incidents from the first minute: "
                                       f"{budget:.0%} of sample-app's 30-day error budget remains")
    for name, said in (("backfill", "already has the history"), ("history", "already generated")):
        done = subprocess.run(stack.command("run", name), capture_output=True, text=True, timeout=120)
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise CheckFailed(f"`stack.py run {name}` again exited {done.returncode}: {output.strip()[-300:]}")
        stack.ledger.check(said in output, f"history: `{name}` run again on the same volumes does nothing "
                                           f"({output.strip().splitlines()[-1][:140] if output.strip() else 'no output'})")
