//! Every check verify runs, in the order it prints them: health first, then each signal in its
//! backend, Grafana's provisioning, the correlations on real data, the query catalogs, the rule
//! groups, and the alert path.

mod alerting;
mod catalog;
mod correlations;
mod grafana;
mod health;
mod rules;
mod signals;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::{
    Check, Ctx, Options,
    api::{self, Attempt, Problem, Span, now_s, prometheus_data},
};

/// How far back "recent data" reaches.
pub const WINDOW_S: f64 = 900.0;
/// A trace younger than this may still miss spans in a batch not yet flushed.
pub const SETTLED_S: f64 = 30.0;

/// Every check, in order. `options.only` keeps those whose id starts with one of its entries.
pub fn all(options: &Options) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.extend(health::checks(options));
    checks.extend(signals::checks());
    checks.extend(grafana::checks());
    checks.extend(correlations::checks());
    checks.extend(catalog::checks());
    checks.extend(rules::checks());
    if options.probe_alert {
        checks.extend(alerting::checks());
    }
    if !options.only.is_empty() {
        checks.retain(|c| {
            options
                .only
                .iter()
                .any(|prefix| c.id.starts_with(prefix.as_str()))
        });
    }
    checks
}

/// The hint of a check that reads data some service produces: empty means wait, or traffic.
pub(crate) const EMPTY_STACK: &str = "the stack is fresh (give it a minute) or nothing sends traffic: \
    `docker compose up -d load-gen` starts the background traffic";

// ---- Prometheus -----------------------------------------------------------------------------

pub(crate) async fn prom_query(ctx: &Ctx, expr: &str) -> Attempt<Vec<Value>> {
    let body = ctx
        .prometheus
        .get_json("/api/v1/query", &[("query", expr)])
        .await?;
    let data = prometheus_data("prometheus", body)?;
    Ok(data["result"].as_array().cloned().unwrap_or_default())
}

pub(crate) async fn prom_range(ctx: &Ctx, expr: &str) -> Attempt<Vec<Value>> {
    let now = now_s();
    let (start, end) = (format!("{:.0}", now - WINDOW_S), format!("{now:.0}"));
    let body = ctx
        .prometheus
        .get_json(
            "/api/v1/query_range",
            &[
                ("query", expr),
                ("start", &start),
                ("end", &end),
                ("step", "15"),
            ],
        )
        .await?;
    let data = prometheus_data("prometheus", body)?;
    Ok(data["result"].as_array().cloned().unwrap_or_default())
}

/// The first value of an instant query, if any series came back.
pub(crate) async fn prom_value(ctx: &Ctx, expr: &str) -> Attempt<Option<f64>> {
    let result = prom_query(ctx, expr).await?;
    Ok(result
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok()))
}

/// Exemplars of `selector` stored between `WINDOW_S` and `SETTLED_S` ago: (labels, series).
pub(crate) async fn exemplars(ctx: &Ctx, selector: &str) -> Attempt<Vec<(Value, Value)>> {
    let now = now_s();
    let (start, end) = (
        format!("{:.0}", now - WINDOW_S),
        format!("{:.0}", now - SETTLED_S),
    );
    let body = ctx
        .prometheus
        .get_json(
            "/api/v1/query_exemplars",
            &[("query", selector), ("start", &start), ("end", &end)],
        )
        .await?;
    let data = prometheus_data("prometheus", body)?;
    let mut found = Vec::new();
    for series in data.as_array().into_iter().flatten() {
        for exemplar in series["exemplars"].as_array().into_iter().flatten() {
            found.push((exemplar["labels"].clone(), series["seriesLabels"].clone()));
        }
    }
    Ok(found)
}

// ---- Loki -----------------------------------------------------------------------------------

/// A Loki range query: `data` (`resultType`, `result`).
pub(crate) async fn loki_range(
    ctx: &Ctx,
    query: &str,
    start_ns: u128,
    end_ns: u128,
    limit: usize,
) -> Attempt<Value> {
    let (start, end, limit) = (start_ns.to_string(), end_ns.to_string(), limit.to_string());
    let body = ctx
        .loki
        .get_json(
            "/loki/api/v1/query_range",
            &[
                ("query", query),
                ("start", &start),
                ("end", &end),
                ("limit", &limit),
                ("direction", "backward"),
                ("step", "15s"),
            ],
        )
        .await?;
    prometheus_data("loki", body)
}

/// (stream labels with structured metadata, line) of a log query over the last `seconds`,
/// ending `end_ago` seconds ago.
pub(crate) async fn loki_lines(
    ctx: &Ctx,
    query: &str,
    seconds: f64,
    end_ago: f64,
    limit: usize,
) -> Attempt<Vec<(Value, String)>> {
    let end = ns(now_s() - end_ago);
    let data = loki_range(ctx, query, end - ns(seconds).min(end), end, limit).await?;
    Ok(lines_of(&data))
}

pub(crate) fn lines_of(data: &Value) -> Vec<(Value, String)> {
    let mut out = Vec::new();
    for stream in data["result"].as_array().into_iter().flatten() {
        for value in stream["values"].as_array().into_iter().flatten() {
            if let Some(line) = value[1].as_str() {
                // Loki 3 merges structured metadata into the stream's labels unless the
                // client asks for them apart (categorize-labels); a third element holds them
                // when it does.
                let mut labels = stream["stream"].clone();
                if let (Some(extra), Some(map)) = (value[2].as_object(), labels.as_object_mut()) {
                    for group in extra.values().filter_map(Value::as_object) {
                        map.extend(group.clone());
                    }
                }
                out.push((labels, line.to_owned()));
            }
        }
    }
    out
}

