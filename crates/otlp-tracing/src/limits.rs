//! Bounds on what a span may hold and on how much of them may wait for export, so that neither
//! a client's headers nor a collector that stops reading can grow a program's memory without
//! limit.
//!
//! - **Attribute values** are cut to [`SpanLimitSettings::attribute_value_length`] bytes, on a
//!   character boundary: OpenTelemetry's attribute value length limit
//!   (`OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`, else `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`), which
//!   opentelemetry_sdk 0.33.1 does not implement (its `SpanLimits` has counts only,
//!   `opentelemetry_sdk-0.33.1/src/trace/span_limit.rs:23-34`). The default is 1,024 where the
//!   specification's is none: `user_agent.original`, `server.address` and `url.path` come from
//!   the request, and a 60 KB `User-Agent` with a 30 KB `Host` made a 90 KB span. The limit is in
//!   bytes, so it bounds memory exactly; a value cut to N bytes has at most N characters, as the
//!   specification asks. Every string attribute of a span, its events and links, and its status
//!   description are cut, whatever set them.
//! - **The count limits** (attributes, events, links per span) are the SDK's own: it reads
//!   `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, `OTEL_SPAN_EVENT_COUNT_LIMIT` and
//!   `OTEL_SPAN_LINK_COUNT_LIMIT`, default 128 each
//!   (`opentelemetry_sdk-0.33.1/src/trace/config.rs:39-58`).
//! - **The export queue** holds at most [`SpanLimitSettings::max_queue_bytes`] (16 MiB) of spans,
//!   counted from the end of a span to the end of its export (the batch being sent is memory
//!   too), besides the SDK's bound in spans (`OTEL_BSP_MAX_QUEUE_SIZE`); a span's bytes are
//!   [`span_bytes`]' estimate, or its encoded size in [`crate::encoded_batch`]. A span past either bound
//!   is dropped at once — a request never waits for the collector — and counted in
//!   `otel_sdk_processor_span_processed_total{error_type="queue_full"}`, the OpenTelemetry SDK
//!   self-observability name (`otel.sdk.processor.span.processed`); `error_type` is empty for the
//!   spans handed to the exporter. Before, with a collector that accepted connections and never
//!   read, 3,000 requests with such headers took a service from 12 to 345 MiB, and it stayed
//!   there.

use std::{
    borrow::Cow,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use opentelemetry::{Array, KeyValue, StringValue, Value, trace::Status};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{Span, SpanData, SpanExporter, SpanProcessor},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter},
};

/// Bytes an attribute value may have when no variable says.
pub const DEFAULT_ATTRIBUTE_VALUE_LENGTH: usize = 1024;
/// The largest attribute value length a variable may set (1 MiB).
pub const MAX_ATTRIBUTE_VALUE_LENGTH: usize = 1 << 20;
/// Bytes of spans that may wait for (or be in) export at once: 16 MiB.
pub const MAX_QUEUE_BYTES: usize = 16 << 20;

/// What [`BoundedProcessor`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanLimitSettings {
    pub attribute_value_length: usize,
    pub max_queue_bytes: usize,
}

impl Default for SpanLimitSettings {
    fn default() -> Self {
        Self {
            attribute_value_length: DEFAULT_ATTRIBUTE_VALUE_LENGTH,
            max_queue_bytes: MAX_QUEUE_BYTES,
        }
    }
}

impl SpanLimitSettings {
    /// Reads the attribute value length limit (the span-specific variable wins over the general
    /// one); an invalid value is an error that names its variable.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut settings = Self::default();
        for name in [
            "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        ] {
            let Some(raw) = env(name).map(|v| v.trim().to_owned()) else {
                continue;
            };
            if raw.is_empty() {
                continue;
            }
            let length: usize = raw
                .parse()
                .with_context(|| format!("{name}: '{raw}' is not a whole number of bytes"))?;
            if !(1..=MAX_ATTRIBUTE_VALUE_LENGTH).contains(&length) {
                bail!("{name}: must be from 1 to {MAX_ATTRIBUTE_VALUE_LENGTH} bytes, got {length}");
            }
            settings.attribute_value_length = length;
            break;
        }
        Ok(settings)
    }
}

