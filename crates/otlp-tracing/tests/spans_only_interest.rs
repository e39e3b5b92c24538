//! What SpansOnly saves: with it, an event keeps the interest its callsite cached when it was
//! registered, so no layer is asked `enabled` again; with the per-layer filter it replaces,
//! every event asks again (tracing-subscriber 0.3.23 src/layer/layered.rs:470). Callsite
//! interest is global to the process, so this is the only test in its binary.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use opentelemetry::trace::noop::NoopTracer;
use otlp_tracing::SpansOnly;
use tracing::{Metadata, Subscriber, subscriber::Interest};
use tracing_subscriber::{
    Layer,
    filter::filter_fn,
    layer::{Context, SubscriberExt},
};

/// A global filter that lets everything through and counts how often it is asked per event.
#[derive(Clone, Default)]
struct CountingFilter(Arc<AtomicUsize>);

impl<S: Subscriber> Layer<S> for CountingFilter {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }
    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        if metadata.is_event() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

fn traffic() {
    let span = tracing::info_span!("HTTP request");
    span.in_scope(|| {
        tracing::info!(order_id = 7, "looked up");
        tracing::warn!("slow");
    });
    tracing::info!("outside any span");
}

/// How often the global filter is asked about an event while `traffic` runs 10 times.
fn enabled_calls(subscriber: tracing::Dispatch, counter: &CountingFilter) -> usize {
    tracing::dispatcher::with_default(&subscriber, || {
        // The first run registers the callsites; count what the next ten cost.
        traffic();
        let before = counter.0.load(Ordering::Relaxed);
        for _ in 0..10 {
            traffic();
        }
        counter.0.load(Ordering::Relaxed) - before
    })
}

#[test]
fn events_keep_their_cached_interest_where_a_per_layer_filter_asks_every_time() {
    let otel = || tracing_opentelemetry::layer().with_tracer(NoopTracer::new());
    let counter = CountingFilter::default();
    let filtered = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(counter.clone())
            .with(otel().with_filter(filter_fn(|m| m.is_span()))),
    );
    let per_layer_filter = enabled_calls(filtered, &counter);

    // A new dispatcher recomputes every registered callsite's interest from the live ones
    // (the filtered one is gone with its last reference).
    let counter = CountingFilter::default();
    let wrapped = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(counter.clone())
            .with(SpansOnly::new(otel())),
    );
    let spans_only = enabled_calls(wrapped, &counter);

    // Three events a run, ten runs.
    assert_eq!(per_layer_filter, 30, "per-layer filter");
    assert_eq!(spans_only, 0, "SpansOnly");
}
