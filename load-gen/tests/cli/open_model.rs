//! The open model keeps its schedule whatever the server does, counts what it could not send,
//! and measures latency from the intended send time so a stall cannot hide.

use std::time::Duration;

use crate::support::{Behaviour, TestServer, load_gen, report, workspace_root};

#[tokio::test]
async fn the_achieved_rate_is_within_one_percent_of_the_target() {
    let server = TestServer::start(Behaviour::default()).await;
    let report = report(&[
        "run",
        "--target",
        &server.url,
        "--rate",
        "200",
        "--duration",
        "3s",
    ])
    .await;

    assert_eq!(report["sent"], 600);
    assert_eq!(server.count(), 600);
    let achieved = report["achieved_rate_per_second"].as_f64().unwrap();
    assert!((achieved - 200.0).abs() <= 2.0, "achieved {achieved}/s");
    assert_eq!(report["rate_met"], true);
    assert_eq!(report["dropped"], 0);
    // The server saw the same pace: 600 arrivals spread over ~3 s, evenly.
    let arrivals = server.arrivals.lock().unwrap().clone();
    let span = (arrivals.last().unwrap().at - arrivals[0].at).as_secs_f64();
    assert!(
        (span - 2.995).abs() < 0.05,
        "arrivals spread over {span:.3} s"
    );
}

