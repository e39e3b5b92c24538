//! `/metrics` speaks OpenMetrics and labels requests by route template, never by raw path.

use crate::helpers::spawn_app;

#[actix_web::test]
async fn metrics_are_served_as_openmetrics_text() {
    let app = spawn_app().await;
    app.get("/health").await; // families without samples are not exposed
    let response = app.get("/metrics").await;
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let body = response.text().await.unwrap();
    assert!(body.trim_end().ends_with("# EOF"));
    for name in [
        "# TYPE http_server_request_duration_seconds histogram",
        "# TYPE http_server_active_requests gauge",
        "# TYPE process_cpu_seconds counter",
        "\nprocess_cpu_seconds_total ",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_start_time_seconds gauge",
        "sample_app_build_info{",
    ] {
        assert!(body.contains(name), "{name} missing");
    }
}

#[actix_web::test]
async fn requests_are_labelled_by_route_template_and_unmatched_paths_share_one_value() {
    let app = spawn_app().await;
    for id in [1, 2, 3] {
        app.get(&format!("/api/orders/{id}")).await;
    }
    for n in 0..5 {
        app.get(&format!("/no/such/page/{n}")).await;
    }
    let body = app.metrics().await;
    let count = |route: &str, status: &str| -> Option<f64> {
        body.lines()
            .find(|l| {
                l.starts_with("http_server_request_duration_seconds_count{")
                    && l.contains(&format!("http_route=\"{route}\""))
                    && l.contains(&format!("http_response_status_code=\"{status}\""))
            })
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    };
    assert_eq!(count("/api/orders/{id}", "404"), Some(3.0));
    assert_eq!(count("unmatched", "404"), Some(5.0));
    assert!(
        !body.contains("/no/such/page"),
        "a raw path leaked into a label"
    );
    assert!(!body.contains("http_route=\"/api/orders/1\""));
}
