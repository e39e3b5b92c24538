//! Span profiles: which request each CPU sample belongs to.
//!
//! The middleware marks every sampled server span — the local root of a request — for span
//! profiles: the span gets the attribute `pyroscope.profile.id` (its own span id, the attribute
//! Grafana looks for to draw "Profiles for this span"), and its request's scope
//! ([`RequestScope`]) carries its labels, which the scope puts in the thread's sampler slot
//! ([`cpu_sampler::set_thread_span`]) while the middleware polls the request. Actix polls many
//! requests on one worker thread, but every poll enters its own request's scope, so a sample is
//! attributed to the request whose code was running at that instant.
//!
//! A `tracing` span opened inside the request inherits the target ([`ProfileTarget`], in its
//! extensions): from its parent span, or from the request's scope when it has none, so work
//! entered on other threads still counts for the request (the `/generate-load` burn runs on a
//! blocking thread). [`SpanProfileLayer`] keeps each thread's slot equal to the target of the
//! span being *entered* on that thread: set on enter, restored on exit.
//!
//! [`RequestScope`]: super::request_scope::RequestScope
//!
//! The span's name (`GET /generate-load`) becomes the `span_name` sample label. It is known
//! only when the request ends, and samples are encoded later still, so names wait in
//! [`SpanNames`], a fixed-size, lock-free table indexed by span id (a late lookup may miss
//! under very high request rates; such samples keep their `span_id` and `trace_id`).

use std::{
    cell::RefCell,
    sync::{
        LazyLock, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use cpu_sampler::{SpanLabels, set_thread_span, thread_span};
use opentelemetry::{KeyValue, trace::TraceContextExt};

use super::{ids::SpanIds, request_scope};
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

/// Marks `span` (a `tracing` span with an OpenTelemetry span) as the target of the CPU samples
/// taken during its work, and records `pyroscope.profile.id` on it. Only sampled spans are
/// marked: an unexported span has no trace to link from. Returns the labels, or `None` when the
/// span is not sampled. (The middleware's server span has no `tracing` span: it sets
/// [`profile_attribute`] itself and puts the labels in the request's scope.)
pub fn mark_profiled(span: &Span) -> Option<SpanLabels> {
    let context = span.context();
    let otel_span = context.span();
    let ids = SpanIds::of(otel_span.span_context()).filter(|ids| ids.sampled)?;
    // Straight onto the OpenTelemetry span: `span.record` would run every layer's `on_record`.
    otel_span.set_attribute(profile_attribute(&ids));
    annotate(span, ProfileTarget(ids.labels()));
    Some(ids.labels())
}

/// The `pyroscope.profile.id` attribute of a span: its own span id.
pub fn profile_attribute(ids: &SpanIds) -> KeyValue {
    KeyValue::new(PROFILE_ID_ATTRIBUTE, ids.span_hex_string())
}

/// Makes `target` the target of `span`'s CPU samples (in its `tracing` extensions).
pub fn annotate(span: &Span, target: ProfileTarget) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<Registry>()
            && let Some(data) = registry.span(id)
        {
            data.extensions_mut().insert(target);
        }
    });
}

/// `u64` as 16 lowercase hex digits (the W3C span id form), without `format!`'s machinery.
pub fn hex16(value: u64) -> String {
    let mut out = [0; 16];
    super::ids::hex_into(&value.to_be_bytes(), &mut out);
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

thread_local! {
    /// The slot values that `on_enter` replaced on this thread, restored by `on_exit` (spans
    /// are entered and exited in nested order on a thread).
    static REPLACED: RefCell<Vec<Option<SpanLabels>>> = const { RefCell::new(Vec::new()) };
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
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        // The parent as the registry chose it, found without looking the new span up; a
        // contextual span with no parent belongs to the request being served, if any (an
        // explicit root, `parent: None`, to nothing).
        let inherited = if attrs.is_contextual() {
            match ctx.lookup_current() {
                Some(parent) => target_of(&parent),
                None => request_scope::current().and_then(|scope| scope.profile),
            }
        } else {
            attrs
                .parent()
                .and_then(|parent| ctx.span(parent))
                .and_then(|parent| target_of(&parent))
        };
        if let Some(labels) = inherited
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(ProfileTarget(labels));
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        let target = ctx.span(id).and_then(|span| target_of(&span));
        REPLACED.with(|replaced| replaced.borrow_mut().push(thread_span()));
        set_thread_span(target);
    }

    fn on_exit(&self, _id: &span::Id, _ctx: Context<'_, S>) {
        // Back to the span whose work resumes on this thread (or none, between two polls).
        let previous = REPLACED
            .with(|replaced| replaced.borrow_mut().pop())
            .flatten();
        set_thread_span(previous);
    }
}

