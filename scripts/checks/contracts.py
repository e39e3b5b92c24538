#!/usr/bin/env python3
"""Cross-file contracts of the stack: names that several files must agree on. Their single
source is docs/contracts.md (read by contract_doc.py); each check fails naming the file and the
drift. Run by scripts/test.

Checks so far:
- every alert of the three rulers (Prometheus, Loki's ruler, Grafana-managed) has a severity,
  summary, description with its value, a runbook_url to an existing docs/runbooks/<alert>.md,
  and a dashboard_url;
- every alert a load-gen scenario expects exists in Prometheus' or Loki's rules (load-gen
  watches those two, and Alertmanager);
- a memory-leak scenario's cap plus the headroom in docs/contracts.md fits its container's limit;
- the SLO objectives in slo.yml are the ones the burn-rate alerts use;
- prometheus/tests/alerts_test.yml is what its generator writes today;
- the stack against docs/contracts.md: ports (container, host, .env, published on 127.0.0.1
  only) and every host:port a config points at; pinned images; service identity (compose
  name = OTEL_SERVICE_NAME = Prometheus `service` = Loki/Pyroscope `service_name`); the names
  the code writes (metric and exemplar labels, log fields, profile labels) and the labels and
  structured metadata Alloy makes of them; datasource UIDs, names and every correlation's
  mapping; every tempo.yaml key one Tempo 3.0.3 has and uses (tempo/config-keys.lock.yaml);
  Prometheus' retention set once, by the deprecated flag only while the tests' promtool refuses
  the config key; the RAM budget in docs/setup.md is the sum of the limits;
  every service carries the stack label Alloy filters on; usage reporting is off everywhere;
  the three waits of Loki's /ready are short.
"""

import math
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contract_doc as contract  # noqa: E402  (docs/contracts.md, the names every file agrees on)

ROOT = Path(__file__).resolve().parents[2]
failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)


def alerts() -> dict:
    """Every alert of the three rulers: Prometheus (prometheus/rules), Loki's ruler
    (loki/rules/<tenant>) and Grafana (grafana/provisioning/alerting, by title), as
    name → (file, rule) with the rule's query text under `expr`."""
    rules = {}
    files = [*sorted((ROOT / "prometheus/rules").glob("*.yml")), *sorted((ROOT / "loki/rules").glob("*/*.yaml"))]
    for path in files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rules[rule["alert"]] = (str(path.relative_to(ROOT)), rule)
    for path in sorted((ROOT / "grafana/provisioning/alerting").glob("*.yaml")):
        for group in yaml.safe_load(path.read_text()).get("groups") or []:
            for rule in group["rules"]:
                queries = " ".join(str(q["model"].get("expr") or q["model"].get("query") or q["model"].get("expression", ""))
                                   for q in rule["data"])
                rules[rule["title"]] = (str(path.relative_to(ROOT)), {**rule, "expr": queries})
    return rules


def check_alert_metadata(rules: dict) -> None:
    severities = set(contract.values()["alerting"]["severities"])
    for name, (file, rule) in rules.items():
        where = f"{file}: {name}"
        if (rule.get("labels") or {}).get("severity") not in severities:
            fail(f"{where}: severity must be one of {sorted(severities)}")
        notes = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url", "dashboard_url"):
            if not notes.get(key):
                fail(f"{where}: no {key}")
        # Prometheus and Loki template {{ $value }}; Grafana {{ $values.<refId>... }}.
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
            elif rules[alert][0].startswith("grafana/"):
                fail(f"{path.relative_to(ROOT)}: expects {alert!r}, a Grafana-managed alert, which load-gen cannot watch")


def mebibytes(limit: str) -> float:
    return int(limit[:-1]) * {"k": 1 / 1024, "m": 1, "g": 1024}[limit[-1].lower()]


def check_leak_fits() -> None:
    """A memory-leak fault's cap plus what the service needs besides (docs/contracts.md,
    memory_headroom_mib) stays under its container's limit: otherwise the lab's container is
    OOM-killed, with its fault plan, before the leak alert can fire."""
    compose = compose_file()["services"]
    targets = {"entry": "sample-app", "downstream": "sample-app-downstream"}
    headroom = contract.values()["memory_headroom_mib"]
    plan_rs = (ROOT / "sample-app/src/faults/plan.rs").read_text()
    factors = re.search(r"DEFAULT_LEAK_CAP: u64 = ([\d *]+);", plan_rs).group(1).split("*")  # e.g. 256 * 1024 * 1024
    default_cap = math.prod(int(f) for f in factors)
    for path in sorted((ROOT / "load-gen/scenarios").glob("*.toml")):
        for fault in tomllib.loads(path.read_text()).get("fault", []):
            plan = fault.get("plan", {})
            if not plan.get("leak_bytes_per_request"):
                continue
            service = targets[fault["service"]]
            cap = plan.get("leak_cap_bytes", default_cap) / 2**20
            limit = mebibytes(compose[service]["mem_limit"])
            if cap + headroom >= limit:
                fail(f"{path.relative_to(ROOT)}: leaks up to {cap:.0f} MiB into {service}; with {headroom} MiB of headroom "
                     f"that needs more than its mem_limit of {limit:.0f} MiB: it would be OOM-killed before the alert fires")


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
    targets = [ROOT / "prometheus/tests/alerts_test.yml", ROOT / "prometheus/tests/alerts_lab_test.yml"]
    before = {t: t.read_text() if t.exists() else None for t in targets}
    subprocess.run([sys.executable, str(ROOT / "prometheus/tests/tools/gen_alerts_test.py")], check=True, capture_output=True)
    for target, text in before.items():
        if target.read_text() != text:
            if text is None:
                target.unlink()
            else:
                target.write_text(text)
            fail(f"{target.relative_to(ROOT)} is stale: run prometheus/tests/tools/gen_alerts_test.py and commit it")


