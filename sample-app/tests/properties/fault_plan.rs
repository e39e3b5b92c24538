//! Fault plans and fault headers: any bytes or any values are a plan within its bounds or a
//! clear 4xx naming the field (`PUT /admin/faults`: 400 for the wrong shape, 422 for a value
//! out of range); valid plans round-trip through the admin API's parser and state.

use std::time::Instant;

use proptest::prelude::*;
use sample_app::{
    faults::{
        FaultPlan, Faults, HeaderFaults, INJECTABLE_STATUSES, MAX_CPU_BURN_MS, MAX_LATENCY_MS,
        MAX_LEAK_CAP, MAX_LEAK_PER_REQUEST, MAX_TTL_SECONDS,
    },
    routes::templates::APP_ROUTES,
};
use serde_json::{Map, Value};

use crate::{assert_clear_4xx, read_json};

const FIELDS: [&str; 11] = [
    "error_rate",
    "error_status",
    "latency_ms",
    "latency_jitter_ms",
    "cpu_burn_ms",
    "leak_bytes_per_request",
    "leak_cap_bytes",
    "downstream_timeout",
    "downstream_error_rate",
    "routes",
    "ttl_seconds",
];

/// Every bound `validate` promises for an accepted plan.
fn within_bounds(plan: &FaultPlan) -> bool {
    let rate = |r: Option<f64>| r.is_none_or(|r| (0.0..=1.0).contains(&r));
    let max = |v: Option<u64>, m: u64| v.is_none_or(|v| v <= m);
    rate(plan.error_rate)
        && rate(plan.downstream_error_rate)
        && plan
            .error_status
            .is_none_or(|s| INJECTABLE_STATUSES.contains(&s))
        && max(plan.latency_ms, MAX_LATENCY_MS)
        && max(plan.latency_jitter_ms, MAX_LATENCY_MS)
        && max(plan.cpu_burn_ms, MAX_CPU_BURN_MS)
        && max(plan.leak_bytes_per_request, MAX_LEAK_PER_REQUEST)
        && max(plan.leak_cap_bytes, MAX_LEAK_CAP)
        && plan
            .ttl_seconds
            .is_none_or(|t| (1..=MAX_TTL_SECONDS).contains(&t))
        && plan
            .routes
            .iter()
            .flatten()
            .all(|r| APP_ROUTES.contains(&r.as_str()))
}

/// What `PUT /admin/faults` does with a body: parse (400), then validate and apply (422).
fn put(body: Vec<u8>) -> Result<FaultPlan, u16> {
    let plan: FaultPlan =
        read_json(Some("application/json"), body).map_err(|(status, error)| {
            assert_clear_4xx(status, &error);
            status
        })?;
    let faults = Faults::new(true, APP_ROUTES);
    match faults.set(plan.clone(), Instant::now()) {
        Ok(view) => {
            assert_eq!(
                view.plan.as_ref(),
                Some(&plan),
                "the plan in force is the one sent"
            );
            Ok(plan)
        }
        Err(e) => {
            assert!(FIELDS.contains(&e.field), "{e} names no field");
            Err(422)
        }
    }
}

fn any_json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0u64..700).prop_map(Value::from),
        (0.0f64..1.5).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::collection::vec(prop::sample::select(APP_ROUTES).prop_map(Value::from), 0..3)
            .prop_map(Value::Array),
    ]
}

/// Plan-shaped objects with any values, and now and then a field that does not exist.
fn plan_shaped() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![9 => prop::sample::select(&FIELDS[..]).prop_map(str::to_owned), 1 => "[a-z_]{1,12}"];
    prop::collection::vec((field, any_json_scalar()), 0..6).prop_map(|entries| {
        serde_json::to_vec(&Value::Object(entries.into_iter().collect::<Map<_, _>>())).unwrap()
    })
}

