//! Connection floods within this machine's means: a few hundred connections that say
//! nothing, then rounds of a few hundred requests at once. Idle connections are closed after
//! actix's 5 s request timeout, every flooded request is answered, a normal client is served
//! throughout, and memory reaches a plateau instead of climbing with each round.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::{
    raw::{self, Answer},
    siege::withstand,
    target::{Target, rss_kib},
};

const CONNECTIONS: usize = 300;

/// Opens [`CONNECTIONS`] connections that send nothing and waits (at most 20 s) until the
/// service has closed them all.
fn idle_connections(address: SocketAddr) -> Vec<Answer> {
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..CONNECTIONS)
        .filter_map(|_| TcpStream::connect(address).ok())
        .collect();
    assert_eq!(idle.len(), CONNECTIONS, "every connection was accepted");
    let deadline = started + Duration::from_secs(20);
    let mut answers = Vec::new();
    for stream in &mut idle {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).unwrap();
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        assert!(
            Instant::now() < deadline,
            "an idle connection was still open after {:?}",
            started.elapsed()
        );
        let head = String::from_utf8_lossy(&buf).into_owned();
        answers.push(Answer {
            status: head.get(9..12).and_then(|c| c.parse().ok()),
            head,
            body: Vec::new(),
            elapsed: started.elapsed(),
        });
    }
    answers
}

/// [`CONNECTIONS`] requests written at once on their own connections, then every answer read.
fn request_burst(address: SocketAddr) -> Vec<Answer> {
    let started = Instant::now();
    let paths = [
        "/api/orders/1",
        "/",
        "/no/such/route",
        "/api/inventory/flood",
    ];
    let mut open: Vec<TcpStream> = (0..CONNECTIONS)
        .filter_map(|_| TcpStream::connect(address).ok())
        .collect();
    for (n, stream) in open.iter_mut().enumerate() {
        let _ = stream.write_all(&raw::request("GET", paths[n % paths.len()], &[], b""));
    }
    open.into_iter()
        .map(|stream| raw::read_answer(stream, started, Duration::from_secs(30)))
        .collect()
}

#[test]
fn hundreds_of_idle_connections_are_closed_and_a_burst_is_answered() {
    let mut target = Target::spawn();
    let pid = target.pid();
    withstand(&mut target, "connection flood", |address| {
        let mut answers = idle_connections(address);
        eprintln!(
            "hostile: {CONNECTIONS} idle connections closed by the service within {:?}",
            answers.iter().map(|a| a.elapsed).max().unwrap_or_default()
        );
        let mut rss_after_round = Vec::new();
        for _ in 0..ROUNDS {
            let burst = request_burst(address);
            let unanswered = burst.iter().filter(|a| a.status.is_none()).count();
            assert_eq!(unanswered, 0, "flooded requests went unanswered");
            answers.extend(burst);
            rss_after_round.push(rss_kib(pid).unwrap_or_default());
        }
        // The first rounds grow the allocator's arenas; later rounds reuse them. A leak
        // would be a slope: each round higher than the one before.
        let (fourth, last) = (rss_after_round[3], rss_after_round[ROUNDS - 1]);
        eprintln!("hostile: RSS after each burst (KiB): {rss_after_round:?}");
        assert!(
            last <= fourth + PLATEAU_SLACK_KIB,
            "resident memory grew with every flood: {rss_after_round:?} KiB"
        );
        answers
    });
}

/// Burst rounds, and how much RSS may still rise from the fourth round to the last. Measured
/// over 16 rounds: the first three grow the arenas by 6–9 MiB, then readings wander within
/// ±1 MiB. A leak of 2.5 KiB per request would add 3 MiB over the last four rounds.
const ROUNDS: usize = 8;
const PLATEAU_SLACK_KIB: u64 = 3 * 1024;
