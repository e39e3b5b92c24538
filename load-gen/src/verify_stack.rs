//! `load-gen verify`: proves the running stack works, through the services' published HTTP
//! APIs only (the checks are the `stack-verify` crate). In the stack's network, as
//! `docker compose run --rm verify`, the services are reached by compose hostname; from the
//! Docker host (`cargo run -p load-gen -- verify --from-host`) on the ports `.env` publishes
//! on 127.0.0.1; any one of them can be pointed elsewhere (a `kubectl port-forward`).

use std::{io::Write as _, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Args;
use stack_verify::{Endpoints, Options, checks, report::render_line};
use url::Url;

use crate::note;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Reach the services on 127.0.0.1 at the host ports `.env` publishes (for `cargo run` on
    /// the Docker host), instead of by compose hostname. alert-log publishes no port: its own
    /// health check is left out, the alert path still proves it.
    #[arg(long, env = "VERIFY_FROM_HOST")]
    pub from_host: bool,
    /// How long to wait for a freshly started stack to answer and have data.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Give up on one HTTP request after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Print the report as one JSON document on stdout (the checklist goes nowhere).
    #[arg(long)]
    pub json: bool,
    /// Do not send the test alert through Alertmanager (leaves out the two alerting checks).
    #[arg(long)]
    pub no_probe_alert: bool,
    /// Run only the checks whose id starts with this (repeatable): `health`, `correlation.`,
    /// `grafana.datasource.loki`… (`--list` shows the ids).
    #[arg(long)]
    pub only: Vec<String>,
    /// List the checks (id and what each proves) and exit.
    #[arg(long)]
    pub list: bool,
    /// Grafana's admin user (its data source and alerting provisioning APIs are for admins).
    #[arg(long, env = "GRAFANA_ADMIN_USER", default_value = "admin")]
    pub grafana_user: String,
    /// Grafana's admin password (.env GRAFANA_ADMIN_PASSWORD).
    #[arg(
        long,
        env = "GRAFANA_ADMIN_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub grafana_password: String,
    #[arg(long, env = "VERIFY_SAMPLE_APP_URL")]
    pub sample_app_url: Option<Url>,
    #[arg(long, env = "VERIFY_SAMPLE_APP_DOWNSTREAM_URL")]
    pub sample_app_downstream_url: Option<Url>,
    #[arg(long, env = "VERIFY_PROMETHEUS_URL")]
    pub prometheus_url: Option<Url>,
    #[arg(long, env = "VERIFY_ALERTMANAGER_URL")]
    pub alertmanager_url: Option<Url>,
    #[arg(long, env = "VERIFY_LOKI_URL")]
    pub loki_url: Option<Url>,
    #[arg(long, env = "VERIFY_TEMPO_URL")]
    pub tempo_url: Option<Url>,
    #[arg(long, env = "VERIFY_PYROSCOPE_URL")]
    pub pyroscope_url: Option<Url>,
    #[arg(long, env = "VERIFY_ALLOY_URL")]
    pub alloy_url: Option<Url>,
    #[arg(long, env = "VERIFY_GRAFANA_URL")]
    pub grafana_url: Option<Url>,
    /// alert-log's webhook server (published nowhere: reachable inside the stack's network).
    #[arg(long, env = "VERIFY_ALERT_LOG_URL")]
    pub alert_log_url: Option<Url>,
}

impl VerifyArgs {
    pub fn options(&self) -> Options {
        let mut e = if self.from_host {
            Endpoints::host()
        } else {
            Endpoints::compose()
        };
        let pick = |url: &Option<Url>, default: &mut Url| {
            if let Some(url) = url {
                *default = url.clone();
            }
        };
        pick(&self.sample_app_url, &mut e.sample_app);
        pick(
            &self.sample_app_downstream_url,
            &mut e.sample_app_downstream,
        );
        pick(&self.prometheus_url, &mut e.prometheus);
        pick(&self.alertmanager_url, &mut e.alertmanager);
        pick(&self.loki_url, &mut e.loki);
        pick(&self.tempo_url, &mut e.tempo);
        pick(&self.pyroscope_url, &mut e.pyroscope);
        pick(&self.alloy_url, &mut e.alloy);
        pick(&self.grafana_url, &mut e.grafana);
        if self.alert_log_url.is_some() {
            e.alert_log = self.alert_log_url.clone();
        }
        Options {
            endpoints: e,
            grafana_user: self.grafana_user.clone(),
            grafana_password: self.grafana_password.clone(),
            wait: self.wait,
            request_timeout: self.request_timeout,
            probe_alert: !self.no_probe_alert,
            only: self.only.clone(),
        }
    }
}

/// Runs the checks; exit 0 when every one passed, 1 otherwise.
pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let options = args.options();
    let list = checks::all(&options);
    if args.list {
        let mut out = std::io::stdout().lock();
        for check in &list {
            writeln!(out, "{:<55} {}", check.id, check.name)
                .context("while writing the list to stdout")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        anyhow::bail!(
            "no check id starts with {}: `load-gen verify --list` shows them",
            args.only.join(" or ")
        );
    }
    note!(
        "verify: {} checks against {} (waiting up to {} for data)",
        list.len(),
        options
            .endpoints
            .list()
            .iter()
            .map(|(name, url)| format!("{name} {url}"))
            .collect::<Vec<_>>()
            .join(", "),
        humantime::format_duration(options.wait)
    );
    let json = args.json;
    let report = stack_verify::run(options, list, |result| {
        if !json {
            // One line per check as soon as it (and those before it) are done.
            let mut out = std::io::stdout().lock();
            let _ = out
                .write_all(render_line(result).as_bytes())
                .and_then(|()| out.flush());
        }
    })
    .await;
    let mut out = std::io::stdout().lock();
    let text = if json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        format!("{}\n", report.summary())
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("while writing the report to stdout")?;
    note!("verify: took {:.0} s", report.seconds);
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
