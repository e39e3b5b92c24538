//! Bodies that lie — the wrong content type, a length they never deliver, a chunked body
//! that never ends, JSON nested deeper than any parser's stack, lengths in the exabytes —
//! get a 4xx, and a body that stops arriving is given up on instead of holding the request
//! open for ever.

use std::{
    io::Write,
    net::{Shutdown, SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use crate::{
    raw::{self, Answer},
    siege::withstand,
    target::Target,
};

const JSON: (&str, &str) = ("content-type", "application/json");

fn lying_requests() -> Vec<Vec<u8>> {
    let order = br#"{"item": "widget", "quantity": 2}"#;
    let mut requests = Vec::new();
    for content_type in [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "application/jsonx",
        "json",
        "application/json; charset=utf-16",
        "application/vnd.evil+json",
        "*/*",
        ";;;",
    ] {
        requests.push(raw::request(
            "POST",
            "/api/orders",
            &[("content-type", content_type)],
            order,
        ));
    }
    requests.push(raw::request("POST", "/api/orders", &[], order));
    let deep_array = "[".repeat(16_000);
    let deep_object = r#"{"a":"#.repeat(3_000);
    let duplicate_keys = format!("{{{}\"item\":\"x\"}}", r#""quantity":1,"#.repeat(1_000));
    let bodies: Vec<Vec<u8>> = vec![
        deep_array.into_bytes(),
        deep_object.into_bytes(),
        duplicate_keys.into_bytes(),
        br#"{"item": "\ud800", "quantity": 1}"#.to_vec(),
        br#"{"item": "widget", "quantity": 1e999999}"#.to_vec(),
        br#"{"item": "widget", "quantity": -0}"#.to_vec(),
        b"\xff\xfe{\x00}".to_vec(),
        b"\0\0\0\0".to_vec(),
        vec![b' '; 16 * 1024 - 1],
        format!("{{\"item\": \"{}\", \"quantity\": 1}}", "x".repeat(20_000)).into_bytes(),
    ];
    for body in &bodies {
        requests.push(raw::request("POST", "/api/orders", &[JSON], body));
        requests.push(raw::request("PUT", "/admin/faults", &[JSON], body));
    }
    // Lengths that are lies or nonsense; framing a parser must refuse.
    for head in [
        "content-length: 10000000000000\r\n",
        "content-length: 99999999999999999999999999\r\n",
        "content-length: -1\r\n",
        "content-length: 5\r\ncontent-length: 6\r\n",
        "content-length: 5\r\ntransfer-encoding: chunked\r\n",
        "transfer-encoding: gzip, chunked\r\n",
        "transfer-encoding: chunked\r\n\r\nzz\r\n",
        "transfer-encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
    ] {
        let mut request = raw::request("POST", "/api/orders", &[JSON], b"");
        let at = request.len() - 2;
        request.splice(at..at, head.bytes());
        requests.push(request);
    }
    // A chunked body over the 16 KiB limit.
    let mut chunked = raw::request(
        "POST",
        "/api/orders",
        &[JSON, ("transfer-encoding", "chunked")],
        b"",
    );
    for _ in 0..40 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    requests.push(chunked);
    // A body where none is expected.
    requests.push(raw::request(
        "GET",
        "/api/orders/1",
        &[JSON],
        &[b'x'; 5_000],
    ));
    requests
}

/// Sends `head` and the first part of a body, then either closes the sending side
/// (`truncate`) or just stops sending, and waits at most `wait` for an answer.
fn stop_sending(address: SocketAddr, head: &[u8], truncate: bool, wait: Duration) -> Answer {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).expect("connects");
    stream.write_all(head).expect("the head is sent");
    if truncate {
        let _ = stream.shutdown(Shutdown::Write);
    }
    raw::read_answer(stream, started, wait)
}

#[test]
fn lying_bodies_get_a_4xx() {
    let mut target = Target::spawn();
    withstand(&mut target, "lying bodies", |address| {
        let deadline = Instant::now() + Duration::from_secs(60);
        raw::exchange_all(address, lying_requests(), deadline)
    });
}

/// How long a client may take to deliver a body before it is given up on: the service's
/// limit plus a margin for a busy machine. (Without the limit, these would wait for ever.)
const GIVE_UP_WITHIN: Duration = Duration::from_secs(20);

#[test]
fn a_body_that_stops_arriving_is_given_up_on() {
    let mut target = Target::spawn();
    withstand(&mut target, "bodies that stop arriving", |address| {
        let announced = b"POST /api/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"item\": ";
        let chunked = b"POST /api/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"ite\r\n";
        let stalled: Vec<_> = [
            (announced.as_slice(), false),
            (chunked, false),
            (announced, true),
            (chunked, true),
        ]
        .into_iter()
        .map(|(head, truncate)| {
            let head = head.to_vec();
            thread::spawn(move || stop_sending(address, &head, truncate, GIVE_UP_WITHIN))
        })
        .collect();
        let answers: Vec<Answer> = stalled.into_iter().map(|t| t.join().unwrap()).collect();
        for answer in &answers {
            assert!(
                answer.elapsed < GIVE_UP_WITHIN,
                "a stalled body held its request for {:?} without an answer",
                answer.elapsed
            );
        }
        answers
    });
}
