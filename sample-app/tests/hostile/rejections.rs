//! Requests actix's HTTP/1 layer refuses before routing — a repeated or invalid
//! `Content-Length`, a control character in a header, too many headers, a head that never
//! completes — get the JSON body every other error has, naming the problem, and each is counted
//! in `http_server_protocol_errors_total{reason}` and logged. Before, they got an empty body and
//! appeared in no metric.

use std::{
    io::Write,
    net::TcpStream,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    raw::{self, Answer},
    target::Target,
};

fn send(target: &Target, bytes: &[u8]) -> Answer {
    raw::exchange(target.address, bytes, Duration::from_secs(20))
}

fn head_with(extra: &[u8]) -> Vec<u8> {
    let mut request =
        b"GET /api/orders/1 HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n".to_vec();
    request.extend_from_slice(extra);
    request.extend_from_slice(b"\r\n");
    request
}

fn json_error(answer: &Answer) -> Value {
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "not JSON: {}",
        answer.head
    );
    serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("{e}: {:?} after {}", answer.body_text(), answer.head))
}

fn counted(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("http_server_protocol_errors_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} line in /metrics"))
}

#[test]
fn requests_refused_before_routing_get_a_json_body_are_counted_and_logged() {
    let target = Target::spawn();
    let before = target.metrics();
    for reason in [
        "invalid_header",
        "head_too_large",
        "request_timeout",
        "invalid_method",
    ] {
        assert_eq!(counted(&before, reason), 0, "{reason} before any refusal");
    }

    // A first head that never completes: actix's own head timer (5 s), answered with JSON.
    let address = target.address;
    let stalled = thread::spawn(move || {
        let started = Instant::now();
        let mut stream = TcpStream::connect(address).expect("connects");
        stream.write_all(b"GET /api/orders/1 HT").expect("sent");
        raw::read_answer(stream, started, Duration::from_secs(20))
    });

    let invalid_header: Vec<Vec<u8>> = vec![
        head_with(b"content-length: 1\r\ncontent-length: 2\r\n"),
        head_with(b"content-length: +5\r\n"),
        head_with(b"content-length: five\r\n"),
        head_with(b"x-control: a\x01b\r\n"),
        b"GET /api/orders/1 HTTP/1.1\r\nconnection: close\r\n\r\n".to_vec(),
    ];
    for request in &invalid_header {
        let answer = send(&target, request);
        assert_eq!(answer.status, Some(400), "{}", answer.head);
        let body = json_error(&answer);
        assert_eq!(body["error"], "invalid_header", "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains("Content-Length"),
            "{body}"
        );
    }

    let many: Vec<u8> = (0..100)
        .flat_map(|n| format!("x-h-{n}: v\r\n").into_bytes())
        .collect();
    let answer = send(&target, &head_with(&many));
    assert_eq!(answer.status, Some(431), "{}", answer.head);
    assert_eq!(json_error(&answer)["error"], "head_too_large");

    let answer = send(&target, b"G(T /api/orders/1 HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(answer.status, Some(400), "{}", answer.head);
    assert_eq!(
        json_error(&answer)["error"],
        "invalid_header",
        "a bad method token is a header error to httparse"
    );

    let answer = stalled.join().unwrap();
    assert_eq!(answer.status, Some(408), "{}", answer.head);
    let body = json_error(&answer);
    assert_eq!(body["error"], "request_timeout");
    assert!(
        body["detail"].as_str().unwrap().contains("5000 ms"),
        "{body}"
    );

    // An ordinary 400 from the app is still the app's (not taken for actix's).
    let answer = send(&target, &raw::request("HEAD", "/api/orders/abc", &[], b""));
    assert_eq!(answer.status, Some(400), "{}", answer.head);
    assert!(
        !answer.head.contains("content-length: 0"),
        "{}",
        answer.head
    );

    let after = target.metrics();
    assert_eq!(
        counted(&after, "invalid_header"),
        invalid_header.len() as u64 + 1
    );
    assert_eq!(counted(&after, "head_too_large"), 1);
    assert_eq!(counted(&after, "request_timeout"), 1);
    let logged = target
        .settled_logs()
        .into_iter()
        .filter(|l| l["message"] == "request refused before routing")
        .count();
    assert_eq!(logged, invalid_header.len() + 3);
    eprintln!(
        "hostile: {logged} requests refused before routing, each answered with JSON, counted and logged"
    );
}
