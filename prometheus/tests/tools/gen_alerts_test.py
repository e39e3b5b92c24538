"""Writes prometheus/tests/alerts_test.yml: each alert firing and silent, from hand-shaped series;
and alerts_lab_test.yml: labs whose timing matters, at the stack's 10 s intervals.
Expected annotations are rendered from the rule templates with Go's humanize semantics."""
import math, re
from pathlib import Path

import yaml

rules = {r["alert"]: r for g in yaml.safe_load(open(Path(__file__).resolve().parents[2] / "rules/alerts.yml"))["groups"] for r in g["rules"]}

def g4(x):  # Go's %.4g
    s = "%.4g" % x
    return s
def humanize(v):
    if v == 0 or math.isnan(v) or math.isinf(v):
        return "%.4g" % v
    if abs(v) >= 1:
        prefix = ""
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"]:
            if abs(v) < 1000: break
            prefix = p; v /= 1000
        return g4(v) + prefix
    prefix = ""
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"]:
        if abs(v) >= 1: break
        prefix = p; v *= 1000
    return g4(v) + prefix
def humanize1024(v):
    if abs(v) <= 1:
        return "%.4g" % v
    prefix = ""
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"]:
        if abs(v) < 1024: break
        prefix = p; v /= 1024
    return g4(v) + prefix
def humanize_percentage(v):
    return "%.4g%%" % (v * 100)
def humanize_duration(v):
    if v == 0: return "0s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        d, h, m = int(v // 86400), int(v // 3600 % 24), int(v // 60 % 60)
        s = v % 60
        if d: return f"{sign}{d}d {h}h {m}m {int(s)}s"
        if h: return f"{sign}{h}h {m}m {int(s)}s"
        if m: return f"{sign}{m}m {int(s)}s"
        return f"{sign}{g4(s)}s"
    prefix = ""
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"]:
        if abs(v) >= 1: break
        prefix = p; v *= 1000
    return f"{g4(v)}{prefix}s"
FNS = {"humanize": humanize, "humanize1024": humanize1024, "humanizePercentage": humanize_percentage, "humanizeDuration": humanize_duration}

def render(template, labels, value):
    def sub(m):
        expr = m.group(1).strip()
        if expr.startswith("$labels."):
            return labels[expr[len("$labels."):]]
        if expr == "$value":
            return str(value)
        fn = re.fullmatch(r"\$value \| (\w+)", expr).group(1)
        return FNS[fn](value)
    return re.sub(r"\{\{(.*?)\}\}", sub, template)

def expected(alert, labels, value):
    rule = rules[alert]
    lab = dict(labels, severity=rule["labels"]["severity"])
    ann = {k: render(v, lab, value) for k, v in rule["annotations"].items()}
    return {"exp_labels": lab, "exp_annotations": ann}

APP = 'job="sample-app",service="sample-app",instance="a:8080"'
def counter(name, labels, pieces):
    """pieces: [(per_minute, minutes)] → a cumulative counter in promtool notation."""
    # The first piece covers minutes 0..n; each later piece continues from the last value,
    # its first increment landing on the minute after.
    parts, last = [], None
    for per_min, minutes in pieces:
        start = 0.0 if last is None else last + per_min
        n = minutes if last is None else minutes - 1
        parts.append(f"{start:g}+{per_min:g}x{n}")
        last = start + per_min * n
    return {"series": f"{name}{{{labels}}}", "values": " ".join(parts)}
def requests(ok_per_min, err_per_min, minutes_or_pieces):
    """SLI traffic on /api/orders: (ok, err) per minute, piecewise."""
    pieces = minutes_or_pieces if isinstance(minutes_or_pieces, list) else [(ok_per_min, err_per_min, minutes_or_pieces)]
    ok = counter("http_server_request_duration_seconds_count", f'{APP},http_route="/api/orders",http_response_status_code="201"', [(o, m) for o, e, m in pieces])
    err = counter("http_server_request_duration_seconds_count", f'{APP},http_route="/api/orders",http_response_status_code="503"', [(e, m) for o, e, m in pieces])
    return [ok, err]

