//! `/metrics` is valid OpenMetrics, checked by the official Python client's parser (the format
//! Prometheus needs for exemplars), exemplars included.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use crate::support::{RunningApp, client, python, traceparent};

const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(sys.stdin.read()))
print(json.dumps({
    "names": sorted({f.name for f in families}),
    "exemplar_trace_ids": sorted({s.exemplar.labels.get("trace_id") for f in families for s in f.samples if s.exemplar}),
}))
"#;

#[test]
fn metrics_parse_as_openmetrics_with_exemplars() {
    let app = RunningApp::spawn(&[("OTEL_TRACES_EXPORTER", "none".into())]);
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let ok = client()
        .get(app.url("/api/orders/1"))
        .header("traceparent", traceparent(trace_id, "10f067aa0ba902b7"))
        .send()
        .unwrap();
    assert_eq!(ok.status(), 404);
    let text = app.metrics();

    let mut parser = Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the OpenMetrics parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for name in [
        "http_server_request_duration_seconds",
        "http_server_active_requests",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "sample_app_build_info",
    ] {
        assert!(
            parsed["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == name),
            "{name} not parsed: {parsed}"
        );
    }
    assert_eq!(parsed["exemplar_trace_ids"], serde_json::json!([trace_id]));
}
