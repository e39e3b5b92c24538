#!/usr/bin/env python3
"""Benchmark load-gen against wrk and oha, in one invocation (ratios only mean anything within
one run on this shared machine).

1. Max closed-loop throughput against the same target: load-gen --concurrency vs wrk vs oha,
   alternating rounds, medians and ratios.
2. Open-model accuracy: achieved / target at increasing rates, up to the highest one met.
3. Stall experiment: a server that stalls 1 s; load-gen's p99 from the intended send time vs
   from the actual send (what a closed loop sees), and wrk's and oha's p99 on the same stall.
4. Memory: load-gen's RSS after 10 s and after a long run at a fixed rate.
5. Client spans: load-gen's CPU per request with its client spans exported over OTLP (to a real
   receiver that decodes and discards them) vs export off, alternating rounds at a fixed rate.

Target: the sample app (release, telemetry off) on GET /health; the stall server is a small
asyncio server in this script. Traffic goes to 127.0.0.1 only.

Usage: scripts/bench_load_gen.py [--rounds 3] [--seconds 8] [--long-seconds 60] [--only spans]
Needs: wrk (Debian), oha (cargo install oha --locked), a release build of both crates.

--callgrind: instead, load-gen's instructions per request with callgrind (scripts/callgrind_cost.py:
two runs of --requests SMALL,LARGE requests, one worker on one connection, differenced):
client spans exported over OTLP/gRPC, spans made but not sampled, and no spans (a traceparent
only). The target runs natively; only load-gen is counted. Needs valgrind and the .venv.

    scripts/bench_load_gen.py --callgrind [--requests 200,1200]
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import callgrind_cost  # noqa: E402
from ports import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOAD_GEN = callgrind_cost.release_binary("load-gen")
SAMPLE_APP = callgrind_cost.release_binary("sample-app")


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


def load_gen_json(args: list[str]) -> dict:
    out = subprocess.run([LOAD_GEN, *args, "--output", "json", "--quiet"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, connections: int, seconds: int) -> tuple[float, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    return rps, p99


def oha(oha_bin: str, url: str, connections: int, seconds: int) -> tuple[float, float]:
    out = subprocess.run([oha_bin, "-c", str(connections), "-z", f"{seconds}s", "--no-tui", "--output-format", "json", url],
                         check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    p99 = data["latencyPercentiles"]["p99"] * 1000.0
    return data["summary"]["requestsPerSec"], p99


def throughput(args, url: str, mix: str, oha_bin: str | None) -> list[str]:
    tools = {
        "load-gen": lambda: (lambda r: (r["achieved_rate_per_second"], r["latency_ms"]["p99"]))(
            load_gen_json(["run", "--target", url.rsplit("/", 1)[0], "--concurrency", str(args.connections),
                           "--duration", f"{args.seconds}s", "--mix", mix])),
        "wrk": lambda: wrk(url, args.connections, args.seconds),
    }
    if oha_bin:
        tools["oha"] = lambda: oha(oha_bin, url, args.connections, args.seconds)
    results = {name: [] for name in tools}
    for round_number in range(1, args.rounds + 1):
        for name, run in tools.items():
            rps, p99 = run()
            results[name].append(rps)
            print(f"round {round_number} {name:>8}: {rps:9.0f} req/s  p99 {p99:.2f} ms", file=sys.stderr)
    lines = [f"Closed loop, {args.connections} connections, GET /health, {args.seconds} s, median of {args.rounds} alternating rounds\n",
             "| tool | requests/s | load-gen ÷ tool |", "|---|---:|---:|"]
    ours = statistics.median(results["load-gen"])
    for name, runs in results.items():
        rps = statistics.median(runs)
        lines.append(f"| {name} | {rps:.0f} | {ours / rps:.2f}x |")
    return lines


def accuracy(url: str, mix: str) -> list[str]:
    lines = ["\nOpen model: achieved vs target rate (5 s each)\n", "| target /s | achieved /s | ratio | dropped | late | p99 ms | rate met |", "|---:|---:|---:|---:|---:|---:|---|"]
    for rate in [1000, 2500, 5000, 10000, 20000, 40000]:
        r = load_gen_json(["run", "--target", url.rsplit("/", 1)[0], "--rate", str(rate), "--duration", "5s", "--mix", mix])
        lines.append(f"| {rate} | {r['achieved_rate_per_second']:.0f} | {r['achieved_rate_per_second'] / rate:.3f} | {r['dropped']} | {r['late']} | {r['latency_ms']['p99']:.2f} | {r['rate_met']} |")
        print(lines[-1], file=sys.stderr)
        if not r["rate_met"]:
            break
    return lines


class StallServer:
    """Answers 200 at once, except that requests arriving in [stall_from, stall_to) seconds after
    the first request wait until stall_to: a 1 s pause, like a GC or a lock."""

    def __init__(self, stall_from: float, stall_to: float):
        self.port = free_port()
        self.window = (stall_from, stall_to)
        self.first = None
        threading.Thread(target=lambda: asyncio.run(self.serve()), daemon=True).start()

    async def serve(self):
        server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        async with server:
            await server.serve_forever()

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                now = time.monotonic()
                self.first = self.first or now
                at = now - self.first
                if self.window[0] <= at < self.window[1]:
                    await asyncio.sleep(self.window[1] - at)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def reset(self):
        self.first = None


def stall(oha_bin: str | None) -> list[str]:
    lines = ["\nStall: the server pauses 1 s (from 2 s to 3 s) during a 6 s run, 2 connections\n",
             "| measured by | p99 ms | max ms |", "|---|---:|---:|"]
    server = StallServer(2.0, 3.0)
    url = f"http://127.0.0.1:{server.port}"
    wait_ready(url + "/")
    server.reset()
    r = load_gen_json(["run", "--target", url, "--rate", "200", "--duration", "6s", "--connections", "2"])
    lines.append(f"| load-gen open model, from intended send (corrected) | {r['latency_ms']['p99']:.1f} | {r['latency_ms']['max']:.1f} |")
    lines.append(f"| load-gen open model, from actual send (uncorrected) | {r['service_time_ms']['p99']:.1f} | {r['service_time_ms']['max']:.1f} |")
    server.reset()
    rps, p99 = wrk(url + "/", 2, 6)
    lines.append(f"| wrk, closed loop | {p99:.1f} | — |")
    if oha_bin:
        server.reset()
        _, p99 = oha(oha_bin, url + "/", 2, 6)
        lines.append(f"| oha, closed loop | {p99:.1f} | — |")
    return lines


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory(url: str, mix: str, long_seconds: int) -> list[str]:
    proc = subprocess.Popen([LOAD_GEN, "run", "--target", url.rsplit("/", 1)[0], "--rate", "2000", "--duration", f"{long_seconds + 2}s",
                             "--mix", mix, "--quiet", "--output", "json"], stdout=subprocess.PIPE, text=True)
    time.sleep(10)
    at_10 = rss_mib(proc.pid)
    time.sleep(long_seconds - 10)
    at_end = rss_mib(proc.pid)
    proc.communicate(timeout=60)
    return [f"\nMemory at 2000 req/s: RSS {at_10:.1f} MiB after 10 s, {at_end:.1f} MiB after {long_seconds} s ({at_end / at_10:.2f}x)"]


def cpu_seconds_of(argv: list[str], env: dict) -> tuple[float, dict]:
    """Runs argv to completion; (its user + system CPU seconds, its JSON report)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime, json.loads(out)


