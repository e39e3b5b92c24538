//! load-gen against targets that misbehave: one that never answers, one that answers
//! garbage, one that resets every connection, one that stops listening mid-run, and one that
//! answers 1 GiB. Each failure is reported as its error kind, the run ends within its
//! timeouts without a panic, and memory stays flat while a 1 GiB answer streams through.
//! The servers are raw TCP on 127.0.0.1, in this process; every run is bounded by
//! `--max-requests` and `--duration`, and every wait by a timeout.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// How a hostile target treats each connection.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Reads the request, never answers.
    Silent,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Reads the request, then closes with a reset (SO_LINGER 0).
    Reset,
    /// Answers 200 with a body of this many bytes, generated as it is sent.
    Huge(u64),
}

/// Starts a target; with `accept_only_first`, it stops listening after the first connection
/// (load-gen's reachability check), so every request after it is refused.
async fn hostile_target(misbehaviour: Misbehaviour, accept_only_first: bool) -> String {
    // Outside the ephemeral range: once dropped, the port is not handed to another test's
    // socket or to load-gen's own (test-support/unused_port.rs).
    let listener = TcpListener::bind(("127.0.0.1", crate::unused_port::unused_port()))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(misbehave(stream, misbehaviour));
            if accept_only_first {
                return; // the listener is dropped: connections are refused from now on
            }
        }
    });
    url
}

async fn misbehave(mut stream: TcpStream, misbehaviour: Misbehaviour) {
    let mut request = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request)).await;
    match misbehaviour {
        Misbehaviour::Silent => {
            let _ = stream.read(&mut request).await; // until load-gen gives up and closes
        }
        Misbehaviour::Garbage => {
            let _ = stream
                .write_all(b"SSH-2.0-OpenSSH_9.9\r\n\x00\xff\xfe garbage\r\n\r\n")
                .await;
        }
        Misbehaviour::Reset => {
            let _ = stream.set_zero_linger();
        }
        Misbehaviour::Huge(length) => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 256 * 1024];
            let mut left = length;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
        }
    }
}

/// Runs load-gen against `url` (a few requests, `timeout` each) and returns its report,
/// asserting it exits 0 within `within` and did not panic.
async fn run_against(url: &str, timeout: &str, within: Duration) -> serde_json::Value {
    let started = Instant::now();
    let output = tokio::time::timeout(
        within,
        crate::support::load_gen(&[
            "run",
            "--target",
            url,
            "--rate",
            "10",
            "--duration",
            "1s",
            "--max-requests",
            "5",
            "--timeout",
            timeout,
            "--output",
            "json",
            "--quiet",
            // Every request fails on purpose: the point is how each failure is named.
            "--max-error-ratio",
            "1",
        ]),
    )
    .await
    .unwrap_or_else(|_| panic!("load-gen still running after {within:?} against {url}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "load-gen panicked: {stderr}");
    assert!(output.status.success(), "load-gen failed: {stderr}");
    eprintln!("load-gen against {url}: {:?}", started.elapsed());
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

fn errors_of(report: &serde_json::Value, kind: &str) -> u64 {
    report["errors_by_kind"][kind].as_u64().unwrap_or_default()
}

#[tokio::test]
async fn each_misbehaving_target_is_reported_as_its_error_kind_within_the_timeouts() {
    // --timeout 1s: 5 requests that each fail by 1 s, and a drain of timeout + 1 s.
    let within = Duration::from_secs(20);
    for (misbehaviour, accept_only_first, kind) in [
        (Misbehaviour::Silent, false, "timeout"),
        (Misbehaviour::Garbage, false, "other"),
        (Misbehaviour::Reset, false, "reset"),
        (Misbehaviour::Silent, true, "refused"),
    ] {
        let url = hostile_target(misbehaviour, accept_only_first).await;
        let report = run_against(&url, "1s", within).await;
        assert_eq!(
            (errors_of(&report, kind), report["total_requests"].as_u64()),
            (5, Some(5)),
            "expected 5 {kind} errors: {report}"
        );
    }
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// What load-gen may hold while a 1 GiB answer streams through it: its own baseline (about
/// 10 MiB for a debug build) and read buffers, far from the 1 GiB it held before bodies were
/// streamed.
const MAX_RSS_KIB: u64 = 64 * 1024;

#[tokio::test]
async fn a_1_gib_answer_streams_through_in_flat_memory() {
    let url = hostile_target(Misbehaviour::Huge(1 << 30), false).await;
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_load-gen"))
        .args([
            "run",
            "--target",
            &url,
            "--rate",
            "1",
            "--duration",
            "1s",
            "--max-requests",
            "1",
            "--timeout",
            "60s",
            "--output",
            "json",
            "--quiet",
        ])
        .current_dir(crate::support::workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        while let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("load-gen finished reading 1 GiB within 90 s")
        .unwrap();
    let peak = sampler.await.unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    eprintln!(
        "load-gen read 1 GiB in {:.1} s; peak RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        peak as f64 / 1024.0
    );
    assert_eq!(report["status_counts"]["200"], 1, "{report}");
    assert!(
        peak > 0 && peak <= MAX_RSS_KIB,
        "load-gen's peak RSS was {:.1} MiB while reading a 1 GiB answer",
        peak as f64 / 1024.0
    );
}

#[tokio::test]
async fn check_refuses_an_answer_too_large_to_be_a_health_check() {
    let url = hostile_target(Misbehaviour::Huge(1 << 30), false).await;
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        crate::support::load_gen(&["check", &format!("{url}/health")]),
    )
    .await
    .expect("check gives up within its 3 s timeout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("answered more than"), "{stderr}");
}
