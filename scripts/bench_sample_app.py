#!/usr/bin/env python3
"""Benchmark: what does emitting all four signals cost the sample service?

Runs the *same release binary* in several configurations, one after another and repeated in
alternating rounds (this machine is shared and noisy: only ratios within one invocation mean
anything), drives each with the same `wrk` load on one hot endpoint, and prints a Markdown table
of requests/s and p99 with their ratio to the telemetry-off baseline.

Spans go to a compiled OTLP/gRPC receiver that decodes every request into opentelemetry-proto's
messages and counts the spans (crates/otlp-tracing/examples/otlp_sink.rs, built here); after each
run the benchmark checks that a span arrived for every request wrk counted, so a configuration
cannot look cheap by dropping spans. `--receiver python` uses scripts/otlp_sink.py instead (the
end-to-end tests' receiver, about 4 us of CPU per span on these two cores, which the throughput
of "all signals" pays; no span count).

Configurations:
  off              SAMPLE_APP_TELEMETRY=off: no spans, request metrics, access logs or profiles
  all signals      100 % sampling, OTLP/gRPC export to a local receiver, CPU profiler with span
                   labels and heap sampling, pushing both
  no access log    all signals, RUST_LOG=info,access=off (no JSON access line per request)
  no span labels   all signals, SAMPLE_APP_SPAN_PROFILES=off
  no heap sampling all signals, SAMPLE_APP_HEAP_PROFILES=off
  no span export   spans made but not sampled (OTEL_TRACES_SAMPLER=always_off), profiler on
  no profiler      all signals but no Pyroscope (the profiler thread idles)

The app's stdout (its JSON log lines) goes to a pipe that this process reads and discards, as
Docker's log copier reads a container's stdout: a line costs the reader too, and a write to a
pipe wakes it, which a write to /dev/null does not.

A second table splits the CPU each request costs the machine: the app's, the receivers' (the
OTLP sink and the Pyroscope stand-in, which a real deployment runs on other machines, and the
stdout reader, which Docker runs on the same one) and
wrk's; on two cores, requests/s follows their sum. A third compares the two profile switches
with "all signals": the CPU per request each adds, and the resident memory heap sampling adds
(VmRSS after the load).

Usage: scripts/bench_sample_app.py [--rounds 3] [--seconds 8] [--connections 16]
                                   [--only "all signals,no span labels"] [--receiver rust|python]
Needs: wrk (Debian), the .venv from scripts/install-test-tools. Traffic goes to 127.0.0.1 only.

--callgrind: instead of wall-clock rounds, count the instructions of one request with callgrind
(scripts/callgrind_cost.py: two runs of --requests SMALL,LARGE GETs on one keep-alive
connection, differenced), for each configuration of callgrind_cost.sample_app_configs, then the
per-signal breakdown and the functions the instructions of "all signals" go to (inclusive and
self, per request, minus "off"). Deterministic: the same binary gives the same counts within a
few instructions whatever else the machine does. Needs valgrind.

    scripts/bench_sample_app.py --callgrind [--requests 200,1200] [--top 40] [--binary PATH]
"""

import argparse
import json
import os
import resource
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import callgrind_cost  # noqa: E402
from ports import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BINARY = callgrind_cost.release_binary("sample-app")
ENDPOINT = "/api/orders/1"


class Discard(BaseHTTPRequestHandler):
    """Pyroscope stand-in: reads the pushed profile, answers 200."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def wait_ready(port: int, deadline_s: float = 20) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sample-app on port {port} did not become healthy")


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux USER_HZ is 100)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def run_wrk(port: int, seconds: int, connections: int) -> tuple[float, float, int, int]:
    """Requests/s, p99 (ms), the requests wrk counted, and its socket errors (a request it gave
    up on may still have been answered, and have made a span)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}{ENDPOINT}"],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    if re.search(r"Non-2xx or 3xx responses", out):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    return rps, p99, requests, errors


