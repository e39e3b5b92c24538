"""Instructions per request, counted with callgrind: what telemetry costs, independent of how
busy the machine is.

A program runs under `valgrind --tool=callgrind` twice, once serving `small` requests and once
`large`, each from start to a clean exit (SIGTERM; the span exporter's shutdown flush included),
and the difference in instructions divided by `large - small` is the cost of one request:
start-up, shutdown and one-off work cancel. Requests go one after another on one keep-alive
connection, so each run does the same work whatever the machine does meanwhile.

Used by `scripts/bench_sample_app.py --callgrind`, `scripts/bench_load_gen.py --callgrind` and
`scripts/checks/telemetry_budget.py`. Needs valgrind (scripts/install-test-tools installs it)
and, for span export, the .venv (scripts/otlp_sink.py is the OTLP receiver).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from ports import free_port  # noqa: E402
ENDPOINT = "/api/orders/1"
DEFAULT_COUNTS = (200, 1200)
START_DEADLINE_S = 180
RUN_DEADLINE_S = 600
# Spans leave in full batches, as they do under any load above ~100 requests/s: the batch
# processor's 5 s timer would otherwise split the batches by how long valgrind took.
BATCH_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "600000"}


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def release_binary(name: str) -> Path:
    return target_dir() / "release" / name


def build_release(*packages: str) -> None:
    args = ["cargo", "build", "--release", "--locked", "-q"]
    for package in packages:
        args += ["-p", package]
    subprocess.run(args, cwd=ROOT, check=True)


def build_example(package: str, example: str) -> None:
    subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", package, "--example", example],
                   cwd=ROOT, check=True)


class OtlpReceiver:
    """An OTLP/gRPC receiver that decodes and drops spans: scripts/otlp_sink.py --discard
    (`python`, the end-to-end tests' receiver), or crates/otlp-tracing/examples/otlp_sink.rs
    (`rust`, built here; it also counts the spans it decoded, see `spans`)."""

    def __init__(self, kind: str = "python") -> None:
        if kind == "rust":
            build_example("otlp-tracing", "otlp_sink")
            command = [target_dir() / "release/examples/otlp_sink"]
        else:
            try:
                import oteltest  # noqa: F401  (the receiver's library, from scripts/requirements-test.txt)
            except ImportError as e:
                raise RuntimeError("run this with the .venv's python (scripts/install-test-tools creates it)") from e
            command = [sys.executable, ROOT / "scripts/otlp_sink.py", "--discard"]
        self.counts_spans = kind == "rust"
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.process.pid
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the OTLP receiver ({command[-1]}) exited before listening")
        self.grpc_port = json.loads(line)["grpc_port"]
        self.endpoint = f"http://127.0.0.1:{self.grpc_port}"

    def spans(self) -> int | None:
        """Spans decoded so far (None for the Python receiver); fails on a refused export."""
        if not self.counts_spans:
            return None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        counts = json.loads(self.process.stdout.readline())
        if counts["rejected"]:
            raise RuntimeError(f"the OTLP receiver refused {counts['rejected']} export calls")
        return counts["spans"]

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "OtlpReceiver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "PYROSCOPE_", "SAMPLE_APP_", "LOADGEN_", "RUST_LOG", "_RJEM_"))}
    env.update(extra)
    return env


def valgrind_command(out_file: Path) -> list[str]:
    if shutil.which("valgrind") is None:
        raise RuntimeError("valgrind is not installed: run scripts/install-test-tools (apt-get install valgrind)")
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", "--dump-line=no"]


def total_instructions(out_file: Path) -> int:
    """The `totals:` (or `summary:`) line of a callgrind output file."""
    for line in out_file.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"{out_file}: no totals line (did the program exit cleanly?)")


def wait_http(port: int, path: str, process: subprocess.Popen, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the program exited with {process.returncode} before serving {path}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"127.0.0.1:{port}{path} did not answer 200 within {deadline_s} s")


def get_requests(port: int, path: str, count: int, headers: dict[str, str] | None = None) -> None:
    """`count` GETs of `path`, one after another on one keep-alive connection; each must be 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for i in range(count):
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path} #{i + 1} answered {response.status}")
            if response.getheader("connection", "").lower() == "close":
                raise RuntimeError(f"GET {path} #{i + 1}: the server closed the keep-alive connection")
    finally:
        conn.close()


