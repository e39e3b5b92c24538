//! The service's own settings: flags and `SAMPLE_APP_*` / `PYROSCOPE_*` variables (clap), and
//! the validated [`Settings`] every other module reads. An invalid value stops start-up with a
//! message that names the flag or, when it came from the environment, the variable.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use clap::Parser;
use url::Url;

use crate::{faults::FaultPlan, routes::templates::APP_ROUTES, server::ConnectionSettings};
use otlp_tracing::settings::{OtelSettings, ServiceDefaults, parse_http_url};

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` says.
pub const DEFAULT_SERVICE_NAME: &str = "sample-app";

/// Flags and `SAMPLE_APP_*` / `PYROSCOPE_*` variables.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sample-app",
    version,
    about = "A service that emits all four signals"
)]
pub struct Cli {
    /// Address to serve HTTP on (port 0 picks a free port).
    #[arg(long, env = "SAMPLE_APP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A second address that alone serves `/admin/*` and `/debug/pprof/*` (none: both are on
    /// `--listen`, beside the app, without authentication).
    #[arg(long, env = "SAMPLE_APP_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Seconds a connection may wait for its next request (0: one request per connection).
    #[arg(long, env = "SAMPLE_APP_KEEP_ALIVE_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub keep_alive_seconds: u64,

    /// How long a request head may take to arrive, in ms: from the connection's start for its
    /// first request, from the head's first byte for later ones. Then 408, and the connection
    /// is closed.
    #[arg(long, env = "SAMPLE_APP_CLIENT_REQUEST_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub client_request_timeout_ms: u64,

    /// How long closing a connection may take (its last answer written, the socket shut
    /// down), in ms.
    #[arg(long, env = "SAMPLE_APP_CLIENT_DISCONNECT_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub client_disconnect_timeout_ms: u64,

    /// Connections each worker thread (one per CPU) serves at once; past it the worker stops
    /// accepting, and new clients wait in the listen backlog.
    #[arg(long, env = "SAMPLE_APP_MAX_CONNECTIONS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_connections: u64,

    /// Base URL of the downstream service that `/external` calls (none: `/external` answers 502).
    #[arg(long, env = "SAMPLE_APP_DOWNSTREAM_URL", value_parser = parse_http_url)]
    pub downstream_url: Option<Url>,

    /// How long a call to the downstream may take before it counts as timed out, in ms.
    #[arg(long, env = "SAMPLE_APP_DOWNSTREAM_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub downstream_timeout_ms: u64,

    /// Pyroscope server to push CPU profiles to (none: profiles only on `/debug/pprof/profile`).
    #[arg(long, env = "PYROSCOPE_SERVER_ADDRESS", value_parser = parse_http_url)]
    pub pyroscope_server_address: Option<Url>,

    /// Seconds between two profile pushes (each push holds the CPU samples of that window).
    #[arg(long, env = "PYROSCOPE_PUSH_INTERVAL_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub pyroscope_push_interval_seconds: u64,

    /// `on`: all four signals. `off`: no spans, request metrics, access logs or profiles (the
    /// benchmark's baseline; `/metrics` still serves process metrics).
    #[arg(long, env = "SAMPLE_APP_TELEMETRY", default_value = "on", value_parser = ["on", "off"])]
    pub telemetry: String,

    /// `on`: label each CPU sample with the request whose code was running (`span_id`,
    /// `trace_id`, `span_name`) and give each sampled server span `pyroscope.profile.id`, for
    /// Grafana's "Profiles for this span". `off`: service-wide CPU profiles only.
    #[arg(long, env = "SAMPLE_APP_SPAN_PROFILES", default_value = "on", value_parser = ["on", "off"])]
    pub span_profiles: String,

    /// `on`: sample heap allocations (jemalloc, about one per 512 KiB allocated), push memory
    /// profiles with each CPU profile and serve `/debug/pprof/heap`. `off`: neither.
    #[arg(long, env = "SAMPLE_APP_HEAP_PROFILES", default_value = "on", value_parser = ["on", "off"])]
    pub heap_profiles: String,

    /// Seconds that in-flight requests get to finish after SIGTERM / Ctrl-C.
    #[arg(long, env = "SAMPLE_APP_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=120))]
    pub shutdown_timeout_seconds: u64,

    /// Mount `/admin/faults` and honour `x-fault-*` headers (off: both answer as if absent).
    #[arg(long, env = "SAMPLE_APP_FAULTS_ENABLED", default_value = "false",
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub faults_enabled: bool,

    /// A fault plan (JSON, as `PUT /admin/faults` takes) in force from start-up.
    #[arg(long, env = "SAMPLE_APP_FAULTS")]
    pub faults: Option<String>,

    /// Probe the running service's `/health` at `--listen` and exit 0 (healthy) or 1; for
    /// container healthchecks in images without a shell.
    #[arg(long)]
    pub check_health: bool,
}

/// Clap names the flag of an invalid value; when the value came from the environment, say
/// which variable, since that is what a compose file or a shell profile set.
fn name_the_variable(error: clap::Error, env: &impl Fn(&str) -> Option<String>) -> anyhow::Error {
    use clap::{
        CommandFactory,
        error::{ContextKind, ContextValue},
    };
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return error.into();
    };
    let long = arg
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_start_matches("--")
        .to_owned();
    let command = Cli::command();
    let variable = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()))
        .and_then(|a| a.get_env())
        .and_then(|v| v.to_str())
        .filter(|var| env(var).is_some())
        .map(str::to_owned);
    match variable {
        Some(var) => anyhow::Error::new(error)
            .context(format!("{var} (the environment's value for --{long})")),
        None => error.into(),
    }
}

/// Everything the service needs to start, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Where `/admin/*` and `/debug/pprof/*` are served instead of `listen`.
    pub admin_listen: Option<SocketAddr>,
    pub connections: ConnectionSettings,
    pub downstream_url: Option<Url>,
    pub downstream_timeout: Duration,
    pub pyroscope_url: Option<Url>,
    pub profile_push_interval: Duration,
    pub telemetry_enabled: bool,
    /// Label CPU samples with their request's span (needs telemetry on).
    pub span_profiles: bool,
    /// Heap profiles (needs telemetry on and a binary whose jemalloc has its profiler).
    pub heap_profiles: bool,
    pub shutdown_timeout: Duration,
    pub check_health: bool,
    pub faults_enabled: bool,
    /// The plan in force from start-up (validated).
    pub initial_faults: Option<FaultPlan>,
    pub otel: OtelSettings,
}

impl Settings {
    /// Reads flags from `args` and `OTEL_*` variables through `env`.
    pub fn from_sources<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args).map_err(|e| name_the_variable(e, &env))?;
        Self::from_cli(cli, env)
    }

    pub fn from_cli(cli: Cli, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            listen: cli.listen,
            admin_listen: cli.admin_listen,
            connections: ConnectionSettings {
                keep_alive: Some(Duration::from_secs(cli.keep_alive_seconds))
                    .filter(|d| !d.is_zero()),
                client_request_timeout: Duration::from_millis(cli.client_request_timeout_ms),
                client_disconnect_timeout: Duration::from_millis(cli.client_disconnect_timeout_ms),
                max_connections_per_worker: usize::try_from(cli.max_connections)
                    .unwrap_or(usize::MAX),
            },
            downstream_url: cli.downstream_url,
            downstream_timeout: Duration::from_millis(cli.downstream_timeout_ms),
            pyroscope_url: cli.pyroscope_server_address,
            profile_push_interval: Duration::from_secs(cli.pyroscope_push_interval_seconds),
            telemetry_enabled: cli.telemetry == "on",
            span_profiles: cli.span_profiles == "on",
            heap_profiles: cli.heap_profiles == "on",
            shutdown_timeout: Duration::from_secs(cli.shutdown_timeout_seconds),
            check_health: cli.check_health,
            faults_enabled: cli.faults_enabled,
            initial_faults: initial_faults(cli.faults.as_deref(), cli.faults_enabled)?,
            otel: OtelSettings::from_env(
                ServiceDefaults {
                    name: DEFAULT_SERVICE_NAME,
                    version: env!("CARGO_PKG_VERSION"),
                },
                env,
            )?,
        })
    }

    /// Settings for tests: port 0, no backends, telemetry on (but nothing installed globally).
    pub fn for_tests() -> Self {
        Self::from_sources(["sample-app", "--listen", "127.0.0.1:0"], |_| None)
            .expect("default settings are valid")
    }
}

fn initial_faults(raw: Option<&str>, enabled: bool) -> anyhow::Result<Option<FaultPlan>> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(None);
    };
    if !enabled {
        bail!("SAMPLE_APP_FAULTS: a start-up fault plan needs SAMPLE_APP_FAULTS_ENABLED=true");
    }
    let plan: FaultPlan =
        serde_json::from_str(raw).context("SAMPLE_APP_FAULTS: not a fault plan")?;
    plan.validate(APP_ROUTES).context("SAMPLE_APP_FAULTS")?;
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_value_from_the_environment_names_the_variable() {
        let env = |k: &str| (k == "PYROSCOPE_PUSH_INTERVAL_SECONDS").then(|| "0".to_owned());
        let args = ["sample-app", "--pyroscope-push-interval-seconds", "0"];
        let err = Settings::from_sources(args, env).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("PYROSCOPE_PUSH_INTERVAL_SECONDS"),
            "{err:#}"
        );
    }

    #[test]
    fn span_and_heap_profiles_are_on_by_default_and_each_switches_off() {
        let defaults = Settings::from_sources(["sample-app"], |_| None).unwrap();
        assert!(defaults.span_profiles && defaults.heap_profiles);
        let args = [
            "sample-app",
            "--span-profiles",
            "off",
            "--heap-profiles",
            "off",
        ];
        let settings = Settings::from_sources(args, |_| None).unwrap();
        assert!(!settings.span_profiles && !settings.heap_profiles);
    }

    #[test]
    fn an_invalid_profile_switch_names_its_variable() {
        let env = |k: &str| (k == "SAMPLE_APP_HEAP_PROFILES").then(|| "yes".to_owned());
        let err =
            Settings::from_sources(["sample-app", "--heap-profiles", "yes"], env).unwrap_err();
        assert!(
            err.to_string().starts_with("SAMPLE_APP_HEAP_PROFILES"),
            "{err:#}"
        );
    }

    #[test]
    fn connection_limits_have_their_documented_defaults_and_zero_keep_alive_turns_it_off() {
        let defaults = Settings::from_sources(["sample-app"], |_| None).unwrap();
        assert_eq!(
            defaults.connections,
            ConnectionSettings {
                keep_alive: Some(Duration::from_secs(5)),
                client_request_timeout: Duration::from_secs(5),
                client_disconnect_timeout: Duration::from_secs(1),
                max_connections_per_worker: 1000,
            }
        );
        assert_eq!(defaults.admin_listen, None);
        let args = ["sample-app", "--keep-alive-seconds", "0"];
        let settings = Settings::from_sources(args, |_| None).unwrap();
        assert_eq!(settings.connections.keep_alive, None);
        for (flag, value) in [
            ("--client-request-timeout-ms", "0"),
            ("--client-disconnect-timeout-ms", "0"),
            ("--max-connections", "0"),
            ("--keep-alive-seconds", "301"),
            ("--admin-listen", "nowhere"),
        ] {
            let err = Settings::from_sources(["sample-app", flag, value], |_| None).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn invalid_flags_name_the_flag() {
        let err =
            Settings::from_sources(["sample-app", "--listen", "nowhere"], |_| None).unwrap_err();
        assert!(err.to_string().contains("--listen"), "{err}");
        let err = Settings::from_sources(["sample-app", "--downstream-url", "ftp://x"], |_| None)
            .unwrap_err();
        assert!(err.to_string().contains("--downstream-url"), "{err}");
    }
}
