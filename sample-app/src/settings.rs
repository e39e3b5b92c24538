//! Typed settings: defaults that run locally with no backend, overridden by flags, by the
//! service's own environment variables (`SAMPLE_APP_*`, `PYROSCOPE_*`) and by the standard
//! OpenTelemetry variables (`OTEL_*`). Everything is validated here, at start-up, and an invalid
//! value stops the service with a message that names the setting.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use clap::Parser;
use url::Url;

use crate::faults::FaultPlan;

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

fn parse_http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("'{raw}' is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(format!(
            "'{raw}' must be an http:// or https:// URL with a host"
        )),
    }
}

/// Everything the service needs to start, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub downstream_url: Option<Url>,
    pub downstream_timeout: Duration,
    pub pyroscope_url: Option<Url>,
    pub profile_push_interval: Duration,
    pub telemetry_enabled: bool,
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
            downstream_url: cli.downstream_url,
            downstream_timeout: Duration::from_millis(cli.downstream_timeout_ms),
            pyroscope_url: cli.pyroscope_server_address,
            profile_push_interval: Duration::from_secs(cli.pyroscope_push_interval_seconds),
            telemetry_enabled: cli.telemetry == "on",
            shutdown_timeout: Duration::from_secs(cli.shutdown_timeout_seconds),
            check_health: cli.check_health,
            faults_enabled: cli.faults_enabled,
            initial_faults: initial_faults(cli.faults.as_deref(), cli.faults_enabled)?,
            otel: OtelSettings::from_env(env)?,
        })
    }

    /// Settings for tests: port 0, no backends, telemetry on (but nothing installed globally).
    pub fn for_tests() -> Self {
        Self::from_sources(["sample-app", "--listen", "127.0.0.1:0"], |_| None)
            .expect("default settings are valid")
    }
}

/// OTLP transport, from `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Which sampler to use, from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSetting {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

/// The standard OpenTelemetry settings this service honours.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelSettings {
    pub service_name: String,
    pub service_version: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, in order, without `service.name` (that is `service_name`).
    pub resource_attributes: Vec<(String, String)>,
    /// `OTEL_TRACES_EXPORTER=none` turns span export off.
    pub traces_exporter_enabled: bool,
    pub protocol: OtlpProtocol,
    /// The full URL spans are sent to (for http/protobuf it ends in `/v1/traces`).
    pub traces_endpoint: String,
    pub sampler: SamplerSetting,
    pub bsp_schedule_delay: Duration,
    pub bsp_max_queue_size: usize,
    pub bsp_max_export_batch_size: usize,
    pub bsp_export_timeout: Duration,
}

pub const DEFAULT_SERVICE_NAME: &str = "sample-app";

impl OtelSettings {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let mut resource_attributes = match var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(raw) => parse_resource_attributes(&raw).context("OTEL_RESOURCE_ATTRIBUTES")?,
            None => Vec::new(),
        };
        let attr_service_name = take_attribute(&mut resource_attributes, "service.name");
        let attr_version = take_attribute(&mut resource_attributes, "service.version");
        let service_name = var("OTEL_SERVICE_NAME")
            .or(attr_service_name)
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());

        let traces_exporter_enabled = match var("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => true,
            Some("none") => false,
            Some(other) => {
                bail!("OTEL_TRACES_EXPORTER: '{other}' is not supported (use otlp or none)")
            }
        };
        let protocol = match var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            None | Some("grpc") => OtlpProtocol::Grpc,
            Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some(other) => bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL: '{other}' is not supported (use grpc or http/protobuf)"
            ),
        };
        let traces_endpoint = traces_endpoint(
            protocol,
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        )?;
        let sampler = parse_sampler(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG"))?;

        let ms = |name: &str, default: u64| -> anyhow::Result<Duration> {
            Ok(Duration::from_millis(parse_number(
                name,
                var(name),
                default,
                1,
                600_000,
            )?))
        };
        let bsp_max_queue_size = parse_number(
            "OTEL_BSP_MAX_QUEUE_SIZE",
            var("OTEL_BSP_MAX_QUEUE_SIZE"),
            2048,
            1,
            1_000_000,
        )? as usize;
        let bsp_max_export_batch_size = parse_number(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
            512,
            1,
            1_000_000,
        )? as usize;
        if bsp_max_export_batch_size > bsp_max_queue_size {
            bail!(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE ({bsp_max_export_batch_size}) must not exceed OTEL_BSP_MAX_QUEUE_SIZE ({bsp_max_queue_size})"
            );
        }

        Ok(Self {
            service_name,
            service_version: attr_version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
            resource_attributes,
            traces_exporter_enabled,
            protocol,
            traces_endpoint,
            sampler,
            bsp_schedule_delay: ms("OTEL_BSP_SCHEDULE_DELAY", 5000)?,
            bsp_max_queue_size,
            bsp_max_export_batch_size,
            bsp_export_timeout: ms("OTEL_BSP_EXPORT_TIMEOUT", 30_000)?,
        })
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
    plan.validate(crate::startup::APP_ROUTES)
        .context("SAMPLE_APP_FAULTS")?;
    Ok(Some(plan))
}

