//! load-gen is a traced client: every request it sends is a client span of service `load-gen`,
//! exported over OTLP by the standard `OTEL_*` variables, and its `traceparent` carries that
//! span's ids. So every trace of the workshop has a root — Tempo shows the whole request and
//! structural TraceQL (`>`, `>>`, `~`) matches load-gen traffic — and Tempo's service graph
//! draws `load-gen → sample-app → sample-app-downstream`.
//!
//! Export is on only when an endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_TRACES_EXPORTER` is not `none`. Without it the
//! request still carries a fresh `traceparent`. Either way trace ids are random per process
//! (the OpenTelemetry SDK's generator, or the thread's OS-seeded RNG): `--seed` fixes only the
//! request mix, never the trace ids, so runs and `--repeat` iterations never share a trace.
//!
//! A span starts at the request's *intended* send time, so a late request shows its wait in
//! the trace, as it does in the latency report.

use std::{
    io::Write as _,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use hyper::{StatusCode, header::HeaderValue};
use opentelemetry::{
    Context, KeyValue,
    trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _},
};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use otlp_tracing::{OtelSettings, SamplerSetting, ServiceDefaults};
use rand::Rng;

use crate::client::{ErrorKind, Target};

/// How long the last spans may take to leave at exit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// The same after a stop (Ctrl-C, SIGTERM), which must end the process within 2 s.
const FLUSH_AFTER_STOP: Duration = Duration::from_millis(400);

/// Makes the client span of each request (or only its `traceparent`, when export is off).
#[derive(Clone)]
pub struct ClientTracer {
    exporting: Option<(SdkTracerProvider, SdkTracer)>,
    sampled: bool,
}

impl ClientTracer {
    /// From the process's `OTEL_*` variables; `sampled` is `--trace-sampled`.
    pub fn from_env(sampled: bool) -> anyhow::Result<Self> {
        Self::from_vars(sampled, |k| std::env::var(k).ok())
    }

    pub fn from_vars(sampled: bool, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut otel = OtelSettings::from_env(
            ServiceDefaults {
                name: "load-gen",
                version: env!("CARGO_PKG_VERSION"),
            },
            env,
        )?;
        if !(otel.endpoint_configured && otel.traces_exporter_enabled) {
            return Ok(Self::without_export(sampled));
        }
        if !sampled {
            otel.sampler = SamplerSetting::AlwaysOff;
        }
        let provider = otlp_tracing::tracer_provider(&otel)
            .with_context(|| format!("while setting up span export to {}", otel.traces_endpoint))?;
        let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
        crate::note!(
            "load-gen: exporting a client span per request to {} as service {}",
            otel.traces_endpoint,
            otel.service_name
        );
        Ok(Self {
            exporting: Some((provider, tracer)),
            sampled,
        })
    }

    /// Only a fresh `traceparent` per request, no spans.
    pub fn without_export(sampled: bool) -> Self {
        Self {
            exporting: None,
            sampled,
        }
    }

    pub fn is_exporting(&self) -> bool {
        self.exporting.is_some()
    }

    /// Starts the span of one request, due `late` ago.
    pub fn start(&self, request: &RequestFacts<'_>, late: Duration) -> RequestSpan {
        let Some((_, tracer)) = &self.exporting else {
            return RequestSpan {
                span: None,
                traceparent: random_traceparent(&mut rand::rng(), self.sampled),
            };
        };
        let method = request.method.as_str();
        let span = tracer
            .span_builder(method.to_owned())
            .with_kind(SpanKind::Client)
            .with_start_time(SystemTime::now() - late)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("url.full", request.target.full_url(request.path_and_query)),
                KeyValue::new("server.address", request.target.host.clone()),
                KeyValue::new("server.port", i64::from(request.target.port)),
                KeyValue::new("loadgen.request", request.name.to_owned()),
            ])
            .start_with_context(tracer, &Context::new());
        let traceparent = traceparent_of(&span);
        RequestSpan {
            span: Some(span),
            traceparent,
        }
    }

    /// Flushes the spans still queued (bounded; a missing collector cannot hold up the exit,
    /// and after a stop the bound is short).
    pub async fn shutdown(self, after_stop: bool) {
        let deadline = if after_stop {
            FLUSH_AFTER_STOP
        } else {
            FLUSH_TIMEOUT
        };
        let Some((provider, _)) = self.exporting else {
            return;
        };
        // Off the runtime thread: the gRPC exporter needs the runtime to make progress.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
        let outcome = tokio::time::timeout(deadline, flushed).await;
        let [(_, accepted), (_, timeout), (_, shut_down), (_, failed)] =
            otlp_tracing::SPAN_EXPORTS.snapshot();
        crate::note!(
            "load-gen: {accepted} client spans exported, {} failed",
            timeout + shut_down + failed
        );
        match outcome {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => crate::note!("load-gen: flushing spans failed: {e}"),
            Ok(Err(e)) => crate::note!("load-gen: the span flush task failed: {e}"),
            Err(_) => crate::note!("load-gen: spans were not flushed within {deadline:?}"),
        }
    }
}

