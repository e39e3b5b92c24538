//! Every correlation resolves on real data, the way Grafana performs it with the settings it
//! loaded (the data sources' `jsonData`, read from Grafana's API — not from our files):
//! exemplar → trace, trace → logs (`tracesToLogsV2`, interpolated as Grafana does), logs →
//! trace (the Loki derived field), trace → metrics (`tracesToMetrics`), trace → profile (the
//! span profile of a span, by its `pyroscope.profile.id`), and the service graph's edges.
//!
//! Grafana's span links: `public/app/features/explore/TraceView/createSpanLink.tsx` (v13.2):
//! `${__tags}` becomes `key="value"` for each mapped tag the span or its resource has, joined
//! with ", "; the time range is the span's, shifted by `spanStartTimeShift`/`spanEndTimeShift`.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    EMPTY_STACK, SETTLED_S, WINDOW_S, exemplars, flamegraph_total, grafana_datasource, lines_of,
    loki_lines, loki_range, prom_query, prom_value, pyroscope, tempo_search, tempo_trace,
    trace_id_of, window_ms,
};
use crate::{
    Check, Ctx, Hint,
    api::{Attempt, Problem, Span},
};

const THREE: [&str; 3] = ["load-gen", "sample-app", "sample-app-downstream"];

fn hint(cause: &str, look: &str, anchor: &'static str) -> Hint {
    Hint {
        cause: cause.into(),
        look: look.into(),
        anchor,
    }
}

pub fn checks() -> Vec<Check> {
    vec![
        exemplar_to_trace(
            "trace_id",
            "http_server_request_duration_seconds_bucket{service=\"sample-app\"}",
            &["prometheus", "tempo", "grafana", "sample-app"],
        ),
        exemplar_to_trace(
            "traceID",
            "traces_spanmetrics_latency_bucket{service=\"sample-app\"}",
            &["prometheus", "tempo", "grafana"],
        ),
        Check::new(
            "correlation.trace-to-logs",
            "correlations",
            "trace → logs: Tempo's tracesToLogsV2 query, interpolated for a real span, returns that trace's lines",
            &["grafana", "tempo", "loki", "alloy"],
            hint(
                "the tracesToLogsV2 query does not select the span's lines: a tag mapped to a label Loki does not have, or trace_id not in structured metadata",
                "grafana/provisioning/datasources/datasources.yaml, Tempo jsonData.tracesToLogsV2 (tags, query); alloy/config.alloy stage.structured_metadata",
                "verify-trace-to-logs",
            ),
            |ctx: Arc<Ctx>| async move { trace_to_logs(&ctx).await },
        ),
        Check::new(
            "correlation.logs-to-trace",
            "correlations",
            "logs → trace: the Loki derived field turns a real line's trace_id into a trace Tempo has",
            &["grafana", "loki", "tempo", "alloy"],
            hint(
                "the derived field matches nothing (matcherType label needs trace_id as structured metadata), or its trace is not in Tempo",
                "grafana/provisioning/datasources/datasources.yaml, Loki jsonData.derivedFields; alloy/config.alloy stage.structured_metadata",
                "verify-logs-to-trace",
            ),
            |ctx: Arc<Ctx>| async move { logs_to_trace(&ctx).await },
        ),
        Check::new(
            "correlation.trace-to-metrics",
            "correlations",
            "trace → metrics: every tracesToMetrics query, for a real span's service and route, returns data",
            &["grafana", "tempo", "prometheus"],
            hint(
                "a query names a label or metric Prometheus does not have for this span (the tag mapping service.name → service)",
                "grafana/provisioning/datasources/datasources.yaml, Tempo jsonData.tracesToMetrics (tags, queries); prometheus/prometheus.yml (the service label)",
                "verify-trace-to-metrics",
            ),
            |ctx: Arc<Ctx>| async move { trace_to_metrics(&ctx).await },
        ),
        Check::new(
            "correlation.trace-to-profile",
            "correlations",
            "trace → profile: a real server span's pyroscope.profile.id selects its own CPU samples in Pyroscope",
            &["grafana", "tempo", "pyroscope", "sample-app"],
            hint(
                "CPU samples carry no span_id label, or the span's pyroscope.profile.id is not its span id",
                "crates/cpu-sampler (span labels); sample-app's server span attributes; grafana/provisioning/datasources/datasources.yaml, Tempo jsonData.tracesToProfiles",
                "verify-trace-to-profile",
            ),
            |ctx: Arc<Ctx>| async move { trace_to_profile(&ctx).await },
        ),
        service_graph("load-gen", "sample-app"),
        service_graph("sample-app", "sample-app-downstream"),
    ]
}