def rss_mib(pid: int) -> float:
    """Resident memory of a process (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def own_cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process (the Pyroscope stand-in's and the stdout reader's threads) and of its waited-for
    children (wrk)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def drain(stdout) -> None:
    """Reads the app's stdout until it closes, as Docker's log copier does (and drops it)."""
    while stdout.read1(65536):
        pass


# The configurations that export no span (the rest export one per request).
WITHOUT_SPANS = {"off", "no span export"}
EXPORT_BATCHES = {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2048", "OTEL_BSP_MAX_QUEUE_SIZE": "8192"}


def measure(env: dict, args) -> tuple[float, float, float, float, float, float, tuple[int, int, int] | None]:
    """Requests/s, p99 (ms), the app's own CPU microseconds per request, its RSS (MiB), the
    CPU microseconds per request of the receivers (the OTLP sink, and the Pyroscope stand-in and stdout reader in
    this process) and of wrk (all share the machine's cores with the app), and the spans the
    receiver decoded with the requests wrk counted (and the POST) and wrk's socket errors (None
    without a count)."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYROSCOPE_", "SAMPLE_APP_"))}
    full_env.update({"RUST_LOG": "info", **env}, SAMPLE_APP_LISTEN=f"127.0.0.1:{port}")
    spans_before = args.receiver.spans()
    app = subprocess.Popen([args.binary], env=full_env, stdout=subprocess.PIPE)
    threading.Thread(target=drain, args=(app.stdout,), daemon=True).start()
    try:
        wait_ready(port)
        body = json.dumps({"item": "widget", "quantity": 1}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/orders", body, {"content-type": "application/json"})
        urllib.request.urlopen(request).read()
        _, _, warm_up, warm_up_errors = run_wrk(port, 2, args.connections)  # warm-up: connections, allocator, label sets
        cpu_before, sink_before = cpu_seconds(app.pid), cpu_seconds(args.receiver.pid)
        own_before, wrk_before = own_cpu_seconds()
        rps, p99, requests, errors = run_wrk(port, args.seconds, args.connections)
        cpu_us = (cpu_seconds(app.pid) - cpu_before) * 1e6 / requests
        own_after, wrk_after = own_cpu_seconds()
        receivers_us = (cpu_seconds(args.receiver.pid) - sink_before + own_after - own_before) * 1e6 / requests
        wrk_us = (wrk_after - wrk_before) * 1e6 / requests
        rss = rss_mib(app.pid)
    finally:
        # SIGTERM: the app exports its last spans before it exits.
        app.terminate()
        app.wait(timeout=30)
    answered = 1 + warm_up + requests  # the POST, and what wrk counted (not the requests it cut off)
    spans_after = args.receiver.spans()
    spans = None if spans_before is None else (spans_after - spans_before, answered, warm_up_errors + errors)
    return rps, p99, cpu_us, rss, receivers_us, wrk_us, spans


# Telemetry-related frames for the inclusive profile (the rest of an inclusive profile is the
# runtime and actix wrapping everything).
TELEMETRY_FRAMES = re.compile(r"sample_app::telemetry|tracing|opentelemetry|prost|tonic|prometheus_client|"
                              r"serde_json|span|Span|hyper::proto::h2|h2::|jemalloc|_rjem|time::formatting")


def callgrind(args) -> int:
    """Instructions per request per configuration (see the module docstring)."""
    small, large = (int(n) for n in args.requests.split(","))
    if not 0 < small < large:
        raise SystemExit(f"--requests: want SMALL,LARGE with 0 < SMALL < LARGE, got {args.requests}")
    work = Path(tempfile.mkdtemp(prefix="callgrind-sample-app-"))
    results: dict[str, callgrind_cost.Measurement] = {}
    with callgrind_cost.OtlpReceiver() as receiver:
        configs = callgrind_cost.sample_app_configs(receiver.endpoint)
        if args.only:
            wanted = {"off", *(name.strip() for name in args.only.split(","))}
            configs = {name: env for name, env in configs.items() if name in wanted}
        for name, env in configs.items():
            results[name] = callgrind_cost.measure(
                name, lambda n, f, env=env, headers=callgrind_cost.CONFIG_HEADERS.get(name):
                callgrind_cost.sample_app_run(args.binary, env, n, f, headers=headers), (small, large), work)
            print(f"{name:>20}: {results[name].per_request:9.0f} instructions per request", file=sys.stderr)
    off = results["off"].per_request
    print(f"GET {ENDPOINT}, instructions per request (callgrind; {large} minus {small} requests on one "
          f"keep-alive connection, divided by {large - small})\n")
    print("| configuration | instructions per request | added by telemetry | added ÷ uninstrumented request |")
    print("|---|---:|---:|---:|")
    for name, m in results.items():
        print(f"| {name} | {m.per_request:,.0f} | {m.per_request - off:+,.0f} | {(m.per_request - off) / off:.2f}x |")
    if "all signals" in results:
        full = results["all signals"].per_request
        parts = [("span export (batching, encoding, gRPC)", "spans not exported"),
                 ("JSON access log line", "no access log"),
                 ("span labels for CPU profiles", "no span labels"),
                 ("heap sampling", "no heap sampling")]
        print("\n| part of \"all signals\" | instructions per request | how |")
        print("|---|---:|---|")
        for part, without in parts:
            if without in results:
                print(f"| {part} | {full - results[without].per_request:+,.0f} | all signals − {without} |")
        if "spans not sampled" in results and "spans not exported" in results:
            sampled = results["spans not exported"].per_request - results["spans not sampled"].per_request
            print(f"| recording a sampled span (its attributes, its end) | {sampled:+,.0f} | spans not exported − spans not sampled |")
        if "caller sends traceparent" in results:
            continued = results["caller sends traceparent"].per_request - full
            print(f"| continuing a caller's trace (when the request has a traceparent) | {continued:+,.0f} "
                  f"| caller sends traceparent − all signals |")
        if "spans not sampled" in results:
            print(f"| everything else: the span's creation, the metric, the middleware, the log line without ids "
                  f"| {results['spans not sampled'].per_request - off:+,.0f} | spans not sampled − off |")
        for inclusive in (True, False):
            rows = callgrind_cost.added_costs(results["all signals"], results["off"], inclusive, top=400)
            if inclusive:
                rows = [row for row in rows if TELEMETRY_FRAMES.search(row[0])]
            print(f"\nWhere the instructions of \"all signals\" go: {'inclusive' if inclusive else 'self'} "
                  f"instructions per request, minus \"off\" (callgrind_annotate, top {args.top})\n")
            print("| instructions per request | function |")
            print("|---:|---|")
            for function, cost in rows[:args.top]:
                print(f"| {cost:,.0f} | `{function}` |")
    print(f"\n(callgrind output files: {work})", file=sys.stderr)
    return 0


def check_spans(name: str, exporting: bool, spans: tuple[int, int, int] | None, connections: int) -> None:
    """A configuration that exports spans must deliver one for every request wrk counted, and at
    most one more per connection and wrk run (requests in flight when wrk stopped are answered
    but not counted) and per socket error wrk reported; one that does not, none."""
    if spans is None:
        return
    received, answered, errors = spans
    expected = (answered, answered + 2 * connections + errors) if exporting else (0, 0)
    if not expected[0] <= received <= expected[1]:
        raise RuntimeError(f"{name}: the receiver decoded {received} spans for {answered} answered requests, "
                           f"expected {expected[0]}–{expected[1]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", default="", help="comma-separated configurations to run (off is always run)")
    parser.add_argument("--callgrind", action="store_true", help="count instructions per request instead")
    parser.add_argument("--requests", default=",".join(map(str, callgrind_cost.DEFAULT_COUNTS)),
                        help="--callgrind: SMALL,LARGE requests of the two runs")
    parser.add_argument("--top", type=int, default=40, help="--callgrind: functions in each profile table")
    parser.add_argument("--binary", type=Path, help="use this build instead of building target/release/sample-app")
    parser.add_argument("--receiver", choices=("rust", "python"), default="rust",
                        help="the OTLP receiver: the compiled one, which counts spans (default), or scripts/otlp_sink.py")
    args = parser.parse_args()

    if args.binary is None:
        callgrind_cost.build_release("sample-app")
        args.binary = BINARY
    if args.callgrind:
        return callgrind(args)
    # The Pyroscope stand-in first: a thread of this process, nothing to leave behind if the
    # receiver (a process, closed in the `finally` below) fails to start.
    pyroscope = ThreadingHTTPServer(("127.0.0.1", 0), Discard)
    threading.Thread(target=pyroscope.serve_forever, daemon=True).start()
    args.receiver_kind = args.receiver
    args.receiver = callgrind_cost.OtlpReceiver(args.receiver)
    exporting = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{args.receiver.grpc_port}",
        "OTEL_TRACES_SAMPLER": "always_on",
        # Batches and a queue for ~60,000 spans a second: with the defaults (512 and 2,048) the
        # queue filled during each export's round trip on these two busy cores and 5-31 % of
        # the spans were dropped (otel_sdk_processor_span_processed_total{error_type="queue_full"};
        # docs/benchmarks.md, "Spans lost at full speed").
        **EXPORT_BATCHES,
        "PYROSCOPE_SERVER_ADDRESS": f"http://127.0.0.1:{pyroscope.server_port}",
    }
    configs = {
        "off": {"SAMPLE_APP_TELEMETRY": "off"},
        "all signals": exporting,
        "no access log": {**exporting, "RUST_LOG": "info,access=off"},
        "no span labels": {**exporting, "SAMPLE_APP_SPAN_PROFILES": "off"},
        "no heap sampling": {**exporting, "SAMPLE_APP_HEAP_PROFILES": "off"},
        "no span export": {**exporting, "OTEL_TRACES_SAMPLER": "always_off"},
        "no profiler": {k: v for k, v in exporting.items() if not k.startswith("PYROSCOPE")},
    }
    assert WITHOUT_SPANS <= configs.keys()
    if args.only:
        wanted = {"off", *(name.strip() for name in args.only.split(","))}
        configs = {name: env for name, env in configs.items() if name in wanted}
    results = {name: [] for name in configs}
    try:
        for round_number in range(1, args.rounds + 1):
            for name, env in configs.items():
                rps, p99, cpu_us, rss, receivers_us, wrk_us, spans = measure(env, args)
                check_spans(name, name not in WITHOUT_SPANS, spans, args.connections)
                results[name].append((rps, p99, cpu_us, rss, receivers_us, wrk_us, spans))
                print(f"round {round_number} {name:>16}: {rps:9.0f} req/s  p99 {p99:7.2f} ms  "
                      f"{cpu_us:6.1f} us CPU/request  {rss:6.1f} MiB RSS"
                      + ("" if spans is None else f"  {spans[0]} spans for {spans[1]} requests"), file=sys.stderr)
    finally:
        args.receiver.close()
        pyroscope.shutdown()

    def median(name: str, index: int) -> float:
        return statistics.median(run[index] for run in results[name])

    def paired_ratio(name: str) -> float:
        """The median of each round's requests/s over that round's "off" (drift between rounds cancels)."""
        return statistics.median(a[0] / b[0] for a, b in zip(results[name], results["off"]))

    def spans(name: str) -> str:
        counts = [run[6] for run in results[name]]
        return "–" if None in counts else f"{sum(c[0] for c in counts):,} / {sum(c[1] for c in counts):,}"

    print(f"GET {ENDPOINT}, wrk -t1 -c{args.connections} -d{args.seconds}s, median of {args.rounds} alternating rounds, "
          f"{args.receiver_kind} OTLP receiver\n")
    print("| configuration | requests/s | ratio to off | paired ratio | p99 (ms) | p99 ratio | app CPU per request (us) "
          "| CPU ratio | RSS (MiB), rounds' range | RSS over off (MiB, paired) | spans received / requests answered |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in results:
        rps, p99, cpu = median(name, 0), median(name, 1), median(name, 2)
        rss = [run[3] for run in results[name]]
        # Each round's RSS minus that round's "off": the goal's measure (memory over telemetry off).
        over = statistics.median(a[3] - b[3] for a, b in zip(results[name], results["off"]))
        print(f"| {name} | {rps:.0f} | {rps / median('off', 0):.2f}x | {paired_ratio(name):.2f}x | {p99:.2f} "
              f"| {p99 / median('off', 1):.2f}x | {cpu:.1f} | {cpu / median('off', 2):.2f}x "
              f"| {min(rss):.1f}–{max(rss):.1f} | {over:+.1f} | {spans(name)} |")

    # On two cores, requests/s follows the CPU every request costs the whole machine: the app's,
    # the receivers' (the OTLP sink and Pyroscope run elsewhere in a real deployment, the stdout
    # reader does not) and wrk's own.
    print("\n| configuration | app | receivers (OTLP sink, Pyroscope stand-in, stdout reader) | wrk | all, per request (us) "
          "| throughput the CPU predicts, ratio to off |")
    print("|---|---:|---:|---:|---:|---:|")
    def machine(name: str) -> float:
        return median(name, 2) + median(name, 4) + median(name, 5)
    for name in results:
        print(f"| {name} | {median(name, 2):.1f} | {median(name, 4):.1f} | {median(name, 5):.1f} "
              f"| {machine(name):.1f} | {machine('off') / machine(name):.2f}x |")

    # The profile switches against "all signals": per-round differences (each round runs both
    # back to back), then the median, so drift between rounds cancels.
    def paired(name: str, index: int) -> float:
        return statistics.median(a[index] - b[index] for a, b in zip(results["all signals"], results[name]))

    print("\n| switched on (vs. all signals with it off) | CPU per request added (us) | throughput ratio | RSS added (MiB) |")
    print("|---|---:|---:|---:|")
    for feature, name in (("span labels", "no span labels"), ("heap sampling", "no heap sampling")):
        if name not in results or "all signals" not in results:
            continue
        ratio = median("all signals", 0) / median(name, 0)
        print(f"| {feature} | {paired(name, 2):+.2f} | {ratio:.3f}x | {paired(name, 3):+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
