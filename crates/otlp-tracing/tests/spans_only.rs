//! SpansOnly around tracing-opentelemetry's real layer: spans are exported as before, events
//! never become span events, and `OpenTelemetrySpanExt` still finds the layer. (What it saves,
//! the per-event `enabled` pass, is tests/spans_only_interest.rs: callsite interest is global
//! to the process, so that test has a process of its own.)

use std::sync::{Arc, Mutex};

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use otlp_tracing::SpansOnly;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Debug, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

fn provider(collected: &Collected) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_simple_exporter(collected.clone())
        .build()
}

/// One request-like span with two events inside and one outside; returns the span's trace id
/// as `OpenTelemetrySpanExt` reported it.
fn traffic() -> opentelemetry::trace::TraceId {
    let span = tracing::info_span!("HTTP request", otel.kind = "server");
    let trace_id = span.context().span().span_context().trace_id();
    span.in_scope(|| {
        tracing::info!(order_id = 7, "looked up");
        tracing::warn!("slow");
    });
    tracing::info!("outside any span");
    drop(span);
    trace_id
}

#[test]
fn spans_are_exported_without_events_and_span_ext_still_finds_the_layer() {
    let collected = Collected::default();
    let provider = provider(&collected);
    let subscriber = tracing_subscriber::registry().with(SpansOnly::new(
        tracing_opentelemetry::layer().with_tracer(provider.tracer("test")),
    ));
    let trace_id = tracing::subscriber::with_default(subscriber, traffic);
    provider.force_flush().unwrap();

    let spans = collected.0.lock().unwrap();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span.name, "HTTP request");
    assert_eq!(span.span_kind, opentelemetry::trace::SpanKind::Server);
    // `span.context()` went through SpansOnly's downcast_raw: a valid id, the exported one.
    assert!(trace_id != opentelemetry::trace::TraceId::INVALID);
    assert_eq!(span.span_context.trace_id(), trace_id);
    assert!(span.events.is_empty(), "events leaked: {:?}", span.events);
}

#[test]
fn the_unwrapped_layer_would_record_the_events_so_the_test_above_can_fail() {
    let collected = Collected::default();
    let provider = provider(&collected);
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, traffic);
    provider.force_flush().unwrap();
    let spans = collected.0.lock().unwrap();
    assert_eq!(spans[0].events.len(), 2);
}