fn valid_plan() -> impl Strategy<Value = FaultPlan> {
    let rate = || prop::option::of(0.0f64..=1.0);
    (
        (
            rate(),
            prop::option::of(prop::sample::select(&INJECTABLE_STATUSES[..])),
        ),
        (
            prop::option::of(0..=MAX_LATENCY_MS),
            prop::option::of(0..=MAX_LATENCY_MS),
        ),
        prop::option::of(0..=MAX_CPU_BURN_MS),
        prop::option::of((0..=MAX_LEAK_PER_REQUEST, prop::option::of(0..=MAX_LEAK_CAP))),
        (prop::option::of(any::<bool>()), rate()),
        prop::option::of(prop::sample::subsequence(APP_ROUTES, 0..=APP_ROUTES.len())),
        prop::option::of(1..=MAX_TTL_SECONDS),
    )
        .prop_map(
            |((error_rate, error_status), (latency, jitter), cpu, leak, (dt, der), routes, ttl)| {
                FaultPlan {
                    error_rate,
                    error_status,
                    latency_ms: latency,
                    latency_jitter_ms: jitter,
                    cpu_burn_ms: cpu,
                    leak_bytes_per_request: leak.map(|(bytes, _)| bytes),
                    leak_cap_bytes: leak.and_then(|(_, cap)| cap),
                    downstream_timeout: dt,
                    downstream_error_rate: der,
                    routes: routes.map(|r| r.into_iter().map(str::to_owned).collect()),
                    ttl_seconds: ttl,
                }
            },
        )
}

proptest! {
    #[test]
    fn any_bytes_as_a_plan_are_a_plan_within_bounds_or_a_clear_4xx(
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..512), plan_shaped()],
    ) {
        match put(body) {
            Ok(plan) => prop_assert!(within_bounds(&plan), "accepted out of bounds: {plan:?}"),
            Err(status) => prop_assert!(status == 400 || status == 422),
        }
    }

    #[test]
    fn valid_plans_round_trip(plan in valid_plan()) {
        let body = serde_json::to_vec(&plan).unwrap();
        prop_assert_eq!(put(body).unwrap(), plan);
    }

    #[test]
    fn any_fault_header_values_are_within_bounds_or_an_error_naming_the_header(
        latency in prop::option::of(".{0,24}"),
        status in prop::option::of(prop_oneof![".{0,8}", (0u32..1000).prop_map(|s| s.to_string())]),
        burn in prop::option::of(prop_oneof![".{0,24}", any::<u64>().prop_map(|n| n.to_string())]),
    ) {
        let get = |name: &str| match name {
            HeaderFaults::LATENCY => latency.clone(),
            HeaderFaults::ERROR_STATUS => status.clone(),
            HeaderFaults::CPU_BURN => burn.clone(),
            _ => None,
        };
        match HeaderFaults::parse(get) {
            Ok(parsed) => {
                        prop_assert!(parsed.latency_ms.is_none_or(|v| v <= MAX_LATENCY_MS));
                prop_assert!(parsed.cpu_burn_ms.is_none_or(|v| v <= MAX_CPU_BURN_MS));
                prop_assert!(parsed.error_status.is_none_or(|s| INJECTABLE_STATUSES.contains(&s)));
            }
            Err(e) => prop_assert!(
                [HeaderFaults::LATENCY, HeaderFaults::ERROR_STATUS, HeaderFaults::CPU_BURN].contains(&e.field)
            ),
        }
    }

    #[test]
    fn valid_fault_headers_round_trip(
        latency in prop::option::of(0..=MAX_LATENCY_MS),
        status in prop::option::of(prop::sample::select(&INJECTABLE_STATUSES[..])),
        burn in prop::option::of(0..=MAX_CPU_BURN_MS),
    ) {
        let get = |name: &str| match name {
            HeaderFaults::LATENCY => latency.map(|v| format!(" {v} ")),
            HeaderFaults::ERROR_STATUS => status.map(|v| v.to_string()),
            HeaderFaults::CPU_BURN => burn.map(|v| v.to_string()),
            _ => None,
        };
        let parsed = HeaderFaults::parse(get).unwrap();
        prop_assert_eq!((parsed.latency_ms, parsed.error_status, parsed.cpu_burn_ms), (latency, status, burn));
    }
}
