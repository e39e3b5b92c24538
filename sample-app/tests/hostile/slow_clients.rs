//! Slow clients — a request head or a body trickling in a byte per second — are given up on
//! after a few seconds (actix's 5 s for the head, the service's limit for a JSON body), and
//! while they trickle, everyone else is served.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use crate::{raw::Answer, siege::withstand, target::Target};

/// Bytes a slow client sends at most, one a second: the test's own bound. The service must
/// give up before the client runs out.
const MAX_BYTES: usize = 14;

/// Sends `prefix` at once, then `trickle` one byte a second, until the server answers or
/// closes (or [`MAX_BYTES`] seconds pass).
fn trickle(address: SocketAddr, prefix: &[u8], trickle: &[u8]) -> Answer {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).expect("connects");
    stream.write_all(prefix).expect("the prefix is sent");
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    for byte in trickle.iter().take(MAX_BYTES) {
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let given_up = started.elapsed();
    let head = String::from_utf8_lossy(&received).into_owned();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    Answer {
        status,
        head,
        body: Vec::new(),
        elapsed: given_up,
    }
}

#[test]
fn clients_sending_a_byte_a_second_are_given_up_on_and_others_are_served() {
    let mut target = Target::spawn();
    withstand(&mut target, "slow clients (a byte a second)", |address| {
        let head = b"GET /api/orders/1 HTTP/1.1\r\nhost: 127.0.0.1\r\n".to_vec();
        let body_prefix = b"POST /api/orders HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n".to_vec();
        let body = br#"{"item": "widget", "quantity": 1}      "#.to_vec();
        let clients: Vec<_> = (0..20)
            .map(|n| {
                let (prefix, slow) = if n % 2 == 0 {
                    (Vec::new(), head.clone())
                } else {
                    (body_prefix.clone(), body.clone())
                };
                thread::spawn(move || trickle(address, &prefix, &slow))
            })
            .collect();
        let answers: Vec<Answer> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        let limit = Duration::from_secs(MAX_BYTES as u64 - 1);
        for answer in &answers {
            assert!(
                answer.elapsed < limit,
                "a slow client was still being waited for after {:?}",
                answer.elapsed
            );
        }
        let slowest = answers.iter().map(|a| a.elapsed).max().unwrap_or_default();
        eprintln!("hostile: slow clients were given up on within {slowest:?}");
        answers
    });
}
