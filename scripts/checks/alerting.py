#!/usr/bin/env python3
"""The alerting of every ruler, checked without running any of them (run by scripts/test; the
whole-stack run then proves them live: scripts/stack_runner/checks/ruler.py).

Loki's ruler (loki/loki.yaml, loki/rules/):
- every key of loki.yaml is one Loki 3.7.6 accepts: loki/config-keys.lock.yaml, generated from
  the pinned source's configuration reference by loki/tools/snapshot_keys.py (Loki refuses an
  unknown key at start); the remote-write client, Prometheus' own config type, is checked by
  `promtool check config` inside a Prometheus configuration;
- the ruler reads the directory compose mounts read-only, with the tenant `fake` (auth off), and
  writes its WAL and scratch files to the volume; it sends to the stack's Alertmanager and
  remote-writes to a Prometheus that runs with the remote-write receiver;
- every rule parses as LogQL with Grafana's grammar (tools/lezer) and passes the catalog's LogQL
  lint; recorded names follow level:metric:operations; alerts keep a `service` label;
- the names are those of docs/contracts.md (## Alerting).
Grafana-managed alerting (grafana/provisioning/alerting/):
- the stand-in's own validation (scripts/stack_runner/grafana_alerting.py: keys and shapes of
  Grafana 13.2's file format, every data source UID, contact point, template and refId
  resolves) with the environment compose gives Grafana;
- every rule's queries parse with their real grammar (PromQL: promql-parser; LogQL, TraceQL:
  Grafana's lezer grammars) and read only metrics, spans and attributes that exist;
- every rule has the labels the notification policies route on and group by, and reads Tempo's
  series labels without the double quotes Grafana's Tempo data source puts around them; the
  compose environment turns the toggles on in the supported GF_FEATURE_TOGGLES_<name> form; the
  example contact points (Slack, Email, PagerDuty) are reached by no route while .env keeps
  their placeholders;
- Prometheus and Loki keep managing alerts in Grafana's UI (jsonData.manageAlerts not false).
Rule metadata (severity, summary, description with the value, runbook, dashboard) of all three
rulers is checked by contracts.py. `--self-test` applies known drifts to the files, one at a
time, and fails unless the check catches each.
"""

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import contract_doc as contract  # noqa: E402
import dashboards  # noqa: E402  (parsers, the metric catalog, the LogQL and TraceQL lints)
from stack_runner import compose, grafana_alerting  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LOKI_RULES = ROOT / "loki/rules"
ALERTING = ROOT / "grafana/provisioning/alerting"
RECORD_NAME = re.compile(r"[a-z_]+:[a-z_]+:[a-z0-9_]+")
problems: list[str] = []


def fail(message: str) -> None:
    problems.append(message)


def loki_config() -> dict:
    return yaml.safe_load((ROOT / "loki/loki.yaml").read_text())


def key_problems(node, spec: dict, blocks: dict, where: str) -> list[str]:
    """Keys of `node` that the block `spec` of Loki's configuration reference does not have."""
    if not isinstance(node, dict):
        return []
    allowed = {k: v for k, v in spec.items() if k != "<splice>"}
    for name in spec.get("<splice>", []):
        allowed.update(blocks[name])
    found = []
    for key, value in node.items():
        kind = allowed.get(key)
        if kind is None:
            found.append(f"loki/loki.yaml: {where}{key}: Loki 3.7.6 has no such key (loki/config-keys.lock.yaml)")
        elif isinstance(kind, dict) and "block" in kind:
            found += key_problems(value, blocks[kind["block"]], blocks, f"{where}{key}.")
        elif isinstance(kind, dict) and "list" in kind:
            for i, item in enumerate(value or []):
                found += key_problems(item, blocks[kind["list"]], blocks, f"{where}{key}[{i}].")
        elif isinstance(kind, dict) and "map" in kind:
            for name, item in (value or {}).items():
                found += key_problems(item, blocks[kind["map"]], blocks, f"{where}{key}.{name}.")
        elif isinstance(kind, dict) and not ({"open", "external"} & set(kind)):
            found += key_problems(value, kind, blocks, f"{where}{key}.")
    return found


