//! Every query of the catalogs (`queries/*.md`, read at build time) parses in its backend and
//! returns data. An entry whose heading says *(needs …)* — an active fault, a firing alert —
//! must parse; without its condition it may return nothing.

use std::sync::Arc;

use serde_json::json;

use super::{
    WINDOW_S, flamegraph_total, loki_range, ns, prom_range, pyroscope, tempo_search, window_ms,
};
use crate::{
    Check, Ctx, Hint,
    api::{Attempt, Problem, ProblemKind, now_s},
    expected::{CATALOG, CatalogQuery, LOKI_RECORDED},
};

/// The catalog's PromQL, split by what else must work for it to have data.
fn promql_group(query: &CatalogQuery) -> &'static str {
    if query.query.contains("traces_spanmetrics_") || query.query.contains("traces_service_graph_")
    {
        "tempo"
    } else if LOKI_RECORDED.iter().any(|name| query.query.contains(name)) {
        "loki"
    } else {
        "app"
    }
}

struct Group {
    id: &'static str,
    name: &'static str,
    language: &'static str,
    needs: &'static [&'static str],
    filter: fn(&CatalogQuery) -> bool,
    hint: (&'static str, &'static str),
}

const GROUPS: [Group; 6] = [
    Group {
        id: "queries.promql",
        name: "PromQL catalog (queries/metrics.md) on the services' metrics",
        language: "promql",
        needs: &["prometheus", "sample-app"],
        filter: |q| q.language == "promql" && promql_group(q) == "app",
        hint: (
            "a metric or label the query names is not produced (renamed in code or in prometheus/rules)",
            "queries/metrics.md at the line named; prometheus/metric-catalog.yml; prometheus/rules/",
        ),
    },
    Group {
        id: "queries.promql.tempo",
        name: "PromQL catalog on Tempo's span metrics and service graph",
        language: "promql",
        needs: &["prometheus", "tempo"],
        filter: |q| q.language == "promql" && promql_group(q) == "tempo",
        hint: (
            "Tempo's metrics generator writes nothing to Prometheus",
            "tempo/tempo.yaml metrics_generator; queries/metrics.md",
        ),
    },
    Group {
        id: "queries.promql.loki",
        name: "PromQL catalog on the series Loki's ruler records",
        language: "promql",
        needs: &["prometheus", "loki"],
        filter: |q| q.language == "promql" && promql_group(q) == "loki",
        hint: (
            "Loki's ruler does not evaluate loki/rules or cannot remote-write to Prometheus",
            "loki/loki.yaml ruler.remote_write; loki/rules/fake/log-metrics.yaml; `docker compose logs loki | grep ruler`",
        ),
    },
    Group {
        id: "queries.logql",
        name: "LogQL catalog (queries/logs.md)",
        language: "logql",
        needs: &["loki", "alloy"],
        filter: |q| q.language == "logql",
        hint: (
            "a label, structured metadata field or JSON key the query reads is not on the lines",
            "queries/logs.md at the line named; alloy/config.alloy (labels, structured metadata)",
        ),
    },
    Group {
        id: "queries.traceql",
        name: "TraceQL catalog (queries/traces.md)",
        language: "traceql",
        needs: &["tempo"],
        filter: |q| q.language == "traceql",
        hint: (
            "a span name or attribute the query names does not exist (docs/contracts.md, Spans)",
            "queries/traces.md at the line named; tempo/tempo.yaml (TraceQL metrics need the query frontend)",
        ),
    },
    Group {
        id: "queries.profiles",
        name: "profile catalog (queries/profiles.md)",
        language: "pyroscope",
        needs: &["pyroscope", "sample-app"],
        filter: |q| q.language == "pyroscope",
        hint: (
            "a profile type or label the selector names is not pushed",
            "queries/profiles.md at the line named; docs/contracts.md, Profiles",
        ),
    },
];

pub fn checks() -> Vec<Check> {
    GROUPS
        .iter()
        .filter(|g| CATALOG.iter().any(|q| (g.filter)(q)))
        .map(|group| {
            let count = CATALOG.iter().filter(|q| (group.filter)(q)).count();
            let filter = group.filter;
            let language = group.language;
            Check::new(
                group.id,
                "queries",
                format!("{}: {count} queries parse and return data", group.name),
                group.needs,
                Hint {
                    cause: group.hint.0.into(),
                    look: group.hint.1.into(),
                    anchor: "verify-queries",
                },
                move |ctx: Arc<Ctx>| async move {
                    let queries: Vec<&CatalogQuery> =
                        CATALOG.iter().filter(|q| filter(q)).collect();
                    run_group(&ctx, language, &queries).await
                },
            )
        })
        .collect()
}