/// `value` cut to at most `limit` bytes, at a character boundary.
pub fn truncate(value: &str, limit: usize) -> &str {
    if value.len() <= limit {
        return value;
    }
    let mut end = limit;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

fn truncate_string(value: &mut StringValue, limit: usize) {
    if value.as_str().len() > limit {
        *value = StringValue::from(truncate(value.as_str(), limit).to_owned());
    }
}

fn truncate_attributes(attributes: &mut [KeyValue], limit: usize) {
    for attribute in attributes {
        match &mut attribute.value {
            Value::String(s) => truncate_string(s, limit),
            Value::Array(Array::String(values)) => {
                values.iter_mut().for_each(|s| truncate_string(s, limit));
            }
            _ => {}
        }
    }
}

/// Cuts every string value `span` holds to `limit` bytes (see the module docs).
pub fn limit_span(span: &mut SpanData, limit: usize) {
    truncate_attributes(&mut span.attributes, limit);
    for event in &mut span.events.events {
        truncate_attributes(&mut event.attributes, limit);
    }
    for link in &mut span.links.links {
        truncate_attributes(&mut link.attributes, limit);
    }
    if let Status::Error { description } = &mut span.status
        && description.len() > limit
    {
        *description = Cow::Owned(truncate(description, limit).to_owned());
    }
}

/// What one span costs in memory, near enough: its strings and a fixed share for the rest
/// (ids, times, vectors). The same span always gets the same estimate, so what the queue adds
/// at a span's end it takes back at its export.
pub fn span_bytes(span: &SpanData) -> usize {
    const SPAN: usize = 256;
    const PER_ITEM: usize = 48;
    let value = |v: &Value| match v {
        Value::String(s) => s.as_str().len(),
        Value::Array(Array::String(values)) => values.iter().map(|s| s.as_str().len() + 8).sum(),
        Value::Array(Array::I64(values)) => values.len() * 8,
        Value::Array(Array::F64(values)) => values.len() * 8,
        Value::Array(Array::Bool(values)) => values.len(),
        _ => 8,
    };
    let attributes = |kvs: &[KeyValue]| -> usize {
        kvs.iter()
            .map(|kv| PER_ITEM + kv.key.as_str().len() + value(&kv.value))
            .sum()
    };
    let status = match &span.status {
        Status::Error { description } => description.len(),
        _ => 0,
    };
    // A trace state holds at most 32 members of a 256-byte key and value each. Its header's
    // length, counted from its members rather than by formatting it.
    let trace_state = span
        .span_context
        .trace_state()
        .into_iter()
        .map(|(key, value)| key.len() + value.len() + 2)
        .sum::<usize>()
        .saturating_sub(1);
    SPAN + span.name.len()
        + status
        + trace_state
        + attributes(&span.attributes)
        + span
            .events
            .events
            .iter()
            .map(|e| PER_ITEM + e.name.len() + attributes(&e.attributes))
            .sum::<usize>()
        + span
            .links
            .links
            .iter()
            .map(|l| PER_ITEM + attributes(&l.attributes))
            .sum::<usize>()
}

/// Spans (and their bytes) between their end and the end of their export.
#[derive(Debug, Default)]
pub struct Queued {
    spans: AtomicUsize,
    bytes: AtomicUsize,
}

impl Queued {
    /// Takes room for one span of `bytes`, unless that would pass `max_spans` or `max_bytes`.
    fn try_add(&self, bytes: usize, max_spans: usize, max_bytes: usize) -> bool {
        if self.spans.fetch_add(1, Ordering::Relaxed) >= max_spans {
            self.spans.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        if self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > max_bytes {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.spans.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn release(&self, spans: usize, bytes: usize) {
        self.spans.fetch_sub(spans, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// `(spans, bytes)` waiting now.
    pub fn now(&self) -> (usize, usize) {
        (
            self.spans.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// A span processor (the SDK's batch processor, for the exporters [`crate::encoded_batch`] does
/// not serve) behind the limits of the module docs. It must
/// be paired with a [`ReleasingExporter`] sharing its [`Queued`], which gives the room back.
#[derive(Debug)]
pub struct BoundedProcessor<P> {
    inner: P,
    queued: Arc<Queued>,
    max_spans: usize,
    settings: SpanLimitSettings,
}

impl<P: SpanProcessor> BoundedProcessor<P> {
    /// `max_spans` is the inner processor's queue size: holding the queue to it here too means
    /// the inner processor never drops a span whose room this one took (its channel holds no
    /// more than this one counts).
    pub fn new(
        inner: P,
        queued: Arc<Queued>,
        max_spans: usize,
        settings: SpanLimitSettings,
    ) -> Self {
        Self {
            inner,
            queued,
            max_spans,
            settings,
        }
    }
}

impl<P: SpanProcessor> SpanProcessor for BoundedProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        limit_span(&mut span, self.settings.attribute_value_length);
        let bytes = span_bytes(&span);
        if !self
            .queued
            .try_add(bytes, self.max_spans, self.settings.max_queue_bytes)
        {
            SPANS_PROCESSED.queue_full();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter behind a [`BoundedProcessor`]: gives back each batch's room once its export has
/// ended, however it ended (a timeout that drops the export included).
#[derive(Debug)]
pub struct ReleasingExporter<E> {
    inner: E,
    queued: Arc<Queued>,
}

impl<E> ReleasingExporter<E> {
    pub fn new(inner: E, queued: Arc<Queued>) -> Self {
        Self { inner, queued }
    }
}

struct Release<'a> {
    queued: &'a Queued,
    spans: usize,
    bytes: usize,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.queued.release(self.spans, self.bytes);
    }
}

impl<E: SpanExporter> SpanExporter for ReleasingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let _release = Release {
            queued: &self.queued,
            spans: batch.len(),
            bytes: batch.iter().map(span_bytes).sum(),
        };
        SPANS_PROCESSED.exported(batch.len());
        self.inner.export(batch).await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// `otel_sdk_processor_span_processed_total`: spans handed to the exporter (`error_type`
/// empty) and spans dropped because the queue was full. One count per process.
pub static SPANS_PROCESSED: SpansProcessed = SpansProcessed {
    exported: AtomicU64::new(0),
    queue_full: AtomicU64::new(0),
};

pub struct SpansProcessed {
    exported: AtomicU64,
    queue_full: AtomicU64,
}

impl SpansProcessed {
    pub(crate) fn exported(&self, spans: usize) {
        self.exported.fetch_add(spans as u64, Ordering::Relaxed);
    }

    pub(crate) fn queue_full(&self) {
        self.queue_full.fetch_add(1, Ordering::Relaxed);
    }

    /// `(error_type, spans)`; `""` is the spans handed to the exporter.
    pub fn snapshot(&self) -> [(&'static str, u64); 2] {
        [
            ("", self.exported.load(Ordering::Relaxed)),
            ("queue_full", self.queue_full.load(Ordering::Relaxed)),
        ]
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorType {
    error_type: &'static str,
}

/// Serves [`SPANS_PROCESSED`] on a program's `/metrics`.
#[derive(Debug)]
pub struct SpanProcessedCollector;

impl Collector for SpanProcessedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "otel_sdk_processor_span_processed",
            "Spans the batch processor handed to the exporter (error_type empty) or dropped \
             because its queue was full (queue_full: too many spans or bytes waiting)",
            None,
            MetricType::Counter,
        )?;
        for (error_type, spans) in SPANS_PROCESSED.snapshot() {
            ConstCounter::new(spans).encode(metric.encode_family(&ErrorType { error_type })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    #[test]
    fn values_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("abcdef", 4), "abcd");
        assert_eq!(truncate("abc", 4), "abc");
        // "é" is two bytes: a cut in its middle moves back before it.
        assert_eq!(truncate("abcé", 4), "abc");
        assert_eq!(truncate("😀😀", 5), "😀");
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_length_limit_comes_from_the_span_variable_then_the_general_one() {
        assert_eq!(
            SpanLimitSettings::from_env(env(&[])).unwrap(),
            SpanLimitSettings::default()
        );
        let both = [
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "100"),
            ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "200"),
        ];
        let settings = SpanLimitSettings::from_env(env(&both)).unwrap();
        assert_eq!(settings.attribute_value_length, 200);
        for bad in ["0", "-1", "lots", "2000000"] {
            let err =
                SpanLimitSettings::from_env(env(&[("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", bad)]))
                    .unwrap_err();
            assert!(
                format!("{err:#}").starts_with("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"),
                "{bad}: {err:#}"
            );
        }
    }

    fn span(attributes: Vec<KeyValue>) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1),
                SpanId::from(1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "GET /".into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::error("x".repeat(5000)),
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn a_trace_state_counts_as_long_as_its_header() {
        let plain = span(Vec::new());
        for state in ["", "a=1", "vendor=x,other=yz", "k=v,k2=v2,k3=v3"] {
            let mut data = span(Vec::new());
            let trace_state: TraceState = state.parse().unwrap();
            assert_eq!(trace_state.header(), state);
            data.span_context = SpanContext::new(
                TraceId::from(1),
                SpanId::from(1),
                TraceFlags::SAMPLED,
                false,
                trace_state,
            );
            assert_eq!(
                span_bytes(&data),
                span_bytes(&plain) + state.len(),
                "{state:?}"
            );
        }
    }

    #[test]
    fn every_string_a_span_holds_is_cut_and_other_values_are_kept() {
        let mut data = span(vec![
            KeyValue::new("user_agent.original", "u".repeat(60_000)),
            KeyValue::new("server.address", "é".repeat(20_000)),
            KeyValue::new("url.path", "/short"),
            KeyValue::new("http.response.status_code", 200_i64),
            KeyValue::new(
                "list",
                Value::Array(Array::String(vec!["v".repeat(3000).into()])),
            ),
        ]);
        limit_span(&mut data, 1024);
        let text = |i: usize| data.attributes[i].value.as_str().into_owned();
        assert_eq!(text(0).len(), 1024);
        assert_eq!(text(1).len(), 1024, "512 two-byte characters");
        assert_eq!(text(2), "/short");
        assert_eq!(data.attributes[3].value, Value::I64(200));
        let Value::Array(Array::String(list)) = &data.attributes[4].value else {
            panic!("the array stays an array");
        };
        assert_eq!(list[0].as_str().len(), 1024);
        let Status::Error { description } = &data.status else {
            panic!("still an error");
        };
        assert_eq!(description.len(), 1024);
        assert!(span_bytes(&data) < 6 * 1024, "{}", span_bytes(&data));
    }

    /// Keeps what reaches it (nothing is exported until the test says so, as with a
    /// collector that never answers).
    #[derive(Debug, Default, Clone)]
    struct Recorder {
        ended: Arc<Mutex<Vec<SpanData>>>,
    }

    impl SpanProcessor for Recorder {
        fn on_start(&self, _: &mut Span, _: &opentelemetry::Context) {}
        fn on_end(&self, span: SpanData) {
            self.ended.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Accepting;

    impl SpanExporter for Accepting {
        async fn export(&self, _: Vec<SpanData>) -> OTelSdkResult {
            Ok(())
        }
    }

    #[test]
    fn past_the_byte_bound_spans_are_dropped_and_counted_until_an_export_gives_room_back() {
        let recorder = Recorder::default();
        let queued = Arc::new(Queued::default());
        let settings = SpanLimitSettings {
            attribute_value_length: 1024,
            max_queue_bytes: 64 * 1024,
        };
        let processor = BoundedProcessor::new(recorder.clone(), queued.clone(), 2048, settings);
        let exporter = ReleasingExporter::new(Accepting, queued.clone());
        let dropped_before = SPANS_PROCESSED.snapshot()[1].1;
        let big = || {
            span(vec![KeyValue::new(
                "user_agent.original",
                "u".repeat(90_000),
            )])
        };
        for _ in 0..100 {
            processor.on_end(big());
        }
        let kept = recorder.ended.lock().unwrap().len();
        let (spans, bytes) = queued.now();
        assert_eq!(spans, kept);
        assert!(bytes <= 64 * 1024, "{bytes}");
        assert!((20..100).contains(&kept), "{kept} of 100 kept");
        assert!(SPANS_PROCESSED.snapshot()[1].1 - dropped_before >= (100 - kept) as u64);
        // The export ends: the room comes back and spans are taken again.
        let batch = std::mem::take(&mut *recorder.ended.lock().unwrap());
        futures_executor_block_on(exporter.export(batch)).unwrap();
        assert_eq!(queued.now(), (0, 0));
        processor.on_end(big());
        assert_eq!(recorder.ended.lock().unwrap().len(), 1);
    }

    #[test]
    fn past_the_span_bound_spans_are_dropped_too() {
        let recorder = Recorder::default();
        let queued = Arc::new(Queued::default());
        let processor =
            BoundedProcessor::new(recorder.clone(), queued, 10, SpanLimitSettings::default());
        for _ in 0..15 {
            processor.on_end(span(vec![]));
        }
        assert_eq!(recorder.ended.lock().unwrap().len(), 10);
    }

    /// A minimal executor for one future that needs no runtime.
    fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
        }
    }
}
