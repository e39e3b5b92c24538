//! The request whose code is running on this thread: its server span's ids, for the log lines
//! written outside any `tracing` span of its own, and the labels of its CPU samples.
//!
//! The middleware makes each request's server span with the OpenTelemetry SDK and, while it
//! polls the handler, attaches the span's context and enters its [`RequestScope`]. Together
//! they do what a per-request `tracing` span did, for much less: a `tracing` span is created
//! through every layer of the subscriber (the registry's slab, the filter, the OpenTelemetry
//! layer, the span-label layer), entered and exited through every layer on each poll, and closed
//! through every layer; replacing it saved about 2,300 of the instructions telemetry added to a
//! request (docs/benchmarks.md, "The request's scope"). A scope is two thread-local writes in and
//! two out. It is what OpenTelemetry's own actix-web instrumentation does too: the server span
//! lives in the OpenTelemetry context, not in `tracing`.
//!
//! What handler code must know: there is no `tracing` span for the request, so
//! `Span::current()` in a handler is none (`.in_current_span()` hands nothing on), and a span
//! for work that leaves the request is made in it (`info_span!(..)`, a child of the server span
//! through the attached context) and passed along, as the handlers here do. A span kept entered
//! across an `.await` (an `enter()` guard held over it, which `tracing` already warns against)
//! would stay current on the worker thread while other requests are polled there, and outrank
//! their scope: their spans would become its children and their lines would carry its ids.
//!
//! - The JSON log layer writes the scope's ids on an event that has no span
//!   ([`super::logs`]); an event inside a handler's own span carries that span's ids.
//! - The span-label layer gives a span opened in the scope, outside any other span, the
//!   scope's CPU-sample labels, and keeps them when the span is entered on another thread
//!   ([`super::span_profiles`]).
//! - While the scope is entered, the thread's CPU-sampler slot holds its labels (none for a
//!   request that is not profiled), so a sample is attributed to the request whose code ran.

use std::{cell::Cell, marker::PhantomData};

use cpu_sampler::{SpanLabels, set_thread_span, thread_span};

use super::ids::SpanIds;

/// A request's server span, as the thread's other telemetry needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestScope {
    /// The ids its log lines carry.
    pub ids: SpanIds,
    /// The labels of its CPU samples: `None` when it is not profiled (span profiles off, or the
    /// span is not sampled).
    pub profile: Option<SpanLabels>,
}

thread_local! {
    static CURRENT: Cell<Option<RequestScope>> = const { Cell::new(None) };
}

/// The scope entered on this thread, if any.
pub fn current() -> Option<RequestScope> {
    CURRENT.get()
}

impl RequestScope {
    /// Makes this the thread's scope, and its labels the sampler slot's, until the guard is
    /// dropped (which restores both as they were, so scopes nest).
    pub fn enter(self) -> Entered {
        let previous_slot = thread_span();
        set_thread_span(self.profile);
        Entered {
            previous: CURRENT.replace(Some(self)),
            previous_slot,
            not_send: PhantomData,
        }
    }
}

/// An entered [`RequestScope`]; dropping it leaves the scope. Tied to its thread.
#[must_use = "the scope is left when this is dropped"]
pub struct Entered {
    previous: Option<RequestScope>,
    previous_slot: Option<SpanLabels>,
    not_send: PhantomData<*const ()>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.set(self.previous);
        set_thread_span(self.previous_slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};

    fn scope(span: u64, profiled: bool) -> RequestScope {
        let ids = SpanIds {
            trace_id: TraceId::from(9_u128),
            span_id: SpanId::from(span),
            sampled: true,
        };
        RequestScope {
            ids,
            profile: profiled.then(|| ids.labels()),
        }
    }

    #[test]
    fn scopes_nest_and_leave_the_thread_and_its_sampler_slot_as_they_found_them() {
        assert_eq!(current(), None);
        assert_eq!(thread_span(), None);
        let (outer, inner) = (scope(7, true), scope(8, false));
        {
            let _outer = outer.enter();
            assert_eq!(current(), Some(outer));
            assert_eq!(thread_span(), outer.profile);
            {
                let _inner = inner.enter();
                assert_eq!(current(), Some(inner));
                assert_eq!(
                    thread_span(),
                    None,
                    "an unprofiled request's samples carry no span"
                );
            }
            assert_eq!(current(), Some(outer));
            assert_eq!(thread_span(), outer.profile);
            // Another thread sees none of it.
            std::thread::spawn(|| assert_eq!((current(), thread_span()), (None, None)))
                .join()
                .unwrap();
        }
        assert_eq!(current(), None);
        assert_eq!(thread_span(), None);
    }
}
