//! The sampler against real CPU work: samples land on the function that burns, carry the span
//! that was set on that thread at that instant, and a span whose work does not burn gets no
//! burning samples, even when it shares the thread with one that does. Deadlines, not timings:
//! each test samples until it has seen what it needs, or fails after 20 s.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use cpu_sampler::{Sample, Sampler, SpanLabels, Symbolizer, set_thread_span};

/// One sampler per process: tests that start one take turns.
static ONE_SAMPLER: Mutex<()> = Mutex::new(());

const SPAN_A: SpanLabels = SpanLabels {
    span_id: 0xa1,
    trace_id: 0xa,
};
const SPAN_B: SpanLabels = SpanLabels {
    span_id: 0xb2,
    trace_id: 0xb,
};

#[inline(never)]
fn spin(until: Instant) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while Instant::now() < until {
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = std::hint::black_box(x);
    }
    x
}

#[inline(never)]
fn burn_for_span_a(d: Duration) -> u64 {
    std::hint::black_box(spin(Instant::now() + d))
}

#[inline(never)]
fn burn_for_span_b(d: Duration) -> u64 {
    std::hint::black_box(spin(Instant::now() + d))
}

fn names(symbols: &mut Symbolizer, sample: &Sample) -> Vec<String> {
    let mut out = Vec::new();
    for (i, &address) in sample.frames.iter().enumerate() {
        out.extend(
            symbols
                .frames(address, i > 0)
                .iter()
                .map(|f| f.function.clone()),
        );
    }
    out
}

/// Drains until `done` says the samples so far are enough, or panics after 20 s.
fn sample_until(sampler: &Sampler, mut done: impl FnMut(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut samples = Vec::new();
    loop {
        sampler.drain(&mut samples);
        if done(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "not enough samples in 20 s");
        thread::sleep(Duration::from_millis(50));
    }
}

fn has(symbols: &mut Symbolizer, sample: &Sample, function: &str) -> bool {
    names(symbols, sample).iter().any(|n| n.ends_with(function))
}

#[test]
fn samples_carry_the_span_of_the_thread_they_interrupted() {
    let _turn = ONE_SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let sampler = Sampler::start(250).expect("the sampler starts");
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = [(SPAN_A, true), (SPAN_B, false)]
        .into_iter()
        .map(|(span, a)| {
            let stop = stop.clone();
            thread::spawn(move || {
                set_thread_span(Some(span));
                while !stop.load(Ordering::Relaxed) {
                    if a {
                        burn_for_span_a(Duration::from_millis(5));
                    } else {
                        burn_for_span_b(Duration::from_millis(5));
                    }
                }
            })
        })
        .collect();
    let mut symbols = Symbolizer::new();
    let samples = sample_until(&sampler, |s| {
        let a = s.iter().filter(|x| x.span == Some(SPAN_A)).count();
        let b = s.iter().filter(|x| x.span == Some(SPAN_B)).count();
        a >= 20 && b >= 20
    });
    stop.store(true, Ordering::Relaxed);
    workers.into_iter().for_each(|w| w.join().unwrap());

    for sample in samples.iter().filter(|s| s.span.is_some()) {
        let other = if sample.span == Some(SPAN_A) {
            "burn_for_span_b"
        } else {
            "burn_for_span_a"
        };
        let stack = names(&mut symbols, sample);
        assert!(
            !stack.iter().any(|n| n.ends_with(other)),
            "{:?} ran {other}: {stack:?}",
            sample.span
        );
        assert!(
            !stack.iter().any(|n| n.contains("on_sigprof")),
            "the handler's own frames leaked into a sample: {stack:?}"
        );
    }
    let with_own = samples
        .iter()
        .filter(|s| s.span == Some(SPAN_A))
        .filter(|s| has(&mut symbols, s, "burn_for_span_a"))
        .count();
    assert!(with_own > 0, "no sample of span A shows its burn");
}

#[test]
fn a_span_that_shares_a_thread_with_a_burning_span_gets_none_of_its_samples() {
    let _turn = ONE_SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let sampler = Sampler::start(250).expect("the sampler starts");
    let stop = Arc::new(AtomicBool::new(false));
    let stop_worker = stop.clone();
    // One thread interleaves two spans, as an actix worker polls two requests: A burns,
    // B does different work (its own function), switching every millisecond.
    let worker = thread::spawn(move || {
        while !stop_worker.load(Ordering::Relaxed) {
            set_thread_span(Some(SPAN_A));
            burn_for_span_a(Duration::from_millis(1));
            set_thread_span(Some(SPAN_B));
            burn_for_span_b(Duration::from_millis(1));
            set_thread_span(None);
        }
    });
    let mut symbols = Symbolizer::new();
    let samples = sample_until(&sampler, |s| {
        s.iter().filter(|x| x.span == Some(SPAN_B)).count() >= 30
            && s.iter().filter(|x| x.span == Some(SPAN_A)).count() >= 30
    });
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();

    for sample in &samples {
        if sample.span == Some(SPAN_B) {
            assert!(!has(&mut symbols, sample, "burn_for_span_a"));
        }
        if sample.span == Some(SPAN_A) {
            assert!(!has(&mut symbols, sample, "burn_for_span_b"));
        }
    }
}

#[test]
fn a_second_sampler_is_refused_while_one_runs_and_allowed_after() {
    let _turn = ONE_SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let first = Sampler::start(100).expect("the sampler starts");
    assert!(matches!(
        Sampler::start(100),
        Err(cpu_sampler::StartError::AlreadyRunning)
    ));
    drop(first);
    drop(Sampler::start(100).expect("a sampler starts again after the first stopped"));
}