def env_file() -> dict[str, str]:
    return dict(l.split("=", 1) for l in (ROOT / ".env").read_text().splitlines() if l and not l.startswith("#"))


def compose_file() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def contract_ports() -> dict[str, set[int]]:
    """Container ports per compose service, from docs/contracts.md (## Ports)."""
    ports: dict[str, set[int]] = {}
    for row in contract.table("Ports"):
        ports.setdefault(row["service"], set()).add(int(row["container port"]))
    return ports


def configured_listeners(compose: dict) -> dict[str, set[int]]:
    """What the configs themselves say each service listens on, where they say it."""
    tempo = yaml.safe_load((ROOT / "tempo/tempo.yaml").read_text())
    loki = yaml.safe_load((ROOT / "loki/loki.yaml").read_text())
    ports = {
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
             "alloy/config.alloy", "grafana/provisioning/datasources/datasources.yaml", "loki/loki.yaml",
             *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "grafana/provisioning/alerting").glob("*.yaml")))]
    for file in files:
        text = "\n".join(l for l in (ROOT / file).read_text().splitlines() if not l.lstrip().startswith(("#", "//")))
        for host, port in re.findall(r"https?://([a-z][a-z0-9-]*):(\d+)", text):
            found.append((file, host, int(port)))
        for host, port in re.findall(r'"([a-z][a-z0-9-]*):(\d+)"', text):
            found.append((file, host, int(port)))
    return found


def check_ports(compose: dict, env: dict) -> None:
    """docs/contracts.md ## Ports against the configs, .env and the published ports; every
    host:port a config points at is a compose service listening there."""
    services = compose["services"]
    ports = contract_ports()
    for name, service in services.items():
        if name not in ports and not service.get("profiles") and service.get("restart") != "no":
            fail(f"docker-compose.yml: service {name} is not in docs/contracts.md ## Ports")
    for name in ports:
        if name not in services:
            fail(f"docs/contracts.md ## Ports: {name} is not a compose service")
    for name, configured in configured_listeners(compose).items():
        if not configured <= ports.get(name, set()):
            fail(f"{name} is configured to listen on {sorted(configured)}; docs/contracts.md ## Ports says {sorted(ports.get(name, set()))}")
    for file, host, port in referenced_addresses():
        if host == "localhost":
            continue
        if host not in services:
            fail(f"{file}: points at {host}:{port}, but no compose service is called {host}")
        elif port not in ports.get(host, set()):
            fail(f"{file}: points at {host}:{port}, but {host} listens on {sorted(ports.get(host, set()))}")
    published = {}
    for name, service in services.items():
        for mapping in service.get("ports", []):
            m = re.fullmatch(r"127\.0\.0\.1:\$\{(\w+)\}:(\d+)", mapping)
            if not m or m.group(1) not in env:
                fail(f"docker-compose.yml: {name} publishes {mapping!r}: use 127.0.0.1:${{VAR}}:PORT with VAR in .env")
                continue
            published[(name, int(m.group(2)))] = m.group(1)
    for row in contract.table("Ports"):
        key = (row["service"], int(row["container port"]))
        var = row["host variable"]
        if var == "-":
            if key in published:
                fail(f"docker-compose.yml: {key[0]} publishes {key[1]}, which docs/contracts.md keeps inside the network")
            continue
        if published.get(key) != var:
            fail(f"docker-compose.yml: {key[0]} must publish {key[1]} as 127.0.0.1:${{{var}}}:{key[1]} (docs/contracts.md ## Ports)")
        if env.get(var) != row["host port"]:
            fail(f".env: {var}={env.get(var)}, docs/contracts.md ## Ports says {row['host port']}")