tests = []
def case(comment, series, eval_time, checks, interval="1m"):
    tests.append({"_comment": comment, "interval": interval, "input_series": series,
                  "alert_rule_test": [{"eval_time": eval_time, "alertname": a, "exp_alerts": exp} for a, exp in checks]})
S = {"service": "sample-app"}

# Error ratio and availability burn rate
case("10 % errors (20x burn) for 40 minutes: the error-ratio alert, the page and the ticket fire",
     requests(108, 12, 40), "35m",
     [("SampleAppHighErrorRatio", [expected("SampleAppHighErrorRatio", S, 0.1)]),
      ("SampleAppErrorBudgetBurnPage", [expected("SampleAppErrorBudgetBurnPage", S, 0.1)]),
      ("SampleAppErrorBudgetBurnTicket", [expected("SampleAppErrorBudgetBurnTicket", S, 0.1)])])
case("4 % errors: under the 5 % error-ratio threshold, but an 8x burn pages through the 6h/30m windows",
     requests(115.2, 4.8, 40), "35m",
     [("SampleAppHighErrorRatio", []),
      ("SampleAppErrorBudgetBurnPage", [expected("SampleAppErrorBudgetBurnPage", S, 0.04)])])
case("2 % errors (4x burn): no page (below 6x), but a ticket (1d and 2h above 3x)",
     requests(117.6, 2.4, 40), "35m",
     [("SampleAppErrorBudgetBurnPage", []),
      ("SampleAppErrorBudgetBurnTicket", [expected("SampleAppErrorBudgetBurnTicket", S, 0.02)])])
case("0.4 % errors (0.8x burn): within budget, nothing fires",
     requests(119.52, 0.48, 40), "35m",
     [("SampleAppHighErrorRatio", []), ("SampleAppErrorBudgetBurnPage", []), ("SampleAppErrorBudgetBurnTicket", [])])
case("six clean hours, then a 5-minute blip at 50 %: the 5m window is hot but 1h (4 %) and 6h stay low: no page",
     requests(0, 0, [(120, 0, 360), (60, 60, 5)]), "365m",
     [("SampleAppErrorBudgetBurnPage", [])])
# promtool evaluates rule groups in no fixed order, so an alert may read a recording rule from
# this minute or the last: every case below is read where the value is the same in both.
case("six clean hours, then 70 minutes at 50 %: 1h and 5m both above 14.4x: page",
     requests(0, 0, [(120, 0, 360), (60, 60, 70)]), "430m",
     [("SampleAppErrorBudgetBurnPage", [expected("SampleAppErrorBudgetBurnPage", S, 0.5)])])
case("10 clean minutes after the storm the 5m window is clean, but 6h (4 %) and 30m (33 %) still burn over 6x: still paging",
     requests(0, 0, [(120, 0, 360), (60, 60, 30), (120, 0, 10)]), "400m",
     [("SampleAppErrorBudgetBurnPage", [expected("SampleAppErrorBudgetBurnPage", S, 1800 / 43200)])])
case("35 clean minutes after the storm both short windows (5m, 30m) are clean: the page stops",
     requests(0, 0, [(120, 0, 360), (60, 60, 30), (120, 0, 35)]), "425m",
     [("SampleAppErrorBudgetBurnPage", [])])

# Latency
def buckets(per_min, le_counts, minutes, route="/api/orders"):
    out = [counter("http_server_request_duration_seconds_count", f'{APP},http_route="{route}",http_response_status_code="200"', [(per_min, minutes)])]
    for le, n in le_counts:
        out.append(counter("http_server_request_duration_seconds_bucket", f'{APP},http_route="{route}",http_response_status_code="200",le="{le}"', [(n, minutes)]))
    return out
case("every request takes 0.5-1 s: p99 and p95 over 0.5 s, and the latency budget burns",
     buckets(60, [("0.1", 0), ("0.5", 0), ("1", 60), ("+Inf", 60)], 40), "35m",
     [("SampleAppHighLatencyP99", [expected("SampleAppHighLatencyP99", S, 0.995)]),
      ("SampleAppHighLatencyP95", [expected("SampleAppHighLatencyP95", S, 0.975)]),
      ("SampleAppLatencyBudgetBurnPage", [expected("SampleAppLatencyBudgetBurnPage", S, 1.0)]),
      ("SampleAppLatencyBudgetBurnTicket", [expected("SampleAppLatencyBudgetBurnTicket", S, 1.0)])])
