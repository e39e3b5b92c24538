//! `JsonBody`: any bytes, any content type, any nesting give the value or a clear 4xx, and
//! agree with `serde_json` itself on what is JSON; valid JSON round-trips.

use proptest::prelude::*;
use sample_app::routes::extractors::JSON_LIMIT_BYTES;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{assert_clear_4xx, read_json};

/// Fragments that make up JSON-ish text: random bytes rarely get past the first character.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\"item\"",
    "\"quantity\"",
    "1",
    "-0",
    "1e999",
    "0.5",
    "null",
    "true",
    "fals",
    "\\u",
    "\\ud800",
    "\\\"",
    " ",
    "\n",
    "\u{0}",
    "é",
    "💩",
];

fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..400)
        .prop_map(|parts| parts.concat().into_bytes())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((".{0,8}", inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// The order API's body, as a client would build it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Order {
    item: String,
    quantity: i64,
}

proptest! {
    #[test]
    fn any_bytes_are_the_json_serde_reads_or_a_clear_4xx(
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), jsonish()],
    ) {
        let reference = serde_json::from_slice::<Value>(&body).ok();
        match read_json::<Value>(Some("application/json"), body) {
            Ok(value) => prop_assert_eq!(Some(value), reference),
            Err((status, error)) => {
                assert_clear_4xx(status, &error);
                prop_assert_eq!(status, 400);
                prop_assert!(reference.is_none(), "refused valid JSON: {}", error);
            }
        }
    }

    #[test]
    fn nesting_of_any_depth_is_parsed_or_a_400_never_a_stack_overflow(
        depth in 1usize..16_000,
        open in prop::sample::select(vec!["[", "{\"a\":"]),
    ) {
        let body = open.repeat(depth).into_bytes();
        let within_limit = body.len() <= JSON_LIMIT_BYTES;
        let (status, error) = read_json::<Value>(Some("application/json"), body).unwrap_err();
        assert_clear_4xx(status, &error);
        prop_assert_eq!(status, if within_limit { 400 } else { 413 });
    }

    #[test]
    fn bodies_over_the_limit_are_a_413(extra in 1usize..4096, byte in any::<u8>()) {
        let body = vec![byte; JSON_LIMIT_BYTES + extra];
        let (status, error) = read_json::<Value>(Some("application/json"), body).unwrap_err();
        assert_clear_4xx(status, &error);
        prop_assert_eq!(status, 413);
    }

    #[test]
    fn any_content_type_but_json_is_a_415(
        content_type in "[a-z]{1,12}/[a-z.+-]{1,16}( *; *[a-z]{1,8}=[a-z0-9-]{1,8})?",
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mime: Option<actix_web::mime::Mime> = content_type.parse().ok();
        let is_json = mime.is_some_and(|m| {
            m.type_() == "application" && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
        });
        prop_assume!(!is_json);
        let (status, error) = read_json::<Value>(Some(&content_type), body).unwrap_err();
        assert_clear_4xx(status, &error);
        prop_assert_eq!(status, 415);
    }

    #[test]
    fn valid_json_round_trips(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        prop_assume!(body.len() <= JSON_LIMIT_BYTES);
        prop_assert_eq!(read_json::<Value>(Some("application/json"), body).unwrap(), value);
    }

    #[test]
    fn any_order_round_trips(item in any::<String>(), quantity in any::<i64>()) {
        let order = Order { item, quantity };
        let body = serde_json::to_vec(&order).unwrap();
        prop_assume!(body.len() <= JSON_LIMIT_BYTES);
        let read: Order = read_json(Some("application/json; charset=utf-8"), body).unwrap();
        prop_assert_eq!(read, order);
    }
}
