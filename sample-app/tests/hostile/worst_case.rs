//! The most series hostile input can make: every method (the nine and a made-up one) on every
//! route, in every way input alone reaches a status — deliberate failures of the demo
//! endpoints and fault headers included (faults are enabled, as in compose). The sample
//! lines of `/metrics` afterwards are the worst case `docs/contracts.md` states
//! (`worst_case_samples`), and must stay under it.

use std::{
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use sample_app::faults::INJECTABLE_STATUSES;

use crate::{
    raw::{self, Answer},
    target::{Target, contract_worst_case_samples, label_values, sample_lines},
};

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "MADE-UP",
];

const APP_PATHS: [&str; 8] = [
    "/",
    "/slow",
    "/error?type=404",
    "/generate-load?ms=1",
    "/external",
    "/api/orders",
    "/api/orders/1",
    "/api/inventory/item",
];

/// One way to reach a route: the method loop adds every other method (405s and HEADs).
struct Shape {
    method: &'static str,
    path: String,
    json: bool,
    body: Vec<u8>,
}

fn get(path: &str) -> Shape {
    Shape {
        method: "GET",
        path: path.to_owned(),
        json: false,
        body: Vec::new(),
    }
}

/// Requests that reach each route's own statuses.
fn statuses_of_each_route() -> Vec<Shape> {
    let mut shapes: Vec<Shape> = [
        "/",
        "/slow",
        "/error?type=500",
        "/error?type=404",
        "/error?type=timeout",
        "/error?type=bad",
        "/generate-load?ms=1",
        "/generate-load?ms=0",
        "/external",
        "/api/orders/1",
        "/api/orders/x",
        "/api/inventory/item",
        &format!("/api/inventory/{}", "x".repeat(65)),
        "/health",
        "/ready",
        "/metrics",
        "/debug/pprof/profile?seconds=x",
        "/debug/pprof/heap",
        "/admin/faults",
        "/no/such/route",
    ]
    .into_iter()
    .map(get)
    .collect();
    let bodies: [(bool, &[u8]); 6] = [
        (true, br#"{"item": "widget", "quantity": 1}"#),
        (true, br#"{"item": "widget", "quantity": 0}"#),
        (true, br#"{"error_rate": 2}"#),
        (true, b"not json"),
        (true, &[b' '; 17_000]),
        (false, b"x"),
    ];
    for (json, body) in bodies {
        for (method, path) in [("POST", "/api/orders"), ("PUT", "/admin/faults")] {
            shapes.push(Shape {
                method,
                path: path.to_owned(),
                json,
                body: body.to_vec(),
            });
        }
    }
    shapes
}

fn requests() -> Vec<Vec<u8>> {
    let mut requests = Vec::new();
    for shape in statuses_of_each_route() {
        let headers: &[(&str, &str)] = if shape.json {
            &[("content-type", "application/json")]
        } else {
            &[]
        };
        requests.push(raw::request(
            shape.method,
            &shape.path,
            headers,
            &shape.body,
        ));
        for other in METHODS {
            requests.push(raw::request(other, &shape.path, &[], b""));
        }
    }
    // Fault headers: every status a fault may inject, on every route with every method; and
    // every status there is, which must be refused (400) wherever it is asked for.
    for status in INJECTABLE_STATUSES {
        let status = status.to_string();
        for path in APP_PATHS {
            for method in METHODS {
                let header = [("x-fault-error-status", status.as_str())];
                requests.push(raw::request(method, path, &header, b""));
            }
        }
    }
    for status in 400..=599u16 {
        let status = status.to_string();
        let header = [("x-fault-error-status", status.as_str())];
        for method in METHODS {
            requests.push(raw::request(method, "/api/orders/1", &header, b""));
        }
        for path in APP_PATHS {
            requests.push(raw::request("GET", path, &header, b""));
        }
    }
    requests
}

/// Sends `requests` from `lanes` threads at once (a stalled or slow request then holds one
/// lane only).
fn in_lanes(address: SocketAddr, requests: Vec<Vec<u8>>, lanes: usize) -> Vec<Answer> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut split: Vec<Vec<Vec<u8>>> = vec![Vec::new(); lanes];
    for (n, request) in requests.into_iter().enumerate() {
        split[n % lanes].push(request);
    }
    let handles: Vec<_> = split
        .into_iter()
        .map(|lane| thread::spawn(move || raw::exchange_all(address, lane, deadline)))
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// The statuses only timing reaches, for GET and HEAD alike: a body that stops arriving
/// (408), more CPU bursts or profile pulls (CPU and heap) at once than allowed (429).
fn concurrent_extras(address: SocketAddr) -> Vec<Answer> {
    let stalled = |path: &str, method: &str| {
        let mut head = raw::request(method, path, &[("content-type", "application/json")], b"");
        let at = head.len() - 2;
        head.splice(at..at, b"content-length: 100\r\n".iter().copied());
        head.extend_from_slice(b"{");
        head
    };
    let mut requests = vec![
        stalled("/api/orders", "POST"),
        stalled("/admin/faults", "PUT"),
    ];
    for method in ["GET", "HEAD"] {
        for _ in 0..6 {
            requests.push(raw::request(method, "/generate-load?ms=400", &[], b""));
        }
        for path in ["/debug/pprof/profile?seconds=1", "/debug/pprof/heap"] {
            for _ in 0..6 {
                requests.push(raw::request(method, path, &[], b""));
            }
        }
    }
    let handles: Vec<_> = requests
        .into_iter()
        .map(|r| thread::spawn(move || raw::exchange(address, &r, Duration::from_secs(30))))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn the_worst_case_input_can_reach_stays_within_the_stated_bound() {
    let mut target = Target::spawn();
    let started = Instant::now();
    let mut answers = concurrent_extras(target.address);
    answers.extend(in_lanes(target.address, requests(), 4));
    let metrics = target.metrics();
    let samples = sample_lines(&metrics);
    let bound = contract_worst_case_samples();
    eprintln!(
        "hostile: worst case: {} requests in {:.1} s; {samples} sample lines ({} bytes) of {bound}; \
         statuses {:?}",
        answers.len(),
        started.elapsed().as_secs_f64(),
        metrics.len(),
        label_values(&metrics, "http_response_status_code"),
    );
    assert!(
        target.is_running() && !target.stderr().contains("panicked"),
        "{}",
        target.stderr()
    );
    assert!(
        samples <= bound,
        "/metrics has {samples} sample lines, docs/contracts.md bounds it at {bound}"
    );
}
