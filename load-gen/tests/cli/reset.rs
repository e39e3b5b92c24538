//! `load-gen reset` leaves the stack quiet between labs: fault plans cleared on both services,
//! the quick alerts waited out (with a deadline), and the slow burn-rate alerts named with how
//! long they hold instead of waited on for hours.

use std::time::Duration;

use crate::{
    scenarios::{current_plan, spawn_sample_app},
    support::{Behaviour, TestServer, load_gen},
};

const NO_ALERTS: &str = r#"{"status":"success","data":{"alerts":[]}}"#;
const TICKET_ONLY: &str = r#"{"status":"success","data":{"alerts":[{"labels":{"alertname":"SampleAppErrorBudgetBurnTicket","service":"sample-app","severity":"warning"},"state":"firing"}]}}"#;
const QUICK_AND_TICKET: &str = r#"{"status":"success","data":{"alerts":[
    {"labels":{"alertname":"SampleAppHighErrorRatio","service":"sample-app","severity":"warning"},"state":"firing"},
    {"labels":{"alertname":"SampleAppErrorBudgetBurnTicket","service":"sample-app","severity":"warning"},"state":"firing"}]}}"#;

async fn set_fault(app: &str) {
    let answer = reqwest::Client::new()
        .put(format!("{app}/admin/faults"))
        .json(&serde_json::json!({"error_rate": 0.5}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
}

#[actix_web::test]
async fn reset_clears_both_fault_plans_and_waits_out_the_quick_alerts_only() {
    let (entry, downstream) = (spawn_sample_app(), spawn_sample_app());
    set_fault(&entry).await;
    set_fault(&downstream).await;
    // The quick alert resolves 6 s in (after a poll or two); the ticket stays.
    let prometheus = TestServer::start(Behaviour {
        routes: &[("/api/v1/alerts", QUICK_AND_TICKET)],
        later: Some((Duration::from_secs(6), &[("/api/v1/alerts", TICKET_ONLY)])),
        ..Default::default()
    })
    .await;
    let output = load_gen(&[
        "reset",
        "--target",
        &entry,
        "--downstream",
        &downstream,
        "--prometheus",
        &prometheus.url,
        "--wait",
        "1m",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(current_plan(&entry).await, serde_json::Value::Null);
    assert_eq!(current_plan(&downstream).await, serde_json::Value::Null);
    assert!(
        stderr.contains("waiting for: SampleAppHighErrorRatio"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SampleAppErrorBudgetBurnTicket on sample-app: its 2 h and 6 h windows"),
        "{stderr}"
    );
    assert!(
        prometheus.count() >= 2,
        "it polled until the quick alert resolved"
    );
}

#[actix_web::test]
async fn reset_gives_up_at_its_deadline_and_says_what_is_still_active() {
    let app = spawn_sample_app();
    let prometheus = TestServer::start(Behaviour {
        routes: &[("/api/v1/alerts", QUICK_AND_TICKET)],
        ..Default::default()
    })
    .await;
    let output = load_gen(&[
        "reset",
        "--target",
        &app,
        "--prometheus",
        &prometheus.url,
        "--wait",
        "1s",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("still active after 1s"), "{stderr}");
    let quiet = TestServer::start(Behaviour {
        routes: &[("/api/v1/alerts", NO_ALERTS)],
        ..Default::default()
    })
    .await;
    let output = load_gen(&["reset", "--target", &app, "--prometheus", &quiet.url]).await;
    assert_eq!(output.status.code(), Some(0));
}
