"""Grafana's part, executed: Grafana cannot run here, so this does what it would do with the
provisioned data sources (as the Grafana stand-in interpolated them, `$$` and all) against the
real backends, with real ids from the running stack:

- traces → logs: the `tracesToLogsV2` query for a real span (`${__tags}` from its attributes as
  `key="value", …`, `${__span.traceId}`; the span's time shifted as configured) must return that
  trace's lines from Loki, and only them;
- logs → traces: the Loki derived field (`matcherType: label` on the structured metadata) applied
  to a real line gives a trace id that Tempo has;
- traces → metrics: every `tracesToMetrics` query with a real span's service and route returns
  data from Prometheus (0 is data; "no data" is a failure);
- metrics → traces: trace ids of the exemplars Prometheus stored are traces Tempo has;
- the service graph: Tempo's generator wrote `load-gen → sample-app → sample-app-downstream`;
- traces → profiles: the profile type the link opens is one the span's service pushes.
Grafana's span-link code: public/app/features/explore/TraceView/createSpanLink.tsx (grafana/grafana
v13.2.0).
"""

from __future__ import annotations

import re
import time

from .backends import Loki, Tempo
from .base import Prometheus, Stack, get_json, wait_for

SETTLED = 30


def shift(text: str) -> float:
    match = re.fullmatch(r"(-?\d+)([smh])", text or "0s")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)] if match else 0.0


def formatted_tags(span: dict, tags: list[dict]) -> str:
    """Grafana's `${__tags}`: `name="value"` for each mapped attribute the span (or its resource) has."""
    values = {"service.name": span["service"], **span["attributes"]}
    pairs = [f'{t.get("value") or t["key"]}="{values[t["key"]]}"' for t in tags if t["key"] in values]
    return ", ".join(pairs)


def server_span(spans: list[dict], service: str) -> dict:
    return next(s for s in spans if s["service"] == service and s["kind"] in ("SPAN_KIND_SERVER", 2))


def a_settled_trace(tempo: Tempo) -> tuple[str, list[dict]]:
    """A real /external request old enough to be complete: load-gen → sample-app → downstream."""
    now = int(time.time())
    body = get_json(f"{tempo.url}/api/search", q='{resource.service.name="sample-app" && span.http.route="/external"}',
                    limit=20, start=now - 900, end=now - SETTLED)
    for found in body.get("traces") or []:
        spans = tempo.trace(found["traceID"])
        if {"load-gen", "sample-app", "sample-app-downstream"} <= {s["service"] for s in spans}:
            return spans[0]["trace_id"], spans
    raise ValueError("no complete /external trace yet")


def check(stack: Stack) -> None:
    print("Grafana's part: every provisioned correlation performed against the real backends")
    needed = [name for name in ("loki", "tempo") if not stack.real(name)]
    if needed:
        for what in ("traces → logs", "logs → traces", "traces → metrics", "exemplars → traces", "service graph",
                     "traces → profiles"):
            stack.ledger.skip(what, ", ".join(f"{n.upper()}_BIN not set" for n in needed))
        return
    sources = {d["uid"]: d for d in get_json(f"{stack.url('grafana', 3000)}/stand-in/datasources")}
    tempo, loki = Tempo(stack.url("tempo", 3200)), Loki(stack.url("loki", 3100))
    prom = Prometheus(stack.url("prometheus", 9090))
    trace_id, spans = wait_for("a complete /external trace in Tempo", lambda: a_settled_trace(tempo), timeout=120, every=5)
    span = server_span(spans, "sample-app")
    jsonData = sources["tempo"]["jsonData"]
    traces_to_logs(stack, loki, jsonData["tracesToLogsV2"], span)
    logs_to_traces(stack, loki, sources["loki"]["jsonData"]["derivedFields"], span)
    traces_to_metrics(stack, prom, jsonData["tracesToMetrics"], span)
    exemplars(stack, prom, tempo)
    service_graph(stack, prom)
    traces_to_profiles(stack, jsonData["tracesToProfiles"], span)


def traces_to_logs(stack: Stack, loki: Loki, config: dict, span: dict) -> None:
    query = config["query"].replace("${__tags}", formatted_tags(span, config.get("tags", [])))
    query = query.replace("${__span.traceId}", span["trace_id"]).replace("${__span.spanId}", span["span_id"])
    stack.ledger.check("$" not in query, f"traces → logs query is fully interpolated: {query}")
    trace = next(iter(Tempo(stack.url("tempo", 3200)).search(f'{{trace:id = "{span["trace_id"]}"}}', limit=1)), {})
    start = int(trace.get("startTimeUnixNano", time.time_ns())) + int(shift(config.get("spanStartTimeShift")) * 1e9)
    end = time.time_ns() + int(shift(config.get("spanEndTimeShift")) * 1e9)
    lines = loki.lines(query, start_ns=start, end_ns=end)
    ids = {labels.get("trace_id") for labels, _ in lines}
    stack.ledger.check(bool(lines) and ids == {span["trace_id"]},
                       f"traces → logs: {len(lines)} line(s) of trace {span['trace_id']} from Loki, and no other trace's")


