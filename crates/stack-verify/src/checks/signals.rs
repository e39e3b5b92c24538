//! Every signal arrives in its backend, for each service that emits it (docs/contracts.md,
//! Service identity): metrics with exemplars in Prometheus, log lines with trace ids in Loki,
//! traces in Tempo, CPU and heap profiles in Pyroscope.

use std::sync::Arc;

use super::{
    EMPTY_STACK, SETTLED_S, WINDOW_S, exemplars, is_hex, loki_lines, prom_value, select_merge,
    tempo_search, tempo_trace, trace_id_of,
};
use crate::{Check, Ctx, Hint, api::Problem, expected::PROFILE_TYPES};

/// Profile type ids (docs/contracts.md, Profiles).
pub const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
pub const HEAP: &str = "memory:inuse_space:bytes:space:bytes";

const APPS: [&str; 2] = ["sample-app", "sample-app-downstream"];

pub fn checks() -> Vec<Check> {
    let mut checks = Vec::new();
    for service in APPS {
        checks.push(metrics(service));
    }
    checks.push(load_gen_metrics());
    for service in APPS {
        checks.push(app_exemplars(service));
    }
    checks.push(span_metrics());
    for service in APPS {
        checks.push(logs_with_trace_ids(service));
    }
    checks.push(load_gen_logs());
    for service in [APPS[0], APPS[1], "load-gen"] {
        checks.push(traces(service));
    }
    for service in APPS {
        checks.push(profile(service, "CPU", CPU));
        checks.push(profile(service, "heap", HEAP));
    }
    checks.push(profile_types());
    checks
}

/// Every profile type of the contract is one Pyroscope has (the services push CPU and heap
/// profiles whose sample types become these ids).
fn profile_types() -> Check {
    Check::new(
        "profiles.types",
        "profiles",
        format!("Pyroscope has every profile type of docs/contracts.md ({} types)", PROFILE_TYPES.len()),
        &["pyroscope", "sample-app", "sample-app-downstream"],
        Hint {
            cause: "a profile's sample types changed (the CPU sampler or the heap profile), so Pyroscope names them differently".into(),
            look: "docs/contracts.md, Profiles (profile_types); crates/cpu-sampler; sample-app's heap profile".into(),
            anchor: "verify-profiles",
        },
        |ctx: Arc<Ctx>| async move {
            let (start, end) = super::window_ms();
            let answer = super::pyroscope(&ctx, "ProfileTypes", serde_json::json!({"start": start, "end": end})).await?;
            let ids: Vec<&str> = answer["profileTypes"].as_array().into_iter().flatten().filter_map(|t| t["ID"].as_str()).collect();
            let missing: Vec<&str> = PROFILE_TYPES.iter().copied().filter(|t| !ids.contains(t)).collect();
            if !missing.is_empty() {
                return Err(Problem::wait(format!("missing: {} (Pyroscope has {})", missing.join(", "), ids.len())));
            }
            Ok(format!("all {} present, {} in all", PROFILE_TYPES.len(), ids.len()))
        },
    )
}

fn metrics(service: &'static str) -> Check {
    Check::new(
        format!("metrics.{service}"),
        "metrics",
        format!("{service}'s metrics are in Prometheus (up{{service=\"{service}\"}}, its series)"),
        &[service, "prometheus"],
        Hint {
            cause: format!(
                "Prometheus does not scrape {service}, or the scrape fails (a wrong content type, the sample limit)"
            ),
            look: format!(
                "Prometheus' /targets page (job sample-app); prometheus/prometheus.yml, scrape_configs job sample-app, target {service}:8080"
            ),
            anchor: "verify-metrics",
        },
        move |ctx: Arc<Ctx>| async move {
            super::health::up(&ctx, &format!("up{{service=\"{service}\"}}")).await?;
            let series = prom_value(&ctx, &format!("count({{service=\"{service}\"}})"))
                .await?
                .unwrap_or(0.0);
            let requests = prom_value(
                &ctx,
                &format!(
                    "sum(http_server_request_duration_seconds_count{{service=\"{service}\"}})"
                ),
            )
            .await?
            .unwrap_or(0.0);
            if requests == 0.0 {
                return Err(Problem::wait(format!(
                    "{service} has served no request yet ({EMPTY_STACK})"
                )));
            }
            Ok(format!(
                "up = 1, {series:.0} series, {requests:.0} requests counted"
            ))
        },
    )
}

