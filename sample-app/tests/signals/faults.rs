//! Faults leave evidence in the signals a trace backend and Loki see: error spans with the
//! fault named, error log lines carrying the trace id, long spans for injected latency, failed
//! client spans for downstream faults — and the evidence stops when the plan is cleared. Also
//! the order flow across the two services in one trace.

use serde_json::{Value, json};

use crate::support::{
    OtlpSink, RunningApp, SPAN_KIND_CLIENT, SPAN_KIND_SERVER, SPAN_STATUS_ERROR, client,
    exporting_to, in_trace, traceparent,
};

fn app_with_faults(sink: &OtlpSink, extra: &[(&'static str, String)]) -> RunningApp {
    let mut env = exporting_to(sink, "grpc");
    env.push(("SAMPLE_APP_FAULTS_ENABLED", "true".into()));
    env.extend(extra.iter().cloned());
    RunningApp::spawn(&env)
}

fn put_faults(app: &RunningApp, plan: Value) {
    let response = client()
        .put(app.url("/admin/faults"))
        .json(&plan)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
}

fn clear_faults(app: &RunningApp) {
    assert_eq!(
        client()
            .delete(app.url("/admin/faults"))
            .send()
            .unwrap()
            .status(),
        200
    );
}

fn get_traced(app: &RunningApp, path: &str, trace_id: &str) -> u16 {
    let header = traceparent(trace_id, "aaaaaaaaaaaaaaaa");
    client()
        .get(app.url(path))
        .header("traceparent", header)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn an_error_fault_marks_the_span_logs_an_error_and_stops_when_cleared() {
    let sink = OtlpSink::start();
    let app = app_with_faults(&sink, &[]);
    put_faults(&app, json!({"error_rate": 1.0, "error_status": 503}));
    app.wait_for_log("the structured 'fault plan applied' event", |l| {
        l["message"] == "fault plan applied" && l["fault.kinds"] == "error"
    });

    let failing = "7bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(get_traced(&app, "/api/orders/1", failing), 503);
    let span = sink.find_span("the failed span", |s| {
        s["trace_id"] == failing && s["kind"] == SPAN_KIND_SERVER
    });
    assert_eq!(span["status_code"], SPAN_STATUS_ERROR);
    assert_eq!(span["attributes"]["fault.injected"], "error");
    assert_eq!(span["attributes"]["error.type"], "fault_injected");
    assert_eq!(span["attributes"]["http.response.status_code"], 503);
    let log = app.wait_for_log("the error log line", |l| {
        l["trace_id"] == failing && l["level"] == "error" && l["target"] != "access"
    });
    assert_eq!(log["message"], "injected fault: failing the request");
    let metrics = app.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("http_response_status_code=\"503\"")
                && l.contains(&format!("trace_id=\"{failing}\""))),
        "no exemplar on the 503 series"
    );

    clear_faults(&app);
    let healthy = "8bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(get_traced(&app, "/api/orders/1", healthy), 404);
    let span = sink.find_span("the span after clearing", |s| {
        s["trace_id"] == healthy && s["kind"] == SPAN_KIND_SERVER
    });
    assert_ne!(span["status_code"], SPAN_STATUS_ERROR);
    assert!(span["attributes"].get("fault.injected").is_none(), "{span}");
}

#[test]
fn a_latency_fault_shows_as_a_long_span_with_an_injected_latency_child() {
    let sink = OtlpSink::start();
    let app = app_with_faults(&sink, &[]);
    put_faults(&app, json!({"latency_ms": 250}));
    let trace_id = "9bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(get_traced(&app, "/api/orders/1", trace_id), 404);
    let span = sink.find_span("the slow span", |s| {
        s["trace_id"] == trace_id && s["kind"] == SPAN_KIND_SERVER
    });
    let duration_ms =
        (span["end_ns"].as_u64().unwrap() - span["start_ns"].as_u64().unwrap()) / 1_000_000;
    assert!(duration_ms >= 250, "the span lasted {duration_ms} ms");
    assert_eq!(span["attributes"]["fault.injected"], "latency");
    let child = sink.find_span("the injected latency span", |s| {
        s["trace_id"] == trace_id && s["name"] == "injected latency"
    });
    assert_eq!(child["parent_span_id"], span["span_id"]);
}

#[test]
fn downstream_faults_mark_the_callers_client_spans_as_errors() {
    let sink = OtlpSink::start();
    let downstream = app_with_faults(
        &sink,
        &[("OTEL_SERVICE_NAME", "sample-app-downstream".into())],
    );
    let entry = app_with_faults(
        &sink,
        &[
            ("SAMPLE_APP_DOWNSTREAM_URL", downstream.address.clone()),
            ("SAMPLE_APP_DOWNSTREAM_TIMEOUT_MS", "300".into()),
        ],
    );
    for (plan, status, error_type, trace_id) in [
        (
            json!({"downstream_error_rate": 1.0}),
            502,
            "503",
            "a1f92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            json!({"downstream_timeout": true}),
            504,
            "timeout",
            "a2f92f3577b34da6a3ce929d0e0e4736",
        ),
    ] {
        put_faults(&entry, plan);
        assert_eq!(get_traced(&entry, "/external", trace_id), status);
        let client_span = sink.find_span("the failed client span", |s| {
            s["trace_id"] == trace_id && s["kind"] == SPAN_KIND_CLIENT
        });
        assert_eq!(client_span["status_code"], SPAN_STATUS_ERROR);
        assert_eq!(client_span["attributes"]["error.type"], error_type);
        let server = sink.find_span("the entry span", |s| {
            s["trace_id"] == trace_id && s["kind"] == SPAN_KIND_SERVER
        });
        assert_eq!(
            server["status_code"], SPAN_STATUS_ERROR,
            "a 5xx from the caller is a server error too"
        );
    }
    clear_faults(&entry);
    assert_eq!(
        get_traced(&entry, "/external", "a3f92f3577b34da6a3ce929d0e0e4736"),
        200
    );
}

#[test]
fn an_order_is_one_trace_across_both_services() {
    let sink = OtlpSink::start();
    let downstream = RunningApp::spawn(
        &[
            exporting_to(&sink, "grpc"),
            vec![("OTEL_SERVICE_NAME", "sample-app-downstream".into())],
        ]
        .concat(),
    );
    let entry = RunningApp::spawn(
        &[
            exporting_to(&sink, "grpc"),
            vec![("SAMPLE_APP_DOWNSTREAM_URL", downstream.address.clone())],
        ]
        .concat(),
    );
    let trace_id = "b1f92f3577b34da6a3ce929d0e0e4736";

    let response = client()
        .post(entry.url("/api/orders"))
        .header("traceparent", traceparent(trace_id, "bbbbbbbbbbbbbbbb"))
        .json(&json!({"item": "gear box", "quantity": 3}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);

    let order = sink.find_span(
        "the order span",
        in_trace(trace_id, SPAN_KIND_SERVER, "sample-app"),
    );
    let stock_check = sink.find_span(
        "the stock-check client span",
        in_trace(trace_id, SPAN_KIND_CLIENT, "sample-app"),
    );
    let inventory = sink.find_span(
        "the inventory span",
        in_trace(trace_id, SPAN_KIND_SERVER, "sample-app-downstream"),
    );
    assert_eq!(order["name"], "POST /api/orders");
    assert_eq!(stock_check["parent_span_id"], order["span_id"]);
    assert_eq!(inventory["parent_span_id"], stock_check["span_id"]);
    assert_eq!(
        inventory["attributes"]["url.path"],
        "/api/inventory/gear%20box"
    );
    let log = entry.wait_for_log("the order log line", |l| {
        l["trace_id"] == trace_id && l["message"] == "order accepted"
    });
    assert!(log["order.in_stock"].is_u64(), "{log}");
}
