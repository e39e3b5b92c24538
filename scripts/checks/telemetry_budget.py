#!/usr/bin/env python3
"""Telemetry's instruction budget: fails when the telemetry of one request costs more CPU
instructions than sample-app/telemetry-budget.toml allows.

Instructions are counted with callgrind (scripts/callgrind_cost.py), so the count does not depend
on how busy the machine is: two runs of the release binary, SMALL and LARGE requests on one
keep-alive connection, differenced. Measured:

- sample-app, GET /api/orders/{id}: "all signals" (spans sampled and exported over OTLP/gRPC to a
  local receiver, the metric with its exemplar, the JSON access line, span labels, heap sampling)
  minus SAMPLE_APP_TELEMETRY=off. The access lines of the measured run are checked too (one per
  request, each with trace_id and span_id), so a cheaper build that lost its signals fails.
- the same with every request carrying a caller's sampled traceparent (continuing its trace);
  each access line must carry the caller's trace id.
- load-gen: its client span, exported, minus no client span (a traceparent only).

    scripts/checks/telemetry_budget.py [--budget-file FILE] [--sample-app BIN] [--load-gen BIN]
    scripts/checks/telemetry_budget.py --self-test   # a too-low budget must fail, and say why

Without --sample-app / --load-gen it uses the release builds in the cargo target directory
(build them first: cargo build --release --locked -p sample-app -p load-gen).
Needs valgrind and the .venv (the OTLP receiver).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import callgrind_cost  # noqa: E402
from ports import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUDGET_FILE = ROOT / "sample-app/telemetry-budget.toml"


class BudgetError(Exception):
    """The budget file is missing or malformed."""


def read_budget(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BudgetError(f"{path}: {e}") from e

    def number(table: str, key: str, kind: type, low: float, high: float):
        value = data.get(table, {}).get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or not low <= value <= high:
            raise BudgetError(f"{path}: [{table}] {key} must be a {kind.__name__} from {low} to {high}, got {value!r}")
        return value

    requests = data.get("measurement", {}).get("requests")
    if (not isinstance(requests, list) or len(requests) != 2 or not all(isinstance(n, int) for n in requests)
            or not 0 < requests[0] < requests[1] <= 10_000):
        raise BudgetError(f"{path}: [measurement] requests must be [SMALL, LARGE] with 0 < SMALL < LARGE <= 10000, "
                          f"got {requests!r}")
    return {
        "requests": tuple(requests),
        "sample-app": number("sample-app", "telemetry", int, 1, 10_000_000),
        "sample-app traced": number("sample-app", "continuing_a_trace", int, 1, 10_000_000),
        "sample-app margin": number("sample-app", "margin", float, 0.0, 0.5),
        "load-gen": number("load-gen", "client_span", int, 1, 10_000_000),
        "load-gen margin": number("load-gen", "margin", float, 0.0, 0.5),
    }


def check_access_lines(log: Path, expected: int, trace_id: str | None = None) -> list[str]:
    """One access line per request, each with the ids of its span (and `trace_id`, when the
    requests continued that trace)."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("target") == "access"]
    problems = []
    if len(access) != expected:
        problems.append(f"sample-app wrote {len(access)} access lines for {expected} requests")
    missing = [line for line in access if len(line.get("trace_id", "")) != 32 or len(line.get("span_id", "")) != 16]
    if missing:
        problems.append(f"{len(missing)} access lines have no trace_id/span_id, e.g. {missing[0]}")
    if trace_id is not None:
        # The POST that creates the order sends no traceparent; every GET continues the trace.
        other = [line for line in access[1:] if line.get("trace_id") != trace_id]
        if other:
            problems.append(f"{len(other)} access lines did not continue the caller's trace {trace_id}, "
                            f"e.g. {other[0]}")
    return problems


def verdict(what: str, measured: float, budget: int, margin: float, path: Path, key: str, how: str) -> str | None:
    limit = budget * (1 + margin)
    line = (f"{what}: {measured:,.0f} instructions per request (budget {budget:,} + {margin:.0%} margin "
            f"= {limit:,.0f})")
    if measured > limit:
        return (f"{line}: OVER BUDGET by {measured - budget:,.0f}. Either find what grew "
                f"({how} shows where the instructions go) or, if the cost is deliberate, raise {key} in "
                f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} and say why in the commit")
    print(line)
    if measured < budget * (1 - 2 * margin):
        print(f"  note: well under budget; lower {key} to about {measured * 1.01:,.0f} to keep the gain")
    return None


