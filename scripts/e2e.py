#!/usr/bin/env python3
"""The live end-to-end harness: real Prometheus (Debian's 2.42) with the shipped rule files,
scraping the real entry and downstream sample services under load from load-gen, a real OTLP
receiver (oteltest) for their traces. Everything listens on 127.0.0.1; every wait has a deadline.

It asserts, and exits non-zero naming the first claim that failed:
1. recording rules agree with the traffic load-gen sent (rate within 10 %, counts exact);
2. exemplars are stored, and the trace ids they carry were exported to the OTLP receiver;
3. the `baseline` scenario leaves no alert firing, and the `error-storm` scenario's error fault
   moves the recorded error ratio to the true one (the 503s load-gen saw over everything sent in
   the window) and drives SampleAppHighErrorRatio to pending (load-gen verifies the alert against
   this Prometheus and exits non-zero otherwise).
Short scrape and evaluation intervals (1 s); the rule expressions are the shipped ones.

Usage: scripts/e2e.py   (after `cargo build -p sample-app -p load-gen`)
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from ports import free_port  # noqa: E402
BIN = ROOT / "target" / "debug"
PYTHON = ROOT / ".venv" / "bin" / "python"
# Every route the known-traffic mix sends to; both are SLI routes.
MIX = """
[[request]]
name = "create order"
method = "POST"
path = "/api/orders"
weight = 1
body = '{"item": "{{pick widget,gadget}}", "quantity": {{int 1 5}}}'
headers = { content-type = "application/json" }

[[request]]
name = "read order"
path = "/api/orders/{{int 1 40}}"
weight = 1
"""
RATE, DURATION = 40, 40


class Failed(Exception):
    pass


def check(condition: bool, claim: str) -> None:
    if not condition:
        raise Failed(claim)
    print(f"  ok  {claim}")


def wait_for(what: str, probe, timeout: float = 60.0, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
            if value:
                return value
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


class Stack:
    """The processes of one run; stopped in reverse order, always."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.spans: list[dict] = []

    def start(self, name: str, argv: list, env: dict | None = None, **kwargs) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAMPLE_APP_", "PYROSCOPE_", "LOADGEN_"))}
        full_env.update(env or {})
        proc = subprocess.Popen([str(a) for a in argv], env=full_env, stdout=kwargs.pop("stdout", log), stderr=log, **kwargs)
        self.processes.append((name, proc))
        return proc

    def stop(self) -> None:
        for name, proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def start_otlp_sink(self) -> int:
        sink = self.start("otlp-sink", [PYTHON, ROOT / "scripts/otlp_sink.py"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ports = json.loads(sink.stdout.readline())

        def collect():
            for line in sink.stdout:
                self.spans.append(json.loads(line))

        threading.Thread(target=collect, daemon=True).start()
        return ports["grpc_port"]

    def start_app(self, name: str, port: int, otlp_port: int, extra: dict) -> str:
        env = {
            "SAMPLE_APP_LISTEN": f"127.0.0.1:{port}",
            "SAMPLE_APP_FAULTS_ENABLED": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
            **extra,
        }
        self.start(name, [BIN / "sample-app"], env)
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{name} to be healthy", lambda: http_get(url + "/health"))
        return url


def prometheus_config(entry: int, downstream: int, loadgen: int) -> str:
    rules = sorted(str(p) for p in (ROOT / "prometheus/rules").glob("*.yml"))
    return json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rules,
        "scrape_configs": [
            {"job_name": "sample-app", "static_configs": [
                {"targets": [f"127.0.0.1:{entry}"], "labels": {"service": "sample-app"}},
                {"targets": [f"127.0.0.1:{downstream}"], "labels": {"service": "sample-app-downstream"}},
            ]},
            {"job_name": "load-gen", "static_configs": [{"targets": [f"127.0.0.1:{loadgen}"]}]},
            {"job_name": "prometheus", "static_configs": [{"targets": ["localhost:PROMETHEUS_PORT"]}]},
        ],
    }, indent=2)


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        body = json.loads(http_get(f"{self.url}/api/v1/{path}?{query}"))
        if body.get("status") != "success":
            raise Failed(f"Prometheus {path} answered {body}")
        return body["data"]

    def value(self, expr: str, at: float | None = None) -> float | None:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at else {})}
        result = self.api("query", **params)["result"]
        return float(result[0]["value"][1]) if result else None


