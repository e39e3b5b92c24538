//! The OTLP/gRPC span exporter: each batch encoded once by [`crate::encode`] and sent as the
//! body of `TraceService/Export` over tonic, the transport opentelemetry-otlp uses too.
//!
//! It honours what opentelemetry-otlp 0.33.1's tonic exporter honours for traces, read the same
//! way (its `src/exporter/tonic/mod.rs`, `src/exporter/mod.rs`, `src/retry*.rs`):
//! - the endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`,
//!   resolved by [`crate::settings`]);
//! - headers: `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`
//!   (`key=value,…`, values percent-decoded), sent as gRPC metadata;
//! - the timeout of each export, retries included: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else
//!   `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else `OTEL_BSP_EXPORT_TIMEOUT`. Each attempt
//!   gets what remains of it as its gRPC deadline, and connecting is bounded by it too, so an
//!   export ends within about twice the timeout at worst (a connection made just before the
//!   deadline, then its call) — as opentelemetry-otlp's, which bounds only the wait between
//!   attempts (src/retry.rs);
//! - retries as opentelemetry-otlp's recommended policy: up to 3, exponential backoff from
//!   100 ms to 1.6 s plus up to 100 ms of jitter, on the codes the OTLP specification calls
//!   retryable, after the delay a server asks for in `RetryInfo`, never past the timeout.
//!
//! What it does not do, TLS (`https://` endpoints) and compression, it leaves to
//! opentelemetry-otlp's exporter: [`GrpcConfig::from_env`] answers `None` and
//! [`crate::provider`] builds that one instead.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use prost::Message;
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
};
use tonic_types::StatusExt;

use crate::encode::{EncodedResource, encode_export_request};
use crate::settings::parse_key_values;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// opentelemetry-otlp's recommended retry policy (src/retry_policy.rs, `recommended()`).
const MAX_RETRIES: u32 = 3;
const INITIAL_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_millis(1600);
const MAX_JITTER_MS: u64 = 100;
/// The longest delay a server's `RetryInfo` may impose (src/retry.rs, `MAX_THROTTLE_DURATION`).
const MAX_THROTTLE: Duration = Duration::from_secs(30);

/// How to reach the collector, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcConfig {
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

impl GrpcConfig {
    /// The gRPC settings of `endpoint`, from the `OTEL_EXPORTER_OTLP_*` variables read through
    /// `env`; `default_timeout` is `OTEL_BSP_EXPORT_TIMEOUT`. `None` when the endpoint needs
    /// TLS (`https://`) or compression is asked for: this exporter has neither, so
    /// opentelemetry-otlp's exporter does those.
    pub fn from_env(
        endpoint: &str,
        default_timeout: Duration,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Self>> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let pick = |signal: &'static str, general: &'static str| {
            var(signal)
                .map(|v| (signal, v))
                .or_else(|| var(general).map(|v| (general, v)))
        };
        // TLS and compression stay with opentelemetry-otlp's exporter (crate::provider).
        if !endpoint.starts_with("http://") {
            return Ok(None);
        }
        if let Some((_, value)) = pick(
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ) && !value.trim().eq_ignore_ascii_case("none")
        {
            return Ok(None);
        }
        let timeout = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            Some((name, value)) => match value.trim().parse::<u64>() {
                Ok(ms) if (1..=600_000).contains(&ms) => Duration::from_millis(ms),
                _ => bail!(
                    "{name}: '{value}' must be a whole number of milliseconds from 1 to 600000"
                ),
            },
            None => default_timeout,
        };
        let headers = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ) {
            Some((name, value)) => parse_headers(&value).context(name)?,
            None => Vec::new(),
        };
        Ok(Some(Self {
            endpoint: endpoint.to_owned(),
            headers,
            timeout,
        }))
    }
}

/// `key=value,key2=value2` as [`parse_key_values`] reads it, keys lowercased, as
/// opentelemetry-otlp parses them (src/exporter/mod.rs, `parse_header_string`); but a pair that
/// cannot be a header is an error here rather than silently dropped.
fn parse_headers(raw: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    for (key, value) in parse_key_values(raw)? {
        let key = key.to_ascii_lowercase();
        if value.is_empty() {
            bail!("'{key}' has an empty value");
        }
        MetadataKey::<tonic::metadata::Ascii>::from_bytes(key.as_bytes())
            .with_context(|| format!("'{key}' is not a valid header name"))?;
        MetadataValue::<tonic::metadata::Ascii>::try_from(value.as_str())
            .with_context(|| format!("the value of '{key}' is not a valid header value"))?;
        headers.push((key, value));
    }
    Ok(headers)
}

