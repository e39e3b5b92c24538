//! What span labels and heap sampling cost per request, measured in-process where the
//! end-to-end benchmark (`scripts/bench_sample_app.py`) cannot resolve a microsecond on a
//! shared, noisy machine. Each measurement alternates the feature on and off in rounds and
//! reports the median per-iteration difference (docs/benchmarks.md has the results).
//!
//! - **Span labels**: what the layer adds to one request: a server span made by the
//!   OpenTelemetry layer (as the service's was before its middleware made the span itself;
//!   docs/benchmarks.md), marked (`pyroscope.profile.id`, target), entered and exited twice
//!   (two polls), and its name recorded; against the same span unmarked without the layer.
//! - **Heap sampling**: a request's worth of allocations (52 allocations, 4.7 KB, as measured
//!   on the hot endpoint) with jemalloc's sampler active and inactive.
//!
//! Run: `cargo run --release -p sample-app --example profile_cost`

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use sample_app::telemetry::span_profiles::{self, SPAN_NAMES, SpanProfileLayer};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ROUNDS: usize = 7;
const ITERATIONS: u32 = 100_000;

fn main() {
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .build();
    let span_labels = median_difference(|on| one_request_span(&provider, on));
    println!("span labels: {span_labels:+.3} us CPU per request (median of {ROUNDS} rounds)");

    let ctl = jemalloc_pprof::PROF_CTL
        .as_ref()
        .expect("jemalloc's profiler (built with .cargo/config.toml)");
    let heap = median_difference(|on| {
        let mut ctl = ctl.blocking_lock();
        if on {
            ctl.activate().unwrap();
        } else {
            ctl.deactivate().unwrap();
        }
        drop(ctl);
        time_per_iteration(request_allocations)
    });
    println!("heap sampling: {heap:+.3} us CPU per request (median of {ROUNDS} rounds)");
}

/// Median over rounds of (cost with the feature on − cost with it off), in µs.
fn median_difference(mut measure: impl FnMut(bool) -> Duration) -> f64 {
    let mut differences: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let on = measure(true);
            let off = measure(false);
            (on.as_secs_f64() - off.as_secs_f64()) * 1e6
        })
        .collect();
    differences.sort_by(f64::total_cmp);
    differences[ROUNDS / 2]
}

fn time_per_iteration(mut iteration: impl FnMut()) -> Duration {
    let started = Instant::now();
    for _ in 0..ITERATIONS {
        iteration();
    }
    started.elapsed() / ITERATIONS
}

/// One request's span work under a subscriber like the service's, with or without labels.
fn one_request_span(provider: &SdkTracerProvider, labels: bool) -> Duration {
    let otel = otlp_tracing::SpansOnly::new(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("profile_cost"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false),
    );
    let subscriber = tracing_subscriber::registry()
        .with(otel)
        .with(labels.then_some(SpanProfileLayer));
    tracing::subscriber::with_default(subscriber, || {
        time_per_iteration(|| {
            let span = tracing::info_span!(
                "HTTP request",
                otel.name = "GET",
                otel.kind = "server",
                http.request.method = "GET",
                http.route = tracing::field::Empty,
            );
            if labels && let Some(target) = span_profiles::mark_profiled(&span) {
                SPAN_NAMES.record(target.span_id, "GET", Some("/api/orders/{id}"));
            }
            for _ in 0..2 {
                let _poll = span.enter();
                black_box(&span);
            }
            span.record("http.route", "/api/orders/{id}");
            // The middleware reads the span's context for the exemplar in both cases.
            black_box(span.context());
        })
    })
}

/// What `GET /api/orders/{id}` allocates, measured with its own heap profile under wrk
/// (`alloc_objects`, `alloc_space` of the request path, divided by the requests): about 52
/// allocations and 4.7 KB per request.
fn request_allocations() {
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(52);
    for i in 0..51 {
        held.push(vec![i as u8; 88 + i % 8]);
    }
    black_box(held);
}
