//! Whatever is asked, a run is bounded and honest: absurd rates and durations are refused with
//! a clear error (never a panic), `--duration` bounds an overloaded run, a run where most
//! requests got no answer exits non-zero, IPv6 targets work, and a failing alert source still
//! leaves the traffic's report.

use std::time::{Duration, Instant};

use crate::{
    scenarios::{PROMETHEUS_RULES, scenario_dir, spawn_sample_app},
    support::{Behaviour, TestServer, load_gen},
};

async fn fails_with(args: &[&str], says: &str) {
    let output = load_gen(args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

#[tokio::test]
async fn rates_and_durations_beyond_one_machine_are_refused_with_the_reason() {
    let server = TestServer::start(Behaviour::default()).await;
    let target = server.url.as_str();
    let run = |extra: &'static [&'static str]| {
        let mut args = vec!["run", "--target", target];
        args.extend(extra);
        args
    };
    fails_with(
        &run(&["--rate", "1e12", "--duration", "2s"]),
        "more than one machine can send",
    )
    .await;
    fails_with(
        &run(&["--stages", "2s:1e9"]),
        "more than one machine can send",
    )
    .await;
    fails_with(
        &run(&["--stages", "18446744073709551615s:1"]),
        "longer than load-gen runs",
    )
    .await;
    fails_with(
        &run(&["--rate", "1", "--duration", "400d"]),
        "longer than load-gen runs",
    )
    .await;
}

#[tokio::test]
async fn duration_bounds_an_overloaded_run_and_what_could_not_be_sent_is_dropped() {
    let never = TestServer::start(Behaviour {
        never_answer: true,
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let output = load_gen(&[
        "run",
        "--target",
        &never.url,
        "--rate",
        "900000",
        "--duration",
        "1s",
        "--timeout",
        "500ms",
        "--max-in-flight",
        "50",
        "--output",
        "json",
        "--quiet",
        "--max-error-ratio",
        "1",
    ])
    .await;
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // 1 s of schedule, 1 s of grace, 1.5 s of drain: far less than walking 900,000 slots late.
    assert!(took < Duration::from_secs(15), "ran {took:?}");
    assert!(report["dropped"].as_u64().unwrap() > 0, "{report}");
}

#[tokio::test]
async fn a_run_where_most_requests_got_no_answer_exits_1_and_says_so() {
    let never = TestServer::start(Behaviour {
        never_answer: true,
        ..Default::default()
    })
    .await;
    let args = [
        "run",
        "--target",
        &never.url,
        "--rate",
        "20",
        "--duration",
        "1s",
        "--timeout",
        "200ms",
        "--quiet",
    ];
    fails_with(&args, "got no answer").await;
    let mut tolerant = args.to_vec();
    tolerant.extend(["--max-error-ratio", "1"]);
    assert_eq!(load_gen(&tolerant).await.status.code(), Some(0));
}

#[tokio::test]
async fn an_ipv6_literal_target_works_and_a_query_string_is_refused() {
    let server = TestServer::start_on("[::1]:0", Behaviour::default()).await;
    let output = load_gen(&[
        "run",
        "--target",
        &server.url,
        "--rate",
        "20",
        "--duration",
        "1s",
        "--quiet",
    ])
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(server.count() > 0);
    let with_query = format!("{}/?debug=1", server.url);
    fails_with(
        &[
            "run",
            "--target",
            &with_query,
            "--rate",
            "1",
            "--duration",
            "1s",
        ],
        "no query string",
    )
    .await;
}

#[actix_web::test]
async fn an_alert_source_that_breaks_mid_run_still_leaves_the_traffic_report() {
    let app = spawn_sample_app();
    // Answers well for the up-front check and the first poll, garbage from 1 s on.
    let prometheus = TestServer::start(Behaviour {
        routes: &[
            ("/api/v1/rules", PROMETHEUS_RULES),
            (
                "/api/v1/alerts",
                r#"{"status":"success","data":{"alerts":[]}}"#,
            ),
        ],
        later: Some((Duration::from_secs(1), &[("/api/v1/alerts", "garbage")])),
        ..Default::default()
    })
    .await;
    let dir = scenario_dir(&[(
        "s",
        "description = \"d\"\n[traffic]\nrate = 10\nduration = \"3s\"\n[[fault]]\nat = \"2s\"\nservice = \"entry\"\nplan = { error_rate = 0.1 }\n",
    )]);
    let output = load_gen(&[
        "scenario",
        "run",
        "s",
        "--dir",
        dir.path().to_str().unwrap(),
        "--target",
        &app,
        "--prometheus",
        &prometheus.url,
        "--quiet",
        "--output",
        "json",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("while watching the scenario's alerts"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no report on stdout ({e}): {stderr}"));
    assert!(report["sent"].as_u64().unwrap() > 0, "{report}");
}
