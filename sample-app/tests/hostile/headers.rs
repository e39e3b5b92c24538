//! Headers as a hostile client sends them — one of 100 KiB, thousands of them, invalid or
//! repeated `traceparent`, `tracestate` and `baggage` of any size, bytes outside ASCII — get
//! a 4xx or are ignored: a bad trace context starts a new trace, as W3C Trace Context says.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::{raw, siege::withstand, target::Target};

/// A trace id no valid request in this file carries: if it shows up in a log line, an invalid
/// `traceparent` was accepted.
const BAIT: &str = "abcdef0123456789abcdef0123456789";

fn invalid_traceparents() -> Vec<String> {
    let mut values: Vec<String> = [
        format!("00-{BAIT}-00f067aa0ba902b7"),
        format!("00-{BAIT}-00f067aa0ba902b7-01-extra"),
        format!("00-{}-00f067aa0ba902b7-01", BAIT.to_uppercase()),
        format!("ff-{BAIT}-00f067aa0ba902b7-01"),
        format!("0-{BAIT}-00f067aa0ba902b7-01"),
        format!("00-{BAIT}-0000000000000000-01"),
        format!("00-{BAIT}-00f067aa0ba902b-01"),
        format!("00-{BAIT}x-00f067aa0ba902b7-01"),
        format!("00_{BAIT}_00f067aa0ba902b7_01"),
        format!(" 00-{BAIT}-00f067aa0ba902b7-01 x"),
        format!("00-{BAIT}-00f067aa0ba902b7-zz"),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_owned(),
        String::new(),
        "-".repeat(55),
        "00".to_owned(),
        "x".repeat(8 * 1024),
    ]
    .into();
    let mut rng = SmallRng::seed_from_u64(55);
    for _ in 0..300 {
        let len = rng.random_range(0..120);
        values.push(
            (0..len)
                .map(|_| rng.random_range(b' '..=b'~') as char)
                .collect(),
        );
    }
    values
}

fn hostile_header_sets() -> Vec<Vec<u8>> {
    let path = "/api/orders/1";
    let mut requests = Vec::new();
    for value in invalid_traceparents() {
        requests.push(raw::request("GET", path, &[("traceparent", &value)], b""));
    }
    let valid = format!("00-{}-00f067aa0ba902b7-01", "1".repeat(32));
    let huge_state = (0..2_000)
        .map(|n| format!("k{n}=v{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let huge_baggage = (0..5_000)
        .map(|n| format!("b{n}=v"))
        .collect::<Vec<_>>()
        .join(",");
    for (name, value) in [
        ("tracestate", huge_state.clone()),
        ("tracestate", "=,=,,,==,k=,=v,@@@=###".to_owned()),
        ("tracestate", "k".repeat(100 * 1024)),
        ("baggage", huge_baggage.clone()),
        ("baggage", "%%%;;;===,,,".to_owned()),
        ("x-big", "v".repeat(100 * 1024)),
        ("user-agent", "u".repeat(100 * 1024)),
        ("x-too-big", "v".repeat(200 * 1024)),
    ] {
        requests.push(raw::request(
            "GET",
            path,
            &[("traceparent", &valid), (name, &value)],
            b"",
        ));
    }
    // Repeated trace headers, with different values.
    let repeated: Vec<(&str, String)> = (0..40)
        .map(|n| ("traceparent", format!("00-{BAIT}-{n:016x}-01")))
        .chain((0..40).map(|n| ("tracestate", format!("k{n}=v"))))
        .collect();
    let repeated: Vec<(&str, &str)> = repeated.iter().map(|(k, v)| (*k, v.as_str())).collect();
    requests.push(raw::request("GET", path, &repeated, b""));
    // Thousands of headers (actix takes 96 and answers 431 to more), and a few under that.
    for count in [90, 97, 5_000] {
        let names: Vec<String> = (0..count).map(|n| format!("x-h-{n}")).collect();
        let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        requests.push(raw::request("GET", path, &headers, b""));
    }
    // Bytes outside ASCII in values, and in the trace context itself.
    let mut obs_text = raw::request("GET", path, &[], b"");
    let at = obs_text.len() - 2;
    obs_text.splice(
        at..at,
        b"traceparent: 00-\xff\xfe-01\r\nx-bin: \x80\x81\xff\r\n"
            .iter()
            .copied(),
    );
    requests.push(obs_text);
    // Header names and lines a parser must refuse.
    for broken in [
        "bad header\r\n".as_bytes(),
        b": no-name\r\n",
        b"x-nul: a\x00b\r\n",
        b"x-folded: a\r\n  folded\r\n",
        b"x\x7fdel: v\r\n",
    ] {
        let mut request = raw::request("GET", path, &[], b"");
        let at = request.len() - 2;
        request.splice(at..at, broken.iter().copied());
        requests.push(request);
    }
    // Fault headers with values that are not numbers (faults are enabled).
    for (name, value) in [
        ("x-fault-latency-ms", "99999999999999999999"),
        ("x-fault-latency-ms", "-1"),
        ("x-fault-cpu-burn-ms", "1e3"),
        ("x-fault-error-status", "200"),
        ("x-fault-error-status", "600"),
        ("x-fault-error-status", ""),
    ] {
        requests.push(raw::request("GET", path, &[(name, value)], b""));
    }
    requests
}

#[test]
fn hostile_headers_get_a_4xx_or_are_ignored_and_an_invalid_trace_context_starts_a_new_trace() {
    let mut target = Target::spawn();
    withstand(&mut target, "hostile headers", |address| {
        let deadline = Instant::now() + Duration::from_secs(60);
        raw::exchange_all(address, hostile_header_sets(), deadline)
    });
    let logs = target.settled_logs();
    let accepted: Vec<_> = logs.iter().filter(|l| l["trace_id"] == BAIT).collect();
    assert!(
        accepted.is_empty(),
        "an invalid traceparent was continued: {accepted:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l["target"] == "access" && l["trace_id"] == "1".repeat(32).as_str()),
        "a valid traceparent with a huge tracestate or baggage should still be continued"
    );
}
