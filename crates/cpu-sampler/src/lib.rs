//! A CPU sampler whose samples say *which request* was running: the profiler behind span
//! profiles ("Profiles for this span" in Grafana).
//!
//! # Why not `pprof-rs`
//! `pprof` 0.15 aggregates samples inside its signal handler by (stack, thread), so a label
//! that changes while a thread switches between requests — the span id — cannot be recovered
//! from its report. Two profilers cannot share the profiling signal either, so this crate
//! replaces it for both push and pull.
//!
//! # Design
//! - **Timer.** `setitimer(ITIMER_PROF)` fires `SIGPROF` every `1/hz` seconds of the process's
//!   CPU time. Linux delivers it to the thread that was running when the tick expired, so a
//!   sample lands on a thread that is burning CPU, and an idle thread is never sampled.
//! - **Who is running.** Every thread has a slot ([`set_thread_span`]) holding the span whose
//!   work it is executing *now*. The program sets it when a request's work is entered and
//!   restores it on exit (the sample service: its request scope around each poll, and a
//!   `tracing` layer for spans entered elsewhere). Actix polls many requests on one worker
//!   thread; each poll enters its own request, so the slot always names the request being
//!   polled at that instant, not the last one that started. The slot is three atomics written in an order the handler can read without locks
//!   (span id cleared first, set last).
//! - **The handler** ([`signal`], the only module with `unsafe`) reads the interrupted program
//!   counter from the signal context, walks the stack with `backtrace::trace_unsynchronized`
//!   (the libgcc unwinder, as `pprof-rs` does), drops the handler's own frames, and copies the
//!   addresses plus the slot into a **preallocated, lock-free buffer** of fixed-size records.
//!   It allocates nothing, takes no lock and preserves `errno`. When the buffer is full the
//!   sample is counted as dropped.
//! - **Off the signal path**, the owner calls [`Sampler::drain`] (every ~100 ms), which copies
//!   finished records out as [`Sample`]s. Symbolisation ([`Symbolizer`]: the symbol tables of
//!   the executable and the libraries, cached per address) and pprof encoding happen there, never in the handler.
//!
//! Only one [`Sampler`] may run per process; starting a second fails.

mod elf_symbols;
mod labels;
#[allow(unsafe_code)]
mod signal;
mod symbols;

pub use labels::{SpanLabels, set_thread_span, thread_span};
pub use signal::{MAX_DEPTH, Sampler, StartError};
pub use symbols::{Frame, Symbolizer};

/// One CPU sample, copied out of the signal buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Instruction addresses, innermost first. The first is the interrupted instruction itself;
    /// the others are return addresses (symbolise `addr - 1` for those).
    pub frames: Vec<usize>,
    /// The span whose work the thread was running when the sample was taken, if any.
    pub span: Option<SpanLabels>,
}
