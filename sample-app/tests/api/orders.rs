//! The order API and the demo endpoints answer as documented.

use serde_json::Value;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn a_created_order_can_be_read_back_from_its_location() {
    let app = spawn_app().await;
    let response = app
        .post_json("/api/orders", "{\"item\": \"widget\", \"quantity\": 3}")
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    assert_eq!(
        (created["item"].as_str(), created["quantity"].as_u64()),
        (Some("widget"), Some(3))
    );

    let read: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(read, created);
}

#[actix_web::test]
async fn the_index_lists_every_endpoint_and_health_and_readiness_answer() {
    let app = spawn_app().await;
    let index: Value = app.get("/").await.json().await.unwrap();
    let paths: Vec<&str> = index["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for expected in [
        "/health",
        "/ready",
        "/metrics",
        "/slow",
        "/external",
        "/api/orders",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
    assert_eq!(app.get("/health").await.status(), 200);
    let ready: Value = app.get("/ready").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
}

#[actix_web::test]
async fn deliberate_errors_answer_with_their_status() {
    let app = spawn_app().await;
    assert_eq!(app.get("/error").await.status(), 500);
    assert_eq!(app.get("/error?type=500").await.status(), 500);
    assert_eq!(app.get("/error?type=404").await.status(), 404);
}

#[actix_web::test]
async fn a_cpu_burst_reports_the_time_it_burned() {
    let app = spawn_app().await;
    let body: Value = app.get("/generate-load?ms=20").await.json().await.unwrap();
    assert_eq!(body["burned_ms"], 20);
}

#[actix_web::test]
async fn the_container_healthcheck_probe_passes_on_a_running_app_and_fails_on_a_closed_port() {
    let app = spawn_app().await;
    let address: std::net::SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let probe = tokio::task::spawn_blocking(move || sample_app::healthcheck::probe(address));
    probe.await.unwrap().expect("healthy");

    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], crate::unused_port::unused_port()));
    let err = tokio::task::spawn_blocking(move || sample_app::healthcheck::probe(closed))
        .await
        .unwrap()
        .unwrap_err();
    assert!(format!("{err:#}").contains("while connecting"), "{err:#}");
}