case("every request under 0.1 s: no latency alert",
     buckets(60, [("0.1", 60), ("0.5", 60), ("1", 60), ("+Inf", 60)], 40), "35m",
     [("SampleAppHighLatencyP99", []), ("SampleAppHighLatencyP95", []),
      ("SampleAppLatencyBudgetBurnPage", []), ("SampleAppLatencyBudgetBurnTicket", [])])
case("the /slow demo route is slow on purpose: it is not an SLI route and trips nothing",
     buckets(60, [("0.1", 0), ("0.5", 0), ("1", 0), ("+Inf", 60)], 40, route="/slow"), "35m",
     [("SampleAppHighLatencyP99", []), ("SampleAppLatencyBudgetBurnPage", [])])

# Availability of the scrape target
up = lambda svc, values: {"series": f'up{{job="sample-app",service="{svc}",instance="{svc}:8080"}}', "values": values}
case("a target that stops answering scrapes: down after a minute",
     [up("sample-app", "1x5 0x10"), up("sample-app-downstream", "1x15")], "10m",
     [("SampleAppDown", [expected("SampleAppDown", {"job": "sample-app", "service": "sample-app", "instance": "sample-app:8080"}, 0)])])
case("targets that answer: not down",
     [up("sample-app", "1x15"), up("sample-app-downstream", "1x15")], "10m",
     [("SampleAppDown", []), ("SampleAppTargetMissing", [])])
case("the downstream has no scrape target at all: missing after five minutes",
     [up("sample-app", "1x15")], "10m",
     [("SampleAppTargetMissing", [expected("SampleAppTargetMissing", {"job": "sample-app", "service": "sample-app-downstream"}, 1)])])

# Traffic spike
spike = lambda pieces: [counter("http_server_request_duration_seconds_count", f'{APP},http_route="/api/orders",http_response_status_code="201"', pieces)]
case("40 minutes at 10 req/s, then 100 req/s: a spike",
     spike([(600, 40), (6000, 6)]), "45m",
     [("SampleAppTrafficSpike", [expected("SampleAppTrafficSpike", S, 100)])])
case("steady 10 req/s: no spike", spike([(600, 46)]), "45m", [("SampleAppTrafficSpike", [])])

# Saturation
cpu = lambda per_min: [counter("process_cpu_seconds_total", APP, [(per_min, 20)])]
case("one full core for 20 minutes: CPU saturation", cpu(60), "15m",
     [("SampleAppCPUSaturation", [expected("SampleAppCPUSaturation", {"service": "sample-app", "instance": "a:8080"}, 1)])])
case("half a core: fine", cpu(30), "15m", [("SampleAppCPUSaturation", [])])
rss = lambda values: [{"series": f"process_resident_memory_bytes{{{APP}}}", "values": values}]
case("memory grows 1 MiB/s for 30 minutes: a leak", rss("104857600+62914560x30"), "25m",
     [("SampleAppMemoryLeak", [expected("SampleAppMemoryLeak", {"service": "sample-app", "instance": "a:8080"}, 1048576)])])
case("memory high but flat: no leak (a trend, not a threshold)", rss("4294967296x30"), "25m", [("SampleAppMemoryLeak", [])])
case("memory creeping 1 KiB/s: below the growth floor", rss("104857600+61440x30"), "25m", [("SampleAppMemoryLeak", [])])

# The memory-leak lab as it runs (load-gen/scenarios/memory-leak.toml), at the stack's 10 s scrape
# and evaluation intervals (alerts_lab_test.yml): ten flat minutes at 40 MiB, then 256 KiB per
# request at 20 req/s (5 MiB/s) until the 160 MiB cap. The 10-minute deriv climbs past 256 KiB/s
# about 2 minutes after the leak starts; the alert fires 4.5 minutes in, before the scenario
# clears the fault (5m10s after it set it).
lab_tests = []
def lab_case(comment, series, eval_time, checks):
    lab_tests.append({"_comment": comment, "interval": "10s", "input_series": series,
                      "alert_rule_test": [{"eval_time": eval_time, "alertname": a, "exp_alerts": exp} for a, exp in checks]})