def create_order(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/api/orders", json.dumps({"item": "widget", "quantity": 1}),
                     {"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"POST /api/orders answered {response.status}")
    finally:
        conn.close()


def stop(process: subprocess.Popen, deadline_s: float = 120) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError(f"the program did not exit within {deadline_s} s of SIGTERM")


def sample_app_run(binary: Path, env: dict[str, str], requests: int, out_file: Path,
                   stdout: Path | None = None, headers: dict[str, str] | None = None) -> int:
    """Instructions of one sample-app process serving `requests` GETs of ENDPOINT (after one
    POST that creates the order), each with `headers`; its logs go to `stdout` when given."""
    port = free_port()
    full_env = clean_env({**env, "SAMPLE_APP_LISTEN": f"127.0.0.1:{port}"})
    full_env.setdefault("RUST_LOG", "info")
    log = open(stdout, "w") if stdout else subprocess.DEVNULL
    try:
        app = subprocess.Popen([*valgrind_command(out_file), binary], env=full_env,
                               stdout=log, stderr=subprocess.PIPE, text=True)
    finally:
        if stdout:
            log.close()
    try:
        wait_http(port, "/health", app, START_DEADLINE_S)
        create_order(port)
        get_requests(port, ENDPOINT, requests, headers)
        stop(app)
    except BaseException:
        if app.poll() is None:
            app.kill()
            app.wait()
        raise
    if app.returncode != 0:
        raise RuntimeError(f"sample-app exited with {app.returncode}:\n{app.stderr.read()[-3000:]}")
    return total_instructions(out_file)


def load_gen_run(binary: Path, target_port: int, env: dict[str, str], extra_args: list[str], requests: int,
                 out_file: Path, path: str = "/health") -> int:
    """Instructions of one load-gen process sending `requests` GETs of `path`, one at a time on
    one connection (closed model, one worker)."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as mix:
        mix.write(f'[[request]]\nname = "probe"\npath = "{path}"\nweight = 1\n')
    try:
        args = [binary, "run", "--target", f"http://127.0.0.1:{target_port}", "--concurrency", "1",
                "--connections", "1", "--max-requests", str(requests), "--duration", "30m",
                "--mix", mix.name, "--quiet", "--output", "json", *extra_args]
        result = subprocess.run([*valgrind_command(out_file), *args], env=clean_env(env),
                                capture_output=True, text=True, timeout=RUN_DEADLINE_S)
    finally:
        os.unlink(mix.name)
    if result.returncode != 0:
        raise RuntimeError(f"load-gen exited with {result.returncode}:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout)
    if report.get("total_requests") != requests:
        raise RuntimeError(f"load-gen sent {report.get('total_requests')} requests, not {requests}")
    return total_instructions(out_file)


@dataclass
class Measurement:
    """One configuration: the instruction totals of both runs, and the per-request cost."""
    name: str
    counts: tuple[int, int]
    totals: tuple[int, int]
    out_files: tuple[Path, Path] = field(default=(Path(), Path()))

    @property
    def per_request(self) -> float:
        return (self.totals[1] - self.totals[0]) / (self.counts[1] - self.counts[0])


def measure(name: str, run, counts: tuple[int, int], work_dir: Path, parallel: bool = True) -> Measurement:
    """`run(requests, out_file) -> instructions` for both counts (side by side when `parallel`)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    files = tuple(work_dir / f"callgrind.{slug}.{n}" for n in counts)
    if parallel:
        with ThreadPoolExecutor(2) as pool:
            totals = tuple(pool.map(run, counts, files))
    else:
        totals = tuple(run(n, f) for n, f in zip(counts, files))
    return Measurement(name, counts, totals, files)


def sample_app_configs(otlp_endpoint: str) -> dict[str, dict[str, str]]:
    """The configurations measured, by name. No Pyroscope address: the CPU sampler stays idle
    (its cost is per CPU second, not per request, and valgrind's slowdown would inflate it)."""
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint, "OTEL_TRACES_SAMPLER": "always_on", **BATCH_ENV}
    return {
        "off": {"SAMPLE_APP_TELEMETRY": "off"},
        "all signals": exporting,
        "spans not sampled": {**exporting, "OTEL_TRACES_SAMPLER": "always_off"},
        "spans not exported": {**exporting, "OTEL_TRACES_EXPORTER": "none"},
        "no access log": {**exporting, "RUST_LOG": "info,access=off"},
        "no span labels": {**exporting, "SAMPLE_APP_SPAN_PROFILES": "off"},
        "no heap sampling": {**exporting, "SAMPLE_APP_HEAP_PROFILES": "off"},
        "caller sends traceparent": exporting,
    }


# Request headers of a configuration (none unless named here). A caller that is itself traced
# (load-gen, another service) sends its context, and the server span continues that trace: the
# caller's context is extracted only then. Every request continues the same sampled parent.
CONFIG_HEADERS = {
    "caller sends traceparent": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
}


COST_LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*?)\s*$")
SOURCE_PREFIX = re.compile(r"^(?:\?\?\?|\S+?\.(?:rs|c|cc|h|S|s)):(?!:)")


def function_costs(out_file: Path, inclusive: bool) -> dict[str, int]:
    """Instructions by function, self or inclusive (callgrind_annotate), summed over the source
    files a function's code came from (inlining spreads one function over several)."""
    out = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--auto=no",
                          "--threshold=100", str(out_file)],
                         capture_output=True, text=True, check=True).stdout
    costs: dict[str, int] = {}
    in_table = False
    for line in out.splitlines():
        if line.startswith("Ir") and "file:function" in line:
            in_table = True
            continue
        match = COST_LINE.match(line) if in_table else None
        if match:
            name = re.sub(r"\s*\[[^\]]*\]$", "", match.group(2))  # the object file
            name = SOURCE_PREFIX.sub("", name, count=1)
            costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
    return costs


def per_request_costs(measurement: Measurement, inclusive: bool) -> dict[str, float]:
    """Instructions per request by function: the difference between the two runs' profiles over
    the difference in requests, so start-up does not show."""
    small, large = (function_costs(f, inclusive) for f in measurement.out_files)
    requests = measurement.counts[1] - measurement.counts[0]
    return {name: (cost - small.get(name, 0)) / requests for name, cost in large.items()}


def added_costs(measurement: Measurement, baseline: Measurement, inclusive: bool, top: int = 40,
                width: int = 140) -> list[tuple[str, float]]:
    """The functions whose instructions per request grew most from `baseline` to `measurement`:
    where the telemetry's instructions go."""
    with_it, without = per_request_costs(measurement, inclusive), per_request_costs(baseline, inclusive)
    rows = [(name, cost - without.get(name, 0.0)) for name, cost in with_it.items()]
    rows.sort(key=lambda row: -row[1])
    return [(name if len(name) <= width else name[:width - 1] + "…", cost) for name, cost in rows[:top]]
