//! One request, one trace id, everywhere: the exemplar on `/metrics`, the JSON log lines of the
//! request, and the span the OTLP receiver got — whose parent is the caller's span.

use serde_json::Value;

use crate::support::{
    OtlpSink, RunningApp, SPAN_KIND_CLIENT, SPAN_KIND_SERVER, client, exporting_to, in_trace,
    traceparent,
};

/// `(trace_id, span_id)` of the exemplar on a bucket line of `metric` whose labels contain `labels`.
fn exemplar(metrics: &str, metric: &str, labels: &str, trace_id: &str) -> Option<(String, String)> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}_bucket{{")) && l.contains(labels))
        .filter_map(|l| l.split_once(" # ").map(|(_, exemplar)| exemplar.to_owned()))
        .find(|e| e.contains(&format!("trace_id=\"{trace_id}\"")))
        .map(|e| {
            let value = |key: &str| {
                e.split(&format!("{key}=\""))
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned()
            };
            (value("trace_id"), value("span_id"))
        })
}

fn one_request_shares_its_trace_id_across_metrics_logs_and_spans(protocol: &str) {
    // Arrange
    let sink = OtlpSink::start();
    let app = RunningApp::spawn(&exporting_to(&sink, protocol));
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");

    // Act
    let response = client()
        .post(app.url("/api/orders"))
        .header("traceparent", traceparent(trace_id, caller_span))
        .json(&serde_json::json!({"item": "widget", "quantity": 2}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let metrics = app.metrics();

    // Assert: the exemplar carries the trace id and the server span's id…
    let (exemplar_trace, server_span_id) = exemplar(
        &metrics,
        "http_server_request_duration_seconds",
        "http_route=\"/api/orders\"",
        trace_id,
    )
    .unwrap_or_else(|| panic!("no exemplar with trace {trace_id} in:\n{metrics}"));
    assert_eq!(exemplar_trace, trace_id);

    // …every log line of the request carries both…
    app.wait_for_log("the access log line", |l| {
        l["target"] == "access" && l["trace_id"] == trace_id
    });
    let request_lines: Vec<Value> = app
        .logs()
        .into_iter()
        .filter(|l| l["trace_id"] == trace_id)
        .collect();
    let messages: Vec<&str> = request_lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.contains(&"order accepted") && messages.contains(&"request completed"),
        "{messages:?}"
    );
    for line in &request_lines {
        assert_eq!(line["span_id"], server_span_id.as_str(), "{line}");
    }
    let access = request_lines
        .iter()
        .find(|l| l["target"] == "access")
        .unwrap();
    assert_eq!(
        (&access["method"], &access["route"], &access["status"]),
        (&"POST".into(), &"/api/orders".into(), &201.into())
    );

    // …and the exported span is that span, child of the caller's.
    let span = sink.find_span("the server span", |s| {
        s["trace_id"] == trace_id && s["kind"] == SPAN_KIND_SERVER
    });
    assert_eq!(span["transport"], protocol.split('/').next().unwrap());
    assert_eq!(span["name"], "POST /api/orders");
    assert_eq!(span["span_id"], server_span_id.as_str());
    assert_eq!(span["parent_span_id"], caller_span);
    assert_eq!(span["attributes"]["http.request.method"], "POST");
    assert_eq!(span["attributes"]["http.route"], "/api/orders");
    assert_eq!(span["attributes"]["http.response.status_code"], 201);
    assert_eq!(span["attributes"]["url.path"], "/api/orders");
    assert_eq!(span["resource"]["service.name"], "sample-app");
    for key in [
        "service.version",
        "service.instance.id",
        "deployment.environment.name",
    ] {
        assert!(
            span["resource"][key].is_string(),
            "resource lacks {key}: {}",
            span["resource"]
        );
    }
}

#[test]
fn one_request_shares_its_trace_id_across_metrics_logs_and_spans_over_grpc() {
    one_request_shares_its_trace_id_across_metrics_logs_and_spans("grpc");
}

#[test]
fn one_request_shares_its_trace_id_across_metrics_logs_and_spans_over_http_protobuf() {
    one_request_shares_its_trace_id_across_metrics_logs_and_spans("http/protobuf");
}

#[test]
fn external_carries_the_trace_to_the_downstream_as_a_child_of_its_client_span() {
    // Arrange: two processes of the same binary, in their two roles.
    let sink = OtlpSink::start();
    let mut downstream_env = exporting_to(&sink, "grpc");
    downstream_env.push(("OTEL_SERVICE_NAME", "sample-app-downstream".into()));
    let downstream = RunningApp::spawn(&downstream_env);
    let mut entry_env = exporting_to(&sink, "grpc");
    entry_env.push(("SAMPLE_APP_DOWNSTREAM_URL", downstream.address.clone()));
    let entry = RunningApp::spawn(&entry_env);
    let (trace_id, caller_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");

    // Act
    let response = client()
        .get(entry.url("/external"))
        .header("traceparent", traceparent(trace_id, caller_span))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());

    // Assert: caller → entry server span → client span → downstream server span, one trace.
    let entry_span = sink.find_span(
        "the entry server span",
        in_trace(trace_id, SPAN_KIND_SERVER, "sample-app"),
    );
    let client_span = sink.find_span(
        "the client span",
        in_trace(trace_id, SPAN_KIND_CLIENT, "sample-app"),
    );
    let downstream_span = sink.find_span(
        "the downstream server span",
        in_trace(trace_id, SPAN_KIND_SERVER, "sample-app-downstream"),
    );
    assert_eq!(entry_span["name"], "GET /external");
    assert_eq!(entry_span["parent_span_id"], caller_span);
    assert_eq!(client_span["parent_span_id"], entry_span["span_id"]);
    assert_eq!(client_span["name"], "GET");
    assert_eq!(client_span["attributes"]["server.address"], "127.0.0.1");
    assert_eq!(client_span["attributes"]["http.response.status_code"], 200);
    assert_eq!(downstream_span["parent_span_id"], client_span["span_id"]);
    assert_eq!(downstream_span["name"], "GET /api/inventory/{item}");

    // The caller's client-call histogram points at the same trace.
    let metrics = client()
        .get(entry.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let (_, span_id) = exemplar(
        &metrics,
        "http_client_request_duration_seconds",
        "server_address=\"127.0.0.1\"",
        trace_id,
    )
    .expect("a client-call exemplar for the trace");
    assert_eq!(span_id, client_span["span_id"].as_str().unwrap());
    // And the downstream's logs carry the trace too.
    downstream.wait_for_log("a downstream log line in the trace", |l| {
        l["trace_id"] == trace_id && l["target"] == "access"
    });
}

#[test]
fn an_invalid_traceparent_is_ignored_and_the_request_starts_a_new_trace() {
    // W3C Trace Context: a receiver that cannot parse `traceparent` must not fail the request;
    // it starts a new trace. Hostile values must not produce a 5xx, a hang, or a reused id.
    let sink = OtlpSink::start();
    let app = RunningApp::spawn(&exporting_to(&sink, "grpc"));
    for (n, hostile) in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "garbage",
        &"0".repeat(8000),
    ]
    .iter()
    .enumerate()
    {
        let path = format!("/api/orders/{}", 9000 + n);
        let response = client()
            .get(app.url(&path))
            .header("traceparent", *hostile)
            .send()
            .unwrap();
        assert_eq!(response.status(), 404, "traceparent {hostile:.40}");
        let span = sink.find_span("the span of the request", |s| {
            s["attributes"]["url.path"] == path.as_str()
        });
        assert_eq!(
            span["parent_span_id"], "",
            "a hostile traceparent became a parent: {hostile:.40}"
        );
        assert_ne!(span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
