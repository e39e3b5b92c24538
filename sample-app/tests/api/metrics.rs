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

#[actix_web::test]
async fn made_up_methods_are_one_other_label_value_however_many_there_are() {
    // Arrange: the series a normal request creates.
    let app = spawn_app().await;
    app.get("/api/orders/1").await;
    let before = app.metrics().await.lines().count();

    // Act: 300 distinct methods nobody knows, on a real route and on an unknown path.
    for n in 0..300 {
        let method = reqwest::Method::from_bytes(format!("X{n}").as_bytes()).unwrap();
        let path = if n % 2 == 0 {
            "/api/orders/1"
        } else {
            "/nowhere"
        };
        let response = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
    }

    // Assert: they share `_OTHER`, so the exposition grew by a few series, not 300.
    let body = app.metrics().await;
    assert!(
        !body.contains("http_request_method=\"X"),
        "a raw method became a label"
    );
    assert!(body.contains("http_request_method=\"_OTHER\""));
    let grown = body.lines().count() - before;
    // Two histograms (405 on the route, 404 unmatched) of 17 lines each, one gauge line, and
    // the scrape's own series: the bound does not depend on the number of methods.
    assert!(
        grown <= 60,
        "/metrics grew by {grown} lines for 300 methods"
    );
}

#[actix_web::test]
async fn head_is_answered_on_every_get_route_with_the_get_status_and_no_body() {
    let app = spawn_app().await;
    for (path, status) in [
        ("/health", 200),
        ("/ready", 200),
        ("/metrics", 200),
        ("/", 200),
        ("/api/orders/999", 404),
    ] {
        let response = app.client.head(app.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "HEAD {path}");
        assert!(
            response.bytes().await.unwrap().is_empty(),
            "HEAD {path} sent a body"
        );
    }
    // A method a route does not have is still a 405, not a HEAD-shaped 200.
    let response = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
}
