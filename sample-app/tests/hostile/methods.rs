//! Made-up methods — thousands of them, long ones, lowercase twins of real ones — are all
//! `_OTHER`: no new label value, no new series beyond the few `_OTHER` ones.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::{
    raw,
    siege::withstand,
    target::{Target, label_values},
};

/// Characters RFC 9110 allows in a method (`tchar`).
const TCHAR: &[u8] =
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn made_up_method(rng: &mut SmallRng) -> String {
    let len = rng.random_range(1..=40);
    (0..len)
        .map(|_| TCHAR[rng.random_range(0..TCHAR.len())] as char)
        .collect()
}

#[test]
fn thousands_of_made_up_methods_are_other_and_create_no_series() {
    let mut target = Target::spawn();
    let measured = withstand(&mut target, "made-up methods", |address| {
        let mut rng = SmallRng::seed_from_u64(20_000);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut methods: Vec<String> = (0..2_000).map(|_| made_up_method(&mut rng)).collect();
        methods.extend(["get", "Get", "POSTX", "M-SEARCH", "PROPFIND", "QUERY"].map(String::from));
        methods.push("X".repeat(1024));
        methods.push("Y".repeat(64 * 1024));
        let paths = [
            "/api/orders/1",
            "/api/orders",
            "/",
            "/no/such/route",
            "/health",
        ];
        let mut answers = Vec::new();
        for (n, method) in methods.iter().enumerate() {
            if Instant::now() > deadline {
                break;
            }
            let request = raw::request(method, paths[n % paths.len()], &[], b"");
            answers.push(raw::exchange(address, &request, Duration::from_secs(30)));
        }
        answers
    });
    let metrics = target.metrics();
    let methods = label_values(&metrics, "http_request_method");
    assert!(
        methods.iter().all(|m| [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
            "_OTHER"
        ]
        .contains(&m.as_str())),
        "a made-up method became a label value: {methods:?}"
    );
    assert!(methods.contains("_OTHER"));
    assert!(
        measured
            .statuses
            .keys()
            .all(|s| s.starts_with('4') || s == "closed"),
        "a made-up method was served: {:?}",
        measured.statuses
    );
}
