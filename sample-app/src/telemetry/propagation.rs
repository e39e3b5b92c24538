//! W3C Trace Context in and out: reads `traceparent`/`tracestate` from actix's request headers
//! (actix is on `http` 0.2, so the OpenTelemetry helper for `http` 1 does not fit) and writes
//! them into outgoing `reqwest` requests.
//!
//! An incoming `traceparent` is continued only when it has the shape W3C Trace Context gives
//! it ([`is_well_formed_traceparent`]): the SDK's parser reads each field with
//! `from_str_radix`, so it took `0-…` as version 00, a 15-digit parent id, and `+`-signed
//! fields, and continued traces that the spec says must be restarted. Once the shape is known,
//! [`extract`] reads the ids itself: the SDK's `TraceContextPropagator` splits the value into a
//! `Vec` and parses a `u128` digit by digit with overflow checks: reading them here took a
//! request that continues a trace from 28,328 to 25,240 telemetry instructions (callgrind,
//! docs/benchmarks.md). Its result is the propagator's, which the tests check on
//! every single-byte change of a valid value.

use std::str::FromStr;

use actix_web::http::header::{HeaderMap as ActixHeaders, HeaderName};
use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use opentelemetry_http::HeaderInjector;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
// The same names for header lookups: a `&str` key is parsed into a name on every lookup.
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_HEADER: HeaderName = HeaderName::from_static(TRACESTATE);

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
/// (All-zero ids are refused later, by [`extract`].)
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

/// The caller's trace context (W3C Trace Context: `traceparent` and `tracestate`), as the
/// SDK's `TraceContextPropagator` would extract it into an empty context; `None` when there is
/// nothing to continue: no `traceparent` (`tracestate` alone means nothing), two of them, or
/// one that is not well formed or names the all-zero ids, which the W3C spec says to ignore:
/// the request is served and starts a new trace.
pub fn extract(headers: &ActixHeaders) -> Option<Context> {
    let bytes = well_formed_traceparent(headers)?.as_bytes();
    let trace_id = TraceId::from_bytes(hex_array(&bytes[3..35]));
    let span_id = SpanId::from_bytes(hex_array(&bytes[36..52]));
    // Flags other than `sampled` are not passed on (W3C Trace Context, "other flags").
    let flags = TraceFlags::new(hex_array::<1>(&bytes[53..55])[0]) & TraceFlags::SAMPLED;
    let state = combined_tracestate(headers)
        .and_then(|list| TraceState::from_str(&list).ok())
        .unwrap_or_default();
    let caller = SpanContext::new(trace_id, span_id, flags, true, state);
    caller
        .is_valid()
        .then(|| Context::new().with_remote_span_context(caller))
}

/// The request's `traceparent` when there is exactly one and it is well formed. Two lines are
/// one comma-joined value (RFC 9110 §5.3), never a valid one.
fn well_formed_traceparent(headers: &ActixHeaders) -> Option<&str> {
    let mut lines = headers.get_all(TRACEPARENT_HEADER);
    let value = lines.next()?.to_str().ok()?;
    (lines.next().is_none() && is_well_formed_traceparent(value)).then_some(value)
}

/// `2 * N` lowercase hex digits (already checked by [`is_well_formed_traceparent`]) as bytes.
fn hex_array<const N: usize>(digits: &[u8]) -> [u8; N] {
    let nibble = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0]) << 4 | nibble(pair[1]);
    }
    out
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

    use opentelemetry::propagation::Extractor;

    use super::{
        ActixHeaders, TRACEPARENT, TRACEPARENT_HEADER, TRACESTATE, combined_tracestate, extract,
        is_well_formed_traceparent as ok, well_formed_traceparent,
    };

    /// The headers as an OpenTelemetry `Extractor`, so the SDK's own propagator can say what
    /// [`extract`] must return from the same `traceparent` (only when well formed and alone:
    /// see the module docs), every `tracestate` line joined.
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
                TRACEPARENT => well_formed_traceparent(self.headers),
                TRACESTATE => self.tracestate.as_deref(),
                _ => self.headers.get(key).and_then(|v| v.to_str().ok()),
            }
        }

        fn keys(&self) -> Vec<&str> {
            self.headers.keys().map(|k| k.as_str()).collect()
        }
    }

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
    fn without_a_valid_traceparent_there_is_nothing_to_extract() {
        assert!(extract(&headers(&[])).is_none());
        assert!(extract(&headers(&[("tracestate", "a=1")])).is_none());
        assert!(extract(&headers(&[("traceparent", "00-zz")])).is_none());
        let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert!(extract(&headers(&[("traceparent", zeros)])).is_none());
        let caller = extract(&headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]))
        .expect("a context");
        assert!(caller.span().span_context().is_remote());
    }

    /// What the SDK's propagator extracts into an empty context (invalid when nothing).
    fn by_the_sdk(headers: &ActixHeaders) -> opentelemetry::trace::SpanContext {
        TraceContextPropagator::new()
            .extract_with_context(
                &opentelemetry::Context::new(),
                &ActixExtractor::new(headers),
            )
            .span()
            .span_context()
            .clone()
    }

    fn by_extract(headers: &ActixHeaders) -> opentelemetry::trace::SpanContext {
        extract(headers).map_or_else(opentelemetry::trace::SpanContext::empty_context, |cx| {
            cx.span().span_context().clone()
        })
    }

    #[test]
    fn extract_agrees_with_the_sdk_propagator_on_every_one_byte_change_of_a_valid_value() {
        let valid = [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03-later",
        ];
        let states = [
            None,
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            Some("=bad"),
        ];
        let mut cases = 0;
        for value in valid {
            for at in 0..value.len() {
                for byte in (0x20..0x7f_u8).chain([b'\t', 0x80, 0xff]) {
                    let mut changed: [Vec<u8>; 3] =
                        std::array::from_fn(|_| value.as_bytes().to_vec());
                    changed[0][at] = byte;
                    changed[1].insert(at, byte);
                    changed[2].remove(at);
                    for bytes in changed {
                        let Ok(traceparent) = HeaderValue::from_bytes(&bytes) else {
                            continue;
                        };
                        for state in states {
                            let mut map = ActixHeaders::new();
                            map.append(TRACEPARENT_HEADER, traceparent.clone());
                            if let Some(state) = state {
                                map.append(
                                    HeaderName::from_static("tracestate"),
                                    HeaderValue::from_static(state),
                                );
                            }
                            assert_eq!(by_extract(&map), by_the_sdk(&map), "{bytes:?} {state:?}");
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert!(cases > 100_000, "{cases}");
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
