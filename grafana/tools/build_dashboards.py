#!/usr/bin/env python3
"""Writes the provisioned dashboards (grafana/dashboards/four-signals/*.json): bare dashboard
models with stable UIDs. Panels come from a few helpers, so every one has a description, a unit,
fixed datasource UIDs and $__rate_interval. Edit here and run it; a check fails on drift.
"""
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "dashboards" / "four-signals"
PROM = {"type": "prometheus", "uid": "prometheus"}
LOKI = {"type": "loki", "uid": "loki"}
TEMPO = {"type": "tempo", "uid": "tempo"}
PYRO = {"type": "grafana-pyroscope-datasource", "uid": "pyroscope"}
CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
# The jemalloc heap profile the services push next to CPU (docs/contracts.md, "Profiles").
MEMORY_INUSE = "memory:inuse_space:bytes:space:bytes"


class Layout:
    """Places panels left to right, 24 columns wide."""

    def __init__(self):
        self.x = self.y = self.row_h = 0
        self.next_id = 1

    def place(self, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.next_id += 1
        return pos, self.next_id - 1


def prom(expr, legend="", exemplar=False, ref="A"):
    return {"refId": ref, "datasource": PROM, "expr": expr, "legendFormat": legend, "exemplar": exemplar, "range": True}


def timeseries(lay, title, description, targets, unit, w=12, h=8, thresholds=None):
    pos, pid = lay.place(w, h)
    defaults = {"unit": unit, "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}}
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None}] + [{"color": c, "value": v} for v, c in thresholds]}
        defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
    return {"id": pid, "type": "timeseries", "title": title, "description": description, "gridPos": pos,
            "datasource": targets[0]["datasource"], "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}, "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(lay, title, description, expr, unit, w=6, h=4, thresholds=None):
    pos, pid = lay.place(w, h)
    steps = [{"color": "green", "value": None}] + [{"color": c, "value": v} for v, c in (thresholds or [])]
    return {"id": pid, "type": "stat", "title": title, "description": description, "gridPos": pos, "datasource": PROM,
            "targets": [prom(expr)], "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value", "graphMode": "area"}}


def logs(lay, title, description, expr, w=12, h=10):
    pos, pid = lay.place(w, h)
    return {"id": pid, "type": "logs", "title": title, "description": description, "gridPos": pos, "datasource": LOKI,
            "targets": [{"refId": "A", "datasource": LOKI, "expr": expr, "queryType": "range"}],
            "options": {"showTime": True, "wrapLogMessage": True, "enableLogDetails": True, "sortOrder": "Descending", "dedupStrategy": "none"}}