fn load_gen_metrics() -> Check {
    Check::new(
        "metrics.load-gen",
        "metrics",
        "load-gen's metrics are in Prometheus (loadgen_* of job load-gen)",
        &["load-gen", "prometheus"],
        Hint {
            cause: "Prometheus does not scrape load-gen, or load-gen sends no traffic".into(),
            look: "prometheus/prometheus.yml, job load-gen; `docker compose logs load-gen`".into(),
            anchor: "verify-metrics",
        },
        |ctx: Arc<Ctx>| async move {
            let sent = prom_value(
                &ctx,
                "sum(loadgen_requests_completed_total{job=\"load-gen\"})",
            )
            .await?;
            match sent {
                Some(n) if n > 0.0 => Ok(format!("loadgen_requests_completed_total = {n:.0}")),
                _ => Err(Problem::wait(format!(
                    "no request counted by load-gen yet ({EMPTY_STACK})"
                ))),
            }
        },
    )
}

fn app_exemplars(service: &'static str) -> Check {
    let selector = format!("http_server_request_duration_seconds_bucket{{service=\"{service}\"}}");
    Check::new(
        format!("metrics.exemplars.{service}"),
        "metrics",
        format!("{service}'s histogram carries exemplars with trace ids ({selector})"),
        &[service, "prometheus"],
        Hint {
            cause: "Prometheus stores no exemplars: its exemplar storage is off, or it scrapes without OpenMetrics".into(),
            look: "docker-compose.yml, prometheus command --enable-feature=exemplar-storage; the app's /metrics with Accept: application/openmetrics-text".into(),
            anchor: "verify-exemplars",
        },
        move |ctx: Arc<Ctx>| {
            let selector = selector.clone();
            async move {
                let found = exemplars(&ctx, &selector).await?;
                let ids: Vec<String> = found
                    .iter()
                    .filter_map(|(labels, _)| labels["trace_id"].as_str())
                    .filter(|t| is_hex(t, 32))
                    .map(str::to_owned)
                    .collect();
                match ids.first() {
                    Some(id) => Ok(format!("{} exemplars with a trace_id, e.g. {id}", ids.len())),
                    None if found.is_empty() => Err(Problem::wait(format!("no exemplar in the last {:.0} min ({EMPTY_STACK})", WINDOW_S / 60.0))),
                    None => Err(Problem::fail(format!("{} exemplars, none with a 32-hex trace_id label", found.len()))),
                }
            }
        },
    )
}

fn span_metrics() -> Check {
    Check::new(
        "metrics.span-metrics",
        "metrics",
        "Tempo's span metrics reach Prometheus with traceID exemplars (traces_spanmetrics_latency_bucket)",
        &["tempo", "prometheus"],
        Hint {
            cause: "Tempo's metrics generator does not run or cannot remote-write to Prometheus".into(),
            look: "tempo/tempo.yaml, metrics_generator (storage.remote_write, overrides processors); `docker compose logs tempo`; Prometheus --web.enable-remote-write-receiver".into(),
            anchor: "verify-span-metrics",
        },
        |ctx: Arc<Ctx>| async move {
            let found = exemplars(&ctx, "traces_spanmetrics_latency_bucket{service=\"sample-app\"}").await?;
            let id = found.iter().find_map(|(labels, _)| labels["traceID"].as_str().map(str::to_owned));
            match id {
                Some(id) => Ok(format!("{} exemplars of sample-app's span metrics, e.g. traceID {id}", found.len())),
                None => Err(Problem::wait(format!("no span-metrics exemplar for sample-app in the last {:.0} min", WINDOW_S / 60.0))),
            }
        },
    )
}

