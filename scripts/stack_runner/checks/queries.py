"""Every dashboard query executed against the running stack, after the incident: each query of
the provisioned dashboards (Grafana's variables substituted as a visitor at "All" would get
them; an example trace id replaced by a real one) and each data source query of Grafana's
provisioned alert rules (as its provisioning API gives them, sent as Grafana would) must return
data — or be on the short list of queries that need a condition (`DASHBOARD_NEEDS` below).
Those run too: data counts as a pass, none is reported with the reason, not failed. The run
creates most conditions itself (the incident check's fault tour).

The query catalogs (`queries/*.md`) are verify's to run (its `queries.*` checks), once.
"""

from __future__ import annotations

import json
import re
import sys
import time

from .backends import Loki, Tempo
from .base import Prometheus, Stack, get_json, http

DASHBOARD_NEEDS = {
    "Alerts": "a firing alert: the shipped rules' `for:` outlasts the run (the e2e and ruler checks fire them)",
}
TRACEQL_METRICS = re.compile(r"\|\s*(rate|count_over_time|sum_over_time|min_over_time|max_over_time|avg_over_time|"
                             r"quantile_over_time|histogram_over_time|compare)\s*\(")
HEX32 = re.compile(r"\b[0-9a-f]{32}\b")
PATIENCE = 60.0
MINIMUM_HISTORY = 180.0


def sources(stack: Stack) -> list[tuple[str, str, str, str]]:
    """(language, where, query, needs) of every dashboard query and query of a Grafana-managed
    alert rule."""
    sys.path.insert(0, str(stack.root / "scripts/checks"))
    import dashboards  # noqa: E402

    out = []
    for model in dashboards.load().values():
        for language, where, query in dashboards.queries(model):
            title = re.match(r"(?:panel '(.*)' \w+|annotation '(.*)')$", where)
            needs = DASHBOARD_NEEDS.get(title.group(1) or title.group(2), "") if title else ""
            out.append((language, f"{model['uid']}: {where}", dashboards.substitute(query, "1m", dashboards.LIVE), needs))
    return out + alert_rule_queries(stack)


def alert_rule_queries(stack: Stack) -> list[tuple[str, str, str, str]]:
    """The data source queries of Grafana's provisioned rules (as its provisioning API gives
    them, to the admin), by the language of their source."""
    import base64
    import os

    from ..compose import read_env_file

    env = {**read_env_file(stack.root / ".env"), **os.environ}
    login = base64.b64encode(f"{env['GRAFANA_ADMIN_USER']}:{env['GRAFANA_ADMIN_PASSWORD']}".encode()).decode()
    answer = http(f"{stack.url('grafana', 3000)}/api/v1/provisioning/alert-rules", headers={"Authorization": f"Basic {login}"})
    languages = {"prometheus": ("promql", "expr"), "loki": ("logql", "expr"), "tempo": ("traceql", "query")}
    out = []
    for rule in json.loads(answer):
        for query in rule["data"]:
            language, key = languages.get(query["datasourceUid"], (None, None))
            if language:
                out.append((language, f"grafana rule '{rule['title']}' {query['refId']}", query["model"][key], ""))
    return out


def loki_recorded(stack: Stack) -> set[str]:
    """Series Loki's ruler records from logs and remote-writes to Prometheus (loki/rules/)."""
    sys.path.insert(0, str(stack.root / "scripts/checks"))
    import dashboards  # noqa: E402

    return dashboards.loki_recorded_metrics()


def real_trace_id(stack: Stack) -> str | None:
    if not stack.real("loki"):
        return None
    lines = Loki(stack.url("loki", 3100)).lines('{service_name="sample-app"} |= "request completed" | trace_id!=""',
                                               seconds=300, limit=1)
    return lines[0][0].get("trace_id") if lines else None


