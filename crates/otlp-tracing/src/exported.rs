//! The exporter's own count of what it sent, as the OpenTelemetry SDK self-observability
//! conventions name it (`otel.sdk.exporter.span.exported`, with `error.type` on failure): in
//! Prometheus form `otel_sdk_exporter_span_exported_total{error_type}`, `error_type` empty for
//! spans the collector accepted. A soak compares this count with what Tempo received, so "no
//! span lost" is a measured claim. One count per process (one tracer provider per process).

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_sdk::error::OTelSdkError;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter},
};

/// Spans handed to the collector, by outcome. `error_type` has four values at most.
pub static SPAN_EXPORTS: SpanExports = SpanExports {
    accepted: AtomicU64::new(0),
    timeout: AtomicU64::new(0),
    shut_down: AtomicU64::new(0),
    failed: AtomicU64::new(0),
};

pub struct SpanExports {
    accepted: AtomicU64,
    timeout: AtomicU64,
    shut_down: AtomicU64,
    failed: AtomicU64,
}

impl SpanExports {
    pub fn record(&self, spans: usize, result: Result<(), &OTelSdkError>) {
        let counter = match result {
            Ok(()) => &self.accepted,
            Err(OTelSdkError::Timeout(_)) => &self.timeout,
            Err(OTelSdkError::AlreadyShutdown) => &self.shut_down,
            Err(_) => &self.failed,
        };
        counter.fetch_add(spans as u64, Ordering::Relaxed);
    }

    /// `(error_type, spans)`; `""` is the spans the collector accepted.
    pub fn snapshot(&self) -> [(&'static str, u64); 4] {
        [
            ("", self.accepted.load(Ordering::Relaxed)),
            ("timeout", self.timeout.load(Ordering::Relaxed)),
            ("already_shutdown", self.shut_down.load(Ordering::Relaxed)),
            ("export_failed", self.failed.load(Ordering::Relaxed)),
        ]
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorType {
    error_type: &'static str,
}

/// Serves [`SPAN_EXPORTS`] on a program's `/metrics`.
#[derive(Debug)]
pub struct SpanExportCollector;

impl Collector for SpanExportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "otel_sdk_exporter_span_exported",
            "Spans the OTLP exporter sent: accepted by the collector (error_type empty) or failed",
            None,
            MetricType::Counter,
        )?;
        for (error_type, spans) in SPAN_EXPORTS.snapshot() {
            ConstCounter::new(spans).encode(metric.encode_family(&ErrorType { error_type })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_counted_by_outcome() {
        let exports = SpanExports {
            accepted: AtomicU64::new(0),
            timeout: AtomicU64::new(0),
            shut_down: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        };
        exports.record(3, Ok(()));
        exports.record(2, Err(&OTelSdkError::InternalFailure("refused".into())));
        exports.record(
            1,
            Err(&OTelSdkError::Timeout(std::time::Duration::from_secs(1))),
        );
        assert_eq!(
            exports.snapshot(),
            [
                ("", 3),
                ("timeout", 1),
                ("already_shutdown", 0),
                ("export_failed", 2)
            ]
        );
    }
}
