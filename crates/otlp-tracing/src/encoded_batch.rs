//! A batch span processor that encodes each span when it ends and queues its OTLP bytes, for
//! the direct gRPC exporter ([`crate::grpc`]).
//!
//! The SDK's batch processor (opentelemetry_sdk 0.33.1 src/trace/span_processor.rs:520) queues
//! `SpanData` in a channel it allocates whole when it starts: about 400 bytes a slot, 3.3 MiB
//! for a queue of 8,192 before the first span, and every queued span keeps its attribute
//! vector and strings besides (about 1.1 KB for the sample service's server span). At 60,000
//! requests a second the queue must hold thousands of spans while an export is on its way, or
//! spans are dropped (docs/benchmarks.md, "Spans lost at full speed"). Here a span is encoded
//! ([`crate::encode::put_scope_span`], about 250 bytes for that span) on the thread that ends
//! it, its `SpanData` is freed there, and the bytes are appended to the open batch of its
//! instrumentation scope. Memory grows with the spans actually waiting, a quarter of what they
//! held as `SpanData`, and a batch is sent as the request it already almost is.
//!
//! What it keeps of the SDK's processor and its settings:
//! - `OTEL_BSP_MAX_QUEUE_SIZE`: spans ended and not yet exported (the batch being sent
//!   included) are at most this many; `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per request;
//!   `OTEL_BSP_SCHEDULE_DELAY`: the longest a span waits in a batch that is not full. One
//!   export at a time, on the processor's own thread, so a request never waits for the
//!   collector: a span past the queue's bound (in spans, or in bytes:
//!   [`SpanLimitSettings::max_queue_bytes`]) is dropped at once and counted in
//!   `otel_sdk_processor_span_processed_total{error_type="queue_full"}`.
//! - Attribute values are cut to the length limit before encoding ([`crate::limits`]).
//! - `force_flush` returns once every span ended before it was called has been exported, with
//!   an error when an export failed while it waited; `shutdown` exports what is queued, then
//!   stops the thread. Both wait at most their timeout. Spans that end after shutdown are
//!   dropped (uncounted).
//! - Unlike the SDK's: a batch that is not full leaves `OTEL_BSP_SCHEDULE_DELAY` after its
//!   first span (the SDK's timer runs from the last export), and the bound in bytes counts
//!   encoded bytes (about 250 a span here, where [`crate::limits::span_bytes`] estimates about
//!   1.1 KB of `SpanData`), so the same 16 MiB holds about four times the spans.
//! - Only sampled spans are exported, as the specification asks of an exporting processor.

use std::{
    cell::RefCell,
    collections::VecDeque,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{Span, SpanData, SpanProcessor},
};

use crate::encode::{EncodedResource, encode_request_of_encoded, put_scope_span};
use crate::limits::{SPANS_PROCESSED, SpanLimitSettings, limit_span};

/// How long `force_flush` waits: one export's default timeout (`OTEL_BSP_EXPORT_TIMEOUT`,
/// 30 s), which bounds what the batch in flight may still take. The SDK's processor waits 5 s
/// (opentelemetry_sdk 0.33.1 src/trace/span_processor.rs:693) and its export may outlast that.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Emptied batch buffers kept for the next batches: the sent batch's buffer becomes the next
/// open batch's, per scope (a process has one or two), so a busy queue stops reallocating
/// them. What stays allocated after a burst is at most this many batches' bytes (about
/// 512 KiB each for 2,048 of the sample service's spans).
const SPARE_BUFFERS: usize = 2;

/// Where the processor's requests go: one encoded `ExportTraceServiceRequest` at a time.
pub trait RequestSender: Send + Sync + 'static {
    /// Sends `request`, which holds `spans` spans, and returns once its export has ended,
    /// accepted or failed (bounded by the sender's own timeout).
    fn send(&self, request: Vec<u8>, spans: usize) -> OTelSdkResult;
    /// No request follows.
    fn shutdown(&self) -> OTelSdkResult;
}

/// The batching and bounds of [`EncodedBatchProcessor`] (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub scheduled_delay: Duration,
    pub limits: SpanLimitSettings,
}

