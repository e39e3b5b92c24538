//! A span's ids in the forms the signals write them: 32 and 16 lowercase hex digits (W3C Trace
//! Context) in log lines and exemplars, integers in CPU-sample labels.
//!
//! The middleware reads the server span's ids once, when the span starts, and keeps them in the
//! request's scope (`request_scope`) so the JSON log layer writes them without asking
//! OpenTelemetry for the span's context on every line (a registry lookup, a lock, a context
//! clone and two `fmt` calls: about 5,000 instructions a line).

use cpu_sampler::SpanLabels;
use opentelemetry::trace::{SpanContext, SpanId, TraceId};

/// The ids of a valid span (never the all-zero ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl SpanIds {
    /// `None` for an invalid context (no OpenTelemetry span).
    pub fn of(context: &SpanContext) -> Option<Self> {
        context.is_valid().then(|| Self {
            trace_id: context.trace_id(),
            span_id: context.span_id(),
            sampled: context.is_sampled(),
        })
    }

    pub fn trace_hex(&self) -> [u8; 32] {
        let mut out = [0; 32];
        hex_into(&self.trace_id.to_bytes(), &mut out);
        out
    }

    pub fn span_hex(&self) -> [u8; 16] {
        let mut out = [0; 16];
        hex_into(&self.span_id.to_bytes(), &mut out);
        out
    }

    /// The span id in hex as a `String` (the `pyroscope.profile.id` attribute, exemplars).
    pub fn span_hex_string(&self) -> String {
        String::from_utf8(self.span_hex().to_vec()).unwrap_or_default()
    }

    pub fn trace_hex_string(&self) -> String {
        String::from_utf8(self.trace_hex().to_vec()).unwrap_or_default()
    }

    /// The labels of the CPU samples taken during the span's work.
    pub fn labels(&self) -> SpanLabels {
        SpanLabels {
            span_id: u64::from_be_bytes(self.span_id.to_bytes()),
            trace_id: u128::from_be_bytes(self.trace_id.to_bytes()),
        }
    }
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xF)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceFlags, TraceState};

    #[test]
    fn ids_are_written_as_w3c_trace_context_writes_them() {
        let context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let ids = SpanIds::of(&context).unwrap();
        assert_eq!(ids.trace_hex_string(), context.trace_id().to_string());
        assert_eq!(ids.span_hex_string(), context.span_id().to_string());
        assert_eq!(&ids.trace_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.labels().span_id, 0x00f0_67aa_0ba9_02b7);
        assert!(ids.sampled);
        assert_eq!(SpanIds::of(&SpanContext::empty_context()), None);
    }
}