/// Sends span batches to an OTLP/gRPC collector.
#[derive(Debug)]
pub struct GrpcSpanExporter {
    channel: Channel,
    metadata: MetadataMap,
    timeout: Duration,
    resource: EncodedResource,
    shut_down: AtomicBool,
}

impl GrpcSpanExporter {
    /// Must run inside a Tokio runtime: the channel's connection lives on it (it connects on
    /// the first export, so a collector that is not up yet costs nothing here).
    pub fn new(config: &GrpcConfig) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .with_context(|| format!("'{}' is not a valid gRPC endpoint", config.endpoint))?
            .timeout(config.timeout)
            .user_agent(concat!(
                "four-signal-otlp-tracing/",
                env!("CARGO_PKG_VERSION")
            ))
            .context("the User-Agent header")?
            // A collector that drops the connection attempt fails the export within its
            // deadline rather than the operating system's connect timeout.
            .connect_timeout(config.timeout);
        let mut metadata = MetadataMap::new();
        for (key, value) in &config.headers {
            // Validated by `parse_headers`.
            if let (Ok(key), Ok(value)) = (
                MetadataKey::from_bytes(key.as_bytes()),
                MetadataValue::try_from(value.as_str()),
            ) {
                metadata.append(key, value);
            }
        }
        Ok(Self {
            channel: endpoint.connect_lazy(),
            metadata,
            timeout: config.timeout,
            resource: EncodedResource::default(),
            shut_down: AtomicBool::new(false),
        })
    }

    /// One attempt, with `remaining` of the export's timeout as its deadline.
    async fn send(
        &self,
        body: Bytes,
        remaining: Duration,
    ) -> Result<ExportTraceServiceResponse, Status> {
        let mut client = tonic::client::Grpc::new(self.channel.clone());
        client
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("the collector is not reachable: {e}")))?;
        let mut request = Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(remaining);
        let path = PathAndQuery::from_static(EXPORT_PATH);
        Ok(client.unary(request, path, PreEncoded).await?.into_inner())
    }

    /// Sends one encoded `ExportTraceServiceRequest` (see [`crate::encode`]), retrying as the
    /// module docs say, within the export timeout.
    pub async fn send_request(&self, body: Bytes) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let started = Instant::now();
        let mut attempt = 0;
        let mut delay = INITIAL_DELAY;
        let mut delay_cap = MAX_DELAY;
        loop {
            let remaining = self.timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(OTelSdkError::Timeout(self.timeout));
            }
            let status = match self.send(body.clone(), remaining).await {
                Ok(response) => {
                    if let Some(partial) = response.partial_success
                        && (partial.rejected_spans > 0 || !partial.error_message.is_empty())
                    {
                        tracing::warn!(
                            rejected_spans = partial.rejected_spans,
                            error_message = partial.error_message,
                            "the OTLP collector rejected part of a span batch"
                        );
                    }
                    return Ok(());
                }
                Err(status) => status,
            };
            let server_delay = match retry(&status) {
                Retry::No => return Err(export_error(&status, self.timeout)),
                Retry::After(server_delay) => server_delay,
            };
            if attempt >= MAX_RETRIES {
                return Err(export_error(&status, self.timeout));
            }
            attempt += 1;
            if let Some(server_delay) = server_delay {
                // A server's delay extends, never shortens, the backoff.
                let server_delay = server_delay.min(MAX_THROTTLE);
                if server_delay > delay_cap {
                    delay_cap = MAX_THROTTLE;
                }
                delay = delay.max(server_delay);
            }
            let sleep = (delay + jitter()).min(delay_cap);
            if sleep >= self.timeout.saturating_sub(started.elapsed()) {
                return Err(export_error(&status, self.timeout));
            }
            // The batch processor exports on its own thread, so waiting blocks no request.
            std::thread::sleep(sleep);
            delay = (delay * 2).min(delay_cap);
        }
    }

    /// Refuses every later export (once; again is an error).
    pub fn shut_down(&self) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        Ok(())
    }
}

impl SpanExporter for GrpcSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let mut body = Vec::new();
        encode_export_request(&self.resource, &batch, &mut body);
        drop(batch);
        self.send_request(Bytes::from(body)).await
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.shut_down()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

enum Retry {
    No,
    /// Retry, after at least the server's delay when it sent one.
    After(Option<Duration>),
}

/// The OTLP specification's retryable codes, as opentelemetry-otlp classifies them
/// (src/retry_classification.rs, `classify_grpc_error`).
fn retry(status: &Status) -> Retry {
    let server_delay = || {
        status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
    };
    match status.code() {
        // Retryable only when the server says when (RetryInfo), a delay of 0 included.
        Code::ResourceExhausted => match server_delay() {
            Some(delay) => Retry::After(Some(delay)),
            None => Retry::No,
        },
        Code::Unavailable => Retry::After(server_delay().filter(|delay| !delay.is_zero())),
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => Retry::After(None),
        _ => Retry::No,
    }
}

