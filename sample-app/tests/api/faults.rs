//! Faults switched through `/admin/faults` leave their evidence in metrics and profiles, and
//! stop leaving it when cleared. (Span and log evidence: `tests/signals/faults.rs`.)

use std::time::{Duration, Instant};

use pprof::protos::{Message, Profile};
use sample_app::telemetry::profiles::{Profiler, ProfilerSettings};
use serde_json::Value;

use crate::helpers::{
    assert_error, error_answer, sample, settings_with_faults, spawn_app, spawn_app_with,
    spawn_app_with_profiler,
};

const ORDER: &str = "/api/orders/1";

fn bucket(metrics: &str, route: &str, status: &str, le: &str) -> f64 {
    let labels = [
        ("http_route", route),
        ("http_response_status_code", status),
        ("le", le),
    ];
    sample(
        metrics,
        "http_server_request_duration_seconds_bucket",
        &labels,
    )
    .unwrap_or(0.0)
}

fn fault_active(metrics: &str, kind: &str) -> Option<f64> {
    sample(metrics, "sample_app_fault_active", &[("kind", kind)])
}

#[actix_web::test]
async fn without_faults_enabled_the_admin_api_is_absent_and_fault_headers_are_ignored() {
    let app = spawn_app().await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = app
            .client
            .request(method.clone(), app.url("/admin/faults"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(assert_error(response, 404).await, "not_found", "{method}");
    }
    let response = app
        .client
        .get(app.url(ORDER))
        .header("x-fault-error-status", "503")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(fault_active(&app.metrics().await, "error"), Some(0.0));
}

#[actix_web::test]
async fn an_invalid_plan_is_refused_naming_the_field_and_changes_nothing() {
    let app = spawn_app_with(settings_with_faults(&[])).await;
    for (plan, status, field) in [
        (r#"{"error_rate": 1.5}"#, 422, "error_rate"),
        (r#"{"error_status": 200}"#, 422, "error_status"),
        (r#"{"routes": ["/api/order"]}"#, 422, "routes"),
        (r#"{"ttl_seconds": 0}"#, 422, "ttl_seconds"),
        (r#"{"latency_ms": -5}"#, 400, "latency_ms"),
        (r#"{"error_rate": "high"}"#, 400, "invalid type"),
        (r#"{"eror_rate": 1}"#, 400, "eror_rate"),
    ] {
        let response = app.put_faults(plan).await;
        let got = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(got, status, "{plan} → {body}");
        assert!(body.contains(field), "{plan} → {body}");
    }
    let view: Value = app.get("/admin/faults").await.json().await.unwrap();
    assert_eq!(view["plan"], Value::Null);
    let response = app
        .client
        .get(app.url(ORDER))
        .header("x-fault-latency-ms", "soon")
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap();
    assert!(
        body.contains("invalid_fault_header") && body.contains("x-fault-latency-ms"),
        "{body}"
    );
}

#[actix_web::test]
async fn an_error_fault_fails_its_routes_counts_the_status_and_clears() {
    let app = spawn_app_with(settings_with_faults(&[])).await;
    let plan = r#"{"error_rate": 1.0, "error_status": 503, "routes": ["/api/orders/{id}"]}"#;
    assert_eq!(app.put_faults(plan).await.status(), 200);

    for _ in 0..5 {
        let (status, kind) = error_answer(app.get(ORDER).await).await;
        assert_eq!((status, kind.as_str()), (503, "fault_injected"));
    }
    assert_eq!(
        app.status_of("/api/inventory/widget").await,
        200,
        "a route outside the plan"
    );
    assert_eq!(
        app.status_of("/health").await,
        200,
        "operational routes are never faulted"
    );
    let metrics = app.metrics().await;
    let failed = [
        ("http_route", "/api/orders/{id}"),
        ("http_response_status_code", "503"),
    ];
    assert_eq!(
        sample(
            &metrics,
            "http_server_request_duration_seconds_count",
            &failed
        ),
        Some(5.0)
    );
    assert_eq!(fault_active(&metrics, "error"), Some(1.0));
    assert_eq!(fault_active(&metrics, "latency"), Some(0.0));

    app.clear_faults().await;
    assert_eq!(app.status_of(ORDER).await, 404, "served normally again");
    assert_eq!(fault_active(&app.metrics().await, "error"), Some(0.0));
}

#[actix_web::test]
async fn a_latency_fault_moves_requests_into_slower_buckets_until_cleared() {
    let app = spawn_app_with(settings_with_faults(&[])).await;
    app.put_faults(r#"{"latency_ms": 300}"#).await;
    let started = Instant::now();
    app.get(ORDER).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let metrics = app.metrics().await;
    assert_eq!(
        (
            bucket(&metrics, "/api/orders/{id}", "404", "0.25"),
            bucket(&metrics, "/api/orders/{id}", "404", "0.5")
        ),
        (0.0, 1.0)
    );
    assert_eq!(fault_active(&metrics, "latency"), Some(1.0));

    app.clear_faults().await;
    app.get(ORDER).await;
    let metrics = app.metrics().await;
    assert_eq!(
        bucket(&metrics, "/api/orders/{id}", "404", "0.25"),
        1.0,
        "the request after clearing was fast"
    );
}

#[actix_web::test]
async fn fault_headers_inject_latency_and_errors_into_one_request() {
    let app = spawn_app_with(settings_with_faults(&[])).await;
    let response = app
        .client
        .get(app.url(ORDER))
        .header("x-fault-error-status", "429")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let response = app
        .client
        .get(app.url(ORDER))
        .header("x-fault-latency-ms", "300")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let metrics = app.metrics().await;
    let slow = bucket(&metrics, "/api/orders/{id}", "404", "0.5")
        - bucket(&metrics, "/api/orders/{id}", "404", "0.25");
    assert_eq!(
        slow, 1.0,
        "the request with x-fault-latency-ms: 300 landed between 0.25 and 0.5 s"
    );
}

#[actix_web::test]
async fn a_plan_with_a_ttl_clears_itself() {
    let app = spawn_app_with(settings_with_faults(&[])).await;
    app.put_faults(r#"{"error_rate": 1.0, "ttl_seconds": 1}"#)
        .await;
    assert_eq!(app.status_of(ORDER).await, 500);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fault_active(&app.metrics().await, "error") != Some(0.0) {
        assert!(Instant::now() < deadline, "the plan did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.status_of(ORDER).await, 404);
}

#[actix_web::test]
async fn a_start_up_plan_is_in_force_from_the_first_request() {
    let app = spawn_app_with(settings_with_faults(&[
        "--faults",
        r#"{"error_rate": 1.0, "error_status": 502}"#,
    ]))
    .await;
    assert_eq!(app.status_of(ORDER).await, 502);
}

#[actix_web::test]
async fn a_memory_leak_fault_grows_resident_memory_to_its_cap_and_clearing_releases_it() {
    const MIB: f64 = 1024.0 * 1024.0;
    let app = spawn_app_with(settings_with_faults(&[])).await;
    let rss = |m: &str| sample(m, "process_resident_memory_bytes", &[]).unwrap();
    let before = rss(&app.metrics().await);

    app.put_faults(r#"{"leak_bytes_per_request": 8388608, "leak_cap_bytes": 67108864}"#)
        .await;
    for _ in 0..12 {
        app.get(ORDER).await;
    }
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "sample_app_fault_leaked_bytes", &[]),
        Some(64.0 * MIB),
        "capped at 64 MiB"
    );
    let grown = rss(&metrics) - before;
    assert!(grown >= 56.0 * MIB, "RSS grew only {:.1} MiB", grown / MIB);

    app.clear_faults().await;
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "sample_app_fault_leaked_bytes", &[]),
        Some(0.0)
    );
    let released = rss(&metrics) - before;
    assert!(
        released < grown - 48.0 * MIB,
        "RSS still {:.1} MiB above start",
        released / MIB
    );
}

#[actix_web::test]
async fn downstream_faults_fail_the_callers_client_calls_until_cleared() {
    let downstream = spawn_app().await;
    let settings = settings_with_faults(&[
        "--downstream-url",
        &downstream.address,
        "--downstream-timeout-ms",
        "300",
    ]);
    let entry = spawn_app_with(settings).await;
    assert_eq!(entry.status_of("/external").await, 200);

    entry.put_faults(r#"{"downstream_error_rate": 1.0}"#).await;
    let (status, kind) = error_answer(entry.get("/external").await).await;
    assert_eq!((status, kind.as_str()), (502, "downstream_error"));
    entry.put_faults(r#"{"downstream_timeout": true}"#).await;
    let started = Instant::now();
    let (status, kind) = error_answer(entry.get("/external").await).await;
    assert_eq!((status, kind.as_str()), (504, "downstream_timeout"));
    assert!(started.elapsed() >= Duration::from_millis(300));
    let metrics = entry.metrics().await;
    let count = |error_type| {
        sample(
            &metrics,
            "http_client_request_duration_seconds_count",
            &[("error_type", error_type)],
        )
    };
    assert_eq!((count("503"), count("timeout")), (Some(1.0), Some(1.0)));
    assert_eq!(fault_active(&metrics, "downstream_timeout"), Some(1.0));

    entry.clear_faults().await;
    assert_eq!(entry.status_of("/external").await, 200);
}

/// The share of CPU samples whose stack includes a function named like `needle`.
fn share_of_samples_in(profile: &Profile, needle: &str) -> f64 {
    let name_of = |function_id: u64| {
        let f = profile
            .function
            .iter()
            .find(|f| f.id == function_id)
            .unwrap();
        profile.string_table[f.name as usize].as_str()
    };
    let location_has = |location_id: u64| {
        let location = profile
            .location
            .iter()
            .find(|l| l.id == location_id)
            .unwrap();
        location
            .line
            .iter()
            .any(|line| name_of(line.function_id).contains(needle))
    };
    let weight = |s: &pprof::protos::Sample| s.value.first().copied().unwrap_or(0) as f64;
    let total: f64 = profile.sample.iter().map(weight).sum();
    let hit: f64 = profile
        .sample
        .iter()
        .filter(|s| s.location_id.iter().any(|&l| location_has(l)))
        .map(weight)
        .sum();
    if total == 0.0 { 0.0 } else { hit / total }
}

#[actix_web::test]
async fn a_cpu_burn_fault_spends_cpu_in_a_dominant_named_frame_until_cleared() {
    let (profiler, _thread) = Profiler::start(ProfilerSettings {
        push_interval: Duration::from_secs(5),
        sink: None,
        heap: false,
    })
    .unwrap();
    let app = spawn_app_with_profiler(settings_with_faults(&[]), Some(profiler)).await;
    let cpu = |m: &str| sample(m, "process_cpu_seconds_total", &[]).unwrap();
    let pull = |app_url: String| async move {
        let bytes = reqwest::get(format!("{app_url}/debug/pprof/profile?seconds=2"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        Profile::decode(bytes.as_ref()).unwrap()
    };

    app.put_faults(r#"{"cpu_burn_ms": 150}"#).await;
    let cpu_before = cpu(&app.metrics().await);
    let profile = tokio::spawn(pull(app.address.clone()));
    for _ in 0..10 {
        app.get(ORDER).await;
    }
    let profile = profile.await.unwrap();
    let burned = cpu(&app.metrics().await) - cpu_before;
    assert!(
        burned >= 1.0,
        "10 requests x 150 ms burned only {burned:.2} s of CPU"
    );
    let share = share_of_samples_in(&profile, "inject_cpu_burn");
    assert!(
        share >= 0.5,
        "inject_cpu_burn holds only {:.0} % of the samples",
        share * 100.0
    );

    app.clear_faults().await;
    let profile = tokio::spawn(pull(app.address.clone()));
    for _ in 0..10 {
        app.get(ORDER).await;
    }
    let share = share_of_samples_in(&profile.await.unwrap(), "inject_cpu_burn");
    assert!(
        share < 0.05,
        "still burning after clear: {:.0} %",
        share * 100.0
    );
}

#[actix_web::test]
async fn cpu_burns_asked_for_by_header_are_capped_like_generate_load() {
    use sample_app::state::MAX_CONCURRENT_FAULT_BURNS;

    let app = spawn_app_with(settings_with_faults(&[])).await;
    let asked = 2 * MAX_CONCURRENT_FAULT_BURNS;
    let burns = (0..asked).map(|_| {
        app.client
            .get(app.url(ORDER))
            .header("x-fault-cpu-burn-ms", "1500")
            .send()
    });
    let mut burned = 0;
    let mut refused = Vec::new();
    for response in futures_util::future::join_all(burns).await {
        let response = response.expect("request sent");
        match response.status().as_u16() {
            404 => burned += 1,
            _ => refused.push(error_answer(response).await),
        }
    }
    assert_eq!(burned, MAX_CONCURRENT_FAULT_BURNS, "refused: {refused:?}");
    assert!(
        refused
            .iter()
            .all(|(status, kind)| *status == 429 && kind == "too_many_requests"),
        "{refused:?}"
    );
    // The permits come back when the burns end.
    let response = app
        .client
        .get(app.url(ORDER))
        .header("x-fault-cpu-burn-ms", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[actix_web::test]
async fn with_an_admin_listen_address_the_fault_switch_and_profiles_are_served_only_there() {
    let app = spawn_app_with(settings_with_faults(&["--admin-listen", "127.0.0.1:0"])).await;
    let admin = app.admin_address.clone().expect("an admin address");
    for path in [
        "/admin/faults",
        "/debug/pprof/heap",
        "/debug/pprof/profile?seconds=1",
    ] {
        assert_eq!(
            assert_error(app.get(path).await, 404).await,
            "not_found",
            "{path} on the public address"
        );
    }
    assert_eq!(app.status_of("/health").await, 200);
    assert_eq!(app.status_of("/metrics").await, 200);
    let on_admin = |path: &str| app.client.get(format!("{admin}{path}")).send();
    let faults = on_admin("/admin/faults").await.unwrap();
    assert_eq!(faults.status(), 200);
    let profile = on_admin("/debug/pprof/profile?seconds=1").await.unwrap();
    assert_ne!(
        profile.status(),
        404,
        "the profile route is mounted on the admin address"
    );
    for path in ["/health", ORDER, "/"] {
        let response = on_admin(path).await.unwrap();
        assert_eq!(
            assert_error(response, 404).await,
            "not_found",
            "{path} on the admin address"
        );
    }
}