def check_images(compose: dict, env: dict) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        var = re.fullmatch(r"\$\{(\w+)\}", image)
        if not var or var.group(1) not in env:
            fail(f"docker-compose.yml: {name}'s image {image!r} is not a variable from .env")
        elif env[var.group(1)].endswith(":latest") or ":" not in env[var.group(1)]:
            fail(f".env: {var.group(1)}={env[var.group(1)]} is not pinned to a tag")
        # A service in a profile runs on demand (`docker compose run`), a one-shot command with
        # nothing to probe; every server `up` starts needs a healthcheck.
        if "healthcheck" not in service and not service.get("profiles") and service.get("restart") != "no":
            fail(f"docker-compose.yml: {name} has no healthcheck")
        if "mem_limit" not in service:
            fail(f"docker-compose.yml: {name} has no memory limit")
    built_here = contract.values()["built_here"]
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+([\w-]+)", (ROOT / "Dockerfile").read_text(), re.M))
    for name, service in compose["services"].items():
        var = re.fullmatch(r"\$\{(\w+)\}", service.get("image", ""))
        target = built_here.get(var.group(1)) if var else None
        if target is None:
            if "build" in service:
                fail(f"docker-compose.yml: {name} builds an image docs/contracts.md does not list as built here")
            continue
        build = service.get("build", {})
        if build.get("context") != "." or build.get("target") != target:
            fail(f"docker-compose.yml: {name} must build target {target!r} of the root Dockerfile (build: {{context: ., target: {target}}})")
        if target not in stages:
            fail(f"Dockerfile: no stage named {target!r}")
        if service.get("pull_policy", "missing") != "missing":
            fail(f"docker-compose.yml: {name} sets pull_policy {service['pull_policy']!r}: the release workflow publishes its "
                 "image, and with build: and the default policy Compose pulls it and builds only when it cannot")
        if not re.fullmatch(r"ghcr\.io/[a-z0-9-]+/" + re.escape(target) + r":\d+\.\d+\.\d+", env.get(var.group(1), "")):
            fail(f".env: {var.group(1)}={env.get(var.group(1))!r} is not the release workflow's ghcr.io/<owner>/{target}:<version>")
    for row in contract.table("Versions"):
        if env.get(row["variable"]) != row["image"]:
            fail(f".env: {row['variable']} is {env.get(row['variable'])!r}; docs/contracts.md ## Versions pins {row['image']}")


MEMORY_BUDGET_MIB = 3072  # the default services fit a 3 GiB laptop share (docs/setup.md)
GOMEMLIMIT_RATIO = 0.8


def mebibytes_of(limit: str) -> float:
    return int(limit[:-1]) * {"k": 1 / 1024, "m": 1, "g": 1024}[limit[-1].lower()]


def check_memory_budget(compose: dict) -> None:
    """The services `docker compose up` keeps running fit MEMORY_BUDGET_MIB; docs/setup.md and
    the compose header state both sums (running, and with the on-demand containers). Every Go
    backend's garbage collector aims below its limit: GOMEMLIMIT = 0.8 x mem_limit, Tempo's too
    (its automemlimit falls back to the machine's memory where it cannot read the cgroup) — the
    Go runtime otherwise lets the heap double between collections, past a container limit set
    from measured peaks."""
    services = compose["services"]
    running = sum(mebibytes_of(s["mem_limit"]) for s in services.values()
                  if "mem_limit" in s and not s.get("profiles") and s.get("restart") != "no")
    everything = sum(mebibytes_of(s["mem_limit"]) for s in services.values() if "mem_limit" in s)
    if running > MEMORY_BUDGET_MIB:
        fail(f"docker-compose.yml: the running services' memory limits add up to {running:.0f} MiB, "
             f"over the {MEMORY_BUDGET_MIB} MiB budget")
    setup = (ROOT / "docs/setup.md").read_text() if (ROOT / "docs/setup.md").exists() else ""
    header = (ROOT / "docker-compose.yml").read_text()
    for total in (running, everything):
        if f"{total:.0f} MiB" not in setup or f"{total:.0f} MiB" not in header:
            fail(f"the memory limits add up to {total:.0f} MiB ({running:.0f} MiB running, {everything:.0f} MiB with "
                 f"the on-demand and one-shot containers): docs/setup.md and docker-compose.yml must say so")
    for name, service in services.items():
        var = re.fullmatch(r"\$\{(\w+)\}", service.get("image", ""))
        if var and var.group(1) in contract.values()["built_here"]:
            continue  # the Rust programs: no garbage collector
        limit = mebibytes_of(service["mem_limit"])
        environment = service.get("environment") or {}
        want = f"{int(limit * GOMEMLIMIT_RATIO)}MiB"
        if environment.get("GOMEMLIMIT") != want:
            fail(f"docker-compose.yml: {name} has GOMEMLIMIT {environment.get('GOMEMLIMIT')!r}; "
                 f"{GOMEMLIMIT_RATIO} x its mem_limit is {want}")