def deriv(samples, step, at, window=600):
    """Prometheus' deriv(): the least-squares slope over the samples in [at - window, at]."""
    pts = [(i * step, v) for i, v in enumerate(samples) if at - window <= i * step <= at]
    n = len(pts); mx = sum(t for t, _ in pts) / n; my = sum(v for _, v in pts) / n
    return sum((t - mx) * (v - my) for t, v in pts) / sum((t - mx) ** 2 for t, _ in pts)
MiB = 1048576
lab = [40 * MiB] * 61 + [40 * MiB + min(50 * MiB * k, 160 * MiB) for k in range(1, 40)]
lab_case("the memory-leak lab: 5 MiB/s up to its 160 MiB cap fires within the run", rss(" ".join(str(v) for v in lab)), "870s",
         [("SampleAppMemoryLeak", [expected("SampleAppMemoryLeak", {"service": "sample-app", "instance": "a:8080"}, deriv(lab, 10, 870))])])
lab_case("the memory-leak lab, one minute in: not yet (the trend needs time)", rss(" ".join(str(v) for v in lab[:68])), "670s",
         [("SampleAppMemoryLeak", [])])

# Dependencies
def client(ok, err, slow):
    lab = f'{APP},http_request_method="GET",server_address="downstream"'
    out = [counter("http_client_request_duration_seconds_count", lab + ',error_type=""', [(ok, 20)]),
           counter("http_client_request_duration_seconds_count", lab + ',error_type="503"', [(err, 20)])]
    for le, n in [("0.5", 0 if slow else ok + err), ("1", ok + err), ("+Inf", ok + err)]:
        out.append(counter("http_client_request_duration_seconds_bucket", lab + f',le="{le}"', [(n, 20)]))
    return out
DS = {"service": "sample-app", "server_address": "downstream"}
case("a fifth of dependency calls fail, all slow: both dependency alerts", client(48, 12, True), "15m",
     [("SampleAppDependencyErrors", [expected("SampleAppDependencyErrors", DS, 0.2)]),
      ("SampleAppDependencySlow", [expected("SampleAppDependencySlow", DS, 0.995)])])
case("a healthy dependency: quiet", client(60, 0, False), "15m",
     [("SampleAppDependencyErrors", []), ("SampleAppDependencySlow", [])])

# Telemetry pipeline
case("Tempo's target is down: its traces are being lost",
     [{"series": 'up{job="tempo",instance="tempo:3200"}', "values": "0x10"}], "5m",
     [("TelemetryBackendDown", [expected("TelemetryBackendDown", {"job": "tempo", "instance": "tempo:3200"}, 0)])])
case("load-gen's scrape fails for 5 minutes",
     [{"series": 'up{job="load-gen",instance="load-gen:9100"}', "values": "0x10"}], "8m",
     [("PrometheusScrapeFailing", [expected("PrometheusScrapeFailing", {"job": "load-gen", "instance": "load-gen:9100"}, 0)]),
      ("TelemetryBackendDown", [])])
drop = lambda name, labels: [counter(name, labels, [(30, 15)])]
case("Tempo discards spans", drop("tempo_discarded_spans_total", 'job="tempo",reason="rate_limited"'), "12m",
     [("TempoDroppingSpans", [expected("TempoDroppingSpans", {"reason": "rate_limited"}, 0.5)])])
case("Loki discards log lines", drop("loki_discarded_samples_total", 'job="loki",reason="line_too_long",tenant="fake"'), "12m",
     [("LokiDroppingLogs", [expected("LokiDroppingLogs", {"reason": "line_too_long"}, 0.5)])])
case("Alloy drops log lines", drop("loki_write_dropped_entries_total", 'job="alloy",host="loki:3100"'), "12m",
     [("AlloyDroppingLogs", [expected("AlloyDroppingLogs", {}, 0.5)])])
case("rule evaluations fail", drop("prometheus_rule_evaluation_failures_total", 'job="prometheus",rule_group="red.yml;sample-app-red-routes"'), "12m",
     [("PrometheusRuleFailures", [expected("PrometheusRuleFailures", {"rule_group": "red.yml;sample-app-red-routes"}, 150)])])
