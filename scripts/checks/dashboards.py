#!/usr/bin/env python3
"""The dashboard lint (fails the build). For every file in grafana/dashboards/:
- a bare dashboard model (no {"dashboard": …} wrapper) with a unique uid, the files the
  builder writes today, and the uids the alerts' dashboard_url links point at;
- every datasource reference is a provisioned UID, every variable used is defined;
- every query parses with its real grammar after variables are substituted: PromQL with the
  promql-parser crate (tools/query-check), LogQL and TraceQL with Grafana's lezer grammars
  (tools/lezer), profile selectors as selectors with the CPU profile type id;
- every metric a PromQL query reads is in prometheus/metric-catalog.yml or a recording rule;
- every dashboard link points at an existing dashboard uid; every panel has a description,
  every graph a unit;
- an alert list shows every rule source, or its data source filter is a provisioned data
  source *name* (the panel compares names, not UIDs) that its description names;
- the Tempo datasource's traces-to-metrics queries parse and read known metrics, like panels;
- an error ratio (5xx series over all) defaults its numerator to 0 (`or vector(0)`, or
  `or <all> * 0` when grouped), so a
  route without errors shows 0, not "No data";
- a LogQL `pattern` has a named capture; a TraceQL query names only span names, attributes
  and routes that exist (docs/contracts.md, the app's route templates);
- a query with exemplars on reads only `_bucket` series of histograms that carry exemplars,
  without narrowing `le` (exemplars ride on bucket lines, each on its observation's bucket).
`panel_promql()` also gives scripts/e2e.py the queries to execute against live Prometheus.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contract_doc as contract  # noqa: E402  (docs/contracts.md: UIDs, names, profile types)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana/dashboards"
UIDS = contract.uids() | {"-- Grafana --"}
BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__all", "__url_time_range", "__from", "__to", "__dashboard"}
ENTRY = contract.services()[0]
EXAMPLE = {"service": ENTRY, "route": "/api/orders", "instance": f"{ENTRY}:8080"}
CPU = contract.cpu_profile_type()


# What a user opening a dashboard gets: the multi-value variables at "All".
LIVE = {"service": ENTRY, "route": ".*", "instance": ".*"}


def substitute(text: str, rate_interval: str = "1m", values: dict = EXAMPLE) -> str:
    text = text.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval)
    for name, value in values.items():
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return text


def load() -> dict[str, dict]:
    return {str(p.relative_to(ROOT)): json.loads(p.read_text()) for p in sorted(DASHBOARDS.rglob("*.json"))}


def walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def queries(model: dict) -> list[tuple[str, str, str]]:
    """(language, where, query) of every query in a dashboard."""
    out = []
    for panel in model.get("panels", []):
        for t in panel.get("targets", []):
            kind = t.get("datasource", {}).get("type")
            where = f"panel '{panel['title']}' {t.get('refId')}"
            if kind == "prometheus":
                out.append(("promql", where, t["expr"]))
            elif kind == "loki":
                out.append(("logql", where, t["expr"]))
            elif kind == "tempo" and t.get("queryType") == "traceql":
                out.append(("traceql", where, t["query"]))
            elif kind == "grafana-pyroscope-datasource":
                out.append(("profile", where, json.dumps([t["profileTypeId"], t["labelSelector"]])))
    for a in model.get("annotations", {}).get("list", []):
        if a.get("datasource", {}).get("type") == "prometheus":
            out.append(("promql", f"annotation '{a['name']}'", a["expr"]))
    for v in model.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            inner = re.fullmatch(r"label_values\((.+), *(\w+)\)", v["query"]["query"])
            out.append(("promql", f"variable '{v['name']}'", inner.group(1) if inner else v["query"]["query"]))
    return out


def panel_promql(rate_interval: str = "5m") -> list[tuple[str, str, str]]:
    """(dashboard uid, panel/ref, substituted PromQL) of every panel query, for the live check."""
    out = []
    for model in load().values():
        for panel in model.get("panels", []):
            for t in panel.get("targets", []):
                if t.get("datasource", {}).get("type") == "prometheus":
                    out.append((model["uid"], f"{panel['title']} {t['refId']}", substitute(t["expr"], rate_interval, LIVE)))
    return out


def recorded(rules_dir: Path, pattern: str) -> set[str]:
    names = set()
    for path in rules_dir.glob(pattern):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def loki_recorded_metrics() -> set[str]:
    """Metrics Loki's ruler records from logs and remote-writes to Prometheus (loki/rules/)."""
    return recorded(ROOT / "loki/rules", "*/*.yaml")


