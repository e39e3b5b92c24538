//! HTTP/1.1 spoken by hand over `std::net::TcpStream`, so a test can send what a well-behaved
//! client library refuses to: made-up methods, invalid bytes in the target, thousands of
//! headers, lying lengths, bodies that never end. One request per connection
//! (`connection: close`), the answer read until the server closes or `timeout` passes.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// What came back on one connection.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status, or `None` when the server closed (or the time ran out) without one.
    pub status: Option<u16>,
    /// The status line and headers, lossily decoded (for messages).
    pub head: String,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

impl Answer {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request with `connection: close` and, when `body` is not empty, its `content-length`.
pub fn request(
    method: &str,
    target: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} ").into_bytes();
    out.extend_from_slice(target.as_ref());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// `GET path` with nothing unusual.
pub fn get(address: SocketAddr, path: &str) -> Answer {
    exchange(
        address,
        &request("GET", path, &[], b""),
        Duration::from_secs(30),
    )
}

/// Sends each request on its own connection, one after the other, until `deadline`.
pub fn exchange_all(
    address: SocketAddr,
    requests: impl IntoIterator<Item = Vec<u8>>,
    deadline: Instant,
) -> Vec<Answer> {
    let mut answers = Vec::new();
    for request in requests {
        if Instant::now() > deadline {
            break;
        }
        answers.push(exchange(address, &request, Duration::from_secs(30)));
    }
    answers
}

/// Sends `bytes` as they are and reads the answer.
pub fn exchange(address: SocketAddr, bytes: &[u8], timeout: Duration) -> Answer {
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect_timeout(&address, timeout) else {
        return no_answer(started, "could not connect");
    };
    // A server may answer (413, 431) and close before it read everything: keep reading.
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = stream.write_all(bytes);
    read_answer(stream, started, timeout)
}

/// Reads until the server closes, `timeout` passes, or the read fails (a reset after an
/// early answer still leaves that answer).
pub fn read_answer(mut stream: TcpStream, started: Instant, timeout: Duration) -> Answer {
    let mut received = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                if is_complete(&received) {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    parse(&received, started)
}

/// A whole answer with a `content-length` has arrived (others are read until the server
/// closes: every request here says `connection: close`).
fn is_complete(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|length| received.len() >= end + 4 + length)
}

fn no_answer(started: Instant, why: &str) -> Answer {
    Answer {
        status: None,
        head: why.to_owned(),
        body: Vec::new(),
        elapsed: started.elapsed(),
    }
}

fn parse(received: &[u8], started: Instant) -> Answer {
    let split = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(received.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&received[..split]).into_owned();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    let mut body = received[split..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Answer {
        status,
        head,
        body,
        elapsed: started.elapsed(),
    }
}

/// The payload of a chunked body (enough for `/metrics`; trailers ignored).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else {
            break;
        };
        let start = line_end + 2;
        let Some(chunk) = body.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(chunk);
        body = body.get(start + size + 2..).unwrap_or_default();
    }
    out
}
