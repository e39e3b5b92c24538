//! W3C Trace Context in and out: reads `traceparent`/`tracestate` from actix's request headers
//! (actix is on `http` 0.2, so the OpenTelemetry helper for `http` 1 does not fit) and writes
//! them into outgoing `reqwest` requests.
//!
//! A `traceparent` reaches the OpenTelemetry propagator only when it has the shape W3C Trace
//! Context gives it ([`is_well_formed_traceparent`]): the SDK's parser reads each field with
//! `from_str_radix`, so it took `0-…` as version 00, a 15-digit parent id, and `+`-signed
//! fields, and continued traces that the spec says must be restarted.

use actix_web::http::header::{HeaderMap as ActixHeaders, HeaderName};
use opentelemetry::{Context, propagation::Extractor};
use opentelemetry_http::HeaderInjector;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
// The same names for header lookups: a `&str` key is parsed into a name on every lookup.
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_HEADER: HeaderName = HeaderName::from_static(TRACESTATE);

struct ActixExtractor<'a> {
    headers: &'a ActixHeaders,
    /// Every `tracestate` line, joined (see the module docs).
    tracestate: Option<String>,
}

impl<'a> ActixExtractor<'a> {
    fn new(headers: &'a ActixHeaders) -> Self {
        Self {
            headers,
            tracestate: combined_tracestate(headers),
        }
    }
}

impl Extractor for ActixExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => {
                // Two `traceparent` lines are one comma-joined value (RFC 9110 §5.3), which is
                // never a valid traceparent.
                let mut values = self.headers.get_all(TRACEPARENT_HEADER);
                let value = values.next()?.to_str().ok()?;
                (values.next().is_none() && is_well_formed_traceparent(value)).then_some(value)
            }
            TRACESTATE => self.tracestate.as_deref(),
            _ => self.headers.get(key).and_then(|v| v.to_str().ok()),
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.headers.keys().map(|k| k.as_str()).collect()
    }
}

/// All `tracestate` lines as one list, in the order they came; `None` when there is none or
/// one is not visible ASCII (the whole list is then invalid, and the propagator would drop it).
fn combined_tracestate(headers: &ActixHeaders) -> Option<String> {
    let mut combined: Option<String> = None;
    for value in headers.get_all(TRACESTATE_HEADER) {
        let value = value.to_str().ok()?;
        match &mut combined {
            None => combined = Some(value.to_owned()),
            Some(list) => {
                list.push(',');
                list.push_str(value);
            }
        }
    }
    combined
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
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&ActixExtractor::new(headers)))
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
    use actix_web::http::header::{HeaderName, HeaderValue};
    use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::{ActixExtractor, ActixHeaders, is_well_formed_traceparent as ok};

    fn headers(lines: &[(&'static str, &'static str)]) -> ActixHeaders {
        let mut headers = ActixHeaders::new();
        for (name, value) in lines {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    #[test]
    fn repeated_tracestate_lines_are_one_list_in_their_order() {
        let headers = headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "rojo=00f067aa0ba902b7, other=x"),
            ("tracestate", "last=1"),
        ]);
        let cx = TraceContextPropagator::new().extract(&ActixExtractor::new(&headers));
        let span = cx.span();
        let state = span.span_context().trace_state();
        assert_eq!(
            state.header(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,other=x,last=1"
        );
    }

    #[test]
    fn one_tracestate_line_is_read_as_it_is_and_none_is_none() {
        let one = headers(&[("tracestate", "a=1,b=2")]);
        assert_eq!(
            ActixExtractor::new(&one).tracestate.as_deref(),
            Some("a=1,b=2")
        );
        assert_eq!(ActixExtractor::new(&headers(&[])).tracestate, None);
    }

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