def traces(lay, title, description, traceql, w=12, h=10):
    pos, pid = lay.place(w, h)
    return {"id": pid, "type": "table", "title": title, "description": description, "gridPos": pos, "datasource": TEMPO,
            "targets": [{"refId": "A", "datasource": TEMPO, "queryType": "traceql", "query": traceql, "limit": 20, "tableType": "traces"}],
            "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []}, "options": {"showHeader": True}}


def service_graph(lay, title, description, w=12, h=10):
    pos, pid = lay.place(w, h)
    return {"id": pid, "type": "nodeGraph", "title": title, "description": description, "gridPos": pos, "datasource": TEMPO,
            "targets": [{"refId": "A", "datasource": TEMPO, "queryType": "serviceMap"}], "options": {}}


def flamegraph(lay, title, description, selector, w=12, h=12, profile_type=CPU):
    pos, pid = lay.place(w, h)
    return {"id": pid, "type": "flamegraph", "title": title, "description": description, "gridPos": pos, "datasource": PYRO,
            "targets": [{"refId": "A", "datasource": PYRO, "queryType": "profile", "profileTypeId": profile_type, "labelSelector": selector, "groupBy": []}]}


def alert_list(lay, title, description, w=12, h=8):
    """Every rule source Grafana knows: Grafana-managed rules and the rules of each data source
    that manages alerts (Prometheus, Loki's ruler). Grafana 13.2's alert list fetches them all
    when `options.datasource` is unset; set, it keeps one source, matched by data source *name*
    (public/app/plugins/panel/alertlist/UnifiedAlertList.tsx)."""
    pos, pid = lay.place(w, h)
    return {"id": pid, "type": "alertlist", "title": title, "description": description, "gridPos": pos,
            "options": {"viewMode": "list", "groupMode": "default", "maxItems": 20, "sortOrder": 1, "showInstances": True,
                        "stateFilter": {"firing": True, "pending": True, "noData": False, "normal": False, "error": True},
                        "alertInstanceLabelFilter": ""}}


def var_service(multi=False):
    return {"type": "query", "name": "service", "label": "Service", "datasource": PROM, "refresh": 1, "sort": 1,
            "query": {"query": 'label_values(up{job="sample-app"}, service)', "refId": "service"},
            "definition": 'label_values(up{job="sample-app"}, service)', "includeAll": multi, "multi": multi,
            "current": {"text": "sample-app", "value": "sample-app"}}


def var_query(name, label, query, all_value=".*"):
    return {"type": "query", "name": name, "label": label, "datasource": PROM, "refresh": 2, "sort": 1,
            "query": {"query": query, "refId": name}, "definition": query, "includeAll": True, "multi": True, "allValue": all_value,
            "current": {"text": "All", "value": "$__all"}}


def link(title, uid, tooltip):
    return {"title": title, "type": "link", "url": f"/d/{uid}", "keepTime": True, "includeVars": True, "tooltip": tooltip, "icon": "dashboard",
            "targetBlank": False, "asDropdown": False, "tags": []}


def dashboard(uid, title, description, panels, variables=(), links=(), annotations=()):
    return {"uid": uid, "title": title, "description": description, "tags": ["four-signal-stack"], "editable": False,
            "schemaVersion": 41, "version": 1, "timezone": "browser", "graphTooltip": 1, "refresh": "10s",
            "time": {"from": "now-30m", "to": "now"}, "links": list(links),
            "templating": {"list": list(variables)},
            "annotations": {"list": [{"builtIn": 1, "type": "dashboard", "name": "Annotations & Alerts", "enable": True, "hide": True,
                                      "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "iconColor": "rgba(0, 211, 255, 1)"}] + list(annotations)},
            "panels": panels}


R = "$__rate_interval"
SVC = 'service="$service"'
DRILL = link("Service drill-down", "service-drilldown", "RED by route, dependencies, saturation, logs and traces")
OVERVIEW = link("Four-signal overview", "four-signal-overview", "Golden signals, alerts, service graph, logs, traces, profile")
SLO = link("SLOs", "slo", "Error budgets and burn rates")


def overview():
    lay = Layout()
    p = [
        timeseries(lay, "Request rate", "Requests per second the selected service answers, by route. A drop to zero with traffic still offered (Load dashboard) means the service stopped answering.",
                   [prom(f'sum by (http_route) (rate(http_server_request_duration_seconds_count{{{SVC}}}[{R}]))', "{{http_route}}")], "reqps", w=8),
        timeseries(lay, "Error ratio (5xx)", "Share of the service's requests that answered 5xx (0 while there are none: `or vector(0)`). The SLI routes exclude /error (fails on purpose); this panel shows every route so you see the demo too.",
                   [prom(f'(sum(rate(http_server_request_duration_seconds_count{{{SVC}, http_response_status_code=~"5.."}}[{R}])) or vector(0)) / sum(rate(http_server_request_duration_seconds_count{{{SVC}}}[{R}]))', "error ratio")], "percentunit", w=8, thresholds=[(0.05, "red")]),
        timeseries(lay, "Latency p50 / p95 / p99 (exemplars on)", "Request duration percentiles. The dots are exemplars: click one and choose View trace to open that request's trace in Tempo.",
                   [prom(f'histogram_quantile({q}, sum by (le) (rate(http_server_request_duration_seconds_bucket{{{SVC}}}[{R}])))', f"p{int(q * 100)}", exemplar=True, ref=r)
                    for q, r in [(0.5, "A"), (0.95, "B"), (0.99, "C")]], "s", w=8, thresholds=[(0.5, "red")]),
        alert_list(lay, "Active alerts", "Alerts pending or firing, from all three rulers: Prometheus' rules (metrics), Loki's ruler (alerts written in LogQL) and Grafana-managed rules (traces, and conditions over several data sources). Each has a runbook (docs/runbooks/) and a dashboard link in its annotations."),
        service_graph(lay, "Service graph", "Calls between services as Tempo's metrics generator saw them (traces_service_graph_* in Prometheus): request rate and errors on each edge."),
        logs(lay, "Recent error logs", "Error-level lines of the selected service. Expand one and follow trace_id to its trace.", '{service_name="$service", level="error"}'),
        traces(lay, "Slow and failed traces", "Traces of the selected service that failed or took longer than 500 ms (TraceQL). Click a trace ID to open it.",
               '{ resource.service.name = "$service" && (status = error || duration > 500ms) }'),
        # The same two questions asked of the metrics and of the logs (Loki's recording rules,
        # loki/rules/fake/log-metrics.yaml, remote-written to Prometheus).
        timeseries(lay, "Errors: metrics vs logs", "5xx answers per second as the service's histogram counts them, and error-level log lines per second as Loki's ruler counts them (service_level:log_lines:rate1m). The logs run about twice as high: a failed request writes its access line and the line that says why.",
                   [prom(f'sum(rate(http_server_request_duration_seconds_count{{{SVC}, http_response_status_code=~"5.."}}[{R}])) or vector(0)', "5xx answers/s (metrics)"),
                    prom(f'sum(service_level:log_lines:rate1m{{{SVC}, level="error"}}) or vector(0)', "error lines/s (logs)", ref="B")], "reqps", w=12),
        timeseries(lay, "p99 latency: histogram vs access log", "The 99th percentile of request duration two ways: estimated from the histogram's buckets (interpolated inside the bucket it falls in) and computed exactly from the access log's duration_ms by Loki's ruler over one minute (service:log_request_duration_seconds:p99_1m). They agree to within a bucket's width.",
                   [prom(f'histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{{{SVC}}}[{R}])))', "p99 from the histogram (metrics)"),
                    prom(f'service:log_request_duration_seconds:p99_1m{{{SVC}}}', "p99 from the access log (logs)", ref="B")], "s", w=12),
        flamegraph(lay, "CPU flame graph", "Where the selected service spent CPU time in the time range (Pyroscope). A fault burning CPU shows as inject_cpu_burn.", '{service_name="$service"}', w=12),
        flamegraph(lay, "Memory in use (flame graph)", "Who holds heap memory (jemalloc's sampled in-use bytes, Pyroscope): a leak is a frame that keeps growing — leak_memory under the leak fault.",
                   '{service_name="$service"}', w=12, profile_type=MEMORY_INUSE),
    ]
    return dashboard("four-signal-overview", "Four-signal overview", "Golden signals of a service with its alerts, service graph, error logs, slow traces and CPU profile.",
                     p, [var_service()], [DRILL, SLO])


def drilldown():
    lay = Layout()
    sel = f'{SVC}, http_route=~"$route", instance=~"$instance"'
    p = [
        timeseries(lay, "Requests by route", "Requests per second by route template (never the raw path).",
                   [prom(f'sum by (http_route) (rate(http_server_request_duration_seconds_count{{{sel}}}[{R}]))', "{{http_route}}")], "reqps", w=8),
        # Exemplars ride only on _bucket lines, each on the bucket its request fell in, so this
        # reads every bucket of the 5xx series: max without (le) of a series' cumulative buckets
        # is its +Inf bucket, i.e. its count, and every bucket's exemplar stays selected.
        timeseries(lay, "Errors by route and status", "5xx answers per second by route and status code. Exemplars on: a dot is a failed request's trace, drawn at its duration.",
                   [prom(f'sum by (http_route, http_response_status_code) (max without (le) (rate(http_server_request_duration_seconds_bucket{{{sel}, http_response_status_code=~"5.."}}[{R}])))', "{{http_route}} {{http_response_status_code}}", exemplar=True)], "reqps", w=8),
        timeseries(lay, "p99 latency by route", "99th percentile duration per route; the SLO threshold (0.5 s) is drawn.",
                   [prom(f'histogram_quantile(0.99, sum by (le, http_route) (rate(http_server_request_duration_seconds_bucket{{{sel}}}[{R}])))', "{{http_route}}", exemplar=True)], "s", w=8, thresholds=[(0.5, "red")]),
        timeseries(lay, "Dependency calls", "Calls the service makes to its dependencies, by server and outcome (error_type empty when fine).",
                   [prom(f'sum by (server_address, error_type) (rate(http_client_request_duration_seconds_count{{{SVC}, instance=~"$instance"}}[{R}]))', "{{server_address}} {{error_type}}")], "reqps", w=12),
        timeseries(lay, "Dependency p99", "99th percentile of calls to each dependency, measured by the caller.",
                   [prom(f'histogram_quantile(0.99, sum by (le, server_address) (rate(http_client_request_duration_seconds_bucket{{{SVC}, instance=~"$instance"}}[{R}])))', "{{server_address}}", exemplar=True)], "s", w=12),
        timeseries(lay, "CPU", "CPU cores used by the process; the saturation alert fires above 0.8.",
                   [prom(f'sum by (instance) (rate(process_cpu_seconds_total{{{SVC}, instance=~"$instance"}}[{R}]))', "{{instance}}")], "none", w=8, thresholds=[(0.8, "red")]),
        timeseries(lay, "Memory (resident) and its 1h trend", "Resident memory, and where it will be in an hour at the current trend (predict_linear): a leak is the trend, not the level.",
                   [prom(f'sum by (instance) (process_resident_memory_bytes{{{SVC}, instance=~"$instance"}})', "{{instance}}"),
                    prom(f'sum by (instance) (predict_linear(process_resident_memory_bytes{{{SVC}, instance=~"$instance"}}[10m], 3600))', "{{instance}} in 1h", ref="B")], "bytes", w=8),
        flamegraph(lay, "Memory in use (flame graph)", "Who holds heap memory (jemalloc's sampled in-use bytes): a leak is a frame that keeps growing (leak_memory under the leak fault). Next to the trend on the left.",
                   '{service_name="$service"}', w=8, h=8, profile_type=MEMORY_INUSE),
        timeseries(lay, "Open file descriptors", "File descriptors in use (connections, files) against the process limit.",
                   [prom(f'sum by (instance) (process_open_fds{{{SVC}, instance=~"$instance"}})', "{{instance}} open"),
                    prom(f'sum by (instance) (process_max_fds{{{SVC}, instance=~"$instance"}})', "{{instance}} max", ref="B")], "short", w=8),
        logs(lay, "Logs of the selection", "Access and application logs of the service and routes selected (the access line carries route, status and duration_ms).",
             '{service_name="$service"} | json | route=~"$route"'),
        traces(lay, "Traces of the selection", "Recent server spans of the service on the selected routes (TraceQL).",
               '{ resource.service.name = "$service" && span.http.route =~ "$route" && kind = server }'),
    ]
    annotations = [
        {"name": "Faults", "datasource": PROM, "enable": True, "iconColor": "orange", "step": "30s",
         "expr": 'max by (kind) (sample_app_fault_active{service="$service"}) == 1', "titleFormat": "fault on: {{kind}}", "textFormat": "", "useValueForTime": False},
        {"name": "Alerts", "datasource": PROM, "enable": True, "iconColor": "red", "step": "30s",
         "expr": 'ALERTS{service="$service", alertstate="firing"}', "titleFormat": "{{alertname}}", "textFormat": "{{severity}}", "useValueForTime": False},
    ]
    variables = [var_service(),
                 var_query("route", "Route", 'label_values(http_server_request_duration_seconds_count{service="$service"}, http_route)'),
                 var_query("instance", "Instance", 'label_values(up{job="sample-app", service="$service"}, instance)')]
    return dashboard("service-drilldown", "Service drill-down", "One service in depth: RED by route, dependencies, saturation, logs and traces, with faults and alerts as annotations.",
                     p, variables, [OVERVIEW, SLO], annotations)


def slo():
    lay = Layout()
    p = [
        stat(lay, "Availability SLI (30 days)", "Share of SLI requests answered without a 5xx over 30 days. Objective: 99.5 %.",
             'clamp_min(1 - service:slo_availability_errors:ratio_rate30d{service="$service"}, 0)', "percentunit", thresholds=[(0, "red"), (0.995, "green")]),
        stat(lay, "Availability budget left", "Share of the 30-day error budget (0.5 % of requests) not yet spent; below zero the SLO is missed.",
             'service:slo_availability_error_budget_remaining:ratio30d{service="$service"}', "percentunit", thresholds=[(0, "red"), (0.25, "orange"), (0.5, "green")]),
        stat(lay, "Latency SLI (30 days)", "Share of SLI requests answered within 0.5 s over 30 days. Objective: 99 %.",
             'clamp_min(1 - service:slo_latency_slow:ratio_rate30d{service="$service"}, 0)', "percentunit", thresholds=[(0, "red"), (0.99, "green")]),
        stat(lay, "Latency budget left", "Share of the 30-day latency budget (1 % slow requests) not yet spent.",
             'service:slo_latency_error_budget_remaining:ratio30d{service="$service"}', "percentunit", thresholds=[(0, "red"), (0.25, "orange"), (0.5, "green")]),
        timeseries(lay, "Availability burn rate, every window", "How fast the error budget burns (1 = exactly on budget). Page thresholds: 14.4 (1h and 5m), 6 (6h and 30m); ticket: 3 (1d and 2h), 1 (3d and 6h).",
                   [prom(f'service:slo_availability_burn_rate:rate{w}{{service="$service"}}', w, ref=chr(65 + i)) for i, w in enumerate(["5m", "30m", "1h", "2h", "6h", "1d", "3d"])],
                   "none", w=24, h=9, thresholds=[(1, "yellow"), (3, "orange"), (6, "red"), (14.4, "dark-red")]),
        timeseries(lay, "Latency burn rate, every window", "The same for the latency SLO (budget: 1 % of requests slower than 0.5 s).",
                   [prom(f'service:slo_latency_burn_rate:rate{w}{{service="$service"}}', w, ref=chr(65 + i)) for i, w in enumerate(["5m", "30m", "1h", "2h", "6h", "1d", "3d"])],
                   "none", w=24, h=9, thresholds=[(1, "yellow"), (3, "orange"), (6, "red"), (14.4, "dark-red")]),
    ]
    return dashboard("slo", "SLOs", "Availability (99.5 %) and latency (99 % within 0.5 s) SLOs: SLIs, error budgets left, and burn rates with the alert thresholds drawn.",
                     p, [var_service()], [OVERVIEW, DRILL])


def load():
    lay = Layout()
    p = [
        timeseries(lay, "Offered vs achieved load", "What load-gen's schedule offers (requests/s) against what it sends and what the service answers. A gap means the generator or the service cannot keep up.",
                   [prom("sum(loadgen_offered_rate)", "offered"), prom(f"sum(rate(loadgen_requests_sent_total[{R}]))", "sent", ref="B"),
                    prom(f'sum(rate(http_server_request_duration_seconds_count{{service="sample-app"}}[{R}]))', "answered by sample-app", ref="C")], "reqps", w=12),
        timeseries(lay, "Client-side vs server-side p99", "Latency load-gen saw (from each request's intended send time: no coordinated omission) against what the service measured. The difference is queueing and network.",
                   [prom(f"histogram_quantile(0.99, sum by (le) (rate(loadgen_request_duration_seconds_bucket[{R}])))", "client p99"),
                    prom(f'histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{{service="sample-app"}}[{R}])))', "server p99", ref="B")], "s", w=12),
        timeseries(lay, "Dropped and late requests", "Requests load-gen could not send (too many in flight) or sent more than 10 ms late: the target rate was not met.",
                   [prom(f"sum(rate(loadgen_requests_dropped_total[{R}]))", "dropped"), prom(f"sum(rate(loadgen_requests_late_total[{R}]))", "late", ref="B")], "reqps", w=12),
        timeseries(lay, "Outcomes seen by load-gen", "Finished requests by status class or error kind (refused, timeout, reset).",
                   [prom(f"sum by (outcome) (rate(loadgen_requests_completed_total[{R}]))", "{{outcome}}")], "reqps", w=12),
    ]
    return dashboard("load", "Load", "Offered vs achieved load and client-side vs server-side latency, from load-gen's own metrics.", p, [], [OVERVIEW])


def stack_health():
    lay = Layout()
    p = [
        timeseries(lay, "Scrape targets up", "1 when Prometheus could scrape the job's target, 0 when not. A missing line is a target that disappeared.",
                   [prom("sum by (job) (up)", "{{job}}")], "short", w=12),
        timeseries(lay, "Prometheus ingestion", "Samples appended per second and series in the head block.",
                   [prom(f"rate(prometheus_tsdb_head_samples_appended_total[{R}])", "samples/s"), prom("prometheus_tsdb_head_series", "series", ref="B")], "short", w=12),
        timeseries(lay, "Loki ingestion and discards", "Log lines received per second, and lines Loki discarded (by reason; 0 until the first discard creates the series).",
                   [prom(f"sum(rate(loki_distributor_lines_received_total[{R}]))", "received"),
                    prom(f"sum by (reason) (rate(loki_discarded_samples_total[{R}])) or vector(0)", "discarded {{reason}}", ref="B")], "short", w=12),
        timeseries(lay, "Tempo ingestion and discards", "Spans received per second by Tempo's distributor, and spans it discarded (0 until the first discard).",
                   [prom(f"sum(rate(tempo_distributor_spans_received_total[{R}]))", "received"),
                    prom(f"sum by (reason) (rate(tempo_discarded_spans_total[{R}])) or vector(0)", "discarded {{reason}}", ref="B")], "short", w=12),
        timeseries(lay, "Tempo generator output", "Span-metric and service-graph series Tempo's metrics generator remote-writes: calls per second by service, and edges.",
                   [prom(f"sum by (service) (rate(traces_spanmetrics_calls_total[{R}]))", "span calls {{service}}"),
                    prom(f"sum by (client, server) (rate(traces_service_graph_request_total[{R}]))", "edge {{client}} → {{server}}", ref="B")], "short", w=12),
        timeseries(lay, "Alloy → Loki", "Log entries Alloy sent to Loki and dropped after all retries (0 until the first drop).",
                   [prom(f"sum(rate(loki_write_sent_entries_total[{R}]))", "sent"), prom(f"sum(rate(loki_write_dropped_entries_total[{R}])) or vector(0)", "dropped", ref="B")], "short", w=12),
        timeseries(lay, "Backend memory", "Resident memory of each backend against its compose memory limit (docs/setup.md).",
                   [prom('sum by (job) (process_resident_memory_bytes{job=~"prometheus|loki|tempo|pyroscope|alloy|alertmanager"})', "{{job}}")], "bytes", w=12),
        timeseries(lay, "Grafana requests", "Requests Grafana served per second, by status class, and the share answered with a 5xx.",
                   [prom(f'sum by (status_code) (rate(grafana_http_request_duration_seconds_count{{job="grafana"}}[{R}]))', "{{status_code}}"),
                    prom(f'(sum(rate(grafana_http_request_duration_seconds_count{{job="grafana", status_code=~"5.."}}[{R}])) or vector(0)) / sum(rate(grafana_http_request_duration_seconds_count{{job="grafana"}}[{R}]))', "5xx share", ref="B")], "reqps", w=12),
        timeseries(lay, "Grafana latency", "p99 and p50 of Grafana's own request latency (dashboards, queries, API).",
                   [prom(f'histogram_quantile(0.99, sum by (le) (rate(grafana_http_request_duration_seconds_bucket{{job="grafana"}}[{R}])))', "p99"),
                    prom(f'histogram_quantile(0.5, sum by (le) (rate(grafana_http_request_duration_seconds_bucket{{job="grafana"}}[{R}])))', "p50", ref="B")], "s", w=12),
        timeseries(lay, "Grafana data-source requests", "Requests Grafana sent to each data source per second, and those that did not answer 2xx (query errors).",
                   [prom(f'sum by (datasource) (rate(grafana_datasource_request_total{{job="grafana"}}[{R}]))', "{{datasource}}"),
                    prom(f'sum by (datasource) (rate(grafana_datasource_request_total{{job="grafana", code!~"2.."}}[{R}])) or vector(0)', "errors {{datasource}}", ref="B")], "reqps", w=12),
        timeseries(lay, "Notifications", "Notifications Alertmanager sent to its receivers, and failures.",
                   [prom(f"sum by (integration) (rate(alertmanager_notifications_total[{R}]))", "{{integration}}"),
                    prom(f"sum by (integration) (rate(alertmanager_notifications_failed_total[{R}]))", "failed {{integration}}", ref="B")], "short", w=12),
    ]
    return dashboard("stack-health", "Stack health", "Is the telemetry pipeline itself healthy: scrapes, ingestion and drops of Prometheus, Loki, Tempo, Alloy; Tempo's generator output; notifications.",
                     p, [], [OVERVIEW])


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for build in (overview, drilldown, slo, load, stack_health):
        model = build()
        (OUT / f"{model['uid']}.json").write_text(json.dumps(model, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote 5 dashboards to {OUT}")


if __name__ == "__main__":
    main()
