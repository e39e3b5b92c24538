//! Bad flags, unreachable targets and invalid files give a clear error with the cause and a
//! non-zero exit, and never a panic.

use crate::support::load_gen;

async fn fails_with(args: &[&str], code: i32, says: &str) {
    let output = load_gen(args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

#[tokio::test]
async fn bad_usage_exits_2_naming_the_flag() {
    fails_with(
        &[
            "run",
            "--target",
            "http://127.0.0.1:1",
            "--rate",
            "5",
            "--concurrency",
            "2",
        ],
        2,
        "cannot be used with",
    )
    .await;
    fails_with(
        &[
            "run",
            "--target",
            "http://127.0.0.1:1",
            "--duration",
            "soon",
            "--rate",
            "1",
        ],
        2,
        "--duration",
    )
    .await;
    fails_with(
        &[
            "run",
            "--target",
            "http://127.0.0.1:1",
            "--concurrency",
            "0",
        ],
        2,
        "--concurrency",
    )
    .await;
    fails_with(&["scenario", "run"], 2, "NAME").await;
}

#[tokio::test]
async fn invalid_values_and_files_exit_1_with_the_cause() {
    let port = crate::support::free_port();
    let closed = format!("http://127.0.0.1:{port}");
    fails_with(
        &["run", "--target", &closed, "--rate", "5"],
        1,
        "cannot connect",
    )
    .await;
    fails_with(
        &[
            "run",
            "--target",
            "http://no-such-host.invalid",
            "--rate",
            "5",
        ],
        1,
        "could not resolve",
    )
    .await;
    fails_with(
        &["run", "--target", "https://127.0.0.1:1", "--rate", "5"],
        1,
        "only http://",
    )
    .await;
    fails_with(
        &["run", "--target", &closed, "--rate", "0"],
        1,
        "--rate must be a positive",
    )
    .await;
    fails_with(
        &["run", "--target", &closed, "--stages", "30s"],
        1,
        "DURATION:RATE",
    )
    .await;
    fails_with(
        &[
            "run",
            "--target",
            &closed,
            "--rate",
            "5",
            "--mix",
            "no/such/mix.toml",
        ],
        1,
        "no/such/mix.toml",
    )
    .await;
    fails_with(
        &[
            "run",
            "--target",
            &closed,
            "--rate",
            "5",
            "--mix",
            "Cargo.toml",
        ],
        1,
        "not a valid mix",
    )
    .await;
    fails_with(&["run"], 2, "--target").await;
    fails_with(&["scenario", "run", "no-such-scenario"], 1, "baseline").await;
    fails_with(
        &["scenario", "run", "baseline", "--time-scale", "100"],
        1,
        "--time-scale",
    )
    .await;
}

#[tokio::test]
async fn alert_log_logs_each_notification_and_refuses_what_is_not_one() {
    let port = crate::support::free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_load-gen"))
        .args(["alert-log", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while client.get(format!("{base}/health")).send().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alert-log never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let payload = r#"{"version":"4","status":"firing","receiver":"page","alerts":[{"status":"firing","labels":{"alertname":"SampleAppDown","severity":"critical","service":"sample-app"},"annotations":{"summary":"sample-app is down"},"startsAt":"2026-11-21T00:00:00Z"}]}"#;
    let ok = client
        .post(format!("{base}/notify/page"))
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = client
        .post(format!("{base}/notify/page"))
        .body("{\"nope\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("not_an_alertmanager_notification")
    );

    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(std::time::Duration::from_secs(5), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let logged: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (
            logged["alertname"].as_str(),
            logged["receiver"].as_str(),
            logged["level"].as_str()
        ),
        (Some("SampleAppDown"), Some("page"), Some("error"))
    );
}

#[tokio::test]
async fn check_exits_0_for_a_2xx_url_and_1_with_the_cause_otherwise() {
    let server = crate::support::TestServer::start(crate::support::Behaviour::default()).await;
    let ok = load_gen(&["check", &format!("{}/metrics", server.url)]).await;
    assert!(ok.status.success());
    let port = crate::support::free_port();
    fails_with(
        &["check", &format!("http://127.0.0.1:{port}/health")],
        1,
        "while connecting",
    )
    .await;
}