pub(crate) fn ns(seconds: f64) -> u128 {
    (seconds.max(0.0) * 1e9) as u128
}

// ---- Tempo ----------------------------------------------------------------------------------

/// Traces of a TraceQL search between `from_ago` and `to_ago` seconds ago.
pub(crate) async fn tempo_search(
    ctx: &Ctx,
    q: &str,
    from_ago: f64,
    to_ago: f64,
    limit: usize,
) -> Attempt<Vec<Value>> {
    let now = now_s();
    let (start, end) = (
        format!("{:.0}", now - from_ago),
        format!("{:.0}", now - to_ago + 1.0),
    );
    let limit = limit.to_string();
    let body = ctx
        .tempo
        .get_json(
            "/api/search",
            &[
                ("q", q),
                ("start", &start),
                ("end", &end),
                ("limit", &limit),
                ("spss", "100"),
            ],
        )
        .await?;
    Ok(body["traces"].as_array().cloned().unwrap_or_default())
}

/// The spans of trace `id`; a trace Tempo does not have (yet) is a reason to wait.
pub(crate) async fn tempo_trace(ctx: &Ctx, id: &str) -> Attempt<Vec<Span>> {
    let body = ctx
        .tempo
        .get_json(&format!("/api/v2/traces/{id}"), &[])
        .await?;
    let spans = api::spans_of(&body);
    if spans.is_empty() {
        return Err(Problem::wait(format!("Tempo has no span of trace {id}")));
    }
    Ok(spans)
}

/// The hex trace id of a search result.
pub(crate) fn trace_id_of(found: &Value) -> Option<String> {
    found["traceID"].as_str().and_then(|t| api::hex_id(t, 32))
}

// ---- Pyroscope ------------------------------------------------------------------------------

/// A method of Pyroscope's Connect query API (`querier.v1.QuerierService`), with a JSON body.
pub(crate) async fn pyroscope(ctx: &Ctx, method: &str, body: Value) -> Attempt<Value> {
    ctx.pyroscope
        .post_json(&format!("/querier.v1.QuerierService/{method}"), &body)
        .await
}

/// The total of a merged flame graph (an int64: a string in Connect's JSON).
pub(crate) fn flamegraph_total(answer: &Value) -> u64 {
    let total = &answer["flamegraph"]["total"];
    total
        .as_str()
        .and_then(|t| t.parse().ok())
        .or_else(|| total.as_u64())
        .unwrap_or(0)
}

/// The last `WINDOW_S` in milliseconds, as Pyroscope's API takes time.
pub(crate) fn window_ms() -> (u64, u64) {
    let now = now_s();
    (((now - WINDOW_S) * 1000.0) as u64, (now * 1000.0) as u64)
}

pub(crate) async fn select_merge(ctx: &Ctx, profile_type: &str, selector: &str) -> Attempt<u64> {
    let (start, end) = window_ms();
    let answer = pyroscope(
        ctx,
        "SelectMergeStacktraces",
        json!({"profileTypeID": profile_type, "labelSelector": selector, "start": start, "end": end}),
    )
    .await?;
    Ok(flamegraph_total(&answer))
}

// ---- Grafana --------------------------------------------------------------------------------

/// A data source as Grafana loaded it (`GET /api/datasources/uid/<uid>`), fetched once.
pub(crate) async fn grafana_datasource(ctx: &Arc<Ctx>, uid: &str) -> Attempt<Value> {
    let inner = ctx.clone();
    let uid_owned = uid.to_owned();
    ctx.once(&format!("datasource:{uid}"), || async move {
        inner
            .grafana
            .get_json(&format!("/api/datasources/uid/{uid_owned}"), &[])
            .await
    })
    .await
}

/// The hex trace ids among label values.
pub(crate) fn is_hex(value: &str, width: usize) -> bool {
    value.len() == width && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `a, b, c` of at most `n` items, then `and N more`.
pub(crate) fn some_of(items: &[String], n: usize) -> String {
    let mut text = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        text.push_str(&format!(" and {} more", items.len() - n));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_metadata_is_read_merged_or_categorized() {
        let data = json!({"result": [{"stream": {"service_name": "sample-app", "trace_id": "ab"},
                                      "values": [["1", "merged"], ["2", "apart", {"structuredMetadata": {"span_id": "cd"}}]]}]});
        let lines = lines_of(&data);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0["trace_id"], "ab");
        assert_eq!(lines[1].0["span_id"], "cd");
        assert_eq!(lines[1].1, "apart");
    }

    #[test]
    fn flame_graph_totals_read_as_connect_json_gives_them() {
        assert_eq!(
            flamegraph_total(&json!({"flamegraph": {"total": "1234"}})),
            1234
        );
        assert_eq!(flamegraph_total(&json!({"flamegraph": {"total": 7}})), 7);
        assert_eq!(flamegraph_total(&json!({})), 0);
    }

    #[test]
    fn lists_are_shortened() {
        let items: Vec<String> = (1..=5).map(|i| i.to_string()).collect();
        assert_eq!(some_of(&items, 2), "1, 2 and 3 more");
        assert_eq!(some_of(&items[..2], 3), "1, 2");
    }
}
