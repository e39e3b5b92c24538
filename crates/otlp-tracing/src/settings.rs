//! The standard OpenTelemetry settings (`OTEL_*`) both programs honour, parsed and validated by
//! the rules of the OpenTelemetry SDK environment-variable specification; an invalid value is
//! an error that names its variable.

use std::time::Duration;

use anyhow::{Context, bail};
use url::Url;

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
    /// Whether `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` was set
    /// (otherwise `traces_endpoint` is the SDK default on localhost).
    pub endpoint_configured: bool,
    pub sampler: SamplerSetting,
    pub bsp_schedule_delay: Duration,
    pub bsp_max_queue_size: usize,
    pub bsp_max_export_batch_size: usize,
    pub bsp_export_timeout: Duration,
}

/// What a program calls itself when the environment does not say.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDefaults {
    pub name: &'static str,
    pub version: &'static str,
}

impl OtelSettings {
    /// Reads the `OTEL_*` variables through `env` (a function, so tests need no process state).
    pub fn from_env(
        defaults: ServiceDefaults,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let mut resource_attributes = match var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(raw) => parse_key_values(&raw).context("OTEL_RESOURCE_ATTRIBUTES")?,
            None => Vec::new(),
        };
        let attr_service_name = take_attribute(&mut resource_attributes, "service.name");
        let attr_version = take_attribute(&mut resource_attributes, "service.version");
        let service_name = var("OTEL_SERVICE_NAME")
            .or(attr_service_name)
            .unwrap_or_else(|| defaults.name.to_owned());

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
        let endpoint_configured = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
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
            service_version: attr_version.unwrap_or_else(|| defaults.version.to_owned()),
            resource_attributes,
            traces_exporter_enabled,
            protocol,
            traces_endpoint,
            endpoint_configured,
            sampler,
            bsp_schedule_delay: ms("OTEL_BSP_SCHEDULE_DELAY", 5000)?,
            bsp_max_queue_size,
            bsp_max_export_batch_size,
            bsp_export_timeout: ms("OTEL_BSP_EXPORT_TIMEOUT", 30_000)?,
        })
    }
}

/// An `http://` or `https://` URL with a host.
pub fn parse_http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("'{raw}' is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(format!(
            "'{raw}' must be an http:// or https:// URL with a host"
        )),
    }
}

fn take_attribute(attrs: &mut Vec<(String, String)>, key: &str) -> Option<String> {
    let index = attrs.iter().position(|(k, _)| k == key)?;
    Some(attrs.remove(index).1)
}

/// `key1=value1,key2=value2`, keys and values trimmed, values percent-decoded (W3C Baggage
/// octets, as the spec says), empty entries skipped: `OTEL_RESOURCE_ATTRIBUTES`, and the
/// `OTEL_EXPORTER_OTLP_*HEADERS` ([`crate::grpc`]).
pub(crate) fn parse_key_values(raw: &str) -> anyhow::Result<Vec<(String, String)>> {
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
        OtelSettings::from_env(
            ServiceDefaults {
                name: "sample-app",
                version: "0.1.0",
            },
            |k| map.get(k).cloned(),
        )
    }

    #[test]
    fn defaults_run_locally_with_grpc_to_localhost() {
        let s = otel(&[]).unwrap();
        assert_eq!(s.service_name, "sample-app");
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.traces_endpoint, "http://localhost:4317");
        assert_eq!(s.sampler, SamplerSetting::ParentBasedAlwaysOn);
        assert!(!s.endpoint_configured);
        assert!(
            otel(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4317")])
                .unwrap()
                .endpoint_configured
        );
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
}
