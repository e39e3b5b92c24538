//! W3C Trace Context in and out: reads `traceparent`/`tracestate` from actix's request headers
//! (actix is on `http` 0.2, so the OpenTelemetry helper for `http` 1 does not fit) and writes
//! them into outgoing `reqwest` requests.
//!
//! A `traceparent` reaches the OpenTelemetry propagator only when it has the shape W3C Trace
//! Context gives it ([`is_well_formed_traceparent`]): the SDK's parser reads each field with
//! `from_str_radix`, so it took `0-…` as version 00, a 15-digit parent id, and `+`-signed
//! fields, and continued traces that the spec says must be restarted.

use actix_web::http::header::HeaderMap as ActixHeaders;
use opentelemetry::{Context, propagation::Extractor};
use opentelemetry_http::HeaderInjector;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";

struct ActixExtractor<'a>(&'a ActixHeaders);

impl Extractor for ActixExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key != TRACEPARENT {
            return self.0.get(key).and_then(|v| v.to_str().ok());
        }
        // Two `traceparent` lines are one comma-joined value (RFC 9110 §5.3), which is never
        // a valid traceparent.
        let mut values = self.0.get_all(TRACEPARENT);
        let value = values.next()?.to_str().ok()?;
        (values.next().is_none() && is_well_formed_traceparent(value)).then_some(value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Whether `value` has the shape of a `traceparent` (W3C Trace Context, §3.2 and §4.3):
/// `version-trace_id-parent_id-flags` in lowercase hex of exactly 2, 32, 16 and 2 digits;
/// version `ff` is invalid; version `00` ends there, a later version may go on after a dash.
/// (All-zero ids are refused later, by the propagator.)
pub fn is_well_formed_traceparent(value: &str) -> bool {
    let bytes = value.as_bytes();
    let hex = |from: usize, to: usize| {
        bytes
            .get(from..to)
            .is_some_and(|b| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
    };
    let dash = |at: usize| bytes.get(at) == Some(&b'-');
    let shape =
        hex(0, 2) && dash(2) && hex(3, 35) && dash(35) && hex(36, 52) && dash(52) && hex(53, 55);
    shape
        && match &value[..2] {
            "ff" => false,
            "00" => bytes.len() == 55,
            _ => bytes.len() == 55 || dash(55),
        }
}

/// The caller's trace context, or an empty one (an invalid `traceparent` is ignored, as the
/// W3C spec requires: the request is served and starts a new trace).
pub fn extract(headers: &ActixHeaders) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&ActixExtractor(headers)))
}

/// Adds the context of `span` to an outgoing request's headers.
pub fn inject(span: &tracing::Span, headers: &mut reqwest::header::HeaderMap) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

#[cfg(test)]
mod tests {
    use super::is_well_formed_traceparent as ok;

    const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn only_the_w3c_shape_is_well_formed() {
        assert!(ok(&format!("00-{ID}-00f067aa0ba902b7-01")));
        assert!(ok(&format!("01-{ID}-00f067aa0ba902b7-01-what-comes-later")));
        for bad in [
            format!("0-{ID}-00f067aa0ba902b7-01"),
            format!("00-{ID}-00f067aa0ba902b-01"),
            format!("00-{ID}-+0f067aa0ba902b7-01"),
            format!("00-{ID}-00f067aa0ba902b7-1"),
            format!("00-{ID}-00f067aa0ba902b7-01-"),
            format!("00-{ID}-00F067AA0BA902B7-01"),
            format!("ff-{ID}-00f067aa0ba902b7-01"),
            format!("01-{ID}-00f067aa0ba902b7-01x"),
            String::new(),
        ] {
            assert!(!ok(&bad), "{bad}");
        }
    }
}