/// A complete, settled trace of `/external` (load-gen → sample-app → sample-app-downstream),
/// found once and shared by the correlation checks.
async fn settled_trace(ctx: &Arc<Ctx>) -> Attempt<Vec<Span>> {
    let inner = ctx.clone();
    let id = ctx
        .once("settled-trace", || async move {
            let q = "{resource.service.name=\"sample-app\" && span.http.route=\"/external\"}";
            let found = tempo_search(&inner, q, WINDOW_S, SETTLED_S, 20).await?;
            for trace in &found {
                let Some(id) = trace_id_of(trace) else { continue };
                let Ok(spans) = tempo_trace(&inner, &id).await else { continue };
                if THREE.iter().all(|s| spans.iter().any(|span| span.service == *s)) {
                    return Ok(json!(id));
                }
            }
            Err(Problem::wait(format!(
                "no complete /external trace (load-gen → sample-app → sample-app-downstream) in Tempo yet ({} candidates; {EMPTY_STACK})",
                found.len()
            )))
        })
        .await?;
    tempo_trace(ctx, id.as_str().unwrap_or_default()).await
}

fn server_span<'a>(spans: &'a [Span], service: &str) -> Attempt<&'a Span> {
    spans
        .iter()
        .find(|s| s.service == service && s.is_server())
        .ok_or_else(|| Problem::fail(format!("the trace has no server span of {service}")))
}

/// Grafana's `${__tags}`: `label="value"` for each mapped tag the span (or its resource) has.
pub(crate) fn formatted_tags(span: &Span, tags: &Value) -> String {
    let mut pairs = Vec::new();
    for tag in tags.as_array().into_iter().flatten() {
        let Some(key) = tag["key"].as_str() else {
            continue;
        };
        let value = if key == "service.name" {
            Some(span.service.as_str())
        } else {
            span.attribute(key)
        };
        if let Some(value) = value {
            let label = tag["value"]
                .as_str()
                .filter(|v| !v.is_empty())
                .unwrap_or(key);
            pairs.push(format!("{label}=\"{value}\""));
        }
    }
    pairs.join(", ")
}

/// The span variables of a link query: `${__span.traceId}`, `${__span.spanId}`,
/// `${__trace.traceId}`, `${__span.tags["key"]}`, `${__tags}` / `$__tags`.
pub(crate) fn interpolate(template: &str, span: &Span, tags: &Value) -> String {
    let mut text = template
        .replace("${__tags}", &formatted_tags(span, tags))
        .replace("$__tags", &formatted_tags(span, tags))
        .replace("${__span.traceId}", &span.trace_id)
        .replace("${__trace.traceId}", &span.trace_id)
        .replace("${__span.spanId}", &span.span_id);
    while let Some(start) = text.find("${__span.tags[\"") {
        let rest = &text[start + "${__span.tags[\"".len()..];
        let Some(end) = rest.find("\"]}") else { break };
        let key = &rest[..end];
        let value = if key == "service.name" {
            Some(span.service.as_str())
        } else {
            span.attribute(key)
        };
        let whole = format!("${{__span.tags[\"{key}\"]}}");
        text = text.replace(&whole, value.unwrap_or(""));
    }
    text
}