def logs_to_traces(stack: Stack, loki: Loki, fields: list[dict], span: dict) -> None:
    field = next(f for f in fields if f.get("datasourceUid") == "tempo")
    labels, _ = loki.lines(f'{{service_name="{span["service"]}"}} |= "{span["trace_id"]}"', limit=1)[0]
    value = labels.get(field["matcherRegex"]) if field.get("matcherType") == "label" else None
    url = field.get("url", "").replace("${__value.raw}", value or "")
    found = Tempo(stack.url("tempo", 3200)).trace(url) if value else []
    stack.ledger.check(value == span["trace_id"] and bool(found),
                       f"logs → traces: the derived field '{field['name']}' reads {value} from the line's structured "
                       f"metadata and Tempo returns that trace ({len(found)} spans)")


def traces_to_metrics(stack: Stack, prom: Prometheus, config: dict, span: dict) -> None:
    tags = formatted_tags(span, config.get("tags", []))
    for query in config["queries"]:
        expr = query["query"].replace("$__tags", tags).replace("$__rate_interval", "1m")
        expr = re.sub(r'\$\{__span\.tags\["([^"]+)"\]\}', lambda m: str(span["attributes"].get(m.group(1), "")), expr)
        result = prom.query(expr)
        stack.ledger.check(bool(result), f"traces → metrics: '{query['name']}' returns data for {span['service']} "
                                         f"{span['attributes'].get('http.route')} ({len(result)} series)")


def exemplars(stack: Stack, prom: Prometheus, tempo: Tempo) -> None:
    now = time.time()
    data = prom.api("query_exemplars", query='http_server_request_duration_seconds_bucket{service="sample-app"}',
                    start=f"{now - 600:.0f}", end=f"{now - SETTLED:.0f}")
    ids = sorted({e["labels"]["trace_id"] for series in data for e in series["exemplars"]})[:20]
    missing = [i for i in ids if not tempo.trace(i)]
    stack.ledger.check(bool(ids) and not missing,
                       f"metrics → traces: all {len(ids)} exemplar trace ids taken from Prometheus are traces in Tempo "
                       f"({len(missing)} missing)")


def service_graph(stack: Stack, prom: Prometheus) -> None:
    for client, server in (("load-gen", "sample-app"), ("sample-app", "sample-app-downstream")):
        expr = f'sum(traces_service_graph_request_total{{client="{client}", server="{server}"}})'
        value = wait_for(f"the service-graph edge {client} → {server}", lambda: prom.value(expr), timeout=120, every=5)
        stack.ledger.check(value > 0, f"service graph: Tempo's generator counted {value:.0f} requests {client} → {server}")


def traces_to_profiles(stack: Stack, config: dict, span: dict) -> None:
    """The link opens the span's service at `profileTypeId`, selecting the samples labelled with
    the span's `pyroscope.profile.id`: so a span id the profiles carry must be, in Tempo, a
    server span whose `pyroscope.profile.id` is that same id."""
    pushes = get_json(f"{stack.url('pyroscope', 4040)}/stand-in/pushes", service_name=span["service"])
    types = {t for p in pushes for t in p["profile_types"]}
    stack.ledger.check(config["profileTypeId"] in types,
                       f"traces → profiles: {span['service']} pushes the linked profile type {config['profileTypeId']}")
    labelled = {s: t for p in pushes for s, t in p.get("span_traces", {}).items() if t}
    if not labelled:
        stack.ledger.fail("traces → profiles: no pushed CPU sample carries a span_id label")
        return
    tempo = Tempo(stack.url("tempo", 3200))
    for span_id, trace_id in list(labelled.items())[:20]:
        match = next((s for s in tempo.trace(trace_id) if s["span_id"] == span_id), None)
        if match:
            stack.ledger.check(match["attributes"].get("pyroscope.profile.id") == span_id
                               and match["kind"] == "SPAN_KIND_SERVER",
                               f"traces → profiles: samples labelled span_id={span_id} belong to the server span "
                               f"'{match['name']}' of trace {trace_id}, whose pyroscope.profile.id is that id")
            return
    stack.ledger.fail(f"traces → profiles: none of {len(labelled)} labelled span ids is a span Tempo has")
