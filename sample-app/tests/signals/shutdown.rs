//! SIGTERM: in-flight requests finish, then the spans still queued are flushed before exit —
//! with the gRPC exporter, whose blocking shutdown deadlocks on actix's runtime if done naively.

use std::time::Duration;

use crate::support::{OtlpSink, RunningApp, client, exporting_to, traceparent, wait_until};

#[test]
fn sigterm_lets_in_flight_requests_finish_and_flushes_their_spans() {
    let sink = OtlpSink::start();
    let mut env = exporting_to(&sink, "grpc");
    // Only the shutdown flush can deliver spans within this test: the batch delay is a minute.
    env.retain(|(k, _)| *k != "OTEL_BSP_SCHEDULE_DELAY");
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "60000".into()));
    let mut app = RunningApp::spawn(&env);
    let trace_id = "6bf92f3577b34da6a3ce929d0e0e4736";
    let slow = {
        let url = app.url("/slow");
        let header = traceparent(trace_id, "20f067aa0ba902b7");
        std::thread::spawn(move || {
            client()
                .get(url)
                .header("traceparent", header)
                .send()
                .map(|r| r.status().as_u16())
        })
    };
    // Terminate only once the slow request is being served.
    wait_until(
        "the slow request to be in flight",
        Duration::from_secs(10),
        || {
            let metrics = client().get(app.url("/metrics")).send().ok()?.text().ok()?;
            metrics
                .lines()
                .any(|l| l.starts_with("http_server_active_requests{") && l.ends_with(" 2"))
                .then_some(())
        },
    );

    let status = app.terminate();

    assert!(status.success(), "exit status {status}");
    assert_eq!(
        slow.join()
            .unwrap()
            .expect("the in-flight request got an answer"),
        200
    );
    let span = sink.find_span("the flushed server span", |s| {
        s["trace_id"] == trace_id && s["name"] == "GET /slow"
    });
    assert_eq!(span["attributes"]["http.response.status_code"], 200);
    assert!(
        sink.spans()
            .iter()
            .any(|s| s["name"] == "simulated slow work" && s["trace_id"] == trace_id)
    );
    // Log lines are written in batches (src/telemetry/log_writer.rs); the ones logged in the
    // last moments, the slow request's access line and the shutdown's own, are written before
    // the process exits. The lines already read stay; the pipe's last ones arrive by EOF.
    app.wait_for_log("the slow request's access line", |l| {
        l["target"] == "access" && l["trace_id"] == trace_id
    });
    app.wait_for_log("the shutdown line", |l| {
        l["message"] == "stopped serving; flushing telemetry"
    });
}
