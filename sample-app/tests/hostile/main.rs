//! Hostile traffic cannot hurt the service: the real `sample-app` binary, spawned as a process
//! (faults enabled and spans exported, as compose runs it), is sent what no polite client
//! sends — made-up methods, monstrous paths and headers, lying bodies, slow and flooding
//! clients — while a normal client keeps asking. After each attack the suite checks what
//! [`siege`] lists: no 5xx for the input, no panic, the normal client answered, `/metrics`
//! within the bound `docs/contracts.md` states, and resident memory back near its level before.
//!
//! Raw HTTP over `std::net::TcpStream` ([`raw`]) sends what reqwest would refuse to. Every
//! loop is bounded in count and in time, and all traffic goes to 127.0.0.1.
//!
//! Each attack prints one `hostile:` line with its numbers (series count, RSS before, peak and
//! after, the normal client's latency): `cargo nextest run -p sample-app --test hostile
//! --no-capture`. To measure a release build instead of the test build, point `SAMPLE_APP_BIN`
//! at it: `cargo build --release -p sample-app && SAMPLE_APP_BIN=target/release/sample-app
//! cargo nextest run -p sample-app --test hostile --no-capture` (a path relative to
//! `sample-app/`, or absolute).
//!
//! `cargo fuzz` would need a nightly toolchain, which this project's machines cannot fetch;
//! the parsers are covered by property tests instead (`tests/properties`).

mod bodies;
mod floods;
mod headers;
mod held_connections;
mod methods;
mod paths;
mod profile_pulls;
mod raw;
mod rejections;
mod siege;
mod slow_clients;
mod span_limits;
mod target;
#[path = "../../../test-support/unused_port.rs"]
mod unused_port;
mod worst_case;