def run(args) -> int:
    budget = read_budget(args.budget_file)
    requests = budget["requests"]
    work = Path(tempfile.mkdtemp(prefix="telemetry-budget-"))
    failures: list[str] = []
    with callgrind_cost.OtlpReceiver() as receiver:
        configs = callgrind_cost.sample_app_configs(receiver.endpoint)
        traced_config = "caller sends traceparent"
        caller = callgrind_cost.CONFIG_HEADERS[traced_config]
        logs = {n: work / f"sample-app.all.{n}.log" for n in requests}
        traced_logs = {n: work / f"sample-app.traced.{n}.log" for n in requests}

        def logged(config: str, logs: dict[int, Path]):
            """A run of `config` whose logs are kept, with the configuration's request headers."""
            return lambda n, out_file: callgrind_cost.sample_app_run(
                args.sample_app, configs[config], n, out_file, stdout=logs[n],
                headers=callgrind_cost.CONFIG_HEADERS.get(config))

        off = callgrind_cost.measure("off", lambda n, f: callgrind_cost.sample_app_run(
            args.sample_app, configs["off"], n, f), requests, work)
        full = callgrind_cost.measure("all signals", logged("all signals", logs), requests, work)
        continued = callgrind_cost.measure(traced_config, logged(traced_config, traced_logs), requests, work)
        caller_trace_id = caller["traceparent"].split("-")[1]
        for n in requests:
            failures += check_access_lines(logs[n], n + 1)  # + the POST that creates the order
            failures += check_access_lines(traced_logs[n], n + 1, caller_trace_id)
        telemetry = full.per_request - off.per_request
        print(f"sample-app GET {callgrind_cost.ENDPOINT}: off {off.per_request:,.0f}, all signals "
              f"{full.per_request:,.0f} instructions per request; telemetry {telemetry / off.per_request:.2f}x "
              f"the uninstrumented request")
        for what, measured, key, name in (
                ("sample-app telemetry", telemetry, "sample-app", "telemetry"),
                ("sample-app telemetry, the caller sends a traceparent", continued.per_request - off.per_request,
                 "sample-app traced", "continuing_a_trace")):
            failure = verdict(what, measured, budget[key], budget["sample-app margin"], args.budget_file,
                              f"[sample-app] {name}", "scripts/bench_sample_app.py --callgrind")
            failures += [failure] if failure else []

        if not args.skip_load_gen:
            target_port = free_port()
            target = subprocess.Popen([args.sample_app], env=callgrind_cost.clean_env(
                {"SAMPLE_APP_TELEMETRY": "off", "SAMPLE_APP_LISTEN": f"127.0.0.1:{target_port}"}),
                stdout=subprocess.DEVNULL)
            try:
                callgrind_cost.wait_http(target_port, "/health", target, 30)
                exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **callgrind_cost.BATCH_ENV}
                measured = {
                    name: callgrind_cost.measure(name, lambda n, f, env=env: callgrind_cost.load_gen_run(
                        args.load_gen, target_port, env, [], n, f), requests, work)
                    for name, env in (("load-gen without spans", {"OTEL_TRACES_EXPORTER": "none"}),
                                      ("load-gen client span", exporting))
                }
            finally:
                callgrind_cost.stop(target, 30)
            span = measured["load-gen client span"].per_request - measured["load-gen without spans"].per_request
            failure = verdict("load-gen client span", span, budget["load-gen"], budget["load-gen margin"],
                              args.budget_file, "[load-gen] client_span", "scripts/bench_load_gen.py --callgrind")
            failures += [failure] if failure else []
    for failure in failures:
        print(f"telemetry budget: FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


def self_test(args) -> int:
    """A budget far below the real cost must fail with the budget named; a malformed file must
    fail naming the key."""
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("a too-low budget", "[measurement]\nrequests = [20, 120]\n[sample-app]\ntelemetry = 1\ncontinuing_a_trace = 1\n"
             "margin = 0.05\n"
             "[load-gen]\nclient_span = 1\nmargin = 0.05\n", "OVER BUDGET"),
            ("a malformed budget", "[measurement]\nrequests = [20, 120]\n[sample-app]\ntelemetry = \"cheap\"\n",
             "[sample-app] telemetry must be"),
        ]
        for what, text, expect in cases:
            path = Path(tmp) / "budget.toml"
            path.write_text(text)
            result = subprocess.run([sys.executable, __file__, "--budget-file", str(path), "--skip-load-gen",
                                     "--sample-app", str(args.sample_app)], capture_output=True, text=True, timeout=300)
            if result.returncode == 0 or expect not in result.stderr:
                missed.append(f"{what}: exit {result.returncode}, stderr: {result.stderr.strip()[-500:]!r}")
    for m in missed:
        print(f"telemetry budget self-test: MISSED {m}", file=sys.stderr)
    print(f"telemetry budget self-test: {2 - len(missed)} of 2 cases caught")
    return 1 if missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-file", type=Path, default=BUDGET_FILE)
    parser.add_argument("--sample-app", type=Path, default=callgrind_cost.release_binary("sample-app"))
    parser.add_argument("--load-gen", type=Path, default=callgrind_cost.release_binary("load-gen"))
    parser.add_argument("--skip-load-gen", action="store_true", help="measure sample-app only")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    for binary in (args.sample_app, *(() if args.skip_load_gen or args.self_test else (args.load_gen,))):
        if not binary.exists():
            print(f"telemetry budget: {binary} does not exist; build it first "
                  f"(cargo build --release --locked -p sample-app -p load-gen)", file=sys.stderr)
            return 2
    try:
        return self_test(args) if args.self_test else run(args)
    except (BudgetError, RuntimeError) as e:
        print(f"telemetry budget: FAIL {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