case("notifications to Alertmanager fail", drop("prometheus_notifications_errors_total", 'job="prometheus",alertmanager="http://alertmanager:9093/api/v2/alerts"'), "12m",
     [("PrometheusNotificationsFailing", [expected("PrometheusNotificationsFailing", {"alertmanager": "http://alertmanager:9093/api/v2/alerts"}, 0.5)])])

# No traffic at all: everything exists, nothing moves, nothing fires.
flat = [{"series": f'http_server_request_duration_seconds_count{{{APP},http_route="/api/orders",http_response_status_code="{c}"}}', "values": "10x400"} for c in ("201", "503")]
flat += [{"series": f'http_server_request_duration_seconds_bucket{{{APP},http_route="/api/orders",http_response_status_code="201",le="{le}"}}', "values": "10x400"} for le in ("0.5", "+Inf")]
flat += [{"series": f'http_client_request_duration_seconds_count{{{APP},server_address="downstream",error_type="{e}"}}', "values": "3x400"} for e in ("", "503")]
flat += [{"series": f'process_cpu_seconds_total{{{APP}}}', "values": "12x400"}, {"series": f'process_resident_memory_bytes{{{APP}}}', "values": "50000000x400"}]
flat += [up("sample-app", "1x400"), up("sample-app-downstream", "1x400")]
flat += [{"series": f'up{{job="{j}",instance="{j}:1"}}', "values": "1x400"} for j in ("tempo", "loki", "pyroscope", "alloy", "alertmanager", "prometheus", "load-gen")]
flat += [{"series": s, "values": "4x400"} for s in ('tempo_discarded_spans_total{job="tempo",reason="rate_limited"}', 'loki_discarded_samples_total{job="loki",reason="rate_limited"}', 'loki_write_dropped_entries_total{job="alloy"}', 'prometheus_rule_evaluation_failures_total{job="prometheus",rule_group="g"}', 'prometheus_notifications_errors_total{job="prometheus",alertmanager="am"}')]
case("no traffic and a healthy pipeline for six hours: no alert fires (every division is guarded)",
     flat, "6h", [(a, []) for a in rules])

doc = {"rule_files": ["../rules/red.yml", "../rules/slo.yml", "../rules/alerts.yml"], "evaluation_interval": "1m", "tests": []}
lines = ["# Unit tests of alerts.yml: every alert both firing and silent, the no-traffic case, and the",
         "# boundaries of the multi-window burn-rate logic. Generated once from hand-shaped traffic;",
         "# expected annotations are the rule templates rendered with the expected value.",
         "# Run: promtool test rules prometheus/tests/*.yml",
         "rule_files: [../rules/red.yml, ../rules/slo.yml, ../rules/alerts.yml]",
         "evaluation_interval: 1m", "tests:"]
for t in tests:
    comment = t.pop("_comment")
    body = yaml.safe_dump([t], sort_keys=False, width=200, allow_unicode=True)
    lines.append(f"  # {comment}")
    lines.extend("  " + l for l in body.rstrip().splitlines())
open(Path(__file__).resolve().parents[1] / "alerts_test.yml", "w").write("\n".join(lines) + "\n")

lines = ["# Unit tests of alerts.yml at the stack's own 10 s scrape and evaluation intervals, for the",
         "# labs whose timing matters. Generated by tools/gen_alerts_test.py.",
         "# Run: promtool test rules prometheus/tests/*.yml",
         "rule_files: [../rules/red.yml, ../rules/slo.yml, ../rules/alerts.yml]",
         "evaluation_interval: 10s", "tests:"]
for t in lab_tests:
    comment = t.pop("_comment")
    body = yaml.safe_dump([t], sort_keys=False, width=200, allow_unicode=True)
    lines.append(f"  # {comment}")
    lines.extend("  " + l for l in body.rstrip().splitlines())
open(Path(__file__).resolve().parents[1] / "alerts_lab_test.yml", "w").write("\n".join(lines) + "\n")
print(len(tests), "test groups;", "alerts covered:", sorted({c['alertname'] for t in tests for c in t['alert_rule_test']}) == sorted(rules))