/// Spans encoded and waiting, grouped by scope (an index into [`State::scopes`]).
#[derive(Default)]
struct Batch {
    spans: usize,
    bytes: usize,
    groups: Vec<(usize, Vec<u8>)>,
    /// When its first span arrived.
    opened: Option<Instant>,
}

impl Batch {
    fn push(&mut self, scope: usize, span: &[u8], spare: &mut Vec<Vec<u8>>) {
        let group = match self.groups.iter().position(|(s, _)| *s == scope) {
            Some(found) => found,
            None => {
                self.groups.push((scope, spare.pop().unwrap_or_default()));
                self.groups.len() - 1
            }
        };
        self.groups[group].1.extend_from_slice(span);
        self.spans += 1;
        self.bytes += span.len();
        self.opened.get_or_insert_with(Instant::now);
    }
}

#[derive(Default)]
struct State {
    resource: Arc<EncodedResource>,
    /// The instrumentation scopes seen (a process has one or two).
    scopes: Vec<InstrumentationScope>,
    /// The batch that spans are added to, and the full ones waiting for the thread.
    open: Batch,
    full: VecDeque<Batch>,
    /// Bytes of the spans between their end and the end of their export.
    queued_bytes: usize,
    /// Counts since the start: spans queued, and spans whose export ended.
    ended: u64,
    exported: u64,
    /// Export every span ended up to this count, even from a batch that is not full.
    flush_to: u64,
    /// `exported` as it was after the last export that failed.
    failed_to: u64,
    /// Emptied buffers of sent batches (at most [`SPARE_BUFFERS`]).
    spare: Vec<Vec<u8>>,
    shutting_down: bool,
    /// The thread has exported everything and returned.
    stopped: bool,
}

impl State {
    /// Spans between their end and the end of their export.
    fn queued_spans(&self) -> usize {
        (self.ended - self.exported) as usize
    }

    fn scope(&mut self, scope: &InstrumentationScope) -> usize {
        match self.scopes.iter().position(|s| s == scope) {
            Some(found) => found,
            None => {
                self.scopes.push(scope.clone());
                self.scopes.len() - 1
            }
        }
    }