def check_service_identity(compose: dict) -> None:
    """Each program's OTEL_SERVICE_NAME is its compose name, which Alloy makes service_name and
    Prometheus' scrape config makes `service`."""
    c = contract.values()
    services = compose["services"]
    for name in c["services"]:
        if name not in services:
            fail(f"docs/contracts.md ## Service identity: {name} is not a compose service")
            continue
        e = services[name].get("environment", {})
        if "OTEL_SERVICE_NAME" in e and e["OTEL_SERVICE_NAME"] != name:
            fail(f"docker-compose.yml: {name}'s OTEL_SERVICE_NAME must equal its compose name (Alloy's service_name)")
    for name in ("sample-app", "sample-app-downstream"):
        e = services[name]["environment"]
        if e.get("OTEL_SERVICE_NAME") != name:
            fail(f"docker-compose.yml: {name} must set OTEL_SERVICE_NAME={name}")
        if e.get("OTEL_EXPORTER_OTLP_PROTOCOL") != "grpc" or not e.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").endswith(":4317"):
            fail(f"docker-compose.yml: {name} must send OTLP over grpc to Tempo's 4317 receiver")
        if f"deployment.environment.name={c['deployment_environment']}" not in e.get("OTEL_RESOURCE_ATTRIBUTES", ""):
            fail(f"docker-compose.yml: {name} must say deployment.environment.name={c['deployment_environment']}")
    label = c["service_label"]["prometheus"]
    prom = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    app_job = next(j for j in prom["scrape_configs"] if j["job_name"] == "sample-app")
    scraped = {sc.get("labels", {}).get(label) for sc in app_job["static_configs"]}
    if scraped != {"sample-app", "sample-app-downstream"}:
        fail(f"prometheus.yml: the sample-app job must label both services with `{label}`, labels {sorted(map(str, scraped))}")


def check_app_names() -> None:
    """The names the code writes are the contract's: metric labels, exemplar labels, log
    fields, profile labels; Alloy turns them into the contract's labels and metadata."""
    c = contract.values()
    metrics_rs = (ROOT / "sample-app/src/telemetry/metrics.rs").read_text()
    catalog = yaml.safe_load((ROOT / "prometheus/metric-catalog.yml").read_text())["app"]
    for name, spec in c["metrics"].items():
        series = [name + s for s in ("_bucket", "_count", "_sum")] if spec["type"] == "histogram" else [name]
        for s in series:
            if s not in catalog:
                fail(f"prometheus/metric-catalog.yml: {s} (docs/contracts.md ## Metrics) is not in the app section")
        for label in spec["labels"]:
            if not re.search(rf"\b{label}: String", metrics_rs):
                fail(f"sample-app metrics.rs: no label field {label} (docs/contracts.md ## Metrics, {name})")
    # TraceExemplar writes its labels itself (EncodeLabelSet), as `("label", value)` pairs.
    exemplar_impl = metrics_rs.partition("impl EncodeLabelSet for TraceExemplar")[2].partition("\n}\n")[0]
    for label in c["exemplars"]["labels"]:
        if not re.search(rf'\("{label}", ', exemplar_impl):
            fail(f"sample-app metrics.rs: exemplars must carry {label} (TraceExemplar's EncodeLabelSet)")
    logs_rs = (ROOT / "sample-app/src/telemetry/logs.rs").read_text()
    reserved = re.search(r"const RESERVED: \[&str; \d+\] = \[(.*?)\];", logs_rs, re.S)
    if not reserved or set(re.findall(r'"(\w+)"', reserved.group(1))) != set(c["log_fields"]):
        fail(f"sample-app logs.rs: the fields the layer writes itself differ from docs/contracts.md ## Logs {c['log_fields']}")
    pyroscope_rs = (ROOT / "sample-app/src/telemetry/pyroscope.rs").read_text()
    for label in c["pyroscope"]["labels"]:
        if f"{label}={{" not in pyroscope_rs:
            fail(f"sample-app pyroscope.rs: profiles must carry the {label} label")

    alloy = (ROOT / "alloy/config.alloy").read_text()
    loki = c["loki"]
    targets = set(re.findall(r'target_label\s*=\s*"(\w+)"', alloy))
    if c["service_label"]["loki"] not in targets:
        fail(f"alloy/config.alloy: must set the {c['service_label']['loki']} label")
    block = lambda name: re.search(name + r"\s*\{\s*values\s*=\s*\{([^}]*)\}", alloy)
    labels = block(r"stage\.labels")
    metadata = block(r"stage\.structured_metadata")
    stage_labels = set(re.findall(r"(\w+)\s*=", labels.group(1))) if labels else set()
    stage_metadata = set(re.findall(r"(\w+)\s*=", metadata.group(1))) if metadata else set()
    if not (targets | stage_labels) <= set(loki["labels"]):
        fail(f"alloy/config.alloy: labels {sorted(targets | stage_labels)}, docs/contracts.md allows {loki['labels']}")
    if stage_metadata != set(loki["structured_metadata"]):
        fail(f"alloy/config.alloy: structured metadata must be {loki['structured_metadata']}, is {sorted(stage_metadata)}")
    if stage_labels & set(loki["structured_metadata"]):
        fail("alloy/config.alloy: trace_id/span_id must be structured metadata, never labels")


