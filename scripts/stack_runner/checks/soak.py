"""The soak: the stack's own load-gen plus every fault kind in turn (`scenario fault-tour
--repeat`, a one-off compose container) for a while, and then the proof that nothing was lost:

- no service restarted; the resident memory of each Rust service is flat (its slope is stated);
- every span the programs report exporting (`otel_sdk_exporter_span_exported_total`) arrived at
  Tempo (`tempo_distributor_spans_received_total`), to the span;
- every access line the two services wrote to stdout is in Loki, with its trace id;
- every request load-gen and the scenario sent (their reports) is in the entry service's request
  counter, to the request.

To count exactly, traffic is stopped before the final counts (the scenario by Ctrl-C, load-gen by
`stack.py stop`, which drains what is in flight and prints its last report): so this is the last
check of a run. The scenario's own spans are not exported (`-e OTEL_TRACES_EXPORTER=none`): a
one-off container has no /metrics to report them on.
"""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import time

from .backends import Loki
from .base import CheckFailed, Stack, cancelled_in, exported_spans, get_json, http, reports_in
from .one_off import STOP_BOUND

RUST_SERVICES = ("sample-app", "sample-app-downstream", "load-gen")
SAMPLE_EVERY = 10.0
FLATNESS_AFTER = 300.0    # seconds of soak before a slope means anything
OPERATIONAL = {"/health", "/ready", "/metrics", "/debug/pprof/profile", "/debug/pprof/heap", "/admin/faults"}


def scrape(url: str) -> list[tuple[str, dict, float]]:
    """(name, labels, value) of a Prometheus or OpenMetrics exposition."""
    out = []
    for line in http(url).decode().splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*?)\})? (\S+)", line)
        if match and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            out.append((match.group(1), labels, float(match.group(3))))
    return out


def total(samples, name: str, **where) -> float:
    return sum(v for n, labels, v in samples if n == name and all(
        (labels.get(k) in w) if isinstance(w, (set, tuple)) else labels.get(k) == w for k, w in where.items()))