/// `-5m` → -300 s (Grafana's time shifts: an integer and s, m or h).
pub(crate) fn shift_seconds(text: Option<&str>) -> f64 {
    let text = text.unwrap_or("").trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let n: f64 = number.parse().unwrap_or(0.0);
    n * match unit {
        "ms" => 0.001,
        "s" | "" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => 0.0,
    }
}

async fn tempo_settings(ctx: &Arc<Ctx>, key: &str) -> Attempt<Value> {
    let tempo = grafana_datasource(ctx, "tempo").await?;
    let settings = tempo["jsonData"][key].clone();
    if settings.is_null() {
        return Err(Problem::fail(format!(
            "Grafana's Tempo data source has no jsonData.{key}"
        )));
    }
    Ok(settings)
}

async fn exemplar_ids(ctx: &Ctx, selector: &str, label: &str) -> Attempt<Vec<String>> {
    let found = exemplars(ctx, selector).await?;
    let mut ids: Vec<String> = found
        .iter()
        .filter_map(|(labels, _)| {
            labels[label]
                .as_str()
                .and_then(|t| crate::api::hex_id(t, 32))
        })
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn exemplar_to_trace(label: &'static str, selector: &'static str, needs: &[&'static str]) -> Check {
    Check::new(
        format!("correlation.exemplar-to-trace.{label}"),
        "correlations",
        format!("exemplar → trace: exemplars labelled {label} ({selector}) open traces Tempo has"),
        needs,
        hint(
            "exemplars name traces Tempo never received (spans dropped, or another trace id than the span's), or the data source has no exemplarTraceIdDestinations for this label",
            "grafana/provisioning/datasources/datasources.yaml, Prometheus jsonData.exemplarTraceIdDestinations; `docker compose logs tempo`",
            "verify-exemplar-to-trace",
        ),
        move |ctx: Arc<Ctx>| async move {
            let prometheus = grafana_datasource(&ctx, "prometheus").await?;
            let destination = prometheus["jsonData"]["exemplarTraceIdDestinations"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["name"] == label)
                .cloned();
            let Some(destination) = destination else {
                return Err(Problem::fail(format!(
                    "the Prometheus data source has no exemplarTraceIdDestinations entry named {label}"
                )));
            };
            if destination["datasourceUid"] != "tempo" {
                return Err(Problem::fail(format!(
                    "exemplars labelled {label} open data source {}, not tempo",
                    destination["datasourceUid"]
                )));
            }
            let ids = exemplar_ids(&ctx, selector, label).await?;
            if ids.is_empty() {
                return Err(Problem::wait(format!(
                    "no settled exemplar labelled {label} ({EMPTY_STACK})"
                )));
            }
            let mut missing = Vec::new();
            for id in ids.iter().take(5) {
                if tempo_trace(&ctx, id).await.is_err() {
                    missing.push(id.clone());
                }
            }
            if !missing.is_empty() {
                return Err(Problem::wait(format!(
                    "{} of {} exemplar trace ids are not in Tempo: {}",
                    missing.len(),
                    ids.len().min(5),
                    missing.join(", ")
                )));
            }
            Ok(format!(
                "{} of {} exemplar trace ids open in Tempo, e.g. {}",
                ids.len().min(5),
                ids.len(),
                ids[0]
            ))
        },
    )
}

async fn trace_to_logs(ctx: &Arc<Ctx>) -> Attempt {
    let settings = tempo_settings(ctx, "tracesToLogsV2").await?;
    if settings["datasourceUid"] != "loki" {
        return Err(Problem::fail(format!(
            "tracesToLogsV2 opens data source {}, not loki",
            settings["datasourceUid"]
        )));
    }
    let template = settings["query"]
        .as_str()
        .ok_or_else(|| Problem::fail("tracesToLogsV2 has no custom query"))?;
    let spans = settled_trace(ctx).await?;
    let span = server_span(&spans, "sample-app")?;
    let query = interpolate(template, span, &settings["tags"]);
    if query.contains("${") || query.contains("$__") {
        return Err(Problem::fail(format!(
            "the query is not fully interpolated: {query}"
        )));
    }
    let shifted = |at: u64, shift: Option<&str>| {
        (i128::from(at) + (shift_seconds(shift) * 1e9) as i128).max(0) as u128
    };
    let start = shifted(span.start_ns, settings["spanStartTimeShift"].as_str());
    let end = shifted(span.end_ns, settings["spanEndTimeShift"].as_str());
    let data = loki_range(ctx, &query, start, end, 1000).await?;
    let lines = lines_of(&data);
    let others: Vec<&str> = lines
        .iter()
        .filter_map(|(labels, _)| labels["trace_id"].as_str())
        .filter(|id| *id != span.trace_id)
        .collect();
    if !others.is_empty() {
        return Err(Problem::fail(format!(
            "`{query}` also returned lines of other traces: {}",
            others[0]
        )));
    }
    if lines.is_empty() {
        return Err(Problem::wait(format!(
            "`{query}` returned no line of trace {} (span {})",
            span.trace_id, span.span_id
        )));
    }
    Ok(format!(
        "`{query}` → {} lines of trace {}, none of another",
        lines.len(),
        span.trace_id
    ))
}

async fn logs_to_trace(ctx: &Arc<Ctx>) -> Attempt {
    let loki = grafana_datasource(ctx, "loki").await?;
    let field = loki["jsonData"]["derivedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["datasourceUid"] == "tempo")
        .cloned()
        .ok_or_else(|| Problem::fail("the Loki data source has no derived field opening tempo"))?;
    let name = field["name"].as_str().unwrap_or("?");
    let template = field["url"].as_str().unwrap_or_default();
    let lines = loki_lines(
        ctx,
        "{service_name=\"sample-app\"} |= \"request completed\" | trace_id!=\"\"",
        WINDOW_S,
        SETTLED_S + 15.0,
        1,
    )
    .await?;
    let Some((labels, _)) = lines.first() else {
        return Err(Problem::wait(format!(
            "no settled access line of sample-app with a trace_id ({EMPTY_STACK})"
        )));
    };
    let value = if field["matcherType"] == "label" {
        let label = field["matcherRegex"].as_str().unwrap_or_default();
        labels[label].as_str().map(str::to_owned)
    } else {
        return Err(Problem::fail(format!(
            "derived field {name} is matcherType {}: the stack's lines carry trace_id as structured metadata (matcherType label)",
            field["matcherType"]
        )));
    };
    let Some(value) = value else {
        return Err(Problem::fail(format!(
            "derived field {name} matches nothing on the line ({labels})"
        )));
    };
    let trace_id = template.replace("${__value.raw}", &value);
    let spans = tempo_trace(ctx, &trace_id).await?;
    let mut services: Vec<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    services.sort();
    services.dedup();
    Ok(format!(
        "derived field {name} → trace {trace_id}: {} spans of {}",
        spans.len(),
        services.join(", ")
    ))
}

async fn trace_to_metrics(ctx: &Arc<Ctx>) -> Attempt {
    let settings = tempo_settings(ctx, "tracesToMetrics").await?;
    if settings["datasourceUid"] != "prometheus" {
        return Err(Problem::fail(format!(
            "tracesToMetrics opens data source {}, not prometheus",
            settings["datasourceUid"]
        )));
    }
    let spans = settled_trace(ctx).await?;
    let span = server_span(&spans, "sample-app")?;
    let queries = settings["queries"].as_array().cloned().unwrap_or_default();
    if queries.is_empty() {
        return Err(Problem::fail("tracesToMetrics has no queries"));
    }
    let mut done = Vec::new();
    for query in &queries {
        let name = query["name"].as_str().unwrap_or("(unnamed)");
        // $__rate_interval: Grafana's is at least four scrape intervals (timeInterval 10s).
        let expr = interpolate(
            query["query"].as_str().unwrap_or_default(),
            span,
            &settings["tags"],
        )
        .replace("$__rate_interval", "1m");
        if expr.contains('$') {
            return Err(Problem::fail(format!(
                "'{name}' is not fully interpolated: {expr}"
            )));
        }
        let result = prom_query(ctx, &expr).await?;
        if result.is_empty() {
            return Err(Problem::wait(format!("'{name}' returned no data: {expr}")));
        }
        done.push(format!("'{name}' {} series", result.len()));
    }
    Ok(format!(
        "span {} ({} {}): {}",
        span.span_id,
        span.service,
        span.attribute("http.route").unwrap_or("?"),
        done.join(", ")
    ))
}

async fn span_profile_total(
    ctx: &Ctx,
    profile_type: &str,
    selector: &str,
    spans: &[String],
) -> Attempt<u64> {
    let (start, end) = window_ms();
    let answer = pyroscope(
        ctx,
        "SelectMergeSpanProfile",
        json!({"profileTypeID": profile_type, "labelSelector": selector, "spanSelector": spans, "start": start, "end": end}),
    )
    .await?;
    Ok(flamegraph_total(&answer))
}

async fn trace_to_profile(ctx: &Arc<Ctx>) -> Attempt {
    let settings = tempo_settings(ctx, "tracesToProfiles").await?;
    if settings["datasourceUid"] != "pyroscope" {
        return Err(Problem::fail(format!(
            "tracesToProfiles opens data source {}, not pyroscope",
            settings["datasourceUid"]
        )));
    }
    let profile_type = settings["profileTypeId"]
        .as_str()
        .ok_or_else(|| Problem::fail("tracesToProfiles has no profileTypeId"))?;
    // One span has CPU samples only when its work took a sampling tick (10 ms at 100 Hz):
    // ask for the recent server spans together, then narrow down to one of them.
    let found = tempo_search(
        ctx,
        "{resource.service.name=\"sample-app\" && kind=server}",
        WINDOW_S,
        SETTLED_S,
        100,
    )
    .await?;
    let mut candidates: Vec<(String, String)> = Vec::new();
    for trace in &found {
        let Some(trace_id) = trace_id_of(trace) else {
            continue;
        };
        for set in trace["spanSets"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(trace["spanSet"].as_object().map(|_| &trace["spanSet"]))
        {
            for span in set["spans"].as_array().into_iter().flatten() {
                if let Some(id) = span["spanID"]
                    .as_str()
                    .and_then(|s| crate::api::hex_id(s, 16))
                {
                    candidates.push((id, trace_id.clone()));
                }
            }
        }
    }
    candidates.sort();
    candidates.dedup();
    if candidates.is_empty() {
        return Err(Problem::wait(format!(
            "Tempo has no settled server span of sample-app ({EMPTY_STACK})"
        )));
    }
    // The label selector Grafana builds from the tags (service.name → service_name).
    let tags = settings["tags"].clone();
    let selector_for = |trace_id: &str| {
        let span = Span {
            service: "sample-app".into(),
            name: String::new(),
            kind: String::new(),
            trace_id: trace_id.into(),
            span_id: String::new(),
            start_ns: 0,
            end_ns: 0,
            attributes: vec![],
        };
        format!("{{{}}}", formatted_tags(&span, &tags))
    };
    let selector = selector_for(&candidates[0].1);
    let mut ids: Vec<String> = candidates.iter().map(|(id, _)| id.clone()).collect();
    let total = span_profile_total(ctx, profile_type, &selector, &ids).await?;
    if total == 0 {
        return Err(Problem::wait(format!(
            "none of the {} most recent server spans of sample-app has CPU samples in {profile_type}{selector}",
            ids.len()
        )));
    }
    // Halve until one span id is left whose samples are there.
    while ids.len() > 1 {
        let half = ids.split_off(ids.len() / 2);
        if span_profile_total(ctx, profile_type, &selector, &ids).await? == 0 {
            ids = half;
        }
    }
    let span_id = ids.remove(0);
    let one =
        span_profile_total(ctx, profile_type, &selector, std::slice::from_ref(&span_id)).await?;
    let trace_id = candidates
        .iter()
        .find(|(id, _)| *id == span_id)
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    let spans = tempo_trace(ctx, &trace_id).await?;
    let span = spans
        .iter()
        .find(|s| s.span_id == span_id)
        .ok_or_else(|| Problem::wait(format!("trace {trace_id} has no span {span_id} (yet)")))?;
    let profile_id = span.attribute("pyroscope.profile.id").unwrap_or("");
    if profile_id != span_id || !span.is_server() {
        return Err(Problem::fail(format!(
            "span {span_id} ('{}' of trace {trace_id}) has pyroscope.profile.id={profile_id:?}: Grafana selects its profile by that attribute, so it must be the span's id",
            span.name
        )));
    }
    Ok(format!(
        "span {span_id} ('{}', trace {trace_id}): pyroscope.profile.id selects {one} of its own CPU samples ({profile_type}{selector})",
        span.name
    ))
}

fn service_graph(client: &'static str, server: &'static str) -> Check {
    Check::new(
        format!("correlation.service-graph.{client}.{server}"),
        "correlations",
        format!("service graph: Tempo's generator counted the edge {client} → {server}"),
        &["tempo", "prometheus", client, server],
        hint(
            "Tempo's service-graphs processor does not run, or spans lack the client/server pairing (a client span whose child is missing)",
            "tempo/tempo.yaml, overrides.defaults.metrics_generator.processors (service-graphs) and storage.remote_write",
            "verify-service-graph",
        ),
        move |ctx: Arc<Ctx>| async move {
            let expr = format!(
                "sum(traces_service_graph_request_total{{client=\"{client}\", server=\"{server}\"}})"
            );
            match prom_value(&ctx, &expr).await? {
                Some(n) if n > 0.0 => Ok(format!("{expr} = {n:.0}")),
                _ => Err(Problem::wait(format!("{expr} has no data ({EMPTY_STACK})"))),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span {
            service: "sample-app".into(),
            name: "GET /external".into(),
            kind: "SPAN_KIND_SERVER".into(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            start_ns: 0,
            end_ns: 0,
            attributes: vec![("http.route".into(), "/external".into())],
        }
    }

    #[test]
    fn the_traces_to_logs_query_is_interpolated_as_grafana_does() {
        let tags =
            json!([{"key": "service.name", "value": "service_name"}, {"key": "absent.attr"}]);
        let query = interpolate(
            "{${__tags}} | trace_id=\"${__span.traceId}\"",
            &span(),
            &tags,
        );
        assert_eq!(
            query,
            "{service_name=\"sample-app\"} | trace_id=\"0af7651916cd43dd8448eb211c80319c\""
        );
    }

    #[test]
    fn the_traces_to_metrics_queries_get_tags_and_span_attributes() {
        let tags = json!([{"key": "service.name", "value": "service"}]);
        let query = interpolate(
            "sum(rate(x_count{$__tags, http_route=\"${__span.tags[\"http.route\"]}\"}[$__rate_interval]))",
            &span(),
            &tags,
        );
        assert_eq!(
            query,
            "sum(rate(x_count{service=\"sample-app\", http_route=\"/external\"}[$__rate_interval]))"
        );
        // A tag without a value keeps its key as the label name.
        assert_eq!(
            formatted_tags(&span(), &json!([{"key": "http.route"}])),
            "http.route=\"/external\""
        );
    }

    #[test]
    fn time_shifts_read_like_grafanas() {
        assert_eq!(shift_seconds(Some("-5m")), -300.0);
        assert_eq!(shift_seconds(Some("10m")), 600.0);
        assert_eq!(shift_seconds(Some("30s")), 30.0);
        assert_eq!(shift_seconds(None), 0.0);
    }
}
