//! What a newcomer sees first in Tempo and Loki must be requests, not probes: health checks,
//! readiness probes and scrapes make no span and no access line (they are still counted), and
//! a method nobody knows is recorded as `_OTHER` in the span, the metric and the log line.

use crate::support::{OtlpSink, RunningApp, client, exporting_to, traceparent};

const PROBE_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const MARKER_TRACE: &str = "5b8aa5a2d2c872e8321cf37308d69df2";

#[test]
fn probes_and_scrapes_make_no_span_and_no_access_line_but_are_counted() {
    // Arrange
    let sink = OtlpSink::start();
    let app = RunningApp::spawn(&exporting_to(&sink, "grpc"));
    let http = client();

    // Act: every operational route, each with a trace context, then one real request.
    for path in ["/health", "/ready", "/metrics", "/health"] {
        let response = http
            .get(app.url(path))
            .header("traceparent", traceparent(PROBE_TRACE, "00f067aa0ba902b7"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    http.get(app.url("/api/orders/1"))
        .header("traceparent", traceparent(MARKER_TRACE, "00f067aa0ba902b7"))
        .send()
        .unwrap();

    // Assert: the real request's span and line arrived — and nothing of the probes did.
    sink.find_span("the marker request's span", |s| {
        s["trace_id"] == MARKER_TRACE
    });
    app.wait_for_log("the marker's access line", |l| {
        l["target"] == "access" && l["trace_id"] == MARKER_TRACE
    });
    let probe_spans: Vec<_> = sink
        .spans()
        .into_iter()
        .filter(|s| s["trace_id"] == PROBE_TRACE || s["attributes"]["url.path"] == "/health")
        .collect();
    assert!(probe_spans.is_empty(), "probes made spans: {probe_spans:?}");
    let probe_lines: Vec<_> = app
        .logs()
        .into_iter()
        .filter(|l| l["target"] == "access" && l["route"] != "/api/orders/{id}")
        .collect();
    assert!(
        probe_lines.is_empty(),
        "probes wrote access lines: {probe_lines:?}"
    );
    let metrics = app.metrics();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("http_server_request_duration_seconds_count{")
                && l.contains("http_route=\"/health\"")
                && l.ends_with(" 2")
        ),
        "the two health checks are not counted:\n{metrics}"
    );
}

#[test]
fn an_unknown_method_is_other_in_the_span_the_metric_and_the_access_line() {
    // Arrange
    let sink = OtlpSink::start();
    let app = RunningApp::spawn(&exporting_to(&sink, "grpc"));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";

    // Act
    let response = client()
        .request(
            reqwest::Method::from_bytes(b"X1").unwrap(),
            app.url("/api/orders/1"),
        )
        .header("traceparent", traceparent(trace_id, "00f067aa0ba902b7"))
        .send()
        .unwrap();

    // Assert
    assert_eq!(response.status(), 405);
    let span = sink.find_span("the server span", |s| s["trace_id"] == trace_id);
    assert_eq!(span["name"], "HTTP /api/orders/{id}");
    assert_eq!(span["attributes"]["http.request.method"], "_OTHER");
    assert_eq!(span["attributes"]["http.request.method_original"], "X1");
    let line = app.wait_for_log("the access line", |l| {
        l["target"] == "access" && l["trace_id"] == trace_id
    });
    assert_eq!(
        (&line["method"], &line["method_original"]),
        (&"_OTHER".into(), &"X1".into())
    );
    let metrics = app.metrics();
    assert!(metrics.contains("http_request_method=\"_OTHER\",http_route=\"/api/orders/{id}\",http_response_status_code=\"405\""));
    assert!(!metrics.contains("\"X1\""));
}