    /// The next batch to send, if one is due, with the time to wait otherwise (`None`: until
    /// woken).
    fn due(&mut self, delay: Duration) -> Result<Batch, Option<Duration>> {
        if let Some(batch) = self.full.pop_front() {
            return Ok(batch);
        }
        let Some(opened) = self.open.opened else {
            return Err(None);
        };
        let waited = opened.elapsed();
        // No full batch waits, so the open one holds every span not yet taken for export.
        let taken = self.ended - self.open.spans as u64;
        if self.shutting_down || self.flush_to > taken || waited >= delay {
            return Ok(std::mem::take(&mut self.open));
        }
        Err(Some(delay - waited))
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: a batch filled, a first span arrived, a flush or shutdown.
    work: Condvar,
    /// Wakes flushes and shutdown: an export ended, or the thread stopped.
    progress: Condvar,
    settings: BatchSettings,
    /// `State::queued_spans`, readable without the lock: a span that would find the queue
    /// full is dropped before it is encoded (the lock decides for the others).
    queued_hint: AtomicUsize,
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is whole at every unlock (no user code runs under the lock).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Waits on `progress` until `done` holds or `timeout` passes.
    fn wait_for(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .progress
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// The export thread. However it ends (a sender that panics included), flushes and
    /// shutdown stop waiting for it.
    fn run(&self, sender: &dyn RequestSender) {
        struct Stopped<'a>(&'a Shared);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                let mut state = lock(&self.0.state);
                if !state.shutting_down {
                    // Only a panic in the sender ends the thread before shutdown: later spans
                    // are dropped at once instead of filling a queue nothing empties.
                    tracing::error!(
                        "the span export thread stopped unexpectedly; spans are no longer exported"
                    );
                    state.shutting_down = true;
                }
                state.stopped = true;
                drop(state);
                self.0.progress.notify_all();
            }
        }
        let _stopped = Stopped(self);
        // What the export does (the gRPC client's own spans, when something records them) is
        // not traced, or each export would make spans for the next: as the SDK's thread does
        // (src/trace/span_processor.rs:573).
        let _suppressed = Context::enter_telemetry_suppressed_scope();
        let mut state = lock(&self.state);
        loop {
            let batch = match state.due(self.settings.scheduled_delay) {
                Ok(batch) => batch,
                Err(_) if state.shutting_down => break,
                Err(None) => {
                    state = self
                        .work
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                Err(Some(wait)) => {
                    state = self
                        .work
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    continue;
                }
            };
            let resource = state.resource.clone();
            let scopes: Vec<InstrumentationScope> = batch
                .groups
                .iter()
                .map(|(scope, _)| state.scopes[*scope].clone())
                .collect();
            drop(state);

            let groups: Vec<(&InstrumentationScope, &[u8])> = scopes
                .iter()
                .zip(&batch.groups)
                .map(|(scope, (_, spans))| (scope, spans.as_slice()))
                .collect();
            let mut request = Vec::new();
            encode_request_of_encoded(&resource, &groups, &mut request);
            drop(groups);
            let (spans, bytes) = (batch.spans, batch.bytes);
            SPANS_PROCESSED.exported(spans);
            // The sender reports its own failures (it counts and logs them); the spans are
            // gone either way, as with the SDK's processor, and a flush waiting for them
            // returns an error.
            let sent = sender.send(request, spans);

            state = lock(&self.state);
            state.exported += spans as u64;
            if sent.is_err() {
                state.failed_to = state.exported;
            }
            state.queued_bytes -= bytes;
            self.queued_hint
                .store(state.queued_spans(), Ordering::Relaxed);
            for (_, mut buffer) in batch.groups {
                if state.spare.len() < SPARE_BUFFERS {
                    buffer.clear();
                    state.spare.push(buffer);
                }
            }
            self.progress.notify_all();
        }
        drop(state);
        let _ = sender.shutdown();
    }
}

/// The capacity a thread's encoding buffer may keep between spans (the sample service's spans
/// take about 250 bytes).
const KEEP_ENCODED: usize = 16 << 10;

thread_local! {
    /// Each thread's buffer for the span it is encoding (outside the queue's lock).
    static ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// See the module docs.
pub struct EncodedBatchProcessor {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EncodedBatchProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedBatchProcessor")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl EncodedBatchProcessor {
    /// Starts the export thread.
    pub fn new(sender: impl RequestSender, settings: BatchSettings) -> std::io::Result<Self> {
        let settings = BatchSettings {
            max_export_batch_size: settings
                .max_export_batch_size
                .clamp(1, settings.max_queue_size.max(1)),
            ..settings
        };
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            work: Condvar::new(),
            progress: Condvar::new(),
            settings,
            queued_hint: AtomicUsize::new(0),
        });
        let running = shared.clone();
        let thread = thread::Builder::new()
            .name("otlp-span-export".into())
            .spawn(move || running.run(&sender))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Adds one encoded span to the open batch, or drops it when the queue is full.
    fn enqueue(&self, scope: &InstrumentationScope, encoded: &[u8]) {
        let settings = &self.shared.settings;
        let mut state = lock(&self.shared.state);
        if state.shutting_down {
            return;
        }
        if state.queued_spans() >= settings.max_queue_size
            || state.queued_bytes + encoded.len() > settings.limits.max_queue_bytes
        {
            drop(state);
            SPANS_PROCESSED.queue_full();
            return;
        }
        let scope = state.scope(scope);
        let first = state.open.spans == 0;
        let State { open, spare, .. } = &mut *state;
        open.push(scope, encoded, spare);
        state.queued_bytes += encoded.len();
        state.ended += 1;
        self.shared
            .queued_hint
            .store(state.queued_spans(), Ordering::Relaxed);
        if state.open.spans >= settings.max_export_batch_size {
            let batch = std::mem::take(&mut state.open);
            state.full.push_back(batch);
            drop(state);
            self.shared.work.notify_one();
        } else if first {
            // The thread learns when this batch falls due.
            drop(state);
            self.shared.work.notify_one();
        }
    }

    /// `(spans, bytes)` ended and not yet exported.
    pub fn queued(&self) -> (usize, usize) {
        let state = lock(&self.shared.state);
        (state.queued_spans(), state.queued_bytes)
    }
}

