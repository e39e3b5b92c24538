//! A missing, dead or hanging dependency gives `/external` a clear 502 or 504 and shows up in
//! the caller's client-call histogram with its `error_type`.

use std::net::TcpListener;

use sample_app::settings::Settings;

use crate::helpers::{error_answer, spawn_app_with};

fn settings_with_downstream(url: String) -> Settings {
    Settings::from_sources(
        [
            "sample-app",
            "--listen",
            "127.0.0.1:0",
            "--downstream-url",
            &url,
            "--downstream-timeout-ms",
            "300",
        ],
        |_| None,
    )
    .unwrap()
}

#[actix_web::test]
async fn a_downstream_that_refuses_connections_is_a_502_counted_as_connect_error() {
    let port = crate::unused_port::unused_port();
    let app = spawn_app_with(settings_with_downstream(format!("http://127.0.0.1:{port}"))).await;

    let (status, error) = error_answer(app.get("/external").await).await;

    assert_eq!((status, error.as_str()), (502, "downstream_unreachable"));
    let metrics = app.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("http_client_request_duration_seconds_count{")
                && l.contains("error_type=\"connect\"")
                && l.ends_with(" 1")
        ),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_downstream_that_never_answers_is_a_504_after_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap(); // accepts into the backlog, never answers
    let app = spawn_app_with(settings_with_downstream(format!(
        "http://{}",
        listener.local_addr().unwrap()
    )))
    .await;

    let (status, error) = error_answer(app.get("/external").await).await;

    assert_eq!((status, error.as_str()), (504, "downstream_timeout"));
    assert!(app.metrics().await.contains("error_type=\"timeout\""));
    drop(listener);
}