/// The error the batch processor reports: the code, and for transport failures their cause
/// (never the server's message, which may echo credentials, as opentelemetry-otlp decides).
fn export_error(status: &Status, timeout: Duration) -> OTelSdkError {
    // The server's deadline, or tonic's own (a `TimeoutExpired`, which it reports as
    // CANCELLED with that error's text, tonic src/status.rs `from_error`).
    let timed_out = status.code() == Code::DeadlineExceeded
        || (status.code() == Code::Cancelled
            && status.message() == tonic::TimeoutExpired(()).to_string());
    if timed_out {
        return OTelSdkError::Timeout(timeout);
    }
    let mut message = format!("OTLP/gRPC export failed: {:?}", status.code());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    OTelSdkError::InternalFailure(message)
}

/// Up to `MAX_JITTER_MS` of jitter (the clock's nanoseconds are random enough for spreading
/// retries, as in opentelemetry-otlp's `generate_jitter`).
fn jitter() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    Duration::from_millis(nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (MAX_JITTER_MS + 1))
}

/// A codec whose request is already the encoded `ExportTraceServiceRequest`.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PreEncoded;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| {
                Status::internal(format!(
                    "the collector's answer is not an ExportTraceServiceResponse: {e}"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<GrpcConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        GrpcConfig::from_env("http://tempo:4317", Duration::from_secs(30), |k| {
            map.get(k).cloned()
        })
        .map(|c| c.expect("a plaintext endpoint without compression is exported directly"))
    }

    #[test]
    fn headers_and_timeouts_come_from_the_signal_variable_first() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-general=1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                " Authorization = Basic%20abc== , x-scope-orgid=team-a",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ])
        .unwrap();
        assert_eq!(
            c.headers,
            [
                ("authorization".to_owned(), "Basic abc==".to_owned()),
                ("x-scope-orgid".to_owned(), "team-a".to_owned())
            ]
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(config(&[]).unwrap().timeout, Duration::from_secs(30));
        assert!(
            config(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "none")])
                .unwrap()
                .headers
                .is_empty()
        );
    }

    #[test]
    fn a_bad_setting_is_refused_naming_the_variable() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "bad key=1"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "k=%zz"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert!(format!("{err:#}").contains(name), "{name}: {err:#}");
        }
    }

    #[test]
    fn tls_and_compression_are_left_to_opentelemetry_otlp() {
        let none = |_: &str| None;
        let tls = GrpcConfig::from_env("https://tempo:4317", Duration::from_secs(1), none);
        assert_eq!(tls.unwrap(), None);
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd"),
        ] {
            let env = |k: &str| (k == name).then(|| value.to_owned());
            let got = GrpcConfig::from_env("http://tempo:4317", Duration::from_secs(1), env);
            assert_eq!(got.unwrap(), None, "{name}={value}");
        }
    }

    #[test]
    fn only_the_specifications_retryable_codes_are_retried() {
        assert!(matches!(
            retry(&Status::unavailable("down")),
            Retry::After(None)
        ));
        assert!(matches!(
            retry(&Status::deadline_exceeded("slow")),
            Retry::After(None)
        ));
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Internal,
            // Without RetryInfo, RESOURCE_EXHAUSTED is final (OTLP specification).
            Code::ResourceExhausted,
        ] {
            assert!(
                matches!(retry(&Status::new(code, "")), Retry::No),
                "{code:?}"
            );
        }
        // With RetryInfo, RESOURCE_EXHAUSTED is retried after the server's delay, 0 included
        // (opentelemetry-otlp src/retry_classification.rs); UNAVAILABLE treats 0 as none.
        let with_delay = |code, delay| {
            Status::with_error_details(
                code,
                "",
                tonic_types::ErrorDetails::with_retry_info(Some(delay)),
            )
        };
        for delay in [Duration::ZERO, Duration::from_secs(2)] {
            let got = retry(&with_delay(Code::ResourceExhausted, delay));
            assert!(
                matches!(got, Retry::After(Some(d)) if d == delay),
                "{delay:?}"
            );
        }
        assert!(matches!(
            retry(&with_delay(Code::Unavailable, Duration::ZERO)),
            Retry::After(None)
        ));
        // tonic's own deadline comes back as CANCELLED; it is the export's timeout.
        let local = Status::cancelled(tonic::TimeoutExpired(()).to_string());
        assert!(matches!(
            export_error(&local, Duration::from_secs(3)),
            OTelSdkError::Timeout(_)
        ));
    }
}
