//! A scenario's alerts are verified where they are evaluated: Prometheus' and Loki's rules APIs
//! (pending and firing) and Alertmanager (firing, from every source); an alert no source defines,
//! or a source that does not answer, is an error before any fault is set.

use std::time::Duration;

use crate::{
    scenarios::{ONE_FAULT, PROMETHEUS_RULES, current_plan, scenario_dir, spawn_sample_app},
    support::{Behaviour, TestServer, load_gen},
};

/// Loki's ruler answers in Prometheus' format, under /prometheus.
const LOKI_RULER: &[(&str, &str)] = &[
    (
        "/prometheus/api/v1/rules",
        r#"{"status":"success","data":{"groups":[{"name":"log-alerts","rules":[{"name":"ErrorLogBurst","type":"alerting"}]}]}}"#,
    ),
    (
        "/prometheus/api/v1/alerts",
        r#"{"status":"success","data":{"alerts":[]}}"#,
    ),
];

/// A second in, after the run's first poll: the burst the fault causes.
const LOKI_BURST: (Duration, &[(&str, &str)]) = (
    Duration::from_secs(1),
    &[(
        "/prometheus/api/v1/alerts",
        r#"{"status":"success","data":{"alerts":[{"labels":{"alertname":"ErrorLogBurst","service":"sample-app","severity":"warning"},"state":"pending"}]}}"#,
    )],
);

async fn prometheus_without_log_alerts() -> TestServer {
    TestServer::start(Behaviour {
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

async fn run_expecting(alert: &str, app: &str, sources: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = scenario_dir(&[("s", &ONE_FAULT.replace("EXPECTED", alert))]);
    let mut args = vec![
        "scenario",
        "run",
        "s",
        "--dir",
        dir.path().to_str().unwrap(),
        "--target",
        app,
        "--quiet",
    ];
    for (flag, url) in sources {
        args.extend([*flag, *url]);
    }
    let output = load_gen(&args).await;
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[actix_web::test]
async fn a_log_alert_is_verified_through_the_loki_ruler() {
    let app = spawn_sample_app();
    let prometheus = prometheus_without_log_alerts().await;
    let loki = TestServer::start(Behaviour {
        routes: LOKI_RULER,
        later: Some(LOKI_BURST),
        ..Default::default()
    })
    .await;

    let (code, stderr) = run_expecting(
        "ErrorLogBurst",
        &app,
        &[("--prometheus", &prometheus.url), ("--loki", &loki.url)],
    )
    .await;

    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("PASS  ErrorLogBurst became pending") && stderr.contains("(Loki ruler)"),
        "{stderr}"
    );
}

#[actix_web::test]
async fn an_alert_no_source_defines_fails_before_any_fault_is_set() {
    let app = spawn_sample_app();
    let prometheus = prometheus_without_log_alerts().await;

    let (code, stderr) =
        run_expecting("ErrorLogBurst", &app, &[("--prometheus", &prometheus.url)]).await;

    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("ErrorLogBurst is a rule of none of Prometheus")
            && stderr.contains("--loki URL"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("set faults"),
        "no fault before the check: {stderr}"
    );
    assert_eq!(current_plan(&app).await, serde_json::Value::Null);
}

#[actix_web::test]
async fn alertmanager_sees_the_firing_alerts_of_every_source() {
    let app = spawn_sample_app();
    let alertmanager = TestServer::start(Behaviour {
        routes: &[("/api/v2/alerts", "[]")],
        later: Some((
            Duration::from_secs(1),
            &[(
                "/api/v2/alerts",
                r#"[{"labels":{"alertname":"ServicePanicked","service":"sample-app","severity":"critical"},"status":{"state":"active","silencedBy":[],"inhibitedBy":[]}}]"#,
            )],
        )),
        ..Default::default()
    })
    .await;

    let (code, stderr) = run_expecting(
        "ServicePanicked",
        &app,
        &[("--alertmanager", &alertmanager.url)],
    )
    .await;

    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("PASS  ServicePanicked became firing") && stderr.contains("(Alertmanager)"),
        "{stderr}"
    );
}

#[actix_web::test]
async fn an_unreachable_alert_source_is_named_in_the_error() {
    let app = spawn_sample_app();
    let dead = format!("http://127.0.0.1:{}", crate::support::free_port());

    let (code, stderr) = run_expecting("ErrorLogBurst", &app, &[("--loki", &dead)]).await;

    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "while listing the alerting rules of Loki ruler at {dead}"
        )),
        "{stderr}"
    );
}

#[actix_web::test]
async fn an_alert_already_active_when_the_run_starts_does_not_pass() {
    let app = spawn_sample_app();
    const ALREADY_ACTIVE: &[(&str, &str)] = &[LOKI_RULER[0], LOKI_BURST.1[0]];
    let loki = TestServer::start(Behaviour {
        routes: ALREADY_ACTIVE,
        ..Default::default()
    })
    .await;

    let (code, stderr) = run_expecting("ErrorLogBurst", &app, &[("--loki", &loki.url)]).await;

    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("FAIL  ErrorLogBurst was already pending")
            && stderr.contains("not this run's doing"),
        "{stderr}"
    );
}