impl SpanProcessor for EncodedBatchProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, mut span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let settings = &self.shared.settings;
        if self.shared.queued_hint.load(Ordering::Relaxed) >= settings.max_queue_size {
            SPANS_PROCESSED.queue_full();
            return;
        }
        limit_span(&mut span, settings.limits.attribute_value_length);
        let encode = |encoded: &mut Vec<u8>| {
            encoded.clear();
            put_scope_span(encoded, &span);
            self.enqueue(&span.instrumentation_scope, encoded);
        };
        let reused = ENCODED.try_with(|buffer| {
            let Ok(mut encoded) = buffer.try_borrow_mut() else {
                return false;
            };
            encode(&mut encoded);
            // A span far larger than usual (many events) leaves no lasting buffer behind.
            if encoded.capacity() > KEEP_ENCODED {
                *encoded = Vec::new();
            }
            true
        });
        if reused != Ok(true) {
            // A span ended while this thread's locals are torn down: a buffer of its own.
            encode(&mut Vec::new());
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (target, from) = {
            let mut state = lock(&self.shared.state);
            if state.shutting_down {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            state.flush_to = state.flush_to.max(state.ended);
            (state.ended, state.exported)
        };
        self.shared.work.notify_one();
        let ended = self
            .shared
            .wait_for(FLUSH_TIMEOUT, |s| s.exported >= target || s.stopped);
        let state = lock(&self.shared.state);
        if state.exported >= target && state.failed_to > from {
            Err(OTelSdkError::InternalFailure(
                "an export of the flushed spans failed".into(),
            ))
        } else if state.exported >= target {
            Ok(())
        } else if ended {
            Err(OTelSdkError::InternalFailure(
                "the span export thread has stopped".into(),
            ))
        } else {
            Err(OTelSdkError::Timeout(FLUSH_TIMEOUT))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        {
            let mut state = lock(&self.shared.state);
            if state.shutting_down {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            state.shutting_down = true;
        }
        self.shared.work.notify_one();
        if !self.shared.wait_for(timeout, |s| s.stopped) {
            return Err(OTelSdkError::Timeout(timeout));
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            thread
                .join()
                .map_err(|_| OTelSdkError::InternalFailure("the export thread panicked".into()))?;
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        lock(&self.shared.state).resource = Arc::new(EncodedResource::new(resource));
    }
}

impl Drop for EncodedBatchProcessor {
    /// Without a shutdown (the provider shuts its processors down when it is dropped), the
    /// thread still exports what is queued, then ends.
    fn drop(&mut self) {
        lock(&self.shared.state).shutting_down = true;
        self.shared.work.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{atomic::AtomicBool, mpsc};

    use opentelemetry::{
        KeyValue, Value,
        trace::{SpanContext, TraceFlags},
    };
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    use super::*;
    use crate::encode::tests::{expected, span};

    /// Long enough for any wait here on a loaded machine; the waits end on their condition.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// A collector: records each request (decoded), and holds every send while it is closed.
    #[derive(Default)]
    struct Collector {
        requests: Mutex<Vec<ExportTraceServiceRequest>>,
        arrived: Condvar,
        closed: Mutex<bool>,
        opened: Condvar,
        panics: bool,
        fails: bool,
        shut_down: AtomicBool,
    }

    struct Sink(Arc<Collector>);

    impl RequestSender for Sink {
        fn send(&self, request: Vec<u8>, spans: usize) -> OTelSdkResult {
            assert!(!self.0.panics, "a sender that panics");
            let mut closed = self.0.closed.lock().unwrap();
            while *closed {
                closed = self.0.opened.wait(closed).unwrap();
            }
            drop(closed);
            let request =
                ExportTraceServiceRequest::decode(request.as_slice()).expect("the request decodes");
            let counted: usize = request.resource_spans[0]
                .scope_spans
                .iter()
                .map(|s| s.spans.len())
                .sum();
            assert_eq!(counted, spans, "the spans the processor says it sent");
            self.0.requests.lock().unwrap().push(request);
            self.0.arrived.notify_all();
            if self.0.fails {
                return Err(OTelSdkError::InternalFailure("refused".into()));
            }
            Ok(())
        }

        fn shutdown(&self) -> OTelSdkResult {
            self.0.shut_down.store(true, Ordering::Relaxed);
            Ok(())
        }
    }

    impl Collector {
        fn set_closed(&self, closed: bool) {
            *self.closed.lock().unwrap() = closed;
            self.opened.notify_all();
        }

        /// The requests, once there are `n` (fails after [`DEADLINE`]).
        fn wait_for(&self, n: usize) -> Vec<ExportTraceServiceRequest> {
            let deadline = Instant::now() + DEADLINE;
            let mut requests = self.requests.lock().unwrap();
            while requests.len() < n {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "{} of {n} requests arrived",
                    requests.len()
                );
                requests = self.arrived.wait_timeout(requests, left).unwrap().0;
            }
            requests.clone()
        }
    }

    /// Waits until `done` holds (fails after [`DEADLINE`]).
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn spans_received(collector: &Collector) -> usize {
        let requests = collector.requests.lock().unwrap();
        requests
            .iter()
            .flat_map(|r| &r.resource_spans[0].scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }

    fn settings(queue: usize, batch: usize, delay: Duration) -> BatchSettings {
        BatchSettings {
            max_queue_size: queue,
            max_export_batch_size: batch,
            scheduled_delay: delay,
            limits: SpanLimitSettings::default(),
        }
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_service_name("sample-app")
            .with_attributes([KeyValue::new("service.version", "0.1.0")])
            .build()
    }

    fn start(settings: BatchSettings) -> (EncodedBatchProcessor, Arc<Collector>) {
        start_with(settings, &resource())
    }

    fn start_with(
        settings: BatchSettings,
        resource: &Resource,
    ) -> (EncodedBatchProcessor, Arc<Collector>) {
        let (mut processor, collector) = start_to(Collector::default(), settings);
        processor.set_resource(resource);
        (processor, collector)
    }

    /// A processor sending to `collector` (which may panic or fail), with the default resource.
    fn start_to(
        collector: Collector,
        settings: BatchSettings,
    ) -> (EncodedBatchProcessor, Arc<Collector>) {
        let collector = Arc::new(collector);
        let processor = EncodedBatchProcessor::new(Sink(collector.clone()), settings).unwrap();
        (processor, collector)
    }

    /// [`span`], sampled.
    fn sampled(n: u64, scope: &InstrumentationScope) -> SpanData {
        let mut span = span(n, scope);
        let c = &span.span_context;
        span.span_context = SpanContext::new(
            c.trace_id(),
            c.span_id(),
            TraceFlags::SAMPLED,
            c.is_remote(),
            c.trace_state().clone(),
        );
        span
    }

    #[test]
    fn full_batches_leave_at_once_and_decode_to_what_the_sdk_conversion_builds() {
        // One resource for both sides: its attributes are a hash map, iterated in an order of
        // its own.
        let resource = resource();
        let (processor, collector) =
            start_with(settings(100, 10, Duration::from_secs(3600)), &resource);
        let app = InstrumentationScope::builder("sample-app").build();
        let other = InstrumentationScope::builder("load-gen")
            .with_version("0.1.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
            .build();
        let spans: Vec<SpanData> = (0..25)
            .map(|n| sampled(n, if n % 4 == 1 { &other } else { &app }))
            .collect();
        for span in spans.clone() {
            processor.on_end(span);
        }
        // Two full batches leave without waiting for the (hour-long) delay.
        let requests = collector.wait_for(2);
        // The collector answers before the thread counts the batch as done.
        wait_until("the open batch's 5 spans are left", || {
            processor.queued().0 == 5
        });
        processor.force_flush().unwrap();
        let requests = [requests, collector.wait_for(3)[2..].to_vec()].concat();
        let batches = [&spans[..10], &spans[10..20], &spans[20..]];
        for (request, batch) in requests.iter().zip(batches) {
            assert_eq!(*request, expected(batch.to_vec(), &resource));
        }
        assert_eq!(requests.len(), 3);
        assert_eq!(processor.queued(), (0, 0));
    }

    #[test]
    fn a_batch_that_is_not_full_leaves_after_the_delay() {
        let (processor, collector) = start(settings(100, 10, Duration::from_millis(50)));
        let scope = InstrumentationScope::builder("sample-app").build();
        for n in 0..3 {
            processor.on_end(sampled(n, &scope));
        }
        // Without a flush or a full batch, only the delay sends them (in one request, or more
        // if this thread stalled between two spans for longer than the delay).
        wait_until("3 spans sent", || spans_received(&collector) == 3);
    }

    #[test]
    fn past_the_queue_spans_are_dropped_at_once_and_counted() {
        let (processor, collector) = start(settings(4, 2, Duration::from_secs(3600)));
        collector.set_closed(true);
        let scope = InstrumentationScope::builder("sample-app").build();
        let dropped_before = SPANS_PROCESSED.snapshot()[1].1;
        // The collector holds the first batch: the queue (the batch in flight included) fills
        // at 4, and the 6 spans after it are dropped without waiting for the collector.
        for n in 0..10 {
            processor.on_end(sampled(n, &scope));
        }
        assert_eq!(processor.queued().0, 4);
        assert!(SPANS_PROCESSED.snapshot()[1].1 - dropped_before >= 6);
        collector.set_closed(false);
        processor.force_flush().unwrap();
        let requests = collector.wait_for(2);
        let ids: Vec<Vec<u8>> = requests
            .iter()
            .flat_map(|r| &r.resource_spans[0].scope_spans[0].spans)
            .map(|s| s.span_id.clone())
            .collect();
        let first_four: Vec<Vec<u8>> = (0..4u64).map(|n| (n + 1).to_be_bytes().to_vec()).collect();
        assert_eq!(ids, first_four, "the first four spans, and only them");
        assert_eq!(processor.queued(), (0, 0));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let mut limits = settings(1000, 2, Duration::from_secs(3600));
        limits.limits.max_queue_bytes = 2_000;
        let (processor, collector) = start(limits);
        collector.set_closed(true);
        let scope = InstrumentationScope::builder("sample-app").build();
        for n in 0..20 {
            processor.on_end(sampled(n, &scope));
        }
        let (spans, bytes) = processor.queued();
        assert!((1..20).contains(&spans), "{spans} spans queued");
        assert!(bytes <= 2_000, "{bytes} bytes queued");
        collector.set_closed(false);
    }

    #[test]
    fn only_sampled_spans_are_exported_and_attribute_values_are_cut() {
        let (processor, collector) = start(settings(100, 100, Duration::from_secs(3600)));
        let scope = InstrumentationScope::builder("sample-app").build();
        processor.on_end(span(1, &scope)); // odd: not sampled
        let mut long = sampled(2, &scope);
        long.attributes = vec![KeyValue::new("user_agent.original", "é".repeat(1000))];
        processor.on_end(long);
        processor.force_flush().unwrap();
        let requests = collector.wait_for(1);
        let spans = &requests[0].resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 1);
        let value = spans[0].attributes[0]
            .value
            .as_ref()
            .unwrap()
            .value
            .as_ref();
        let Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(value)) =
            value
        else {
            panic!("a string value: {value:?}")
        };
        assert_eq!(
            value.len(),
            1024,
            "cut on a character boundary at the limit"
        );
        assert_eq!(Value::from(value.clone()).as_str().chars().count(), 512);
    }

    #[test]
    fn a_huge_span_leaves_no_lasting_buffer_on_its_thread() {
        let (processor, collector) = start(settings(100, 100, Duration::from_secs(3600)));
        let scope = InstrumentationScope::builder("sample-app").build();
        let mut huge = sampled(4, &scope);
        huge.attributes = (0..100)
            .map(|n| KeyValue::new(format!("attribute.{n}"), "x".repeat(1000)))
            .collect();
        processor.on_end(huge);
        assert!(ENCODED.with_borrow(Vec::capacity) <= KEEP_ENCODED);
        processor.on_end(sampled(2, &scope));
        assert!(
            ENCODED.with_borrow(Vec::capacity) > 0,
            "a usual span's buffer is kept"
        );
        processor.force_flush().unwrap();
        let requests = collector.wait_for(1);
        let spans = &requests[0].resource_spans[0].scope_spans[0].spans;
        assert_eq!(
            spans[0].attributes.len(),
            100,
            "the huge span is exported whole"
        );
    }

    #[test]
    fn shutdown_exports_what_is_queued_then_refuses_spans() {
        let (processor, collector) = start(settings(100, 100, Duration::from_secs(3600)));
        let scope = InstrumentationScope::builder("sample-app").build();
        for n in 0..5 {
            processor.on_end(sampled(n, &scope));
        }
        processor.shutdown_with_timeout(DEADLINE).unwrap();
        assert!(collector.shut_down.load(Ordering::Relaxed));
        let requests = collector.wait_for(1);
        assert_eq!(requests[0].resource_spans[0].scope_spans[0].spans.len(), 5);
        processor.on_end(sampled(6, &scope));
        assert_eq!(processor.queued(), (0, 0));
        assert!(matches!(
            processor.shutdown_with_timeout(DEADLINE),
            Err(OTelSdkError::AlreadyShutdown)
        ));
        assert!(matches!(
            processor.force_flush(),
            Err(OTelSdkError::AlreadyShutdown)
        ));
        assert_eq!(collector.requests.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_flush_does_not_wait_for_a_thread_that_died() {
        let (processor, _collector) = start_to(
            Collector {
                panics: true,
                ..Collector::default()
            },
            settings(100, 100, Duration::from_secs(3600)),
        );
        let scope = InstrumentationScope::builder("sample-app").build();
        processor.on_end(sampled(0, &scope));
        assert!(matches!(
            processor.force_flush(),
            Err(OTelSdkError::InternalFailure(_))
        ));
        // Spans after that are dropped at once, not queued for a thread that is gone.
        processor.on_end(sampled(2, &scope));
        assert_eq!(processor.queued().0, 1);
    }

    #[test]
    fn a_flush_waits_for_the_batch_being_sent_and_reports_a_failed_export() {
        let (processor, collector) = start(settings(100, 2, Duration::from_secs(3600)));
        collector.set_closed(true);
        let scope = InstrumentationScope::builder("sample-app").build();
        for n in 0..3 {
            processor.on_end(sampled(n, &scope));
        }
        let processor = Arc::new(processor);
        let (done, flushed) = mpsc::channel();
        let flushing = processor.clone();
        thread::spawn(move || done.send(flushing.force_flush()).unwrap());
        // The first batch is held by the collector: the flush must not return before it ends.
        assert!(flushed.recv_timeout(Duration::from_millis(100)).is_err());
        collector.set_closed(false);
        flushed.recv_timeout(DEADLINE).unwrap().unwrap();
        assert_eq!(spans_received(&collector), 3);
        assert_eq!(processor.queued(), (0, 0));

        let (failing, _collector) = start_to(
            Collector {
                fails: true,
                ..Collector::default()
            },
            settings(100, 100, Duration::from_secs(3600)),
        );
        failing.on_end(sampled(0, &scope));
        assert!(failing.force_flush().is_err());
        failing.on_end(sampled(2, &scope));
        assert!(
            failing.force_flush().is_err(),
            "each flush whose export failed"
        );
    }

    #[test]
    fn dropped_without_a_shutdown_it_still_exports_what_is_queued() {
        let (processor, collector) = start(settings(100, 100, Duration::from_secs(3600)));
        let scope = InstrumentationScope::builder("sample-app").build();
        for n in 0..3 {
            processor.on_end(sampled(n, &scope));
        }
        drop(processor);
        wait_until("the queued spans sent", || spans_received(&collector) == 3);
        wait_until("the sender shut down", || {
            collector.shut_down.load(Ordering::Relaxed)
        });
    }
}
