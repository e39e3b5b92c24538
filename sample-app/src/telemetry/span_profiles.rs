//! Span profiles: which request each CPU sample belongs to.
//!
//! The middleware marks every sampled server span — the local root of a request — with
//! [`mark_profiled`]: the span gets the attribute `pyroscope.profile.id` (its own span id, the
//! attribute Grafana looks for to draw "Profiles for this span") and a [`ProfileTarget`] in its
//! `tracing` extensions. Spans created inside it inherit the target, including ones entered on
//! other threads (the `/generate-load` burn runs on a blocking thread).
//!
//! [`SpanProfileLayer`] then keeps each thread's sampler slot ([`cpu_sampler::set_thread_span`])
//! equal to the target of the span being *entered* on that thread: set on enter, restored to
//! the still-entered outer span (or none) on exit. Actix polls many requests on one worker
//! thread, but every poll enters its own request's span, so a sample is attributed to the
//! request whose code was running at that instant.
//!
//! The span's name (`GET /generate-load`) becomes the `span_name` sample label. It is known
//! only when the request ends, and samples are encoded later still, so names wait in
//! [`SpanNames`], a fixed-size, lock-free table indexed by span id (a late lookup may miss
//! under very high request rates; such samples keep their `span_id` and `trace_id`).

use std::sync::{
    LazyLock, RwLock,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use cpu_sampler::{SpanLabels, set_thread_span};
use opentelemetry::trace::TraceContextExt;
use tracing::{Span, Subscriber, span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Layer, Registry, layer::Context, registry::LookupSpan};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Switches span profiles on for the process (with the layer installed by telemetry init).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether server spans are marked for span profiles.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The span attribute Grafana's trace-to-profiles link needs (value: the span id, 16 hex).
pub const PROFILE_ID_ATTRIBUTE: &str = "pyroscope.profile.id";

/// Which request a span's work belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileTarget(pub SpanLabels);

/// Marks `span` (a server span) as the target of the CPU samples taken during its work, and
/// records `pyroscope.profile.id` on it. Only sampled spans are marked: an unexported span has
/// no trace to link from. Returns the labels, or `None` when the span is not sampled.
pub fn mark_profiled(span: &Span) -> Option<SpanLabels> {
    let context = span.context();
    let otel_span = context.span();
    let sc = otel_span.span_context();
    if !sc.is_valid() || !sc.is_sampled() {
        return None;
    }
    let labels = SpanLabels {
        span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
    };
    span.record(PROFILE_ID_ATTRIBUTE, sc.span_id().to_string());
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<Registry>()
            && let Some(data) = registry.span(id)
        {
            data.extensions_mut().insert(ProfileTarget(labels));
        }
    });
    Some(labels)
}

/// Keeps each thread's sampler slot on the request whose span is entered there.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanProfileLayer;

fn target_of<'a, S: LookupSpan<'a>>(
    span: &tracing_subscriber::registry::SpanRef<'a, S>,
) -> Option<SpanLabels> {
    span.extensions().get::<ProfileTarget>().map(|t| t.0)
}

impl<S> Layer<S> for SpanProfileLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let inherited = span.parent().and_then(|parent| target_of(&parent));
        if let Some(labels) = inherited {
            span.extensions_mut().insert(ProfileTarget(labels));
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            set_thread_span(target_of(&span));
        }
    }

    fn on_exit(&self, _id: &span::Id, ctx: Context<'_, S>) {
        // The registry has already popped the exited span: what is current now is the span
        // whose work resumes on this thread (or none, between two polls).
        set_thread_span(ctx.lookup_current().and_then(|span| target_of(&span)));
    }
}

/// Slots in the name table: at a few thousand requests per second a name survives several
/// push windows; beyond that, late lookups start to miss.
const NAME_SLOTS: usize = 1 << 16;
/// Distinct span names kept (route templates × methods, so a few dozen in practice).
const MAX_NAMES: usize = 1024;

/// Span id → span name, for the `span_name` sample label: a direct-mapped table of
/// `span id (high 48 bits) | name index (low 16 bits)` words, plus the interned names.
pub struct SpanNames {
    slots: Box<[AtomicU64]>,
    names: RwLock<Vec<String>>,
}

/// The process's table (the middleware writes it, the profiler thread reads it).
pub static SPAN_NAMES: LazyLock<SpanNames> = LazyLock::new(SpanNames::new);

impl Default for SpanNames {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanNames {
    pub fn new() -> Self {
        Self {
            slots: (0..NAME_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            names: RwLock::new(Vec::new()),
        }
    }

    fn word(span_id: u64, index: usize) -> u64 {
        (span_id & !0xFFFF) | (index as u64 + 1)
    }

    /// Remembers the name of a finished span.
    pub fn record(&self, span_id: u64, name: &str) {
        let Some(index) = self.intern(name) else {
            return;
        };
        self.slots[span_id as usize % NAME_SLOTS]
            .store(Self::word(span_id, index), Ordering::Relaxed);
    }

    fn intern(&self, name: &str) -> Option<usize> {
        let known = self.names.read().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = known.iter().position(|n| n == name) {
            return Some(index);
        }
        drop(known);
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = names.iter().position(|n| n == name) {
            return Some(index);
        }
        (names.len() < MAX_NAMES).then(|| {
            names.push(name.to_owned());
            names.len() - 1
        })
    }

    /// The name of `span_id`, if it finished recently enough to still be in the table.
    pub fn get(&self, span_id: u64) -> Option<String> {
        let word = self.slots[span_id as usize % NAME_SLOTS].load(Ordering::Relaxed);
        if word == 0 || word & !0xFFFF != span_id & !0xFFFF {
            return None;
        }
        let index = (word & 0xFFFF) as usize - 1;
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(index)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_name_is_found_by_its_span_id_and_a_different_span_misses() {
        let names = SpanNames::new();
        names.record(0x00f0_67aa_0ba9_02b7, "GET /generate-load");
        assert_eq!(
            names.get(0x00f0_67aa_0ba9_02b7).as_deref(),
            Some("GET /generate-load")
        );
        // Same slot (same low 16 bits), another span: not mistaken for the first.
        assert_eq!(names.get(0x1111_67aa_0ba9_02b7), None);
        names.record(0x1234, "GET /generate-load");
        assert_eq!(names.names.read().unwrap().len(), 1);
    }
}