fn logs_with_trace_ids(service: &'static str) -> Check {
    Check::new(
        format!("logs.{service}"),
        "logs",
        format!("{service}'s log lines are in Loki with trace_id as structured metadata"),
        &[service, "alloy", "loki"],
        Hint {
            cause: "Alloy does not ship this container's logs, or ships the ids as labels or not at all".into(),
            look: "`docker compose logs alloy`; alloy/config.alloy (discovery.docker filter, stage.structured_metadata, loki.write); loki/loki.yaml limits_config.allow_structured_metadata".into(),
            anchor: "verify-logs",
        },
        move |ctx: Arc<Ctx>| async move {
            let query = format!("{{service_name=\"{service}\"}} | trace_id!=\"\"");
            let lines = loki_lines(&ctx, &query, WINDOW_S, 0.0, 20).await?;
            let Some((labels, _)) = lines.first() else {
                return Err(Problem::wait(format!("`{query}` found no line in the last {:.0} min ({EMPTY_STACK})", WINDOW_S / 60.0)));
            };
            let trace_id = labels["trace_id"].as_str().unwrap_or_default().to_owned();
            if !is_hex(&trace_id, 32) {
                return Err(Problem::fail(format!("a line's trace_id is {trace_id:?}, not 32 hex digits")));
            }
            let names = ctx.loki.get_json("/loki/api/v1/labels", &[]).await?;
            let names: Vec<&str> = names["data"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
            if names.contains(&"trace_id") {
                return Err(Problem::fail("trace_id is a Loki label (one stream per request): it must be structured metadata"));
            }
            Ok(format!("{} recent lines, e.g. trace_id={trace_id}; trace_id is not a label", lines.len()))
        },
    )
}

fn load_gen_logs() -> Check {
    Check::new(
        "logs.load-gen",
        "logs",
        "load-gen's log lines are in Loki ({service_name=\"load-gen\"})",
        &["load-gen", "alloy", "loki"],
        Hint {
            cause: "Alloy does not ship load-gen's logs".into(),
            look: "`docker compose logs alloy`; alloy/config.alloy (discovery.docker filter on the stack label)".into(),
            anchor: "verify-logs",
        },
        |ctx: Arc<Ctx>| async move {
            // load-gen writes a line per scenario iteration: look back a whole day.
            let lines = loki_lines(&ctx, "{service_name=\"load-gen\"}", 86_400.0, 0.0, 5).await?;
            match lines.first() {
                Some((_, line)) => Ok(format!("latest: {}", super::super::api::snippet(line))),
                None => Err(Problem::wait("no line of load-gen in Loki")),
            }
        },
    )
}

fn traces(service: &'static str) -> Check {
    Check::new(
        format!("traces.{service}"),
        "traces",
        format!("{service}'s traces are in Tempo, and open by id"),
        &[service, "tempo"],
        Hint {
            cause: format!(
                "{service} cannot export spans to Tempo (OTEL_EXPORTER_OTLP_ENDPOINT), or Tempo's receiver listens on localhost only"
            ),
            look: format!(
                "docker-compose.yml, {service} environment OTEL_EXPORTER_OTLP_ENDPOINT; tempo/tempo.yaml distributor.receivers.otlp endpoints; `docker compose logs tempo`"
            ),
            anchor: "verify-traces",
        },
        move |ctx: Arc<Ctx>| async move {
            let q = format!("{{resource.service.name=\"{service}\"}}");
            let found = tempo_search(&ctx, &q, WINDOW_S, SETTLED_S, 5).await?;
            let Some(trace_id) = found.first().and_then(trace_id_of) else {
                return Err(Problem::wait(format!(
                    "TraceQL `{q}` found no trace in the last {:.0} min ({EMPTY_STACK})",
                    WINDOW_S / 60.0
                )));
            };
            let spans = tempo_trace(&ctx, &trace_id).await?;
            let own = spans.iter().filter(|s| s.service == service).count();
            if own == 0 {
                return Err(Problem::fail(format!(
                    "trace {trace_id} has no span of {service}"
                )));
            }
            Ok(format!(
                "trace {trace_id}: {} spans, {own} of {service}",
                spans.len()
            ))
        },
    )
}

fn profile(service: &'static str, what: &'static str, profile_type: &'static str) -> Check {
    Check::new(
        format!("profiles.{service}.{}", what.to_lowercase()),
        "profiles",
        format!("{service}'s {what} profiles are in Pyroscope ({profile_type})"),
        &[service, "pyroscope"],
        Hint {
            cause: format!(
                "{service} cannot push to Pyroscope (PYROSCOPE_SERVER_ADDRESS), or Pyroscope rejects the push"
            ),
            look: format!(
                "docker-compose.yml, {service} environment PYROSCOPE_SERVER_ADDRESS; `docker compose logs {service}` (push errors); `docker compose logs pyroscope`"
            ),
            anchor: "verify-profiles",
        },
        move |ctx: Arc<Ctx>| async move {
            let selector = format!("{{service_name=\"{service}\"}}");
            let total = select_merge(&ctx, profile_type, &selector).await?;
            if total == 0 {
                return Err(Problem::wait(format!(
                    "SelectMergeStacktraces {profile_type}{selector} is empty over the last {:.0} min",
                    super::WINDOW_S / 60.0
                )));
            }
            Ok(format!("{profile_type}{selector}: total {total}"))
        },
    )
}
