//! A port for a test to leave closed, or to hand to a program that binds it later: free now,
//! and outside the kernel's ephemeral range, so nothing on the machine is given it meanwhile.
//!
//! One file, included by path (`#[path = ...] mod unused_port;`) into each test crate that needs
//! it, the way `scripts/ports.py` serves the Python checks; see there for the failure that led to
//! it. Binding port 0 and dropping the listener hands out a port from the ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), the range every outgoing connection draws its local
//! port from: while nextest runs tests in parallel, any of their connections may be given that
//! port, and a client dialling a "closed" ephemeral port can even be connected to itself (its own
//! automatic local port equal to the one it dials, TCP's simultaneous open). A port below the
//! range is never handed out by the kernel.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Below this sit the well-known ports of the stack's programs (3000, 4317, 9090, ...).
const LOWEST: u16 = 10_000;

/// A port on 127.0.0.1 that nothing holds (neither there nor on the wildcard address), outside
/// the ephemeral range, picked at random so parallel tests do not pick the same one.
pub fn unused_port() -> u16 {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999));
    let below = u32::from(low.saturating_sub(LOWEST));
    let above_start = u32::from(high.max(LOWEST - 1)) + 1;
    let above = u32::from(u16::MAX) + 1 - above_start;
    assert!(
        below + above >= 1_000,
        "the ephemeral port range {low}-{high} leaves only {} ports the kernel never hands out",
        below + above
    );
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut state = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ CALLS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1;
    for _ in 0..200 {
        // xorshift64: enough to spread the picks of tests started in the same nanosecond.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let index = (state % u64::from(below + above)) as u32;
        let port = if index < below {
            u32::from(LOWEST) + index
        } else {
            above_start + (index - below)
        } as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 outside the ephemeral range {low}-{high} after 200 tries");
}