def known_metrics() -> set[str]:
    catalog = yaml.safe_load((ROOT / "prometheus/metric-catalog.yml").read_text())
    names = {m for section in catalog.values() for m in section}
    return names | recorded(ROOT / "prometheus/rules", "*.yml") | loki_recorded_metrics()


def parse_promql(exprs: list[str]) -> list[dict]:
    tool = ROOT / "target/debug/query-check"
    if not tool.exists():
        subprocess.run(["cargo", "build", "-q", "-p", "query-check"], cwd=ROOT, check=True)
    out = subprocess.run([str(tool)], input=json.dumps(exprs), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def parse_lezer(logql: list[str], traceql: list[str]) -> list[dict]:
    out = subprocess.run(["node", str(ROOT / "tools/lezer/check.mjs")], input=json.dumps({"logql": logql, "traceql": traceql}),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def schema_problems(files: list[str]) -> list[str]:
    """Validates each file against a JSON schema generated from @grafana/schema 13.2.0's
    classic Dashboard type (pinned in tools/lezer/package.json), made fresh on every run."""
    lezer = ROOT / "tools/lezer"
    schema = lezer / "dashboard.schema.json"
    source = lezer / "node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts"
    subprocess.run(["npx", "--no-install", "ts-json-schema-generator", "--path", str(source), "--type", "Dashboard",
                    "--no-type-check", "--additional-properties", "--out", str(schema)], cwd=lezer, check=True, capture_output=True)
    checker = ROOT / ".venv/bin/check-jsonschema"
    result = subprocess.run([str(checker), "--schemafile", str(schema), *files], cwd=ROOT, capture_output=True, text=True)
    if result.returncode == 0:
        return []
    return [f"schema (@grafana/schema 13.2.0): {line.strip()}" for line in result.stdout.splitlines() if "::" in line]


def lint() -> list[str]:
    problems = []
    models = load()
    problems += schema_problems(list(models))
    uids = {}
    for file, model in models.items():
        if "dashboard" in model or not {"uid", "title", "panels"} <= model.keys():
            problems.append(f"{file}: not a bare dashboard model (no 'dashboard' wrapper; needs uid, title, panels)")
            continue
        if model["uid"] in uids:
            problems.append(f"{file}: uid {model['uid']} also used by {uids[model['uid']]}")
        uids[model["uid"]] = file

    # Builder drift: the committed JSON is what the builder writes.
    before = {f: (ROOT / f).read_text() for f in models}
    subprocess.run([sys.executable, str(ROOT / "grafana/tools/build_dashboards.py")], check=True, capture_output=True)
    for f, text in before.items():
        if (ROOT / f).read_text() != text:
            (ROOT / f).write_text(text)
            problems.append(f"{f}: stale; run grafana/tools/build_dashboards.py and commit")

    # Alerts of every ruler link to dashboards that exist.
    rule_files = [*(ROOT / "prometheus/rules").glob("*.yml"), *(ROOT / "loki/rules").glob("*/*.yaml"),
                  *(ROOT / "grafana/provisioning/alerting").glob("*.yaml")]
    for path in rule_files:
        for m in re.finditer(r"dashboard_url: \"?http://localhost:3000/d/([\w-]+)", path.read_text()):
            if m.group(1) not in uids:
                problems.append(f"{path.relative_to(ROOT)}: dashboard_url points at uid {m.group(1)}, which no dashboard has")

    promql, logql, traceql = [], [], []
    for file, model in models.items():
        defined = {v["name"] for v in model.get("templating", {}).get("list", [])}
        text = json.dumps(model)
        for var in set(re.findall(r"\$\{?(\w+)", text)):
            if var not in defined and var not in BUILTIN_VARS:
                problems.append(f"{file}: uses ${var}, which is not defined")
        for node in walk(model):
            ds = node.get("datasource")
            if isinstance(ds, dict) and ds.get("uid") not in UIDS and not str(ds.get("uid", "")).startswith("$"):
                problems.append(f"{file}: datasource uid {ds.get('uid')!r} is not provisioned")
        for link in model.get("links", []):
            target = re.fullmatch(r"/d/([\w-]+)", link.get("url", ""))
            if not target or target.group(1) not in uids:
                problems.append(f"{file}: link '{link.get('title')}' goes to {link.get('url')!r}, not an existing dashboard")
        for panel in model["panels"]:
            if not panel.get("description"):
                problems.append(f"{file}: panel '{panel['title']}' has no description")
            if panel["type"] in ("timeseries", "stat") and not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
                problems.append(f"{file}: panel '{panel['title']}' has no unit")
            for t in panel.get("targets", []):
                if "$__interval" in t.get("expr", "") or re.search(r"\[\d+[smh]\]", t.get("expr", "")) and "predict_linear" not in t.get("expr", ""):
                    problems.append(f"{file}: panel '{panel['title']}' should use $__rate_interval for its rate windows")
        for language, where, query in queries(model):
            concrete = substitute(query)
            if language == "promql":
                promql.append((f"{file}: {where}", concrete))
            elif language == "logql":
                logql.append((f"{file}: {where}", concrete))
            elif language == "traceql":
                traceql.append((f"{file}: {where}", concrete))
            else:
                profile_type, selector = json.loads(concrete)
                if profile_type not in contract.profile_types():
                    problems.append(f"{file}: {where}: profile type {profile_type} is not one the app pushes (docs/contracts.md)")
                promql.append((f"{file}: {where} (profile selector)", selector))

    problems += alert_list_problems(models)
    links = correlation_promql()
    promql += links
    for where, query in [(f"{f}: {w}", q) for f, m in models.items() for _, w, q in queries(m) if _ == "promql"] + links:
        problems += error_ratio_problems(where, query)
    exemplar = exemplar_queries(models)
    metrics = known_metrics()
    for (where, query), result in zip(exemplar, parse_promql([q for _, q in exemplar])):
        problems += exemplar_problems(where, query, result["metrics"])
    for (where, _), result in zip(promql, parse_promql([q for _, q in promql])):
        if result["error"]:
            problems.append(f"{where}: PromQL does not parse: {result['error']} in {result['query']!r}")
        for name in result["metrics"]:
            if name not in metrics and not where.endswith("(profile selector)"):
                problems.append(f"{where}: metric {name} is produced by nothing in prometheus/metric-catalog.yml or the rules")
    for where, query in logql:
        problems += logql_problems(where, query)
    for where, query in traceql:
        problems += traceql_problems(where, query)
    results = parse_lezer([q for _, q in logql], [q for _, q in traceql])
    for (where, _), result in zip(logql + traceql, results):
        if result["error"]:
            problems.append(f"{where}: {result['language']} does not parse: {result['error']}")
    return problems


def correlation_promql() -> list[tuple[str, str]]:
    """The PromQL of the Tempo datasource's traces-to-metrics links, with Grafana's link
    variables filled in as a span of the entry service would fill them."""
    path = "grafana/provisioning/datasources/datasources.yaml"
    datasources = yaml.safe_load((ROOT / path).read_text())["datasources"]
    tempo = next(d for d in datasources if d["type"] == "tempo")
    out = []
    for q in tempo["jsonData"].get("tracesToMetrics", {}).get("queries", []):
        query = q["query"].replace("$$", "$").replace("$__tags", f'service="{ENTRY}"')
        query = query.replace('${__span.tags["http.route"]}', "/api/orders")
        out.append((f"{path}: tracesToMetrics '{q['name']}'", substitute(query)))
    return out


def error_ratio_problems(where: str, query: str) -> list[str]:
    """A ratio whose numerator selects only 5xx series has no numerator at all while there are
    no errors, and PromQL then returns nothing: the panel or link says "No data", not 0."""
    if " / " not in query:
        return []
    numerator = query.split(" / ")[0]
    if re.search(r'status_code=~"5\.\."', numerator) and not re.search(r"\bor\b", numerator):
        return [f"{where}: an error ratio whose 5xx side has no `or vector(0)` (or `or <all> * 0` when grouped) shows \"No data\" instead of 0 when nothing failed"]
    return []


def logql_problems(where: str, query: str) -> list[str]:
    """What Loki rejects although the grammar parses it: a `pattern` needs at least one named
    capture (`<_>` alone: "invalid pattern parser: at least one capture is required"); and a
    range aggregation over lines must be grouped (see ungrouped_range_aggregations)."""
    out = []
    for m in re.finditer(r'\|\s*pattern\s+(?:"((?:[^"\\]|\\.)*)"|`([^`]*)`)', query):
        text = m.group(1) if m.group(1) is not None else m.group(2)
        if not [c for c in re.findall(r"<(\w+)>", text) if c != "_"]:
            out.append(f"{where}: LogQL pattern {text!r} has no named capture; Loki rejects it")
    out += [f"{where}: {name}(…) is not grouped: Loki keeps each line's structured metadata (trace_id) as series "
            f"labels, so this is one series per request and fails past max_query_series (500). Put it directly "
            f"inside sum by (…) (before any label_replace), or give it its own `by (…)`"
            for name in ungrouped_range_aggregations(query)]
    return out


# Range aggregations over log lines (pkg/logql/syntax/lex.go at v3.7.6); absent_over_time is left
# out: it answers one series at most.
RANGE_AGGREGATIONS = ("rate", "rate_counter", "count_over_time", "bytes_rate", "bytes_over_time", "sum_over_time",
                      "avg_over_time", "max_over_time", "min_over_time", "first_over_time", "last_over_time",
                      "stdvar_over_time", "stddev_over_time", "quantile_over_time")
VECTOR_AGGREGATION = re.compile(r"\b(?:sum|avg|min|max|count|stddev|stdvar|topk|bottomk|approx_topk|sort|sort_desc)\s*"
                                r"(?:(?:by|without)\s*\([^()]*\)\s*)?\(\s*(?:\d+\s*,\s*)?$")


def ungrouped_range_aggregations(query: str) -> list[str]:
    """The range aggregations of a LogQL query whose series are not grouped: neither their own
    `by`/`without` nor a vector aggregation as their direct parent."""
    masked = re.sub(r'"(?:[^"\\]|\\.)*"|`[^`]*`', lambda m: '"' + " " * (len(m.group()) - 2) + '"', query)
    found = []
    for m in re.finditer(rf"\b({'|'.join(RANGE_AGGREGATIONS)})\s*\(", masked):
        depth, end = 0, None
        for i in range(m.end() - 1, len(masked)):
            depth += {"(": 1, ")": -1}.get(masked[i], 0)
            if depth == 0:
                end = i + 1
                break
        if end is None:
            continue   # unbalanced: the grammar check reports it
        grouped_itself = re.match(r"\s*(?:by|without)\s*\(", masked[end:])
        if not grouped_itself and not VECTOR_AGGREGATION.search(masked[:m.start()]):
            found.append(m.group(1))
    return found


def app_routes() -> list[str]:
    text = (ROOT / "sample-app/src/routes/templates.rs").read_text()
    block = re.search(r"pub const APP_ROUTES: &\[&str\] = &\[(.*?)\];", text, re.S)
    return re.findall(r'"([^"]+)"', block.group(1))


def traceql_problems(where: str, query: str) -> list[str]:
    """Span names and attributes a TraceQL query names must exist (docs/contracts.md ## Spans,
    the app's route templates): a query on a name nothing produces parses and never matches."""
    c = contract.values()
    routes = app_routes()
    methods = {"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"}
    out = []
    for name in re.findall(r'(?<![.\w])name\s*=\s*"([^"]+)"', query):
        method, _, route = name.partition(" ")
        if name in c["spans"]["internal"] or (method in methods and (not route or route in routes)):
            continue
        out.append(f"{where}: no span is named {name!r} (server spans are 'METHOD /route', clients 'METHOD', internal ones {c['spans']['internal']})")
    attributes = {a for group in c["span_attributes"].values() for a in group}
    for key in re.findall(r"\bspan\.([\w.]+)", query):
        if key not in attributes:
            out.append(f"{where}: no span carries the attribute {key!r} (docs/contracts.md ## Spans)")
    for key in re.findall(r"\bresource\.([\w.]+)", query):
        if key not in c["resource_attributes"]:
            out.append(f"{where}: no resource carries {key!r} (docs/contracts.md ## Service identity)")
    for route in re.findall(r'\bspan\.http\.route\s*=\s*"([^"]+)"', query):
        if route not in routes:
            out.append(f"{where}: {route!r} is not a route template of the app")
    return out


def alert_list_problems(models: dict[str, dict]) -> list[str]:
    """Grafana 13.2's alert list shows every rule source (Grafana-managed, Prometheus, Loki's
    ruler) while `options.datasource` is unset. Set, it keeps the rules whose dataSourceName
    equals it: a data source *name* (a UID there shows no alert at all), and the panel's
    description must say which alerts it leaves out."""
    names = {row["name"]: row for row in contract.table("Datasources")}
    out = []
    for file, model in models.items():
        for panel in model["panels"]:
            if panel["type"] != "alertlist":
                continue
            source = panel.get("options", {}).get("datasource")
            if source is None:
                continue
            if source not in panel.get("description", ""):
                out.append(f"{file}: panel '{panel['title']}' shows only {source}'s alerts: its description must say so")
            if source not in names:
                hint = " (that is a UID; the panel filters by name)" if source in contract.uids() else ""
                out.append(f"{file}: panel '{panel['title']}': alert source {source!r} is not a provisioned data source name{hint}")
            elif names[source]["type"] not in ("prometheus", "loki"):
                out.append(f"{file}: panel '{panel['title']}': {source} evaluates no alert rules")
    return out


def exemplar_queries(models: dict[str, dict]) -> list[tuple[str, str]]:
    return [(f"{file}: panel '{panel['title']}' {t.get('refId')}", substitute(t["expr"]))
            for file, model in models.items() for panel in model["panels"] for t in panel.get("targets", [])
            if t.get("exemplar") and t.get("datasource", {}).get("type") == "prometheus"]


def exemplar_problems(where: str, query: str, metrics: list[str]) -> list[str]:
    spec = contract.values()["exemplars"]
    allowed = {h + spec["series_suffix"] for h in spec["histograms"]}
    out = [f"{where}: exemplars on, but {m} carries none (only {sorted(allowed)} do)" for m in metrics if m not in allowed]
    if re.search(r'\ble\s*=~?\s*"', query):
        out.append(f"{where}: exemplars on, but the query narrows `le`: each exemplar sits on the bucket its request fell in")
    return out


def main() -> int:
    problems = lint()
    for p in problems:
        print(f"dashboard lint: {p}", file=sys.stderr)
    models = load()
    panels = sum(len(m["panels"]) for m in models.values())
    print(f"dashboards: {len(models)} dashboards, {panels} panels checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
