//! A stop ends load-gen promptly in every phase, even when what it waits on is slow: the soak's
//! hang was a scenario whose alert source answered in seconds, so the stop was never looked at
//! and `--repeat` went on for ever. Each test runs the binary as a user would, against the real
//! sample app, and checks the faults are cleared on every way out.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::SmallRng};
use tokio::io::AsyncBufReadExt;

use crate::{
    scenarios::{PROMETHEUS_RULES, current_plan, scenario_dir, spawn_sample_app},
    support::{Behaviour, TestServer},
};

/// The stop's own deadlines add up to 1.8 s (in-flight requests 0.8 s, clearing faults 0.5 s,
/// the span flush 0.4 s, the runtime 0.1 s); the goal is 2 s. The rest allows a loaded 2-core
/// machine to schedule the process and reap it.
const STOP_BOUND: Duration = Duration::from_millis(2_500);

/// Faults every second and a short traffic phase, so a random moment lands in any phase:
/// the up-front checks, alert polls, fault switches, traffic, the final alert read, or the
/// gap between two `--repeat` iterations.
const BUSY: &str = r#"
description = "faults switching every second"
[traffic]
rate = 20
duration = "4s"
[[fault]]
at = "1s"
service = "entry"
plan = { error_rate = 0.5, routes = ["/api/orders/{id}"], ttl_seconds = 600 }
[[fault]]
at = "2s"
service = "entry"
plan = { latency_ms = 1500, routes = ["/api/orders/{id}"], ttl_seconds = 600 }
[expect]
none_firing_at_end = false
"#;

/// A Prometheus whose every answer takes 3 s (a busy one, under a workshop's load).
async fn slow_prometheus() -> TestServer {
    TestServer::start(Behaviour {
        delay: Duration::from_secs(3),
        routes: &[
            ("/api/v1/rules", PROMETHEUS_RULES),
            (
                "/api/v1/alerts",
                r#"{"status":"success","data":{"alerts":[]}}"#,
            ),
        ],
        ..Default::default()
    })
    .await
}

fn start_busy_scenario(
    dir: &std::path::Path,
    app: &str,
    prometheus: &str,
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_load-gen"))
        .args(["scenario", "run", "busy", "--repeat", "--quiet", "--dir"])
        .arg(dir)
        .args([
            "--target",
            app,
            "--downstream",
            app,
            "--prometheus",
            prometheus,
        ])
        .env("OTEL_TRACES_EXPORTER", "none")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("the child is running").to_string();
    assert!(
        std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success()
    );
}

#[actix_web::test]
async fn a_stop_at_a_random_moment_ends_a_repeated_scenario_within_the_bound_with_faults_cleared() {
    let app = spawn_sample_app();
    let prometheus = slow_prometheus().await;
    let dir = scenario_dir(&[("busy", BUSY)]);
    let seed = rand::rng().random::<u64>();
    let mut rng = SmallRng::seed_from_u64(seed);
    for attempt in 0..6 {
        let mut child = start_busy_scenario(dir.path(), &app, &prometheus.url);
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        wait_for_line(&mut lines, "load-gen: scenario busy:").await;
        let kind = if rng.random_bool(0.5) { "INT" } else { "TERM" };
        // Up to 9 s: the 3 s check of the alert source, two iterations' polls and switches.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..9_000))).await;
        signal(&child, kind);
        let signalled = Instant::now();
        let status = tokio::time::timeout(STOP_BOUND, child.wait()).await;
        let took = signalled.elapsed();
        let log = read_rest(lines).await;
        let status = status.unwrap_or_else(|_| {
            panic!("attempt {attempt} (seed {seed}): SIG{kind} did not end load-gen within {STOP_BOUND:?}:\n{log}")
        });
        assert_eq!(
            status.unwrap().code(),
            Some(130),
            "attempt {attempt} (seed {seed}), stopped after {took:?}:\n{log}"
        );
        assert_eq!(
            current_plan(&app).await,
            serde_json::Value::Null,
            "attempt {attempt} (seed {seed}): faults left on:\n{log}"
        );
    }
}

#[actix_web::test]
async fn a_second_signal_exits_at_once_and_still_clears_the_faults() {
    let app = spawn_sample_app();
    let prometheus = slow_prometheus().await;
    let dir = scenario_dir(&[("busy", BUSY)]);
    let mut child = start_busy_scenario(dir.path(), &app, &prometheus.url);
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    wait_for_line(&mut lines, "set faults on entry").await;
    signal(&child, "INT");
    signal(&child, "INT");
    let status = tokio::time::timeout(STOP_BOUND, child.wait())
        .await
        .expect("two Ctrl-C end load-gen at once")
        .unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(current_plan(&app).await, serde_json::Value::Null);
}

#[actix_web::test]
async fn a_reader_of_stderr_that_goes_away_neither_crashes_load_gen_nor_leaves_faults_on() {
    let app = spawn_sample_app();
    let dir = scenario_dir(&[("busy", BUSY)]);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_load-gen"))
        .args(["scenario", "run", "busy", "--dir"])
        .arg(dir.path())
        .args(["--target", &app, "--downstream", &app])
        .env("OTEL_TRACES_EXPORTER", "none")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    wait_for_line(&mut lines, "set faults on entry").await;
    drop(lines); // the reader exits: every later line on stderr fails to write
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the scenario ends by itself")
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "not 101: no panic on a closed stderr"
    );
    assert_eq!(current_plan(&app).await, serde_json::Value::Null);
}

type StderrLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// Reads stderr until a line contains `text` (within 20 s).
async fn wait_for_line(lines: &mut StderrLines, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line with {text:?} within 20 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("stderr ended before a line with {text:?}"));
        if line.contains(text) {
            return;
        }
    }
}

/// What is left on stderr (the process has exited, or is given 2 s).
async fn read_rest(mut lines: StderrLines) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline.into(), lines.next_line()).await
    {
        text.push_str(&line);
        text.push('\n');
    }
    text
}