def load_gen(stack: Stack, args: list, name: str) -> subprocess.CompletedProcess:
    print(f"  ..  load-gen {' '.join(map(str, args))}")
    result = subprocess.run([str(BIN / "load-gen"), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    (stack.workdir / f"{name}.out").write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    return result


def known_traffic(stack: Stack, prom: Prometheus, entry: str, mix: Path, loadgen_metrics: int) -> tuple[float, int]:
    print(f"phase 1: {RATE} req/s of known traffic for {DURATION} s")
    result = load_gen(stack, ["run", "--target", entry, "--rate", RATE, "--duration", f"{DURATION}s", "--mix", mix,
                              "--quiet", "--output", "json", "--metrics-listen", f"127.0.0.1:{loadgen_metrics}"], "known-traffic")
    check(result.returncode == 0, f"load-gen ran the known traffic (exit {result.returncode})")
    report = json.loads(result.stdout)
    ended = time.time()
    # Every due request sent and answered (lateness on a shared CI machine is reported, not judged).
    check(report["dropped"] == 0 and sum(report["errors_by_kind"].values()) == 0,
          f"load-gen sent every request without transport errors ({report['late']} of {report['sent']} left over 10 ms late)")
    sent = report["total_requests"]

    # A rate over [5m] is the 5-minute average: read 2 s after the traffic stopped, every request
    # is inside the window, so the rule must equal requests sent / 300 s (not the 40/s peak: a
    # younger series is averaged over the whole window, which is what rate() means).
    at = ended + 2
    time.sleep(max(0.0, at + 1 - time.time()))
    average = sent / 300
    rate = wait_for("service:http_server_requests:rate5m", lambda: prom.value('service:http_server_requests:rate5m{service="sample-app"}', at))
    check(abs(rate - average) <= 0.10 * average, f"service:http_server_requests:rate5m = {rate:.3f}/s, within 10 % of the {average:.3f}/s 5-minute average sent")
    calls = prom.value('service_server:http_client_requests:rate5m{service="sample-app"}', at) or 0
    check(abs(calls / rate - 0.5) <= 0.075, f"downstream calls are {calls / rate:.2f} of requests: the mix creates an order (and checks stock) in half of them")
    down = prom.value('service:http_server_requests:rate5m{service="sample-app-downstream"}', at) or 0
    check(abs(down - calls) <= 0.10 * calls, f"the downstream served {down:.3f}/s, the {calls:.3f}/s of calls the entry made")
    ratio = prom.value('service:http_server_error_ratio:ratio_rate5m{service="sample-app"}', at)
    check(ratio == 0, f"no 5xx sent, error ratio {ratio}")
    p99 = prom.value('service:http_server_request_duration_seconds:p99_5m{service="sample-app"}', at)
    check(p99 is not None and 0 < p99 < 1, f"p99 recorded: {p99}")

    # Every request counted, exactly (after one more scrape).
    counted_expr = 'sum(http_server_request_duration_seconds_count{service="sample-app", http_route=~"/api/orders|/api/orders/{id}"})'
    counted = wait_for(f"{sent} requests counted", lambda: (v := prom.value(counted_expr)) == sent and v, timeout=15)
    check(counted == sent, f"the server counted {counted:.0f} requests, load-gen sent {sent}")
    return ended, sent


def exemplars(stack: Stack, prom: Prometheus, until: float) -> None:
    print("exemplars: stored in Prometheus, and their traces exported")
    data = prom.api("query_exemplars", query='http_server_request_duration_seconds_bucket{service="sample-app"}',
                    start=f"{until - DURATION - 30:.3f}", end=f"{until + 5:.3f}")
    trace_ids = {e["labels"]["trace_id"] for series in data for e in series["exemplars"]}
    check(len(trace_ids) >= 10, f"{len(trace_ids)} distinct trace ids in stored exemplars")
    exported = lambda: {s["trace_id"] for s in stack.spans}
    found = wait_for("the exemplars' traces at the OTLP receiver", lambda: len(trace_ids & exported()) == len(trace_ids) or None, timeout=30)
    check(found is True, f"all {len(trace_ids)} exemplar trace ids were exported as spans")


def scenarios(stack: Stack, prom: Prometheus, entry: str, downstream: str, mix: Path, sent_before: int) -> None:
    # The scenarios send the known mix too (both routes are SLI routes), so the true error ratio
    # of the last five minutes can be computed from load-gen's own reports.
    common = ["--target", entry, "--downstream", downstream, "--prometheus", prom.url, "--time-scale", "0.25",
              "--mix", mix, "--quiet", "--output", "json"]
    print("phase 2: the baseline scenario leaves nothing firing")
    result = load_gen(stack, ["scenario", "run", "baseline", *common], "baseline")
    check(result.returncode == 0, f"load-gen verified baseline (exit {result.returncode}): {result.stderr.strip().splitlines()[-1:]}")
    baseline = json.loads(result.stdout)

    print("phase 3: the error-storm scenario trips the error-ratio alert")
    result = load_gen(stack, ["scenario", "run", "error-storm", *common], "error-storm")
    ended = time.time()
    check(result.returncode == 0, f"load-gen verified error-storm (exit {result.returncode}): {result.stderr.strip().splitlines()[-2:]}")
    storm = json.loads(result.stdout)
    # Everything since phase 1 is inside the 5m window: the ratio must be 503s / all requests.
    failed = storm["status_counts"].get("503", 0)
    expected = failed / (sent_before + baseline["total_requests"] + storm["total_requests"])
    recorded = prom.value('service:http_server_error_ratio:ratio_rate5m{service="sample-app"}', ended)
    check(recorded is not None and abs(recorded - expected) <= 0.15 * expected,
          f"the recorded error ratio {recorded:.4f} is within 15 % of the {failed} injected 503s over all requests ({expected:.4f})")
    alerts = [a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == "SampleAppHighErrorRatio"]
    check(bool(alerts), f"SampleAppHighErrorRatio is {alerts[0]['state'] if alerts else 'inactive'} after the storm")


def dashboards_live(stack: Stack, prom: Prometheus, entry: str, mix: Path, loadgen_metrics: int) -> None:
    """Every PromQL panel query returns data against live Prometheus after the load ran, except
    those reading metrics only Tempo's generator or an absent backend produce (a documented list
    derived from prometheus/metric-catalog.yml, not hand-picked)."""
    sys.path.insert(0, str(ROOT / "scripts/checks"))
    import dashboards  # noqa: E402  (the lint's own query list)
    import yaml  # noqa: E402

    print("dashboards: every PromQL panel query returns data from live Prometheus")
    catalog = yaml.safe_load((ROOT / "prometheus/metric-catalog.yml").read_text())
    here = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "prometheus_tsdb_head_series",
            "prometheus_tsdb_head_samples_appended_total", "prometheus_http_requests_total"}
    # Recorded by Tempo's generator, by Loki's ruler from logs, Grafana's or a backend's self-metrics: none runs here.
    elsewhere = set(catalog["tempo_generator"]) | set(catalog["grafana"]) | (set(catalog["backends"]) - here) | dashboards.loki_recorded_metrics()
    # load-gen's own metrics exist only while it runs: keep some load going during the check.
    background = stack.start("dashboard-load", [BIN / "load-gen", "run", "--target", entry, "--rate", "20", "--duration", "60s",
                                                "--mix", mix, "--quiet", "--metrics-listen", f"127.0.0.1:{loadgen_metrics}"])
    wait_for("load-gen's metrics scraped", lambda: prom.value("sum(loadgen_requests_sent_total)"), timeout=30)

    names = {r["metric"]["__name__"] for r in prom.api("query", query='count by (__name__) ({job=~"sample-app|load-gen"})')["result"]}
    for section in ("app", "load_gen"):
        missing = set(catalog[section]) - names
        check(not missing, f"the metric catalog's {section} names are all produced by the running program (missing: {sorted(missing)})")

    checked, skipped = 0, []
    parsed = dashboards.parse_promql([q for _, _, q in dashboards.panel_promql()])
    for (uid, panel, query), result in zip(dashboards.panel_promql(), parsed):
        if set(result["metrics"]) & elsewhere:
            skipped.append(f"{uid}: {panel}")
            continue
        rows = prom.api("query", query=query)["result"]
        check(bool(rows), f"{uid}: '{panel}' returns data")
        checked += 1
    print(f"  ..  {checked} queries returned data; {len(skipped)} need Tempo's generator, Loki's ruler or backend self-metrics: {skipped}")

    print("query catalog: every PromQL entry returns data (except those marked '(needs …)')")
    import catalogs  # noqa: E402
    entries = catalogs.catalog_promql()
    ran = 0
    for where, query, needs in entries:
        if needs:
            continue
        check(bool(prom.api("query", query=query)["result"]), f"{where} returns data")
        ran += 1
    print(f"  ..  {ran} catalog queries returned data; {len(entries) - ran} marked as needing Tempo or a fault")
    background.terminate()


def main() -> int:
    if not shutil.which("prometheus"):
        print("e2e: `prometheus` is not installed (Debian package prometheus; scripts/install-test-tools installs it)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="e2e-"))
    stack = Stack(workdir)
    try:
        otlp = stack.start_otlp_sink()
        ports = {name: free_port() for name in ("entry", "downstream", "prometheus", "loadgen")}
        downstream = stack.start_app("downstream", ports["downstream"], otlp, {"OTEL_SERVICE_NAME": "sample-app-downstream"})
        entry = stack.start_app("entry", ports["entry"], otlp, {"SAMPLE_APP_DOWNSTREAM_URL": downstream})
        config = workdir / "prometheus.yml"
        config.write_text(prometheus_config(ports["entry"], ports["downstream"], ports["loadgen"]).replace("PROMETHEUS_PORT", str(ports["prometheus"])))
        stack.start("prometheus", ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--enable-feature=exemplar-storage"])
        prom = Prometheus(f"http://127.0.0.1:{ports['prometheus']}")
        wait_for("Prometheus to be ready", lambda: http_get(prom.url + "/-/ready"))
        wait_for("both services scraped", lambda: prom.value('count(up{job="sample-app"} == 1)') == 2)
        mix = workdir / "mix.toml"
        mix.write_text(MIX)

        ended, sent = known_traffic(stack, prom, entry, mix, ports["loadgen"])
        exemplars(stack, prom, ended)
        scenarios(stack, prom, entry, downstream, mix, sent)
        dashboards_live(stack, prom, entry, mix, ports["loadgen"])
        print(f"e2e: all claims hold (logs in {workdir})")
        return 0
    except Failed as failure:
        print(f"e2e FAILED: {failure}\n  logs and outputs: {workdir}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
