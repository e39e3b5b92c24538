#!/usr/bin/env python3
"""Cross-file contracts of the stack: names that several files must agree on (shared/DESIGN.md,
"Contracts"). Each check fails naming the file and the drift. Run by scripts/test.

Checks so far:
- every alert has severity, summary, description, a runbook_url to an existing
  docs/runbooks/<alert>.md, and a dashboard_url;
- every alert a load-gen scenario expects exists in prometheus/rules;
- the SLO objectives in slo.yml are the ones the burn-rate alerts use;
- prometheus/tests/alerts_test.yml is what its generator writes today;
- the stack: every host:port a config points at is a compose service listening there, every
  datasourceUid exists, correlation label names are the ones the app, Alloy and Prometheus
  produce, the app's OTLP and Pyroscope endpoints match the backends' listeners, no removed
  Tempo 3 key, every image pinned, every published port from .env on 127.0.0.1, and the RAM
  budget in docs/setup.md is the sum of the memory limits.
"""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)


def alerts() -> dict:
    rules = {}
    for path in sorted((ROOT / "prometheus/rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rules[rule["alert"]] = (path.name, rule)
    return rules


def check_alert_metadata(rules: dict) -> None:
    for name, (file, rule) in rules.items():
        where = f"prometheus/rules/{file}: {name}"
        if rule.get("labels", {}).get("severity") not in {"critical", "warning", "info"}:
            fail(f"{where}: severity must be critical, warning or info")
        notes = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url", "dashboard_url"):
            if not notes.get(key):
                fail(f"{where}: no {key}")
        if "$value" not in notes.get("summary", "") + notes.get("description", "") and "absent(" not in rule["expr"] and "== 0" not in rule["expr"]:
            fail(f"{where}: summary/description do not show the value")
        runbook = notes.get("runbook_url", "")
        if runbook != f"docs/runbooks/{name}.md":
            fail(f"{where}: runbook_url should be docs/runbooks/{name}.md, is {runbook!r}")
        elif not (ROOT / runbook).is_file():
            fail(f"{where}: runbook {runbook} does not exist")
    for runbook in (ROOT / "docs/runbooks").glob("*.md"):
        if runbook.stem not in rules:
            fail(f"{runbook.relative_to(ROOT)}: no alert of that name")


def check_scenarios(rules: dict) -> None:
    for path in sorted((ROOT / "load-gen/scenarios").glob("*.toml")):
        expected = tomllib.loads(path.read_text()).get("expect", {}).get("alerts", [])
        for alert in expected:
            if alert not in rules:
                fail(f"{path.relative_to(ROOT)}: expects alert {alert!r}, which no rule defines")


def check_slo_objectives(rules: dict) -> None:
    slo = (ROOT / "prometheus/rules/slo.yml").read_text()
    budgets = {"availability": "0.005", "latency": "0.01"}
    for sli, budget in budgets.items():
        if f"/ {budget}" not in slo:
            fail(f"prometheus/rules/slo.yml: the {sli} burn rate is not divided by its budget {budget}")
    for name, (file, rule) in rules.items():
        for sli, budget in budgets.items():
            if f"slo_{sli}" in rule["expr"]:
                for factor in re.findall(r"> ([\d.]+) \* ([\d.]+)", rule["expr"]):
                    if factor[1] != budget:
                        fail(f"prometheus/rules/{file}: {name} multiplies by {factor[1]}, but the {sli} budget is {budget}")


def check_generated_tests() -> None:
    target = ROOT / "prometheus/tests/alerts_test.yml"
    before = target.read_text()
    subprocess.run([sys.executable, str(ROOT / "prometheus/tests/tools/gen_alerts_test.py")], check=True, capture_output=True)
    if target.read_text() != before:
        target.write_text(before)
        fail("prometheus/tests/alerts_test.yml is stale: run prometheus/tests/tools/gen_alerts_test.py and commit it")


# What each compose service listens on, read from the configs themselves where they say it.
def listeners(compose: dict) -> dict[str, set[int]]:
    tempo = yaml.safe_load((ROOT / "tempo/tempo.yaml").read_text())
    loki = yaml.safe_load((ROOT / "loki/loki.yaml").read_text())
    ports = {
        "prometheus": {9090},
        "alertmanager": {9093},
        "grafana": {3000},
        "pyroscope": {4040},
        "loki": {loki["server"]["http_listen_port"]},
        "tempo": {tempo["server"]["http_listen_port"]}
        | {int(p["endpoint"].rsplit(":", 1)[1]) for p in tempo["distributor"]["receivers"]["otlp"]["protocols"].values()},
    }
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        if "SAMPLE_APP_LISTEN" in env:
            ports[name] = {int(env["SAMPLE_APP_LISTEN"].rsplit(":", 1)[1])}
        command = service.get("command", [])
        for flag in ("--metrics-listen", "--listen", "--server.http.listen-addr"):
            for i, arg in enumerate(command):
                value = command[i + 1] if arg == flag and i + 1 < len(command) else (arg.split("=", 1)[1] if arg.startswith(flag + "=") else None)
                if value:
                    ports.setdefault(name, set()).add(int(value.rsplit(":", 1)[1]))
    return ports


def referenced_addresses() -> list[tuple[str, str, int]]:
    """(file, host, port) of every http://host:port and host:port target in the stack's configs."""
    found = []
    files = ["docker-compose.yml", "prometheus/prometheus.yml", "alertmanager/alertmanager.yml", "tempo/tempo.yaml",
             "alloy/config.alloy", "grafana/provisioning/datasources/datasources.yaml"]
    for file in files:
        text = "\n".join(l for l in (ROOT / file).read_text().splitlines() if not l.lstrip().startswith(("#", "//")))
        for host, port in re.findall(r"https?://([a-z][a-z0-9-]*):(\d+)", text):
            found.append((file, host, int(port)))
        for host, port in re.findall(r'"([a-z][a-z0-9-]*):(\d+)"', text):
            found.append((file, host, int(port)))
    return found


def check_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = dict(l.split("=", 1) for l in (ROOT / ".env").read_text().splitlines() if l and not l.startswith("#"))
    services = compose["services"]
    ports = listeners(compose)
    for file, host, port in referenced_addresses():
        if host in ("localhost", "127") or (file == "prometheus/prometheus.yml" and host == "localhost"):
            continue
        if host not in services:
            fail(f"{file}: points at {host}:{port}, but no compose service is called {host}")
        elif port not in ports.get(host, set()):
            fail(f"{file}: points at {host}:{port}, but {host} listens on {sorted(ports.get(host, set()))}")

    # Images pinned through .env, published ports from .env on 127.0.0.1.
    for name, service in services.items():
        image = service.get("image", "")
        var = re.fullmatch(r"\$\{(\w+)\}", image)
        if not var or var.group(1) not in env:
            fail(f"docker-compose.yml: {name}'s image {image!r} is not a variable from .env")
        elif env[var.group(1)].endswith(":latest") or ":" not in env[var.group(1)]:
            fail(f".env: {var.group(1)}={env[var.group(1)]} is not pinned to a tag")
        for mapping in service.get("ports", []):
            m = re.fullmatch(r"127\.0\.0\.1:\$\{(\w+)\}:\d+", mapping)
            if not m or m.group(1) not in env:
                fail(f"docker-compose.yml: {name} publishes {mapping!r}: use 127.0.0.1:${{VAR}} with VAR in .env")
        if "healthcheck" not in service:
            fail(f"docker-compose.yml: {name} has no healthcheck")
        if "mem_limit" not in service:
            fail(f"docker-compose.yml: {name} has no memory limit")
    expected_images = {"GRAFANA_IMAGE": "grafana/grafana:13.2.0", "PROMETHEUS_IMAGE": "prom/prometheus:v3.14.0",
                       "ALERTMANAGER_IMAGE": "prom/alertmanager:v0.34.0", "LOKI_IMAGE": "grafana/loki:3.7.6",
                       "TEMPO_IMAGE": "grafana/tempo:3.0.3", "PYROSCOPE_IMAGE": "grafana/pyroscope:2.2.1",
                       "ALLOY_IMAGE": "grafana/alloy:v1.18.1"}
    for var, image in expected_images.items():
        if env.get(var) != image:
            fail(f".env: {var} is {env.get(var)!r}; shared/DESIGN.md pins {image}")
    mib = {"k": 1 / 1024, "m": 1, "g": 1024}
    total = sum(int(s["mem_limit"][:-1]) * mib[s["mem_limit"][-1].lower()] for s in services.values() if "mem_limit" in s)
    setup = (ROOT / "docs/setup.md").read_text() if (ROOT / "docs/setup.md").exists() else ""
    if f"{total:.0f} MiB" not in setup or f"{total:.0f} MiB" not in (ROOT / "docker-compose.yml").read_text():
        fail(f"the memory limits add up to {total:.0f} MiB: docs/setup.md and docker-compose.yml must say so")

    # The app's telemetry endpoints are the backends' listeners, with the right protocol.
    for name in ("sample-app", "sample-app-downstream"):
        e = services[name]["environment"]
        if e.get("OTEL_EXPORTER_OTLP_PROTOCOL") != "grpc" or not e.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").endswith(":4317"):
            fail(f"docker-compose.yml: {name} must send OTLP over grpc to Tempo's 4317 receiver")
        if e.get("OTEL_SERVICE_NAME") != name:
            fail(f"docker-compose.yml: {name}'s OTEL_SERVICE_NAME must equal its compose name (Alloy's service_name)")

    # Datasource UIDs and correlation labels.
    datasources = yaml.safe_load((ROOT / "grafana/provisioning/datasources/datasources.yaml").read_text())["datasources"]
    uids = {d["uid"] for d in datasources}
    if uids != {"prometheus", "loki", "tempo", "pyroscope", "alertmanager"}:
        fail(f"datasources: the UIDs are {sorted(uids)}, the contract is prometheus, loki, tempo, pyroscope, alertmanager")
    text = (ROOT / "grafana/provisioning/datasources/datasources.yaml").read_text()
    for uid in re.findall(r"datasourceUid: (\S+)", text):
        if uid not in uids:
            fail(f"datasources: datasourceUid {uid} does not exist")
    tempo_ds = next(d for d in datasources if d["uid"] == "tempo")["jsonData"]
    label_of = lambda block: {t["key"]: t["value"] for t in tempo_ds[block]["tags"]}
    if label_of("tracesToLogsV2").get("service.name") != "service_name":
        fail("datasources: traces → logs must map service.name to Loki's service_name (set by Alloy)")
    if label_of("tracesToMetrics").get("service.name") != "service":
        fail("datasources: traces → metrics must map service.name to Prometheus' service label")
    if label_of("tracesToProfiles").get("service.name") != "service_name":
        fail("datasources: traces → profiles must map service.name to Pyroscope's service_name")
    if tempo_ds["tracesToProfiles"]["profileTypeId"] != "process_cpu:cpu:nanoseconds:cpu:nanoseconds":
        fail("datasources: traces → profiles must use the CPU profile type the app pushes")
    prom_ds = next(d for d in datasources if d["uid"] == "prometheus")["jsonData"]
    if {d["name"] for d in prom_ds["exemplarTraceIdDestinations"]} != {"trace_id", "traceID"}:
        fail("datasources: exemplars must link both trace_id (the app) and traceID (Tempo span metrics)")
    if 'target_label  = "service_name"' not in (ROOT / "alloy/config.alloy").read_text():
        fail("alloy/config.alloy: must set the service_name label")
    if "structured_metadata" not in (ROOT / "alloy/config.alloy").read_text() or re.search(r"stage\.labels\s*\{[^}]*trace_id", (ROOT / "alloy/config.alloy").read_text()):
        fail("alloy/config.alloy: trace_id/span_id must be structured metadata, never labels")
    if "service_name={service_name}" not in (ROOT / "sample-app/src/telemetry/pyroscope.rs").read_text():
        fail("sample-app pyroscope.rs: profiles must carry the service_name label")
    prom = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    app_job = next(j for j in prom["scrape_configs"] if j["job_name"] == "sample-app")
    scraped = {c["labels"]["service"] for c in app_job["static_configs"]}
    if scraped != {"sample-app", "sample-app-downstream"}:
        fail(f"prometheus.yml: the sample-app job must label both services, labels {sorted(scraped)}")

    # Tempo 3 refuses the Tempo 2 keys most public configs still carry.
    tempo_text = (ROOT / "tempo/tempo.yaml").read_text()
    tempo = yaml.safe_load(tempo_text)
    for key in ("ingester", "compactor", "ingester_client", "metrics_generator_client"):
        if key in tempo:
            fail(f"tempo/tempo.yaml: `{key}` was removed in Tempo 3")
    if "metrics_generator_processors" in tempo.get("overrides", {}) or "local_blocks" in tempo_text or "traces_storage" in tempo_text:
        fail("tempo/tempo.yaml: flat metrics_generator_processors, local-blocks and traces_storage are gone in Tempo 3")
    if tempo.get("overrides", {}).get("defaults", {}).get("metrics_generator", {}).get("processors") != ["service-graphs", "span-metrics"]:
        fail("tempo/tempo.yaml: overrides.defaults.metrics_generator.processors must enable service-graphs and span-metrics")
    for proto in tempo["distributor"]["receivers"]["otlp"]["protocols"].values():
        if not proto["endpoint"].startswith("0.0.0.0:"):
            fail("tempo/tempo.yaml: OTLP receivers must bind 0.0.0.0 (they default to localhost)")


def main() -> int:
    rules = alerts()
    check_alert_metadata(rules)
    check_scenarios(rules)
    check_slo_objectives(rules)
    check_generated_tests()
    check_stack()
    for f in failures:
        print(f"contract broken: {f}", file=sys.stderr)
    print(f"contracts: {len(rules)} alerts checked, {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
