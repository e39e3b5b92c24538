//! A kept-alive connection that starts a second request and then goes quiet — a partial head
//! (`G`), the oldest slow-loris move — is closed within the client request timeout (5 s by
//! default) plus a little, like a first request that stalls. Before, actix's head timer covered
//! only the first request of a connection and its keep-alive timer stopped at the first byte, so
//! such a connection was held until the client went away (1,003 held for 14 min in one probe).

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use crate::{raw, target::Target};

/// Connections in the test: enough to matter, few enough for a shared machine.
const CONNECTIONS: usize = 60;

/// How long the test waits for the server to close them all: the 5 s default client request
/// timeout, with room for a busy machine. Before the fix, none was ever closed.
const DEADLINE: Duration = Duration::from_secs(20);

/// One ordinary request on a kept-alive connection, its whole answer read, then `partial`.
fn request_then_stall(address: std::net::SocketAddr, partial: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(address).expect("connects");
    stream
        .write_all(b"GET /api/orders/1 HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .expect("the request is sent");
    let started = Instant::now();
    let answer = raw::read_answer(
        stream.try_clone().expect("a second handle"),
        started,
        Duration::from_secs(10),
    );
    assert!(
        answer.status.is_some(),
        "the first request was not answered: {}",
        answer.head
    );
    stream.write_all(partial).expect("the partial head is sent");
    stream
}

/// Waits until the server closes `stream` (EOF or reset) or `deadline`; returns what it sent
/// before closing, or `None` if it never closed.
fn closed_by_server(stream: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(received),
        }
    }
}

#[test]
fn a_kept_alive_connection_that_stalls_mid_head_is_closed() {
    let target = Target::spawn();
    let started = Instant::now();
    let mut streams: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|n| {
            let partial: &[u8] = if n % 2 == 0 {
                b"G"
            } else {
                b"GET /api/orders/1 HTTP/1.1\r\nhost: 127"
            };
            request_then_stall(target.address, partial)
        })
        .collect();
    let deadline = started + DEADLINE;
    let mut held = 0;
    let mut slowest = Duration::ZERO;
    let mut answered_408 = 0;
    for stream in &mut streams {
        match closed_by_server(stream, deadline) {
            None => held += 1,
            Some(sent) => {
                slowest = slowest.max(started.elapsed());
                if sent.starts_with(b"HTTP/1.1 408") {
                    answered_408 += 1;
                }
            }
        }
    }
    eprintln!(
        "hostile: {CONNECTIONS} connections stalled mid-head after a request: {} closed within \
         {slowest:?} ({answered_408} with a 408), {held} still held after {DEADLINE:?}",
        CONNECTIONS - held
    );
    assert_eq!(
        held, 0,
        "{held} of {CONNECTIONS} connections that stalled mid-head were still open after {DEADLINE:?}"
    );
    // And the service still answers.
    assert_eq!(raw::get(target.address, "/health").status, Some(200));
}