def rss_mib(stack: Stack, service: str) -> float | None:
    pid = stack.service(service).get("pid")
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope_mib_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB)."""
    n = len(points)
    if n < 3:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (m - mean_m) for t, m in points) / var if var else 0.0


def check(stack: Stack, seconds: float) -> None:
    argv = stack.service("load-gen")["argv"]
    scale = argv[argv.index("--time-scale") + 1] if "--time-scale" in argv else "1"
    print(f"soak: {seconds:.0f} s of the stack's load-gen plus `scenario fault-tour --repeat --time-scale {scale}`")
    command = stack.command("run", "-e", "OTEL_TRACES_EXPORTER=none", "scenario", "fault-tour", "--repeat",
                            "--time-scale", scale, "--quiet", "--output", "json")
    # Its output goes to files, never to a pipe nobody reads while it runs (a full pipe stalls it).
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        scenario = subprocess.Popen(command, stdout=out_file, stderr=err_file, text=True)
        start = time.monotonic()
        memory: dict[str, list[tuple[float, float]]] = {s: [] for s in RUST_SERVICES}
        working = WorkingSets(stack)
        while time.monotonic() - start < seconds and scenario.poll() is None:
            for service in RUST_SERVICES:
                if (mib := rss_mib(stack, service)) is not None:
                    memory[service].append((time.monotonic() - start, mib))
            working.sample()
            time.sleep(SAMPLE_EVERY)
        scenario.send_signal(signal.SIGINT)
        try:
            scenario.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            scenario.kill()
            scenario.wait()
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    stack.ledger.check(scenario.returncode in (0, 130), f"the fault tour ran {err.count('iteration')} iterations "
                                                        f"and stopped within {STOP_BOUND:.0f} s of Ctrl-C "
                                                        f"(exit {scenario.returncode})")
    the_scenario = reports_in(out)
    stack.oneoff_cancelled += cancelled_in(out)
    stop = subprocess.run(stack.command("stop", "load-gen"), capture_output=True, text=True, timeout=60)
    if stop.returncode != 0:
        raise CheckFailed(f"could not stop load-gen: {stop.stderr}")
    time.sleep(8)   # the batch span processors' 5 s schedule, and Alloy's 1 s batches
    restarts(stack)
    working.report()
    flat_memory(stack, memory)
    spans_arrived(stack)
    lines_arrived(stack)
    requests_counted(stack, the_scenario)


def restarts(stack: Stack) -> None:
    stack.refresh()
    one_shots = stack.one_shots()
    for name, service in stack.state["services"].items():
        again = stack.started_again.get(name, 0)     # a check's own stop/start, not a restart
        expected_exits = (1 if name == "load-gen" or name in one_shots else 0) + again
        stack.ledger.check(service["starts"] == 1 + again and len(service["exits"]) == expected_exits
                           and not any(e["oom_killed"] for e in service["exits"]),
                           f"soak: {name} never restarted or was OOM-killed ({service['starts']} start"
                           f"{f', {again} by a check on purpose' if again else ''})")


class WorkingSets:
    """Each service's memory cgroup sampled through the soak: the highest working set (usage less
    inactive page cache, what `docker stats` shows) and the cgroup's own peak with cache, against
    its `mem_limit`. Printed and kept in `memory-peaks.json` beside the state: the measurements
    the limits are set from (docs/architecture.md). A working set above 90 % of a limit leaves no
    headroom and fails; OOM kills fail in `restarts`."""

    def __init__(self, stack: Stack):
        from ..containers import MemoryCgroup
        from ..network import RunIdentity

        self.stack = stack
        self.available = MemoryCgroup.available()
        run = RunIdentity.of(stack.state_dir)
        self.limits = {name: s.mem_limit for name, s in stack.project().services.items() if s.mem_limit}
        self.groups = {name: MemoryCgroup(run.prefix, name, None)
                       for name in self.limits if name in stack.state["services"]}
        self.highest: dict[str, int] = {}

    def sample(self) -> None:
        for name, group in self.groups.items():
            if (now := group.working_set_bytes()) is not None:
                self.highest[name] = max(now, self.highest.get(name, 0))

    def report(self) -> None:
        import json

        if not self.available:
            self.stack.ledger.skip("soak: memory-cgroup peaks", "no cgroup-v1 memory controller here")
            return
        self.sample()
        peaks = {}
        for name, group in sorted(self.groups.items()):
            if name not in self.highest:
                continue
            limit = self.limits[name]
            working, cached = self.highest[name], group.peak_bytes() or 0
            peaks[name] = {"working_set_mib": round(working / 2**20, 1), "with_cache_mib": round(cached / 2**20, 1),
                           "limit_mib": limit // 2**20, "program": self.stack.service(name)["program"]}
            self.stack.ledger.check(working < 0.9 * limit,
                                    f"soak: {name} ({peaks[name]['program']}) working set peaked at "
                                    f"{working / 2**20:.1f} MiB, {working / limit:.0%} of its {limit // 2**20} MiB "
                                    f"limit (< 90 %; {cached / 2**20:.0f} MiB with page cache)")
        (self.stack.state_dir / "memory-peaks.json").write_text(json.dumps(peaks, indent=1) + "\n")


def flat_memory(stack: Stack, memory: dict) -> None:
    """Flat means the slope over the soak's second half stays under 1 MiB/min; a soak shorter
    than FLATNESS_AFTER cannot tell warm-up from growth, so it only bounds the peak."""
    limits = {name: service.mem_limit for name, service in stack.project().services.items()}
    for service, points in memory.items():
        if not points:
            stack.ledger.fail(f"soak: no memory samples of {service}")
            continue
        duration = points[-1][0]
        second_half = [p for p in points if p[0] >= duration / 2]
        slope = slope_mib_per_minute(second_half)
        low, high = min(m for _, m in points), max(m for _, m in points)
        limit = (limits.get(service) or 0) / 2**20
        summary = f"soak: {service} resident memory {low:.1f}–{high:.1f} MiB, slope {slope:+.2f} MiB/min over the second half"
        if duration >= FLATNESS_AFTER:
            stack.ledger.check(slope < 1.0, f"{summary} (flat: < 1 MiB/min)")
        else:
            stack.ledger.check(not limit or high < 0.75 * limit,
                               f"{summary}; peak under 75 % of its {limit:.0f} MiB limit (a {duration:.0f} s soak is too "
                               f"short to judge the slope)")


def spans_arrived(stack: Stack) -> None:
    exported = failed = 0.0
    for service in ("sample-app", "sample-app-downstream"):
        samples = scrape(f"{stack.url(service, 8080)}/metrics")
        exported += total(samples, "otel_sdk_exporter_span_exported_total", error_type="")
        failed += sum(v for n, l, v in samples if n == "otel_sdk_exporter_span_exported_total" and l.get("error_type"))
    log = "".join(stack.log_lines("load-gen"))
    loadgen = exported_spans(log)
    loadgen_failed = sum(int(m) for m in re.findall(r"client spans exported, (\d+) failed", log))
    received = total(scrape(f"{stack.url('tempo', 3200)}/metrics"), "tempo_distributor_spans_received_total")
    stack.ledger.check(failed == 0 and loadgen_failed == 0,
                       f"soak: no span export failed (services {failed:.0f}, load-gen {loadgen_failed})")
    reported = exported + loadgen + stack.oneoff_spans
    stack.ledger.check(received == reported,
                       f"soak: Tempo received {received:.0f} spans, exactly what the programs report exporting "
                       f"({exported:.0f} by the services, {loadgen} by load-gen, {stack.oneoff_spans} by one-off "
                       f"scenarios)")


def lines_arrived(stack: Stack) -> None:
    for service in ("sample-app", "sample-app-downstream"):
        written = [r for r in stack.json_log(service) if r.get("target") == "access"]
        with_ids = sum(1 for r in written if r.get("trace_id"))
        if stack.real("loki"):
            loki = Loki(stack.url("loki", 3100))
            window = int(time.time() - stack.state["started"]) + 60
            query = f'sum(count_over_time({{service_name="{service}"}} |= "request completed" | trace_id!="" [{window}s]))'
            result = get_json(f"{loki.url}/loki/api/v1/query", query=query)["data"]["result"]
            arrived = int(float(result[0]["value"][1])) if result else 0
        else:
            entries = get_json(f"{stack.url('loki', 3100)}/stand-in/entries", service_name=service)
            arrived = sum(1 for e in entries if "request completed" in e["line"] and e["metadata"].get("trace_id"))
        stack.ledger.check(arrived == len(written) == with_ids,
                           f"soak: {service} wrote {len(written)} access lines; Loki holds {arrived} with their trace id")


def requests_counted(stack: Stack, the_scenario: list[dict[str, int]]) -> None:
    served = scrape(f"{stack.url('sample-app', 8080)}/metrics")
    counted = sum(v for n, l, v in served if n == "http_server_request_duration_seconds_count"
                  and l.get("http_route") not in OPERATIONAL)
    log = "".join(stack.log_lines("load-gen"))
    reports = reports_in(log) + the_scenario + stack.oneoff_reports
    sent = sum(sum(r.values()) for r in reports)
    # A stop cancels what is in flight after 0.8 s: the service may or may not have served those.
    cancelled = cancelled_in(log) + stack.oneoff_cancelled
    stack.ledger.check(sent <= counted <= sent + cancelled,
                       f"soak: the entry service counted {counted:.0f} requests; load-gen's and the scenarios' "
                       f"{len(reports)} reports say {sent} were answered and {cancelled} cancelled at a stop")
