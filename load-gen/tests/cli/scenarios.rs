//! Scenarios parse and list; faults are always cleared — after a failure and after Ctrl-C —
//! on the real sample app; and the verdict follows what the alerts API says.

use std::time::Duration;

use sample_app::{settings::Settings, startup::Application};

use crate::support::{Behaviour, TestServer, load_gen};

/// The real sample app, in process, with faults enabled; returns its base URL.
pub(crate) fn spawn_sample_app() -> String {
    let settings = Settings::from_sources(
        [
            "sample-app",
            "--listen",
            "127.0.0.1:0",
            "--faults-enabled",
            "true",
        ],
        |_| None,
    )
    .unwrap();
    let app = Application::build(&settings, Default::default()).unwrap();
    let url = format!("http://{}", app.address());
    actix_web::rt::spawn(app.run_until_stopped());
    url
}

pub(crate) async fn current_plan(app: &str) -> serde_json::Value {
    let view: serde_json::Value = reqwest::get(format!("{app}/admin/faults"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    view["plan"].clone()
}

pub(crate) fn scenario_dir(files: &[(&str, &str)]) -> tempdir::Dir {
    let dir = tempdir::Dir::new();
    for (name, text) in files {
        std::fs::write(dir.path().join(format!("{name}.toml")), text).unwrap();
    }
    dir
}

/// A throwaway directory (removed on drop).
pub(crate) mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let n = std::sync::atomic::AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "load-gen-test-{}-{:?}-{}",
                std::process::id(),
                std::thread::current().id(),
                n.into_inner()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test]
async fn the_shipped_scenarios_are_listed_and_valid() {
    let output = load_gen(&["scenario", "list"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    for name in [
        "baseline",
        "spike",
        "error-storm",
        "error-logs",
        "slow-dependency",
        "cpu-hog",
        "memory-leak",
    ] {
        assert!(
            listing.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{listing}"
        );
    }
}

#[tokio::test]
async fn an_invalid_scenario_file_is_listed_as_invalid_with_a_non_zero_exit() {
    let dir = scenario_dir(&[("broken", "description = 'x'\n[traffic]\nrate = 5\n")]);
    let output = load_gen(&["scenario", "list", "--dir", dir.path().to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("broken           INVALID: traffic: give either rate and duration")
    );
}

const TWO_STEPS: &str = r#"
description = "sets a fault on the entry, then fails to reach the downstream"
[traffic]
rate = 10
duration = "30s"
[[fault]]
at = "0s"
service = "entry"
plan = { error_rate = 0.5 }
[[fault]]
at = "1s"
service = "downstream"
plan = { latency_ms = 100 }
"#;

#[actix_web::test]
async fn a_failing_scenario_still_clears_the_faults_it_set() {
    let app = spawn_sample_app();
    let dir = scenario_dir(&[("two-steps", TWO_STEPS)]);
    let port = crate::support::free_port();
    let dead_downstream = format!("http://127.0.0.1:{port}");

    let output = load_gen(&[
        "scenario",
        "run",
        "two-steps",
        "--dir",
        dir.path().to_str().unwrap(),
        "--target",
        &app,
        "--downstream",
        &dead_downstream,
        "--quiet",
    ])
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("set faults on entry") && stderr.contains("downstream"),
        "{stderr}"
    );
    assert!(stderr.contains("cleared faults on entry"), "{stderr}");
    assert_eq!(current_plan(&app).await, serde_json::Value::Null);
}

#[actix_web::test]
async fn ctrl_c_during_a_scenario_clears_its_faults() {
    let app = spawn_sample_app();
    let dir = scenario_dir(&[("long", &TWO_STEPS.replace("at = \"1s\"", "at = \"20s\""))]);
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_load-gen"))
        .args([
            "scenario",
            "run",
            "long",
            "--dir",
            dir.path().to_str().unwrap(),
            "--target",
            &app,
            "--downstream",
            &app,
            "--quiet",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while current_plan(&app).await.is_null() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fault was never set"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = crate::support::interrupt(child, Duration::from_secs(20)).await;
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(current_plan(&app).await, serde_json::Value::Null);
}

pub(crate) const ONE_FAULT: &str = r#"
description = "errors, and the alert they must trip"
[traffic]
rate = 10
duration = "3s"
[[fault]]
at = "0s"
service = "entry"
plan = { error_rate = 1.0 }
[expect]
alerts = ["EXPECTED"]
"#;

/// Prometheus' rules API, defining the two alerts the verdict test expects.
pub(crate) const PROMETHEUS_RULES: &str = r#"{"status":"success","data":{"groups":[{"name":"g","rules":[
    {"name":"SampleAppHighErrorRatio","type":"alerting"},{"name":"SampleAppDown","type":"alerting"},
    {"name":"service:http_server_requests:rate5m","type":"recording"}]}]}}"#;

#[actix_web::test]
async fn the_verdict_follows_the_alerts_prometheus_reports() {
    let app = spawn_sample_app();
    // The alert becomes active a second in: after the run's first poll, as a fault would make it.
    let prometheus = TestServer::start(Behaviour {
        body: Some(r#"{"status":"success","data":{"alerts":[]}}"#),
        routes: &[("/api/v1/rules", PROMETHEUS_RULES)],
        later: Some((
            Duration::from_secs(1),
            &[(
                "/api/v1/alerts",
                r#"{"status":"success","data":{"alerts":[{"labels":{"alertname":"SampleAppHighErrorRatio","service":"sample-app"},"state":"pending"}]}}"#,
            )],
        )),
        ..Default::default()
    })
    .await;
    for (expected, code, says) in [
        ("SampleAppHighErrorRatio", 0, "PASSED"),
        (
            "SampleAppDown",
            1,
            "SampleAppDown never became pending or firing",
        ),
    ] {
        let dir = scenario_dir(&[("s", &ONE_FAULT.replace("EXPECTED", expected))]);
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
            "--grafana",
            "http://grafana:3000",
            "--quiet",
        ])
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(
            stderr.contains("evidence: http://grafana:3000/d/four-signal-overview?from="),
            "{stderr}"
        );
        assert_eq!(
            current_plan(&app).await,
            serde_json::Value::Null,
            "cleared after the run"
        );
    }
}
