//! Paths no router expects — 120 KiB long, invalid UTF-8, percent-encoded nonsense, dot
//! segments, every request-target form — get a 4xx, and `http_route` stays a route template
//! or `unmatched`: the raw path never becomes a label value.

use std::time::{Duration, Instant};

use sample_app::routes::templates::{APP_ROUTES, OPERATIONAL_ROUTES};

use crate::{
    raw,
    siege::withstand,
    target::{Target, label_values},
};

/// Request targets as bytes: some are not valid UTF-8 on purpose.
fn hostile_targets() -> Vec<Vec<u8>> {
    let mut targets: Vec<Vec<u8>> = [
        "/%2e%2e/%2e%2e/etc/passwd",
        "/api/../metrics",
        "/api/orders/../orders/1",
        "/api/orders/1/..",
        "/./health",
        "//health",
        "/health/",
        "/HEALTH",
        "/api/orders/%31",
        "/api/orders/%FF%FE",
        "/api/orders/%",
        "/api/orders/%ZZ",
        "/api/orders/%00",
        "/api/orders/-0",
        "/api/orders/1.0",
        "/api/orders/99999999999999999999999999",
        "/api/inventory/%00",
        "/api/inventory/%ZZ",
        "/api/inventory/%F0%9F%92%A9",
        "/api/inventory/a%2Fb",
        "/error?type=%FF%FE",
        "/error?type=%",
        "/error?type=500&type=404",
        "/generate-load?ms=%00",
        "/generate-load?ms=1&ms=2",
        "/debug/pprof/profile?seconds=%FF",
        "/debug/pprof/profile?seconds=0x10",
        "/?%00=%00",
        "*",
        "http://evil.example/api/orders/1",
        "127.0.0.1:8080",
        "/api/orders/1#fragment",
        "/api/orders/1?;;;;&&&&====",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect();
    // Invalid UTF-8 as raw bytes (not percent-encoded).
    targets.push(b"/api/orders/\xff\xfe".to_vec());
    targets.push(b"/api/inventory/\xc3\x28".to_vec());
    targets.push(b"/\x80\x81\x82".to_vec());
    // Long: under actix's 128 KiB limit for the request head, and over it.
    targets.push(format!("/{}", "a".repeat(120 * 1024)).into_bytes());
    targets.push(format!("/api/orders/{}", "9".repeat(100_000)).into_bytes());
    targets.push(format!("/api/inventory/{}", "x".repeat(100_000)).into_bytes());
    targets.push(format!("/api/orders/1?{}", "a=1&".repeat(25_000)).into_bytes());
    targets.push(format!("/{}", "../".repeat(40_000)).into_bytes());
    targets.push(format!("/{}", "%2e%2e%2f".repeat(14_000)).into_bytes());
    targets.push(format!("/{}", "b".repeat(200 * 1024)).into_bytes());
    // Many distinct paths: each must land on a template or on `unmatched`.
    for n in 0..500 {
        targets.push(format!("/probe-{n}/{}", "c".repeat(n % 50)).into_bytes());
        targets.push(format!("/api/orders/{n}x").into_bytes());
    }
    targets
}

#[test]
fn hostile_paths_get_a_4xx_and_never_become_label_values() {
    let mut target = Target::spawn();
    withstand(&mut target, "hostile paths", |address| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let requests = hostile_targets().into_iter().flat_map(|t| {
            [
                raw::request("GET", &t, &[], b""),
                raw::request("HEAD", &t, &[], b""),
            ]
        });
        raw::exchange_all(address, requests, deadline)
    });
    let routes = label_values(&target.metrics(), "http_route");
    // The route templates (routes/templates.rs), the admin route, and the one label for every
    // path no route matches.
    let known: Vec<&str> = APP_ROUTES
        .iter()
        .chain(OPERATIONAL_ROUTES)
        .copied()
        .chain(["/admin/faults", "unmatched"])
        .collect();
    let raw_paths: Vec<_> = routes
        .iter()
        .filter(|r| !known.contains(&r.as_str()))
        .collect();
    assert!(
        raw_paths.is_empty(),
        "raw paths became route labels: {raw_paths:?}"
    );
}
