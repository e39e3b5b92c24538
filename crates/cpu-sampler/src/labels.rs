//! The per-thread slot that says which span's work the thread is running, written by the
//! application (a `tracing` layer) and read by the signal handler on the same thread.
//!
//! The slot is three atomics in a `const`-initialised thread local without a destructor, so
//! reading it from a signal handler neither allocates nor can observe a destroyed value. The
//! writer clears the span id, writes the trace id, then sets the span id; compiler fences keep
//! that order. The handler runs on the same thread, between two of those instructions at
//! worst, so it sees either no span or a complete one — never a span id with another span's
//! trace id.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed, compiler_fence};

/// The labels of one span: what a CPU sample taken during its work is tagged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanLabels {
    /// The span id (never 0: the W3C invalid span id means "no span").
    pub span_id: u64,
    /// The 128-bit trace id.
    pub trace_id: u128,
}

struct Slot {
    span_id: AtomicU64,
    trace_hi: AtomicU64,
    trace_lo: AtomicU64,
}

thread_local! {
    static CURRENT: Slot = const {
        Slot {
            span_id: AtomicU64::new(0),
            trace_hi: AtomicU64::new(0),
            trace_lo: AtomicU64::new(0),
        }
    };
}

/// Says which span's work this thread runs from now on (`None`: no span's). Cheap: three
/// relaxed stores.
pub fn set_thread_span(span: Option<SpanLabels>) {
    let _ = CURRENT.try_with(|slot| {
        slot.span_id.store(0, Relaxed);
        compiler_fence(std::sync::atomic::Ordering::SeqCst);
        let Some(span) = span.filter(|s| s.span_id != 0) else {
            return;
        };
        slot.trace_hi.store((span.trace_id >> 64) as u64, Relaxed);
        slot.trace_lo.store(span.trace_id as u64, Relaxed);
        compiler_fence(std::sync::atomic::Ordering::SeqCst);
        slot.span_id.store(span.span_id, Relaxed);
    });
}

/// The span this thread is running, as the signal handler will see it.
pub fn thread_span() -> Option<SpanLabels> {
    CURRENT
        .try_with(|slot| {
            let span_id = slot.span_id.load(Relaxed);
            compiler_fence(std::sync::atomic::Ordering::SeqCst);
            (span_id != 0).then(|| SpanLabels {
                span_id,
                trace_id: (u128::from(slot.trace_hi.load(Relaxed)) << 64)
                    | u128::from(slot.trace_lo.load(Relaxed)),
            })
        })
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_reads_back_the_span_it_set_and_other_threads_do_not_see_it() {
        let span = SpanLabels {
            span_id: 0x00f0_67aa_0ba9_02b7,
            trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
        };
        set_thread_span(Some(span));
        assert_eq!(thread_span(), Some(span));
        assert_eq!(std::thread::spawn(thread_span).join().unwrap(), None);
        set_thread_span(None);
        assert_eq!(thread_span(), None);
    }

    #[test]
    fn the_invalid_span_id_means_no_span() {
        set_thread_span(Some(SpanLabels {
            span_id: 0,
            trace_id: 1,
        }));
        assert_eq!(thread_span(), None);
    }
}