#[tokio::test]
async fn requests_that_cannot_be_sent_on_time_are_dropped_and_the_report_says_so() {
    let server = TestServer::start(Behaviour {
        delay: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let report = report(&[
        "run",
        "--target",
        &server.url,
        "--rate",
        "200",
        "--duration",
        "1s",
        "--max-in-flight",
        "20",
    ])
    .await;

    let (sent, dropped) = (
        report["sent"].as_u64().unwrap(),
        report["dropped"].as_u64().unwrap(),
    );
    assert_eq!(
        sent + dropped,
        200,
        "every due request is either sent or dropped"
    );
    assert!(dropped >= 150, "only {dropped} dropped");
    assert_eq!(report["rate_met"], false);
}

#[tokio::test]
async fn a_one_second_stall_shows_in_p99_even_with_two_connections() {
    // The server stalls every request arriving between 0.5 s and 1.5 s until 1.5 s.
    let stall = Behaviour {
        stall: Some((Duration::from_millis(500), Duration::from_millis(1500))),
        ..Default::default()
    };
    let server = TestServer::start(stall.clone()).await;
    let open = report(&[
        "run",
        "--target",
        &server.url,
        "--rate",
        "100",
        "--duration",
        "3s",
        "--connections",
        "2",
    ])
    .await;
    let closed_server = TestServer::start(stall).await;
    let closed = report(&[
        "run",
        "--target",
        &closed_server.url,
        "--concurrency",
        "2",
        "--duration",
        "3s",
    ])
    .await;

    let open_p99 = open["latency_ms"]["p99"].as_f64().unwrap();
    assert!(
        open_p99 >= 700.0,
        "open-model p99 {open_p99} ms hides the stall"
    );
    // What a closed loop reports for the same stall: the two stalled requests are a rounding error.
    let closed_p99 = closed["latency_ms"]["p99"].as_f64().unwrap();
    assert!(
        closed_p99 < open_p99 / 3.0,
        "closed p99 {closed_p99} ms, open p99 {open_p99} ms"
    );
    // And the open model's own service-time view (from the actual send) is what hides it.
    assert!(
        open["service_time_ms"]["p50"].as_f64().unwrap()
            < open["latency_ms"]["p90"].as_f64().unwrap()
    );
}

#[tokio::test]
async fn stages_ramp_the_arrival_rate() {
    let server = TestServer::start(Behaviour::default()).await;
    let report = report(&[
        "run",
        "--target",
        &server.url,
        "--stages",
        "1s:100,1s:100,1s:0",
    ])
    .await;
    assert_eq!(report["sent"], 50 + 100 + 50);
    let arrivals = server.arrivals.lock().unwrap().clone();
    let in_window = |from: f64, to: f64| {
        arrivals
            .iter()
            .filter(|a| (from..to).contains(&a.at.as_secs_f64()))
            .count()
    };
    assert!(
        in_window(1.0, 2.0) > in_window(0.0, 1.0) + 30,
        "the middle stage is busier than the ramp up"
    );
}

#[tokio::test]
async fn every_request_carries_a_fresh_traceparent_with_the_chosen_sampled_flag() {
    let server = TestServer::start(Behaviour::default()).await;
    report(&[
        "run",
        "--target",
        &server.url,
        "--rate",
        "50",
        "--duration",
        "1s",
        "--trace-sampled",
        "false",
    ])
    .await;
    let arrivals = server.arrivals.lock().unwrap().clone();
    let parents: std::collections::HashSet<String> = arrivals
        .iter()
        .map(|a| a.traceparent.clone().expect("a traceparent"))
        .collect();
    assert_eq!(parents.len(), arrivals.len(), "trace ids are unique");
    assert!(
        parents
            .iter()
            .all(|p| p.len() == 55 && p.starts_with("00-") && p.ends_with("-00")),
        "{parents:?}"
    );
}

#[tokio::test]
async fn a_target_that_never_answers_gives_timeout_errors() {
    let server = TestServer::start(Behaviour {
        never_answer: true,
        ..Default::default()
    })
    .await;
    let report = report(&[
        "run",
        "--target",
        &server.url,
        "--rate",
        "20",
        "--duration",
        "500ms",
        "--timeout",
        "200ms",
        "--max-error-ratio",
        "1",
    ])
    .await;
    assert_eq!(report["errors_by_kind"]["timeout"], 10);
    assert_eq!(report["total_requests"], 10);
}

#[tokio::test]
async fn the_json_report_matches_its_published_schema() {
    let server = TestServer::start(Behaviour::default()).await;
    let report = report(&[
        "run",
        "--target",
        &server.url,
        "--rate",
        "20",
        "--duration",
        "500ms",
    ])
    .await;
    let file = std::env::temp_dir().join(format!("load-gen-report-{}.json", std::process::id()));
    std::fs::write(&file, report.to_string()).unwrap();
    let checker = workspace_root().join(".venv/bin/check-jsonschema");
    let output = std::process::Command::new(&checker)
        .args(["--schemafile", "load-gen/report.schema.json"])
        .arg(&file)
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} ({e}): run scripts/test once to install it",
                checker.display()
            )
        });
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn sigint_stops_scheduling_drains_and_still_prints_the_report() {
    let server = TestServer::start(Behaviour::default()).await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_load-gen"))
        .args([
            "run",
            "--target",
            &server.url,
            "--rate",
            "50",
            "--duration",
            "60s",
            "--output",
            "json",
            "--quiet",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.count() < 20 {
        assert!(tokio::time::Instant::now() < deadline, "no traffic arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = crate::support::interrupt(child, Duration::from_secs(15)).await;

    assert_eq!(output.status.code(), Some(130));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a report after Ctrl-C");
    assert_eq!(report["interrupted"], true);
    let sent = report["sent"].as_u64().unwrap();
    assert!((20..3000).contains(&sent), "a partial run: {sent}");
    assert_eq!(
        report["total_requests"], sent,
        "everything in flight was drained"
    );
}

#[tokio::test]
async fn metrics_listen_exposes_offered_and_achieved_load() {
    let server = TestServer::start(Behaviour::default()).await;
    let port = crate::support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let run = tokio::spawn({
        let url = server.url.clone();
        async move {
            load_gen(&[
                "run",
                "--target",
                &url,
                "--rate",
                "50",
                "--duration",
                "3s",
                "--quiet",
                "--metrics-listen",
                &listen,
            ])
            .await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            let text = response.text().await.unwrap();
            if text.contains("loadgen_requests_sent_total") && server.count() > 10 {
                break text;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no metrics served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for name in [
        "loadgen_offered_rate 50",
        "loadgen_requests_completed_total{outcome=\"2xx\"}",
        "loadgen_request_duration_seconds_bucket",
        "loadgen_requests_dropped_total 0",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert!(run.await.unwrap().status.success());
}