/// What a span says about its request.
pub struct RequestFacts<'a> {
    pub method: &'a hyper::Method,
    pub target: &'a Target,
    pub path_and_query: &'a str,
    /// The request's name in the mix.
    pub name: &'a str,
}

/// The span of one request in flight (none when export is off) and the header that carries it.
pub struct RequestSpan {
    span: Option<Span>,
    pub traceparent: HeaderValue,
}

impl RequestSpan {
    /// Ends the span with the request's outcome: its status, or why no answer came.
    pub fn finish(self, outcome: Result<StatusCode, ErrorKind>) {
        let Some(mut span) = self.span else { return };
        match outcome {
            Ok(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
                // Client spans count 4xx and 5xx as errors (HTTP semantic conventions).
                if status.as_u16() >= 400 {
                    span.set_attribute(KeyValue::new("error.type", status.as_str().to_owned()));
                    span.set_status(Status::error(""));
                }
            }
            Err(kind) => {
                span.set_attribute(KeyValue::new("error.type", kind.as_str()));
                span.set_status(Status::error(kind.as_str()));
            }
        }
        span.end();
    }
}

fn traceparent_of(span: &Span) -> HeaderValue {
    let sc = span.span_context();
    let mut buffer = [0u8; 55];
    let mut cursor = &mut buffer[..];
    let _ = write!(
        cursor,
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    HeaderValue::from_bytes(&buffer).expect("a traceparent is ASCII")
}

/// A W3C `traceparent` with fresh random ids, written into a stack buffer (no allocation).
pub fn random_traceparent(rng: &mut impl Rng, sampled: bool) -> HeaderValue {
    let trace_id: u128 = rng.random::<u128>().max(1);
    let span_id: u64 = rng.random::<u64>().max(1);
    let mut buffer = [0u8; 55];
    let mut cursor = &mut buffer[..];
    let _ = write!(
        cursor,
        "00-{trace_id:032x}-{span_id:016x}-{}",
        if sampled { "01" } else { "00" }
    );
    HeaderValue::from_bytes(&buffer).expect("a traceparent is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_endpoint_nothing_is_exported_but_every_request_gets_a_new_trace() {
        let tracer = ClientTracer::from_vars(true, |_| None).unwrap();
        assert!(!tracer.is_exporting());
        let a = random_traceparent(&mut rand::rng(), true);
        let b = random_traceparent(&mut rand::rng(), true);
        assert_ne!(a, b);
        assert!(a.to_str().unwrap().ends_with("-01"));
        assert!(
            random_traceparent(&mut rand::rng(), false)
                .to_str()
                .unwrap()
                .ends_with("-00")
        );
    }

    #[test]
    fn traces_exporter_none_turns_export_off_even_with_an_endpoint() {
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:4317".to_owned()),
            "OTEL_TRACES_EXPORTER" => Some("none".to_owned()),
            _ => None,
        };
        assert!(!ClientTracer::from_vars(true, env).unwrap().is_exporting());
    }

    #[test]
    fn an_invalid_otel_variable_is_an_error_naming_it() {
        let env = |k: &str| (k == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "pigeon".to_owned());
        let error = ClientTracer::from_vars(true, env).err().unwrap();
        assert!(format!("{error:#}").contains("OTEL_EXPORTER_OTLP_PROTOCOL"));
    }
}