def check_datasources() -> None:
    """UIDs, names and types are the contract's; every correlation maps the contract's names."""
    c = contract.values()
    path = ROOT / "grafana/provisioning/datasources/datasources.yaml"
    datasources = yaml.safe_load(path.read_text())["datasources"]
    ours = {(d["uid"], d["name"], d["type"]) for d in datasources}
    wanted = {(r["uid"], r["name"], r["type"]) for r in contract.table("Datasources")}
    if ours != wanted:
        fail(f"datasources: (uid, name, type) are {sorted(ours)}, docs/contracts.md ## Datasources says {sorted(wanted)}")
    uids = {d["uid"] for d in datasources}
    for uid in re.findall(r"datasourceUid: (\S+)", path.read_text()):
        if uid not in uids:
            fail(f"datasources: datasourceUid {uid} does not exist")
    by_uid = {d["uid"]: d.get("jsonData", {}) for d in datasources}
    corr = c["correlations"]
    tempo = by_uid["tempo"]
    blocks = {"traces_to_logs": "tracesToLogsV2", "traces_to_metrics": "tracesToMetrics", "traces_to_profiles": "tracesToProfiles"}
    for name, key in blocks.items():
        spec = corr[name]
        block = tempo.get(key, {})
        if block.get("datasourceUid") != spec["to"]:
            fail(f"datasources: tempo {key} must point at {spec['to']}")
        tags = {t["key"]: t["value"] for t in block.get("tags", [])}
        if tags.get(spec["tag"]) != spec["label"]:
            fail(f"datasources: tempo {key} must map {spec['tag']} to {spec['label']} (docs/contracts.md ## Correlations)")
    if tempo["tracesToProfiles"].get("profileTypeId") != c["pyroscope"]["profile_types"][corr["traces_to_profiles"]["profile_type"]]:
        fail("datasources: traces → profiles must use the CPU profile type the app pushes")
    if tempo.get("serviceMap", {}).get("datasourceUid") != corr["service_map"]["to"]:
        fail("datasources: the service map must read from prometheus")
    destinations = by_uid["prometheus"].get("exemplarTraceIdDestinations", [])
    if {d["name"] for d in destinations} != set(corr["metrics_to_traces"]["exemplar_labels"]) or {d["datasourceUid"] for d in destinations} != {corr["metrics_to_traces"]["to"]}:
        fail(f"datasources: exemplars must link {corr['metrics_to_traces']['exemplar_labels']} (the app, Tempo span metrics) to tempo")
    derived = by_uid["loki"].get("derivedFields", [])
    spec = corr["logs_to_traces"]
    if not any(d.get("matcherType") == spec["matcher"] and d.get("matcherRegex") == spec["field"] and d.get("datasourceUid") == spec["to"] for d in derived):
        fail(f"datasources: Loki needs a derived field matching the {spec['field']} {spec['matcher']} (structured metadata) to tempo")


def check_tempo() -> None:
    """Tempo 3.0.3 reads its config strictly (yaml.UnmarshalStrict): every key must be one it
    has (tempo/config-keys.lock.yaml, generated from the pinned source), and none of the keys it
    accepts but never uses (the lock's `unused`, with the source lines that show it); the Tempo 2
    blocks it no longer has stop it at start, and flat overrides are refused unless
    overrides.enable_legacy_overrides is set."""
    tempo = yaml.safe_load((ROOT / "tempo/tempo.yaml").read_text())
    lock = yaml.safe_load((ROOT / "tempo/config-keys.lock.yaml").read_text())
    for problem in tempo_key_problems(tempo, lock["keys"], ""):
        fail(problem)
    for path, spec in lock["unused"].items():
        node = tempo
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            fail(f"tempo/tempo.yaml: `{path}` is accepted but unused by Tempo {lock['source']['tag']}: {spec['why']} "
                 f"({', '.join(spec['evidence'])})")
    for key in ("ingester", "compactor", "ingester_client"):
        if key in tempo:
            fail(f"tempo/tempo.yaml: `{key}` does not exist in Tempo 3: it will not start")
    generator = tempo.get("metrics_generator", {})
    if "local_blocks" in generator.get("processor", {}) or "traces_storage" in generator:
        fail("tempo/tempo.yaml: the local_blocks processor and traces_storage do not exist in Tempo 3: it will not start")
    overrides = tempo.get("overrides", {})
    flat = set(overrides) - {"defaults", "per_tenant_override_config", "per_tenant_override_period", "user_configurable_overrides", "enable_legacy_overrides"}
    if flat:
        fail(f"tempo/tempo.yaml: flat overrides {sorted(flat)}: Tempo 3 refuses them unless enable_legacy_overrides is set; use overrides.defaults")
    if overrides.get("defaults", {}).get("metrics_generator", {}).get("processors") != ["service-graphs", "span-metrics"]:
        fail("tempo/tempo.yaml: overrides.defaults.metrics_generator.processors must enable service-graphs and span-metrics")
    for proto in tempo["distributor"]["receivers"]["otlp"]["protocols"].values():
        if not proto["endpoint"].startswith("0.0.0.0:"):
            fail("tempo/tempo.yaml: OTLP receivers must bind 0.0.0.0 (they default to localhost)")


