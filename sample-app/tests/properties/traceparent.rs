//! The `traceparent` extractor: any header value never panics, and a context is continued
//! only from a well-formed `traceparent`, with exactly the ids it spells; valid contexts
//! (with their `tracestate`) round-trip through extract and inject.

use std::collections::HashMap;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use proptest::prelude::*;
use sample_app::telemetry::propagation::{extract, is_well_formed_traceparent};

fn headers(pairs: &[(&'static str, Vec<u8>)]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_bytes(value).ok()?,
        );
    }
    Some(map)
}

/// The ids the propagator continued from `headers`, if any.
fn continued(headers: &HeaderMap) -> Option<(String, String, bool)> {
    let cx = extract(headers)?;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        (
            sc.trace_id().to_string(),
            sc.span_id().to_string(),
            sc.is_sampled(),
        )
    })
}

fn valid_traceparent() -> impl Strategy<Value = String> {
    (1u128.., 1u64.., any::<u8>()).prop_map(|(t, s, f)| format!("00-{t:032x}-{s:016x}-{f:02x}"))
}

/// A valid traceparent with one byte changed, inserted or removed.
fn near_miss() -> impl Strategy<Value = Vec<u8>> {
    (valid_traceparent(), 0usize..56, any::<u8>(), 0u8..3).prop_map(|(tp, at, byte, how)| {
        let mut bytes = tp.into_bytes();
        let at = at.min(bytes.len() - 1);
        match how {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => {
                bytes.remove(at);
            }
        }
        bytes
    })
}

fn tracestate() -> impl Strategy<Value = String> {
    prop::collection::vec(("[a-z][a-z0-9_*/-]{0,20}", "[!-+--<>-~]{1,32}"), 1..8).prop_map(
        |entries| {
            let mut seen = std::collections::HashSet::new();
            entries
                .into_iter()
                .filter(|(k, _)| seen.insert(k.clone()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        },
    )
}

proptest! {
    #[test]
    fn any_value_is_ignored_unless_well_formed_and_then_continued_as_spelled(
        value in prop_oneof![prop::collection::vec(any::<u8>(), 0..80), near_miss()],
        state in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let Some(map) = headers(&[("traceparent", value.clone()), ("tracestate", state)]) else {
            return Ok(()); // not a header value at all: actix refuses the request
        };
        if let Some((trace_id, span_id, _)) = continued(&map) {
            let text = String::from_utf8(value).unwrap();
            prop_assert!(is_well_formed_traceparent(&text), "continued from {text:?}");
            prop_assert_eq!(&text[3..35], trace_id.as_str());
            prop_assert_eq!(&text[36..52], span_id.as_str());
        }
    }

    #[test]
    fn two_traceparent_lines_are_ignored(a in valid_traceparent(), b in valid_traceparent()) {
        let map = headers(&[("traceparent", a.into_bytes()), ("traceparent", b.into_bytes())]).unwrap();
        prop_assert_eq!(continued(&map), None);
    }

    #[test]
    fn valid_contexts_round_trip(
        trace_id in 1u128..,
        span_id in 1u64..,
        flags in any::<u8>(),
        state in prop::option::of(tracestate()),
    ) {
        let traceparent = format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}");
        let mut pairs = vec![("traceparent", traceparent.into_bytes())];
        if let Some(state) = &state {
            pairs.push(("tracestate", state.clone().into_bytes()));
        }
        let map = headers(&pairs).unwrap();
        prop_assert_eq!(
            continued(&map),
            Some((format!("{trace_id:032x}"), format!("{span_id:016x}"), flags & 1 == 1))
        );
        let mut out = HashMap::new();
        TraceContextPropagator::new().inject_context(&extract(&map).unwrap(), &mut out);
        // Flags other than `sampled` are not passed on (W3C Trace Context, "other flags").
        let expected = format!("00-{trace_id:032x}-{span_id:016x}-{:02x}", flags & 1);
        prop_assert_eq!(out.get("traceparent"), Some(&expected));
        prop_assert_eq!(out.get("tracestate").filter(|s| !s.is_empty()), state.as_ref());
    }
}