async fn run_group(ctx: &Ctx, language: &str, queries: &[&CatalogQuery]) -> Attempt {
    let mut with_data = 0;
    let mut conditional = Vec::new();
    let mut empty = Vec::new();
    for query in queries {
        let where_ = format!("{}:{} ({})", query.file, query.line, query.heading);
        // An example trace id in a query is replaced by a real one, as the catalog tells readers.
        let text = match example_trace_id(query.query) {
            Some(example) => query
                .query
                .replace(example, &real_trace_id(ctx, language).await?),
            None => query.query.to_owned(),
        };
        match has_data(ctx, language, &text).await {
            Ok(true) => with_data += 1,
            Ok(false) if is_condition(query.needs) => conditional.push(format!(
                "{} needs {}",
                query.heading.split('.').next().unwrap_or("?"),
                query.needs
            )),
            Ok(false) => empty.push(where_),
            // The backend refused the query: it does not parse (or names what cannot be).
            Err(problem) if problem.kind == ProblemKind::Fail => {
                return Err(Problem::fail(format!("{where_}: {}", problem.text)));
            }
            Err(problem) => return Err(problem),
        }
    }
    if !empty.is_empty() {
        return Err(Problem::wait(format!(
            "{} of {} returned no data: {}",
            empty.len(),
            queries.len(),
            super::some_of(&empty, 6)
        )));
    }
    let mut detail = format!("{with_data} of {} returned data", queries.len());
    if !conditional.is_empty() {
        detail.push_str(&format!(
            "; parsed, no data without their condition: {}",
            conditional.join(", ")
        ));
    }
    Ok(detail)
}

/// The first 32-hex-digit word of a query: an example trace id.
pub(crate) fn example_trace_id(query: &str) -> Option<&str> {
    query
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|word| super::is_hex(word, 32))
}

/// A recent trace id of sample-app, from the backend the language queries.
async fn real_trace_id(ctx: &Ctx, language: &str) -> Attempt<String> {
    let found = ctx
        .once(&format!("real-trace-id:{language}"), || async {
            let id = if language == "traceql" {
                let traces = tempo_search(
                    ctx,
                    "{resource.service.name=\"sample-app\"}",
                    WINDOW_S,
                    super::SETTLED_S,
                    1,
                )
                .await?;
                traces.first().and_then(super::trace_id_of)
            } else {
                let lines = super::loki_lines(
                    ctx,
                    "{service_name=\"sample-app\"} | trace_id!=\"\"",
                    WINDOW_S,
                    super::SETTLED_S,
                    1,
                )
                .await?;
                lines
                    .first()
                    .and_then(|(labels, _)| labels["trace_id"].as_str().map(str::to_owned))
            };
            id.map(serde_json::Value::String).ok_or_else(|| {
                Problem::wait("no recent trace id of sample-app to put in the catalog's example")
            })
        })
        .await?;
    Ok(found.as_str().unwrap_or_default().to_owned())
}

/// Whether the query returns anything over the last `WINDOW_S`, as a panel or Explore would run it.
async fn has_data(ctx: &Ctx, language: &str, query: &str) -> Attempt<bool> {
    match language {
        "promql" => Ok(!prom_range(ctx, query).await?.is_empty()),
        "logql" => {
            let now = now_s();
            let data = loki_range(ctx, query, ns(now - WINDOW_S), ns(now), 100).await?;
            Ok(data["result"].as_array().is_some_and(|r| !r.is_empty()))
        }
        "traceql" => {
            if is_traceql_metrics(query) {
                let now = now_s();
                let (start, end) = (format!("{:.0}", now - WINDOW_S), format!("{now:.0}"));
                let body = ctx
                    .tempo
                    .get_json(
                        "/api/metrics/query_range",
                        &[
                            ("q", query),
                            ("start", &start),
                            ("end", &end),
                            ("step", "30s"),
                        ],
                    )
                    .await?;
                Ok(body["series"].as_array().is_some_and(|series| {
                    series
                        .iter()
                        .any(|s| s["samples"].as_array().is_some_and(|p| !p.is_empty()))
                }))
            } else {
                Ok(!tempo_search(ctx, query, WINDOW_S, 0.0, 20)
                    .await?
                    .is_empty())
            }
        }
        _ => {
            let (profile_type, selector) = split_profile_query(query)
                .ok_or_else(|| Problem::fail(format!("not TYPE{{selector}}: {query}")))?;
            let (start, end) = window_ms();
            let answer = pyroscope(
                ctx,
                "SelectMergeStacktraces",
                json!({"profileTypeID": profile_type, "labelSelector": selector, "start": start, "end": end}),
            )
            .await?;
            Ok(flamegraph_total(&answer) > 0)
        }
    }
}

