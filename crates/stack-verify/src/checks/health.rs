//! Every service is up and answers its health endpoint (the one its compose healthcheck asks).

use std::sync::Arc;

use crate::{
    Check, Ctx, Hint, Options,
    api::{Api, Attempt, Problem, redact, snippet},
};

fn hint(service: &str, config: &str) -> Hint {
    Hint {
        cause: format!("{service} is not running, still starting, or not reachable at this URL"),
        look: format!(
            "`docker compose ps {service}` and `docker compose logs {service}`{config}; the URL verify used (--{service}-url)"
        ),
        anchor: "verify-health",
    }
}

/// GET `path` answers 2xx (and its body contains `expect`, when given).
fn endpoint(
    service: &'static str,
    path: &'static str,
    expect: Option<&'static str>,
    config: &str,
    api: fn(&Ctx) -> Option<&Api>,
) -> Check {
    Check::new(
        format!("health.{service}"),
        "health",
        format!("{service} answers GET {path}"),
        &[service],
        hint(service, config),
        move |ctx: Arc<Ctx>| async move {
            let api = api(&ctx).ok_or_else(|| Problem::fail(format!("no URL for {service}")))?;
            let url = redact(&api.url(path, &[]));
            let (status, body) = api.get_raw(path, &[]).await?;
            if !(200..300).contains(&status) {
                return Err(Problem::wait(format!(
                    "{url} answered {status}: {}",
                    snippet(&body)
                )));
            }
            if let Some(expect) = expect
                && !body.contains(expect)
            {
                return Err(Problem::wait(format!(
                    "{url} answered {status} without {expect}: {}",
                    snippet(&body)
                )));
            }
            Ok(format!("{url} → {status} {}", snippet(&body)))
        },
    )
}

pub fn checks(options: &Options) -> Vec<Check> {
    let mut checks = vec![
        endpoint("sample-app", "/health", None, "", |c| Some(&c.sample_app)),
        endpoint("sample-app-downstream", "/health", None, "", |c| {
            Some(&c.sample_app_downstream)
        }),
        load_gen(),
    ];
    if options.endpoints.alert_log.is_some() {
        checks.push(endpoint("alert-log", "/health", None, "", |c| {
            c.alert_log.as_ref()
        }));
    }
    checks.extend([
        endpoint(
            "prometheus",
            "/-/ready",
            None,
            "; prometheus/prometheus.yml",
            |c| Some(&c.prometheus),
        ),
        endpoint(
            "alertmanager",
            "/-/ready",
            None,
            "; alertmanager/alertmanager.yml",
            |c| Some(&c.alertmanager),
        ),
        endpoint("loki", "/ready", None, "; loki/loki.yaml", |c| {
            Some(&c.loki)
        }),
        endpoint("tempo", "/ready", None, "; tempo/tempo.yaml", |c| {
            Some(&c.tempo)
        }),
        endpoint(
            "pyroscope",
            "/ready",
            None,
            "; pyroscope/pyroscope.yaml",
            |c| Some(&c.pyroscope),
        ),
        endpoint("alloy", "/-/ready", None, "; alloy/config.alloy", |c| {
            Some(&c.alloy)
        }),
        endpoint(
            "grafana",
            "/api/health",
            Some("\"database\""),
            "; grafana/provisioning/",
            |c| Some(&c.grafana),
        ),
    ]);
    checks
}

/// load-gen publishes no port: Prometheus scraping it is its health as the stack sees it (the
/// compose healthcheck asks the same /metrics).
fn load_gen() -> Check {
    Check::new(
        "health.load-gen",
        "health",
        "load-gen is up: Prometheus scrapes its /metrics (up{job=\"load-gen\"})",
        &["load-gen", "prometheus"],
        Hint {
            cause: "load-gen is not running (it is the stack's background traffic), or Prometheus cannot scrape it".into(),
            look: "`docker compose ps load-gen`, `docker compose logs load-gen`; prometheus/prometheus.yml, job load-gen; Prometheus' /targets page".into(),
            anchor: "verify-health",
        },
        |ctx: Arc<Ctx>| async move { up(&ctx, "up{job=\"load-gen\"}").await },
    )
}

pub(crate) async fn up(ctx: &Ctx, selector: &str) -> Attempt {
    match super::prom_value(ctx, selector).await? {
        Some(1.0) => Ok(format!("Prometheus: {selector} = 1")),
        Some(v) => Err(Problem::wait(format!(
            "Prometheus: {selector} = {v}: its last scrape failed"
        ))),
        None => Err(Problem::wait(format!(
            "Prometheus has no {selector} series (not scraped yet)"
        ))),
    }
}