def check_prometheus_retention(compose: dict) -> None:
    """Prometheus v3.8.0 deprecated --storage.tsdb.retention.time/.size for prometheus.yml's
    storage.tsdb.retention (v3.14.0 cmd/prometheus/main.go:508, :511; config/config.go:1106-1115,
    :1168). Compose keeps the flag because the tests' Prometheus 2.42 refuses that key, and 3.14
    still honours the flag as the default of a file without one (main.go:732-741). Retention in
    both places leaves the flag dead (the file wins); and the day the tests' promtool accepts
    the key, the reason is gone: both fail here."""
    command = [str(a) for a in compose["services"]["prometheus"].get("command", [])]
    flags = [a for a in command if a.startswith("--storage.tsdb.retention")]
    config = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    in_file = ((config.get("storage") or {}).get("tsdb") or {}).get("retention")
    if flags and in_file:
        fail(f"docker-compose.yml prometheus {flags} and prometheus/prometheus.yml storage.tsdb.retention both set "
             "retention: Prometheus 3 takes the file's and ignores the flag")
    if not flags or in_file or not shutil.which("promtool"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "prometheus.yml"
        probe.write_text(yaml.safe_dump({**config, "rule_files": [],
                                         "storage": {"tsdb": {"retention": {"time": "7d"}}}}))
        result = subprocess.run(["promtool", "check", "config", str(probe)], capture_output=True, text=True)
    if result.returncode == 0:
        fail(f"docker-compose.yml prometheus {flags}: deprecated since Prometheus v3.8.0, kept only because promtool "
             "rejected prometheus.yml's storage.tsdb.retention; this promtool accepts it: move retention there")


def tempo_key_problems(node: dict, keys: dict, prefix: str) -> list[str]:
    """Keys of tempo.yaml that Tempo 3.0.3 does not have (it would refuse to start)."""
    found = []
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        spec = keys.get(str(key)) if isinstance(keys, dict) else None
        if spec is None:
            found.append(f"tempo/tempo.yaml: `{path}` is not a Tempo 3.0.3 key (tempo/config-keys.lock.yaml; a key "
                         "the manifest leaves out belongs in OMITTED of tempo/tools/snapshot_keys.py): Tempo will not start")
        elif isinstance(spec, dict) and isinstance(value, dict):
            found += tempo_key_problems(value, spec, path)
    return found


def check_loki_ready() -> None:
    """Loki's /ready waits for the ingester's and the pattern ingester's min_ready_duration
    (15 s each by default) and for the query frontend's first scheduler lookup (10 s): each
    must be short, or every start is ~17 s slower than docs/setup.md says."""
    loki = yaml.safe_load((ROOT / "loki/loki.yaml").read_text())
    waits = {"ingester.lifecycler.min_ready_duration": loki.get("ingester", {}).get("lifecycler", {}).get("min_ready_duration"),
             "frontend.scheduler_dns_lookup_period": loki.get("frontend", {}).get("scheduler_dns_lookup_period")}
    if loki.get("pattern_ingester", {}).get("enabled"):
        waits["pattern_ingester.lifecycler.min_ready_duration"] = loki["pattern_ingester"].get("lifecycler", {}).get("min_ready_duration")
    for key, value in waits.items():
        if not value or not re.fullmatch(r"\d+(ms|s)", str(value)) or (str(value).endswith("s") and not str(value).endswith("ms") and int(str(value)[:-1]) > 2):
            fail(f"loki/loki.yaml: {key} is {value!r}; unset it delays /ready (set at most 2s)")


def check_grafana_access(compose: dict, env: dict) -> None:
    """The workshop path needs no login: every correlation and catalog query opens Explore,
    which Grafana grants to Editors (fixed:datasources:explorer), and to Viewers only with
    viewers_can_edit. Anonymous Admin would let anyone change the data sources; the ports stay
    on 127.0.0.1 (check_ports)."""
    grafana = compose["services"]["grafana"]["environment"]
    resolve = lambda v: env.get(m.group(1), "") if (m := re.fullmatch(r"\$\{(\w+)\}", str(v))) else str(v)
    if resolve(grafana.get("GF_AUTH_ANONYMOUS_ENABLED")).lower() != "true":
        return
    role = resolve(grafana.get("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer"))
    if role == "Admin":
        fail("grafana: anonymous visitors must not be Admin (they could change the data sources)")
    elif role != "Editor" and resolve(grafana.get("GF_USERS_VIEWERS_CAN_EDIT")).lower() != "true":
        fail(f"grafana: anonymous visitors are {role!r} without Explore; the labs open Explore (needs Editor, or viewers_can_edit)")


def check_stack_label(compose: dict) -> None:
    """Alloy ships only containers carrying the stack label, and every service carries it."""
    label = contract.values()["stack_label"]
    for name, service in compose["services"].items():
        if str(service.get("labels", {}).get(label["key"])) != label["value"]:
            fail(f"docker-compose.yml: {name} must carry the label {label['key']}: {label['value']} (Alloy ships only those logs)")
    alloy = (ROOT / "alloy/config.alloy").read_text()
    docker = re.search(r'discovery\.docker\s+"\w+"\s*\{(.*?)\n\}', alloy, re.S)
    wanted = rf'filter\s*\{{\s*name\s*=\s*"label"\s*values\s*=\s*\["{re.escape(label["key"])}={re.escape(label["value"])}"\]\s*\}}'
    if not docker or not re.search(wanted, docker.group(1)):
        fail(f"alloy/config.alloy: discovery.docker must filter on label {label['key']}={label['value']}, or it ships every container on the host")


def yaml_path(file: str, dotted: str):
    node = yaml.safe_load((ROOT / file).read_text())
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def check_usage_reporting(compose: dict) -> None:
    """docs/contracts.md ## Usage reporting: each reporting component has it off, and every
    pinned backend is either in that table or known to report nothing."""
    rows = contract.table("Usage reporting")
    covered = {r["component"] for r in rows} | set(contract.values()["reports_nothing"])
    for row in contract.table("Versions"):
        component = row["variable"].removesuffix("_IMAGE").lower()
        if component not in covered:
            fail(f"docs/contracts.md ## Usage reporting: say whether {component} reports usage, and how it is turned off")
    for row in rows:
        name, file, setting = row["component"], row["file"], row["setting"]
        service = compose["services"].get(name, {})
        if file == "docker-compose.yml" and setting.startswith("--"):
            ok = setting in service.get("command", [])
        elif file == "docker-compose.yml":
            var, value = setting.split("=", 1)
            ok = str(service.get("environment", {}).get(var)) == value
        else:
            key, value = (p.strip() for p in setting.split(":", 1))
            ok = yaml_path(file, key) is yaml.safe_load(value)
        if not ok:
            fail(f"{file}: {name} must turn usage reporting off with `{setting}` (docs/contracts.md ## Usage reporting)")


def check_stands_alone() -> None:
    """The product stands alone: no file points at design notes outside this repository."""
    outside = re.compile("|".join(re.escape(n) for n in ("DESIGN" + ".md", "UPSTREAM" + ".md", "/work/" + "shared", "shared" + "/")))
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for file in files:
        path = ROOT / file
        if not path.is_file() or path.suffix in {".lock", ".png", ".svg"} or "node_modules" in file:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if outside.search(line):
                fail(f"{file}:{n}: refers to notes outside this repository ({outside.search(line).group(0)}); docs/contracts.md is the source")


def check_verify_build_inputs() -> None:
    """`load-gen verify` reads Grafana's provisioning, the rule groups and the query catalogs at
    build time (crates/stack-verify/build.rs): the image build must get every one of them, or
    `docker compose build` fails inside the builder (COPY in the Dockerfile, and allowed by
    .dockerignore, which lets in only what it names)."""
    build_rs = (ROOT / "crates/stack-verify/build.rs").read_text()
    block = re.search(r"for dir in \[(.*?)\]", build_rs, re.S)
    dirs = re.findall(r'"([\w/.-]+)"', block.group(1)) if block else []
    if not dirs:
        fail("crates/stack-verify/build.rs: no `for dir in [...]` list of what it reads")
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for d in dirs:
        if not re.search(rf"^COPY {re.escape(d)} {re.escape(d)}$", dockerfile, re.M):
            fail(f"Dockerfile: the builder must `COPY {d} {d}`: crates/stack-verify/build.rs reads it")
        # Markdown is excluded by `**/*.md`: what verify reads of it must be allowed after that line.
        markdown = f"!{d}" if d.endswith(".md") else f"!{d}/*.md" if d == "queries" else None
        after = ignore[next((i for i, line in enumerate(ignore) if line == "**/*.md"), len(ignore)):]
        if f"!{d}" not in ignore or (markdown and markdown not in after):
            fail(f".dockerignore: must allow `{markdown or '!' + d}` (after `**/*.md` for Markdown): "
                 "crates/stack-verify/build.rs reads it")


def check_stack() -> None:
    compose = compose_file()
    env = env_file()
    check_ports(compose, env)
    check_images(compose, env)
    check_memory_budget(compose)
    check_service_identity(compose)
    check_app_names()
    check_datasources()
    check_tempo()
    check_prometheus_retention(compose)
    check_stack_label(compose)
    check_usage_reporting(compose)
    check_loki_ready()
    check_grafana_access(compose, env)
    check_verify_build_inputs()


def check_label_bounds() -> None:
    """The enumerable label sets of docs/contracts.md are the code's, and the scrape limits are
    prometheus.yml's."""
    import contract_doc

    bounds = contract_doc.values()["label_bounds"]
    method_rs = (ROOT / "sample-app/src/telemetry/http_method.rs").read_text()
    known = re.findall(r'Method::\w+ => "(\w+)"', method_rs) + re.findall(r'pub const OTHER: &str = "(\w+)"', method_rs)
    if sorted(known) != sorted(bounds["http_request_method"]):
        fail(f"docs/contracts.md label_bounds.http_request_method {bounds['http_request_method']} != the code's {known}")
    state_rs = (ROOT / "sample-app/src/faults/state.rs").read_text()
    kinds = re.findall(r'Self::\w+ => "(\w+)"', state_rs)
    if sorted(kinds) != sorted(bounds["fault_kinds"]):
        fail(f"docs/contracts.md label_bounds.fault_kinds {bounds['fault_kinds']} != sample-app's FaultKind {kinds}")
    client_rs = (ROOT / "load-gen/src/client.rs").read_text()
    errors = re.findall(r'Self::\w+ => "(\w+)"', client_rs)
    if sorted(errors) != sorted(bounds["loadgen_error_kinds"]):
        fail(f"docs/contracts.md label_bounds.loadgen_error_kinds != load-gen's ErrorKind {errors}")
    rejection_rs = (ROOT / "sample-app/src/server/rejection.rs").read_text()
    reasons = re.findall(r'Self::\w+ => "(\w+)"', rejection_rs)
    if sorted(reasons) != sorted(bounds["protocol_error_reasons"]):
        fail(f"docs/contracts.md label_bounds.protocol_error_reasons != sample-app's rejection Reason {reasons}")
    templates = (ROOT / "sample-app/src/routes/templates.rs").read_text()
    routes = len(re.findall(r'^\s+"/[^"]*",$', templates, re.M)) + 2   # + /admin/faults, unmatched
    if routes > bounds["max_routes"]:
        fail(f"sample-app has {routes} route label values; docs/contracts.md bounds them at {bounds['max_routes']}")
    prom = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    for job, limits in contract_doc.values()["scrape_limits"].items():
        config = next((j for j in prom["scrape_configs"] if j["job_name"] == job), {})
        for key in ("sample_limit", "label_limit", "label_value_length_limit"):
            if config.get(key) != limits[key]:
                fail(f"prometheus/prometheus.yml: job {job} {key} is {config.get(key)}, docs/contracts.md says {limits[key]}")
        if limits["worst_case_samples"] * 2 > limits["sample_limit"]:
            fail(f"docs/contracts.md: {job}'s sample_limit leaves less than 2x headroom over its worst case")


# Drifts the check must catch: (what, file, text, replacement, what the report must say).
SELF_TESTS = [
    ("storage.trace.wal, which Tempo 3.0.3 accepts and never uses (tempo.yaml before issue 22)", "tempo/tempo.yaml",
     "    backend: local\n    local:\n", "    backend: local\n    wal:\n      path: /var/tempo/wal\n    local:\n",
     "`storage.trace.wal` is accepted but unused"),
    ("metrics_generator_client, kept by Tempo 3 for one release and read by nothing", "tempo/tempo.yaml",
     "\nusage_report:\n", "\nmetrics_generator_client:\n  grpc_client_config: {}\nusage_report:\n",
     "`metrics_generator_client` is accepted but unused"),
    ("retention in prometheus.yml as well as the deprecated flag (2.42's promtool also refuses the file)",
     "prometheus/prometheus.yml", "\nrule_files:\n", "\nstorage:\n  tsdb:\n    retention:\n      time: 7d\n\nrule_files:\n",
     "both set retention"),
    ("a directory verify's build reads, left out of the image build", "Dockerfile",
     "COPY queries queries\n", "", "the builder must `COPY queries queries`"),
    ("a key Tempo 3.0.3 does not have", "tempo/tempo.yaml",
     "  max_concurrent_queries: 4", "  max_concurrent_querys: 4", "`querier.max_concurrent_querys` is not a Tempo 3.0.3 key"),
]


def self_test() -> int:
    """Each drift of SELF_TESTS, applied to the file, must make the check fail and say so."""
    missed = []
    for what, rel, old, new, expect in SELF_TESTS:
        path = ROOT / rel
        original = path.read_text()
        if old not in original:
            missed.append(f"{what}: {rel} no longer contains {old!r}")
            continue
        path.write_text(original.replace(old, new, 1))
        try:
            result = subprocess.run([sys.executable, __file__], capture_output=True, text=True)
        finally:
            path.write_text(original)
        if result.returncode == 0 or expect not in result.stderr:
            missed.append(f"{what} ({rel}): {result.stderr.strip()[:300] or 'passed the check'}")
    for m in missed:
        print(f"contracts self-test: MISSED {m}", file=sys.stderr)
    print(f"contracts self-test: {len(SELF_TESTS) - len(missed)} of {len(SELF_TESTS)} drifts caught")
    return 1 if missed else 0


def main() -> int:
    if "--self-test" in sys.argv[1:]:
        return self_test()
    rules = alerts()
    check_alert_metadata(rules)
    check_scenarios(rules)
    check_leak_fits()
    check_slo_objectives(rules)
    check_generated_tests()
    check_stack()
    check_stands_alone()
    check_label_bounds()
    for f in failures:
        print(f"contract broken: {f}", file=sys.stderr)
    print(f"contracts: {len(rules)} alerts checked, {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