fn take_attribute(attrs: &mut Vec<(String, String)>, key: &str) -> Option<String> {
    let index = attrs.iter().position(|(k, _)| k == key)?;
    Some(attrs.remove(index).1)
}

/// `key1=value1,key2=value2`, values percent-decoded (W3C Baggage octets, as the spec says).
fn parse_resource_attributes(raw: &str) -> anyhow::Result<Vec<(String, String)>> {
    raw.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("'{pair}' is not key=value"))?;
            let key = key.trim();
            if key.is_empty() {
                bail!("'{pair}' has an empty key");
            }
            let value =
                percent_decode(value.trim()).with_context(|| format!("value of '{key}'"))?;
            Ok((key.to_owned(), value))
        })
        .collect()
}

fn percent_decode(raw: &str) -> anyhow::Result<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .context("'%' must be followed by two hex digits")?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .with_context(|| format!("'%{hex}' is not a hex escape"))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("decoded value is not UTF-8")
}

fn traces_endpoint(
    protocol: OtlpProtocol,
    signal: Option<String>,
    base: Option<String>,
) -> anyhow::Result<String> {
    let (name, url) = match (signal, base) {
        (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url),
        (None, Some(base)) => {
            let base = base.trim_end_matches('/').to_owned();
            let url = match protocol {
                OtlpProtocol::Grpc => base,
                OtlpProtocol::HttpProtobuf => format!("{base}/v1/traces"),
            };
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        }
        (None, None) => {
            let url = match protocol {
                OtlpProtocol::Grpc => "http://localhost:4317",
                OtlpProtocol::HttpProtobuf => "http://localhost:4318/v1/traces",
            };
            return Ok(url.to_owned());
        }
    };
    parse_http_url(&url).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    Ok(url)
}

fn parse_sampler(name: Option<String>, arg: Option<String>) -> anyhow::Result<SamplerSetting> {
    let ratio = || -> anyhow::Result<f64> {
        match arg.as_deref() {
            None => Ok(1.0),
            Some(raw) => match raw.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => bail!("OTEL_TRACES_SAMPLER_ARG: '{raw}' must be a number from 0 to 1"),
            },
        }
    };
    Ok(match name.as_deref().unwrap_or("parentbased_always_on") {
        "always_on" => SamplerSetting::AlwaysOn,
        "always_off" => SamplerSetting::AlwaysOff,
        "traceidratio" => SamplerSetting::TraceIdRatio(ratio()?),
        "parentbased_always_on" => SamplerSetting::ParentBasedAlwaysOn,
        "parentbased_always_off" => SamplerSetting::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => SamplerSetting::ParentBasedTraceIdRatio(ratio()?),
        other => bail!(
            "OTEL_TRACES_SAMPLER: '{other}' is not supported (use always_on, always_off, traceidratio, \
             parentbased_always_on, parentbased_always_off or parentbased_traceidratio)"
        ),
    })
}

fn parse_number(
    name: &str,
    raw: Option<String>,
    default: u64,
    min: u64,
    max: u64,
) -> anyhow::Result<u64> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => bail!("{name}: '{raw}' must be a whole number from {min} to {max}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn otel(vars: &[(&str, &str)]) -> anyhow::Result<OtelSettings> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtelSettings::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_run_locally_with_grpc_to_localhost() {
        let s = otel(&[]).unwrap();
        assert_eq!(s.service_name, "sample-app");
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.traces_endpoint, "http://localhost:4317");
        assert_eq!(s.sampler, SamplerSetting::ParentBasedAlwaysOn);
    }

    #[test]
    fn http_protobuf_appends_the_traces_path_to_the_base_endpoint() {
        let s = otel(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4318/"),
        ])
        .unwrap();
        assert_eq!(s.traces_endpoint, "http://tempo:4318/v1/traces");
    }

    #[test]
    fn service_name_variable_wins_over_resource_attributes() {
        let s = otel(&[
            ("OTEL_SERVICE_NAME", "checkout"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=x,deployment.environment.name=work%20shop",
            ),
        ])
        .unwrap();
        assert_eq!(s.service_name, "checkout");
        assert_eq!(
            s.resource_attributes,
            vec![(
                "deployment.environment.name".to_owned(),
                "work shop".to_owned()
            )]
        );
    }

    #[test]
    fn each_invalid_setting_is_named_in_the_error() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "-1"),
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "tempo:4317"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
        ] {
            let err = otel(&[(name, value)]).unwrap_err();
            assert!(format!("{err:#}").contains(name), "{name}: {err:#}");
        }
        let err = otel(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("OTEL_TRACES_SAMPLER_ARG"));
    }

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
    fn invalid_flags_name_the_flag() {
        let err =
            Settings::from_sources(["sample-app", "--listen", "nowhere"], |_| None).unwrap_err();
        assert!(err.to_string().contains("--listen"), "{err}");
        let err = Settings::from_sources(["sample-app", "--downstream-url", "ftp://x"], |_| None)
            .unwrap_err();
        assert!(err.to_string().contains("--downstream-url"), "{err}");
    }
}
