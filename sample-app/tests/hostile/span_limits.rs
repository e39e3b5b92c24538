//! Span attributes copied from the request (`user_agent.original`, `server.address`,
//! `url.path`) are cut to OpenTelemetry's attribute value length limit (1,024 bytes by default),
//! and spans waiting for a collector that does not read hold at most 16 MiB; past that they are
//! dropped and counted (`otel_sdk_processor_span_processed_total{error_type="queue_full"}`).
//! Before, a 60 KB `User-Agent` with a 30 KB `Host` made a 90 KB span, and with a collector that
//! accepted connections and never read, 3,000 such requests took the service from 12 to 345 MiB.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::{
    raw,
    target::{Target, rss_kib},
};

const USER_AGENT_BYTES: usize = 60_000;
const HOST_BYTES: usize = 30_000;

/// A request whose span would carry a 60 KB `user_agent.original` and a 30 KB
/// `server.address`.
fn huge_headers_request() -> Vec<u8> {
    format!(
        "GET /api/orders/1 HTTP/1.1\r\nhost: {}\r\nuser-agent: {}\r\nconnection: close\r\n\r\n",
        "h".repeat(HOST_BYTES),
        "u".repeat(USER_AGENT_BYTES)
    )
    .into_bytes()
}

/// A collector that accepts connections and never reads from them (up to 64 of them, held
/// until the test process ends).
fn hung_collector() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().unwrap();
    thread::spawn(move || {
        let held: Vec<TcpStream> = listener.incoming().take(64).flatten().collect();
        thread::sleep(Duration::from_secs(600));
        drop(held);
    });
    address
}

/// An OTLP/HTTP collector that keeps every request body and answers 200 (an empty
/// `ExportTraceServiceResponse`).
fn capturing_collector() -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().unwrap();
    let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let kept = bodies.clone();
    thread::spawn(move || {
        for stream in listener.incoming().take(64).flatten() {
            let kept = kept.clone();
            thread::spawn(move || serve_collector_connection(stream, &kept));
        }
    });
    (address, bodies)
}

fn serve_collector_connection(stream: TcpStream, kept: &Mutex<Vec<Vec<u8>>>) {
    let mut writer = stream.try_clone().expect("a second handle");
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        kept.lock().unwrap().push(body);
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

fn contains_run(haystack: &[u8], byte: u8, length: usize) -> bool {
    let mut run = 0;
    for &b in haystack {
        run = if b == byte { run + 1 } else { 0 };
        if run >= length {
            return true;
        }
    }
    false
}

#[test]
fn attribute_values_from_request_headers_are_cut_to_the_length_limit() {
    let (collector, bodies) = capturing_collector();
    let endpoint = format!("http://{collector}");
    let target = Target::spawn_with(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
    ]);
    for _ in 0..5 {
        let answer = raw::exchange(
            target.address,
            &huge_headers_request(),
            Duration::from_secs(20),
        );
        assert_eq!(answer.status, Some(404), "{}", answer.head);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let exported = loop {
        let bodies = bodies.lock().unwrap().clone();
        if bodies.iter().any(|b| contains_run(b, b'u', 1024)) {
            break bodies;
        }
        assert!(
            Instant::now() < deadline,
            "no span with the user agent reached the collector ({} exports)",
            bodies.len()
        );
        thread::sleep(Duration::from_millis(100));
    };
    let largest = exported.iter().map(Vec::len).max().unwrap_or_default();
    for (byte, name) in [(b'u', "user_agent.original"), (b'h', "server.address")] {
        assert!(
            exported.iter().any(|b| contains_run(b, byte, 1024)),
            "{name} was not exported at its 1,024-byte limit"
        );
        assert!(
            !exported.iter().any(|b| contains_run(b, byte, 1025)),
            "{name} was exported longer than 1,024 bytes"
        );
    }
    eprintln!(
        "hostile: spans of requests with a {USER_AGENT_BYTES}-byte User-Agent and a \
         {HOST_BYTES}-byte Host were exported with both cut to 1,024 bytes; largest export \
         {largest} bytes in {} exports",
        exported.len()
    );
}

/// Sends `count` requests with huge headers from 4 threads, sampling RSS; returns the peak.
fn flood_with_huge_headers(target: &Target, count: usize) -> u64 {
    let address = target.address;
    let pid = target.pid();
    let deadline = Instant::now() + Duration::from_secs(240);
    let senders: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let request = huge_headers_request();
                let mut peak = 0;
                for _ in 0..count / 4 {
                    if Instant::now() > deadline {
                        break;
                    }
                    let answer = raw::exchange(address, &request, Duration::from_secs(20));
                    assert_eq!(answer.status, Some(404), "{}", answer.head);
                    peak = peak.max(rss_kib(pid).unwrap_or(0));
                }
                peak
            })
        })
        .collect();
    senders
        .into_iter()
        .map(|s| s.join().expect("a sender"))
        .max()
        .unwrap_or(0)
}

fn queue_full(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("otel_sdk_processor_span_processed_total{error_type=\"queue_full\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("the queue_full count on /metrics")
}

#[test]
fn with_a_collector_that_never_reads_span_memory_stays_bounded() {
    const REQUESTS: usize = 3_000;
    /// What the queue may hold (16 MiB) plus connection buffers and allocator slack.
    const GROWTH_LIMIT_KIB: u64 = 48 * 1024;
    let collector = format!("http://{}", hung_collector());
    let mut report = Vec::new();
    // The default limit cuts each span to a few KiB, so the queue's 2,048 spans bound it; a
    // limit of 64 KiB keeps 90 KB spans, and the 16 MiB byte bound does.
    for (limit, byte_bound_reached) in [("1024", false), ("65536", true)] {
        let target = Target::spawn_with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", limit),
        ]);
        let before = target.rss_kib();
        let started = Instant::now();
        let peak = flood_with_huge_headers(&target, REQUESTS);
        let elapsed = started.elapsed();
        let after = target.rss_kib();
        let dropped = queue_full(&target.metrics());
        report.push(format!(
            "limit {limit} B: {REQUESTS} requests in {:.1} s, RSS {:.1} → peak {:.1} → {:.1} MiB, \
             {dropped} spans dropped (queue full)",
            elapsed.as_secs_f64(),
            before as f64 / 1024.0,
            peak.max(after) as f64 / 1024.0,
            after as f64 / 1024.0
        ));
        assert!(
            peak.max(after) <= before + GROWTH_LIMIT_KIB,
            "limit {limit}: RSS grew from {before} KiB to {} KiB",
            peak.max(after)
        );
        assert!(dropped > 0, "limit {limit}: nothing was dropped");
        if byte_bound_reached {
            assert!(
                dropped as usize > REQUESTS - 2_048,
                "limit {limit}: the byte bound should drop more than the span bound alone \
                 ({dropped} dropped)"
            );
        }
    }
    for line in report {
        eprintln!("hostile: a collector that never reads: {line}");
    }
}