/// Whether a heading's *(needs …)* is a situation (a fault, a firing alert) rather than a
/// backend: "(needs Tempo)" and "(needs Loki's ruler)" mark what the test without those
/// backends cannot run, and verify runs against them, so their entries must return data.
pub(crate) fn is_condition(needs: &str) -> bool {
    !needs.is_empty() && !needs.starts_with("Tempo") && !needs.starts_with("Loki")
}

/// TraceQL with a metrics function goes to `/api/metrics/query_range`, not search.
pub(crate) fn is_traceql_metrics(query: &str) -> bool {
    const FUNCTIONS: [&str; 9] = [
        "rate",
        "count_over_time",
        "sum_over_time",
        "min_over_time",
        "max_over_time",
        "avg_over_time",
        "quantile_over_time",
        "histogram_over_time",
        "compare",
    ];
    query.split('|').skip(1).any(|stage| {
        let stage = stage.trim_start();
        FUNCTIONS.iter().any(|f| {
            stage
                .strip_prefix(f)
                .is_some_and(|rest| rest.trim_start().starts_with('('))
        })
    })
}

/// `TYPE{selector}` → (TYPE, {selector}).
pub(crate) fn split_profile_query(query: &str) -> Option<(&str, &str)> {
    let query = query.trim();
    let brace = query.find('{')?;
    let (profile_type, selector) = query.split_at(brace);
    (profile_type.split(':').count() == 5 && selector.ends_with('}'))
        .then_some((profile_type, selector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceql_metrics_queries_are_told_from_searches() {
        assert!(is_traceql_metrics(
            "{ kind = server } | rate() by (resource.service.name)"
        ));
        assert!(is_traceql_metrics(
            "{ } | quantile_over_time(duration, .99)"
        ));
        assert!(!is_traceql_metrics("{ span.http.route = \"/rate(\" }"));
        assert!(!is_traceql_metrics("{ kind = server } | count() > 1"));
    }

    #[test]
    fn profile_queries_split_into_type_and_selector() {
        assert_eq!(
            split_profile_query(
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name=\"sample-app\"}"
            ),
            Some((
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
                "{service_name=\"sample-app\"}"
            ))
        );
        assert_eq!(split_profile_query("{service_name=\"x\"}"), None);
    }

    #[test]
    fn example_trace_ids_are_found_for_replacing() {
        assert_eq!(
            example_trace_id(
                "{service_name=~\"sample-app.*\"} | trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\""
            ),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            example_trace_id("{service_name=\"sample-app\"} | trace_id!=\"\""),
            None
        );
        let with_example = CATALOG
            .iter()
            .filter(|q| example_trace_id(q.query).is_some())
            .count();
        assert!(with_example >= 1, "queries/logs.md entry 10 has one");
    }

    #[test]
    fn backends_named_in_headings_are_not_conditions() {
        assert!(is_condition("an active fault"));
        assert!(!is_condition("Tempo"));
        assert!(!is_condition("Loki's ruler"));
        assert!(!is_condition(""));
    }

    #[test]
    fn every_catalog_query_is_in_exactly_one_group() {
        for query in CATALOG {
            let n = GROUPS.iter().filter(|g| (g.filter)(query)).count();
            assert_eq!(n, 1, "{}:{}", query.file, query.line);
        }
        assert!(
            CATALOG
                .iter()
                .any(|q| q.language == "promql" && promql_group(q) == "tempo")
        );
        assert!(
            CATALOG
                .iter()
                .any(|q| q.language == "promql" && promql_group(q) == "loki")
        );
    }
}
