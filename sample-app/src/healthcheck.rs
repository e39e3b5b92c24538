//! `sample-app --check-health`: asks the running service's `/health` and exits 0 or 1, so a
//! distroless container (no shell, no curl) can still have a Docker healthcheck.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, bail};

const TIMEOUT: Duration = Duration::from_secs(2);

/// Checks `GET /health` on the address the service listens on (0.0.0.0 means this host).
pub fn probe(listen: SocketAddr) -> anyhow::Result<()> {
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)
        .with_context(|| format!("while connecting to {target}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nhost: localhost\r\n\r\n")
        .context("while sending the health request")?;
    let mut answer = Vec::with_capacity(256);
    stream
        .take(4096)
        .read_to_end(&mut answer)
        .context("while reading the health answer")?;
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => bail!("/health answered '{status_line}'"),
    }
}