def check_loki_keys(config: dict) -> None:
    lock = yaml.safe_load((ROOT / "loki/config-keys.lock.yaml").read_text())
    for problem in key_problems(config, lock["blocks"]["root"], lock["blocks"], ""):
        fail(problem)
    clients = config.get("ruler", {}).get("remote_write", {}).get("clients", {})
    if clients and shutil.which("promtool"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "prometheus.yml"
            path.write_text(yaml.safe_dump({"remote_write": [{"name": n, **c} for n, c in clients.items()]}))
            result = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
            if result.returncode != 0:
                fail(f"loki/loki.yaml: ruler.remote_write.clients is not a valid Prometheus remote_write config: "
                     f"{(result.stderr or result.stdout).strip()}")


def check_loki_ruler(config: dict, services: dict) -> None:
    ruler = config.get("ruler")
    if not ruler:
        fail("loki/loki.yaml: no ruler block: the log alerts and log-derived metrics are never evaluated")
        return
    rules_dir = config["common"]["storage"]["filesystem"].get("rules_directory")
    mounts = {v.split(":")[1]: v for v in services["loki"].get("volumes", [])}
    mount = mounts.get(rules_dir, "")
    if not mount.startswith("./loki/rules:") or not mount.endswith(":ro"):
        fail(f"docker-compose.yml: loki must mount ./loki/rules read-only at {rules_dir} (common.storage.filesystem.rules_directory)")
    if config.get("auth_enabled", True) or not (LOKI_RULES / "fake").is_dir():
        fail("loki/rules/fake/: with auth_enabled false the ruler reads the tenant 'fake' (<dir>/<tenant>/*.yaml)")
    data = config["common"].get("path_prefix", "")
    if not str(ruler.get("wal", {}).get("dir", "")).startswith(data + "/"):
        fail(f"loki/loki.yaml: ruler.wal.dir must be under {data}, the volume the image's user can write")
    if not str(ruler.get("alertmanager_url", "")).startswith("http://alertmanager:9093"):
        fail("loki/loki.yaml: ruler.alertmanager_url must be the stack's Alertmanager (http://alertmanager:9093)")
    write = ruler.get("remote_write", {})
    urls = [c.get("url") for c in write.get("clients", {}).values()]
    if not write.get("enabled") or urls != ["http://prometheus:9090/api/v1/write"]:
        fail("loki/loki.yaml: ruler.remote_write must be enabled with one client, Prometheus' /api/v1/write")
    if "--web.enable-remote-write-receiver" not in services["prometheus"].get("command", []):
        fail("docker-compose.yml: Prometheus needs --web.enable-remote-write-receiver for the ruler's samples")


def loki_rules() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(LOKI_RULES.glob("*/*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [(f"{path.relative_to(ROOT)}: {r.get('alert') or r.get('record')}", r) for r in group["rules"]]
    return out


def check_loki_rules(spec: dict) -> None:
    rules = loki_rules()
    for where, rule in rules:
        if set(rule) - {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}:
            fail(f"{where}: unknown rule keys {sorted(set(rule) - {'alert', 'record', 'expr', 'for', 'labels', 'annotations'})}")
        problems.extend(dashboards.logql_problems(where, rule["expr"]))
        if "record" in rule and not RECORD_NAME.fullmatch(rule["record"]):
            fail(f"{where}: a recorded name follows level:metric:operations")
        if "alert" in rule and not re.search(r"\bby \(service\b", rule["expr"]):
            fail(f"{where}: the alert must aggregate `by (service, …)`: Alertmanager groups by alertname and service")
    for (where, _), result in zip(rules, dashboards.parse_lezer([r["expr"] for _, r in rules], [])):
        if result["error"]:
            fail(f"{where}: LogQL does not parse: {result['error']}")
    alerts = sorted(r["alert"] for _, r in rules if "alert" in r)
    records = {r["record"]: r for _, r in rules if "record" in r}
    if alerts != sorted(spec["alerts"]):
        fail(f"docs/contracts.md ## Alerting: loki_ruler.alerts is {sorted(spec['alerts'])}, loki/rules has {alerts}")
    if set(records) != set(spec["recorded"]):
        fail(f"docs/contracts.md ## Alerting: loki_ruler.recorded is {sorted(spec['recorded'])}, loki/rules has {sorted(records)}")
    for name, labels in spec["recorded"].items():
        expr = records.get(name, {}).get("expr", "")
        if name in records and not all(re.search(rf"\b{label}\b", expr) for label in labels):
            fail(f"loki/rules: {name} must keep the labels {labels} (docs/contracts.md)")


def check_grafana(spec: dict) -> None:
    project = compose.load(ROOT)
    env = dict(project.services["grafana"].environment)
    datasources = yaml.safe_load((ROOT / "grafana/provisioning/datasources/datasources.yaml").read_text())["datasources"]
    uids = {d["uid"] for d in datasources}
    panels = {m["uid"]: {p["id"] for p in m["panels"]} for m in dashboards.load().values()}
    provisioning = ROOT / "grafana/provisioning"
    for problem in grafana_alerting.problems(provisioning, env, uids, panels):
        fail(f"grafana/provisioning/{problem}")
    for d in datasources:
        if d["type"] in ("prometheus", "loki") and d.get("jsonData", {}).get("manageAlerts") is False:
            fail(f"datasources.yaml: {d['name']} hides its rules from Grafana's alerting UI (manageAlerts: false)")
    alerting = grafana_alerting.load(provisioning, env)
    routed = set().union(*(grafana_alerting.routing_labels(p) for p in alerting.policies)) if alerting.policies else set()
    titles = []
    promql, logql, traceql = [], [], []
    for group in alerting.groups:
        for rule in group["rules"]:
            where = f"grafana/provisioning/alerting/{group['_file']}: {rule['title']}"
            titles.append(rule["title"])
            missing = routed - set(rule.get("labels") or {})
            if missing:
                fail(f"{where}: no {sorted(missing)} label, which the notification policies route on")
            for query in rule["data"]:
                model, uid = query["model"], query["datasourceUid"]
                target = {"prometheus": promql, "loki": logql, "tempo": traceql}.get(uid)
                if target is not None:
                    target.append((f"{where} {query['refId']}", model.get("expr") or model.get("query", "")))
    if sorted(titles) != sorted(spec["rules"]):
        fail(f"docs/contracts.md ## Alerting: grafana.rules is {sorted(spec['rules'])}, the provisioning has {sorted(titles)}")
    names = grafana_alerting.contact_point_names(alerting)
    if names != set(spec["contact_points"]):
        fail(f"docs/contracts.md ## Alerting: grafana.contact_points is {spec['contact_points']}, provisioned {sorted(names)}")
    for toggle in set(spec["feature_toggles"]) - grafana_alerting.enabled_toggles(env):
        fail(f"docker-compose.yml: grafana must enable the feature toggle {toggle} with "
             f"{grafana_alerting.TOGGLE_PREFIX}{toggle}: \"true\" (docs/contracts.md ## Alerting)")
    reached = {str(p.get("receiver")) for tree in alerting.policies for p in walk_routes(tree)}
    for example in set(spec["examples"]) & reached:
        fail(f"grafana/provisioning/alerting: a policy sends to {example} with .env's placeholders: it must stay inert by default")
    check_queries(promql, logql, traceql)


def walk_routes(policy: dict):
    yield policy
    for route in policy.get("routes") or []:
        yield from walk_routes(route)


def check_queries(promql: list, logql: list, traceql: list) -> None:
    known = dashboards.known_metrics()
    for (where, _), result in zip(promql, dashboards.parse_promql([q for _, q in promql])):
        if result["error"]:
            fail(f"{where}: PromQL does not parse: {result['error']}")
        fail_each([f"{where}: metric {m} is produced by nothing" for m in result["metrics"] if m not in known])
    for where, query in logql:
        fail_each(dashboards.logql_problems(where, query))
    for where, query in traceql:
        fail_each(dashboards.traceql_problems(where, query))
    for (where, _), result in zip(logql + traceql, dashboards.parse_lezer([q for _, q in logql], [q for _, q in traceql])):
        if result["error"]:
            fail(f"{where}: {result['language']} does not parse: {result['error']}")


def fail_each(messages: list[str]) -> None:
    problems.extend(messages)


# Drifts the check must catch: (what, file, text, replacement).
SELF_TESTS = [
    ("a key Loki 3.7.6 does not have", "loki/loki.yaml", "  poll_interval: 15s", "  poll_intervall: 15s"),
    ("the ruler's remote write pointed elsewhere", "loki/loki.yaml", "http://prometheus:9090/api/v1/write", "http://prometheus:9091/api/v1/write"),
    ("a LogQL alert that does not parse", "loki/rules/fake/log-alerts.yaml", '[2m])), "service"', '[2m]), "service"'),
    ("a LogQL alert with a series per request (rate() not summed before label_replace)", "loki/rules/fake/log-alerts.yaml",
     'label_replace(sum by (service_name) (rate({level="error", service_name!="alert-log"}[2m])), ',
     'label_replace(rate({level="error", service_name!="alert-log"}[2m]), '),
    ("a Grafana rule without the label the policies route on", "grafana/provisioning/alerting/rules.yaml",
     "        labels:\n          severity: warning\n", "        labels:\n          team: sre\n"),
    ("a Grafana rule reading a data source that is not provisioned", "grafana/provisioning/alerting/rules.yaml",
     "datasourceUid: tempo", "datasourceUid: jaeger"),
    ("a TraceQL attribute no span carries", "grafana/provisioning/alerting/rules.yaml", "span.http.route)'", "span.http.path)'"),
    ("a policy routing to a contact point that does not exist", "grafana/provisioning/alerting/policies.yaml",
     "    receiver: alert-log", "    receiver: alert-logs"),
    ("a template no contact point can find", "grafana/provisioning/alerting/templates.yaml",
     'define "four-signal.title"', 'define "four-signal.heading"'),
    ("a Tempo label read with its double quotes (the rule before issue 22)", "grafana/provisioning/alerting/rules.yaml",
     """summary: '{{ reReplaceAll "\\"" "" (index .Labels "resource.service.name") }}""",
     """summary: '{{ index $labels "resource.service.name" }}"""),
    ("a Tempo rule without the service label the policies group by (the rule before issue 22)",
     "grafana/provisioning/alerting/rules.yaml",
     """          service: '{{ reReplaceAll "\\"" "" (index .Labels "resource.service.name") }}'\n""", ""),
    ("the feature toggle in the list form Grafana deprecated (the compose file before issue 22)", "docker-compose.yml",
     'GF_FEATURE_TOGGLES_tempoAlerting: "true"', "GF_FEATURE_TOGGLES_ENABLE: tempoAlerting"),
    ("the feature toggle turned off", "docker-compose.yml",
     'GF_FEATURE_TOGGLES_tempoAlerting: "true"', 'GF_FEATURE_TOGGLES_tempoAlerting: "false"'),
]


def self_test() -> int:
    """Each drift of SELF_TESTS, applied to the file, must make the check fail."""
    missed = []
    for what, rel, old, new in SELF_TESTS:
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
        if result.returncode == 0:
            missed.append(f"{what} ({rel}) passed the check")
    for m in missed:
        print(f"alerting self-test: MISSED {m}", file=sys.stderr)
    print(f"alerting self-test: {len(SELF_TESTS) - len(missed)} of {len(SELF_TESTS)} drifts caught")
    return 1 if missed else 0


def main() -> int:
    if "--self-test" in sys.argv[1:]:
        return self_test()
    spec = contract.values()["alerting"]
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    config = loki_config()
    check_loki_keys(config)
    check_loki_ruler(config, services)
    check_loki_rules(spec["loki_ruler"])
    check_grafana(spec["grafana"])
    for p in problems:
        print(f"alerting: {p}", file=sys.stderr)
    print(f"alerting: {len(loki_rules())} Loki rules, {len(spec['grafana']['rules'])} Grafana rules, "
          f"loki.yaml against Loki 3.7.6's keys; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