def client_spans(url: str, mix: str, rounds: int, seconds: int) -> list[str]:
    """CPU per request of load-gen with spans exported vs not (same binary, same rate)."""
    sink = subprocess.Popen([str(ROOT / ".venv/bin/python"), str(ROOT / "scripts/otlp_sink.py"), "--discard"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    grpc_port = json.loads(sink.stdout.readline())["grpc_port"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    modes = {"spans off": {**base, "OTEL_TRACES_EXPORTER": "none"},
             "spans on": {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_port}"}}
    rate = 3000
    per_request = {mode: [] for mode in modes}
    try:
        for round_number in range(1, rounds + 1):
            for mode, env in modes.items():
                cpu, report = cpu_seconds_of([str(LOAD_GEN), "run", "--target", url.rsplit("/", 1)[0], "--rate", str(rate),
                                              "--duration", f"{seconds}s", "--mix", mix, "--output", "json", "--quiet"], env)
                per_request[mode].append(cpu / report["total_requests"] * 1e6)
                print(f"round {round_number} {mode:>9}: {per_request[mode][-1]:.2f} us CPU per request", file=sys.stderr)
    finally:
        sink.stdin.close()
        sink.wait(timeout=30)
    off, on = (statistics.median(per_request[m]) for m in modes)
    return [f"\nClient spans: load-gen CPU per request at {rate} req/s, {seconds} s, median of {rounds} alternating rounds\n",
            "| load-gen | CPU per request | ÷ spans off |", "|---|---:|---:|",
            f"| spans off (`OTEL_TRACES_EXPORTER=none`) | {off:.2f} µs | 1.00x |",
            f"| spans on (OTLP gRPC to a real receiver) | {on:.2f} µs | {on / off:.2f}x |",
            f"\nA client span costs {on - off:.2f} µs of load-gen CPU per request."]


def callgrind(port: int, requests: str) -> list[str]:
    """load-gen's instructions per request: client span exported, not sampled, none."""
    small, large = (int(n) for n in requests.split(","))
    work = Path(tempfile.mkdtemp(prefix="callgrind-load-gen-"))
    results = {}
    with callgrind_cost.OtlpReceiver() as receiver:
        exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **callgrind_cost.BATCH_ENV}
        modes = {
            "no client span (traceparent only)": ({"OTEL_TRACES_EXPORTER": "none"}, []),
            "client span, not sampled": (exporting, ["--trace-sampled", "false"]),
            "client span exported": (exporting, []),
        }
        for name, (env, extra) in modes.items():
            results[name] = callgrind_cost.measure(
                name, lambda n, f, env=env, extra=extra: callgrind_cost.load_gen_run(LOAD_GEN, port, env, extra, n, f),
                (small, large), work)
            print(f"{name:>36}: {results[name].per_request:9.0f} instructions per request", file=sys.stderr)
    base = results["no client span (traceparent only)"].per_request
    lines = [f"load-gen, instructions per request (callgrind; {large} minus {small} requests, one worker, "
             f"divided by {large - small}); target GET /health\n",
             "| load-gen | instructions per request | added by the client span |", "|---|---:|---:|"]
    lines += [f"| {name} | {m.per_request:,.0f} | {m.per_request - base:+,.0f} |" for name, m in results.items()]
    lines.append(f"\n(callgrind output files: {work})")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--long-seconds", type=int, default=60)
    parser.add_argument("--only", choices=["spans"], help="run one section only")
    parser.add_argument("--callgrind", action="store_true", help="count load-gen's instructions per request instead")
    parser.add_argument("--requests", default=",".join(map(str, callgrind_cost.DEFAULT_COUNTS)),
                        help="--callgrind: SMALL,LARGE requests of the two runs")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "load-gen", "-p", "sample-app"], cwd=ROOT, check=True)
    oha_bin = shutil.which("oha") or next((str(p) for p in [Path("/tmp/oha/bin/oha")] if p.exists()), None)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAMPLE_APP_", "PYROSCOPE_"))}
    env.update(SAMPLE_APP_LISTEN=f"127.0.0.1:{port}", SAMPLE_APP_TELEMETRY="off")
    app = subprocess.Popen([SAMPLE_APP], env=env, stdout=subprocess.DEVNULL)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write('[[request]]\nname = "health"\npath = "/health"\nweight = 1\n')
        mix = f.name
    try:
        url = f"http://127.0.0.1:{port}/health"
        wait_ready(url)
        if args.callgrind:
            lines = callgrind(port, args.requests)
        elif args.only == "spans":
            lines = client_spans(url, mix, args.rounds, args.seconds)
        else:
            lines = (throughput(args, url, mix, oha_bin) + accuracy(url, mix) + stall(oha_bin)
                     + memory(url, mix, args.long_seconds) + client_spans(url, mix, args.rounds, args.seconds))
    finally:
        app.terminate()
        app.wait(timeout=30)
        os.unlink(mix)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