/// Slots in the name table: at a few thousand requests per second a name survives several
/// push windows; beyond that, late lookups start to miss.
const NAME_SLOTS: usize = 1 << 16;
/// Distinct span names kept (route templates × methods, so a few dozen in practice).
const MAX_NAMES: usize = 1024;

/// Span id → span name, for the `span_name` sample label: a direct-mapped table of
/// `span id (high 48 bits) | name index (low 16 bits)` words, plus the interned names. Names
/// are interned by their two static parts (method prefix, route template), compared by
/// address, so recording one costs no allocation and no string comparison. Interned names live
/// as long as the process (at most [`MAX_NAMES`] of them), so the middleware can name every
/// server span with a borrowed `&'static str` instead of formatting a new `String`.
pub struct SpanNames {
    slots: Box<[AtomicU64]>,
    names: RwLock<Vec<(NameKey, &'static str)>>,
}

type NameKey = (usize, usize);

fn name_key(prefix: &'static str, route: Option<&'static str>) -> NameKey {
    (
        prefix.as_ptr() as usize,
        route.map_or(0, |r| r.as_ptr() as usize),
    )
}

/// A server span's name: `METHOD /route`, or `METHOD` when no route matched.
pub fn span_name(prefix: &str, route: Option<&str>) -> String {
    match route {
        Some(route) => format!("{prefix} {route}"),
        None => prefix.to_owned(),
    }
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

    /// Remembers the name of a finished span (see [`span_name`]).
    pub fn record(&self, span_id: u64, prefix: &'static str, route: Option<&'static str>) {
        if let Some(name) = self.intern(prefix, route) {
            self.record_interned(span_id, name);
        }
    }

    /// Remembers the name of a finished span, interned by [`SpanNames::intern`].
    pub fn record_interned(&self, span_id: u64, name: InternedName) {
        self.slots[span_id as usize % NAME_SLOTS]
            .store(Self::word(span_id, name.index), Ordering::Relaxed);
    }

    /// The span name of `prefix` and `route` (see [`span_name`]), interned; `None` once
    /// [`MAX_NAMES`] names are known.
    pub fn intern(
        &self,
        prefix: &'static str,
        route: Option<&'static str>,
    ) -> Option<InternedName> {
        let key = name_key(prefix, route);
        let found = |names: &[(NameKey, &'static str)]| {
            names
                .iter()
                .position(|(k, _)| *k == key)
                .map(|index| InternedName {
                    index,
                    name: names[index].1,
                })
        };
        if let Some(name) = found(&self.names.read().unwrap_or_else(|p| p.into_inner())) {
            return Some(name);
        }
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        if let Some(name) = found(&names) {
            return Some(name);
        }
        (names.len() < MAX_NAMES).then(|| {
            // Leaked on purpose: at most MAX_NAMES names, each kept for the process's life.
            let name: &'static str = Box::leak(span_name(prefix, route).into_boxed_str());
            names.push((key, name));
            InternedName {
                index: names.len() - 1,
                name,
            }
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
            .map(|(_, name)| (*name).to_owned())
    }
}

/// A span name in the [`SpanNames`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternedName {
    index: usize,
    pub name: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_name_is_found_by_its_span_id_and_a_different_span_misses() {
        const ROUTE: &str = "/generate-load";
        let names = SpanNames::new();
        names.record(0x00f0_67aa_0ba9_02b7, "GET", Some(ROUTE));
        assert_eq!(
            names.get(0x00f0_67aa_0ba9_02b7).as_deref(),
            Some("GET /generate-load")
        );
        // Same slot (same low 16 bits), another span: not mistaken for the first.
        assert_eq!(names.get(0x1111_67aa_0ba9_02b7), None);
        names.record(0x1234, "GET", Some(ROUTE));
        names.record(0x1235, "GET", None);
        assert_eq!(names.names.read().unwrap().len(), 2);
        assert_eq!(names.get(0x1235).as_deref(), Some("GET"));
    }

    /// The target a span got, read from the registry the way the layer reads it.
    fn target(span: &Span) -> Option<SpanLabels> {
        span.with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            target_of(&registry.span(id)?)
        })
        .flatten()
    }

    #[test]
    fn children_inherit_the_target_by_explicit_or_contextual_parent_and_roots_do_not() {
        use tracing_subscriber::layer::SubscriberExt;
        let labels = SpanLabels {
            span_id: 7,
            trace_id: 9,
        };
        let subscriber = tracing_subscriber::registry().with(SpanProfileLayer);
        tracing::subscriber::with_default(subscriber, || {
            let server = tracing::info_span!("HTTP request");
            assert_eq!(target(&server), None);
            annotate(&server, ProfileTarget(labels));
            assert_eq!(target(&server), Some(labels));

            let explicit = tracing::info_span!(parent: &server, "burn_cpu");
            let grandchild = tracing::info_span!(parent: &explicit, "inner");
            let (contextual, root) = server.in_scope(|| {
                (
                    tracing::info_span!("simulated slow work"),
                    tracing::info_span!(parent: None, "detached"),
                )
            });
            let unrelated = tracing::info_span!("another request");
            assert_eq!(target(&explicit), Some(labels));
            assert_eq!(target(&grandchild), Some(labels));
            assert_eq!(target(&contextual), Some(labels));
            assert_eq!(target(&root), None);
            assert_eq!(target(&unrelated), None);
        });
    }

    #[test]
    fn a_span_opened_in_a_request_outside_other_spans_takes_the_requests_target() {
        use super::super::request_scope::RequestScope;
        use opentelemetry::trace::{SpanId, TraceId};
        use tracing_subscriber::layer::SubscriberExt;
        let ids = SpanIds {
            trace_id: TraceId::from(9_u128),
            span_id: SpanId::from(7_u64),
            sampled: true,
        };
        let (profiled, unprofiled) = (
            RequestScope {
                ids,
                profile: Some(ids.labels()),
            },
            RequestScope { ids, profile: None },
        );
        let subscriber = tracing_subscriber::registry().with(SpanProfileLayer);
        tracing::subscriber::with_default(subscriber, || {
            let (work, root, nested, other_thread) = {
                let _entered = profiled.enter();
                let work = tracing::info_span!("simulated slow work");
                let nested = work.in_scope(|| tracing::info_span!("inner"));
                let root = tracing::info_span!(parent: None, "detached");
                // The span is made here and entered on another thread, as the burn does.
                let other_thread = tracing::info_span!("burn_cpu");
                (work, root, nested, other_thread)
            };
            let entered_there = std::thread::scope(|threads| {
                threads
                    .spawn(|| other_thread.in_scope(cpu_sampler::thread_span))
                    .join()
                    .unwrap()
            });
            let unprofiled_work = {
                let _entered = unprofiled.enter();
                tracing::info_span!("simulated slow work")
            };
            let outside = tracing::info_span!("after the request");
            assert_eq!(target(&work), Some(ids.labels()));
            assert_eq!(target(&nested), Some(ids.labels()));
            assert_eq!(target(&other_thread), Some(ids.labels()));
            assert_eq!(
                entered_there,
                Some(ids.labels()),
                "samples on the other thread"
            );
            assert_eq!(
                target(&root),
                None,
                "an explicit root belongs to no request"
            );
            assert_eq!(target(&unprofiled_work), None);
            assert_eq!(target(&outside), None);
        });
    }

    #[test]
    fn span_ids_are_written_as_sixteen_hex_digits() {
        assert_eq!(hex16(0x00f0_67aa_0ba9_02b7), "00f067aa0ba902b7");
        assert_eq!(hex16(u64::MAX), format!("{:016x}", u64::MAX));
    }
}