def run_one(stack: Stack, language: str, query: str, trace_id: str | None) -> tuple[bool | None, str]:
    """(returned data?, detail); None when the language's backend is a stand-in here."""
    if trace_id:
        query = HEX32.sub(trace_id, query)
    if language == "promql":
        if re.search(r"traces_(spanmetrics|service_graph)_", query) and not stack.real("tempo"):
            return None, "TEMPO_BIN not set: Tempo's metrics generator does not run"
        if re.search(r"\bgrafana_\w+", query) and not stack.real("grafana"):
            return None, "Grafana's self-metrics come from a real Grafana; a stand-in runs here"
        if any(name in query for name in loki_recorded(stack)) and not stack.real("loki"):
            return None, "LOKI_BIN not set: Loki's ruler does not record from logs"
        # A panel or Explore runs a range query: data anywhere in the last 15 minutes counts.
        now = time.time()
        rows = Prometheus(stack.url("prometheus", 9090)).api("query_range", query=query, start=f"{now - 900:.0f}",
                                                             end=f"{now:.0f}", step="15")["result"]
        return bool(rows), f"{len(rows)} series"
    if language == "logql":
        if not stack.real("loki"):
            return None, "LOKI_BIN not set"
        data = Loki(stack.url("loki", 3100)).query_range(query, seconds=900, limit=100, step="15s")
        return bool(data["result"]), f"{len(data['result'])} {data['resultType']}"
    if language == "traceql":
        if not stack.real("tempo"):
            return None, "TEMPO_BIN not set"
        tempo = Tempo(stack.url("tempo", 3200))
        if TRACEQL_METRICS.search(query):
            series = [s for s in tempo.metrics(query) if any("value" in p for p in s.get("samples", []))]
            return bool(series), f"{len(series)} series"
        traces = tempo.search(query, limit=20)
        return bool(traces), f"{len(traces)} traces"
    return profile_selector(stack, query)


def profile_selector(stack: Stack, query: str) -> tuple[bool, str]:
    """`TYPE{selector}` (a catalog block) or `["TYPE", "{selector}"]` (a dashboard target)
    against what the services pushed (Pyroscope answers no queries here)."""
    if query.startswith("["):
        query = "".join(json.loads(query))
    match = re.fullmatch(r"([\w.-]+:[\w.-]+:[\w.-]+:[\w.-]+:[\w.-]+)\{(.*)\}", query.strip())
    if not match:
        return False, "not TYPE{selector}"
    matchers = re.findall(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"', match.group(2))
    pushes = get_json(f"{stack.url('pyroscope', 4040)}/stand-in/pushes")

    def matches(series: dict) -> bool:   # Prometheus matchers: an absent label is ""
        return all((op == "=" and series.get(k, "") == v) or (op == "!=" and series.get(k, "") != v)
                   or (op == "=~" and re.fullmatch(v, series.get(k, ""))) for k, op, v in matchers)

    hits = [p for p in pushes if match.group(1) in p["profile_types"] and any(matches(s) for s in p["series"])]
    return bool(hits), f"{len(hits)} matching pushes"


def check(stack: Stack) -> None:
    print("queries: every dashboard query and Grafana rule query returns data from the running stack")
    # A query may look back over minutes (a subquery at 1-minute steps needs a whole minute of
    # samples): query a stack that has been up at least this long.
    time.sleep(max(0.0, stack.state["started"] + MINIMUM_HISTORY - time.time()))
    trace_id = real_trace_id(stack)
    results = {}
    for language, where, query, needs in sources(stack):
        results[where] = (language, query, needs, run_one_quietly(stack, language, query, trace_id))
    # Tempo makes a trace searchable some seconds after its last span: TraceQL that found
    # nothing is asked once more, PATIENCE after the incident's last span at the latest.
    retry = [w for w, (lang, _, _, (passed, _)) in results.items() if lang == "traceql" and passed is False]
    if retry:
        time.sleep(max(0.0, stack.incident_ended + PATIENCE - time.monotonic()))
        for where in retry:
            language, query, needs, _ = results[where]
            results[where] = (language, query, needs, run_one_quietly(stack, language, query, trace_id))
    skipped: dict[tuple[str, str], list[str]] = {}
    for where, (language, query, needs, (passed, detail)) in results.items():
        if passed is None:
            skipped.setdefault((language, detail), []).append(where)
        elif needs and not passed:
            print(f"  ..    {where}: no data; it needs {needs}")
        else:
            stack.ledger.query(language, passed)
            if not passed:
                stack.ledger.fail(f"{where}: {language} returned no data ({detail}): {query[:120]}")
    for (language, reason), wheres in skipped.items():
        stack.ledger.skip(f"{len(wheres)} {language} queries (first: {wheres[0]})", reason)
    for language, (passed, total) in sorted(stack.ledger.counts.items()):
        print(f"  ..    {language}: {passed} of {total} returned data")


def run_one_quietly(stack: Stack, language: str, query: str, trace_id: str | None) -> tuple[bool | None, str]:
    try:
        return run_one(stack, language, query, trace_id)
    except Exception as error:
        return False, f"{type(error).__name__}: {error}"
