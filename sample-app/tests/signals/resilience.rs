//! A missing backend never blocks or fails a request: with Tempo and Pyroscope unreachable the
//! service answers normally and says so once per backend; with both hanging, no request waits.

use std::time::{Duration, Instant};

use crate::support::{CaptureServer, RunningApp, client, closed_port, wait_until};

fn burst(app: &RunningApp, requests: usize) -> Duration {
    let http = client();
    let mut slowest = Duration::ZERO;
    for n in 0..requests {
        let (path, expected) = match n % 4 {
            0 => ("/api/orders/1".to_owned(), 404),
            1 => ("/health".to_owned(), 200),
            2 => ("/generate-load?ms=5".to_owned(), 200),
            _ => (format!("/api/inventory/item-{n}"), 200),
        };
        let started = Instant::now();
        let response = http.get(app.url(&path)).send().unwrap();
        slowest = slowest.max(started.elapsed());
        assert_eq!(response.status(), expected, "{path}");
    }
    slowest
}

fn unreachable_warnings(app: &RunningApp, backend: &str) -> usize {
    app.logs()
        .iter()
        .filter(|l| {
            l["backend"] == backend
                && l["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("unreachable")
        })
        .count()
}

#[test]
fn with_backends_down_requests_succeed_and_each_backend_is_reported_once() {
    let app = RunningApp::spawn(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", closed_port()),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        (
            "PYROSCOPE_SERVER_ADDRESS",
            format!("http://127.0.0.1:{}", closed_port()),
        ),
        ("PYROSCOPE_PUSH_INTERVAL_SECONDS", "1".into()),
    ]);
    burst(&app, 200);
    app.wait_for_log("the Tempo warning", |l| l["backend"] == "otlp-traces");
    app.wait_for_log("the Pyroscope warning", |l| l["backend"] == "pyroscope");
    // More failures after the first warning — several batches and pushes — stay quiet.
    let lines_before = app.logs().len();
    burst(&app, 200);
    // Each request writes an access line; lines are written in batches, so wait for them.
    wait_until(
        "the second burst's access lines",
        Duration::from_secs(20),
        || (app.logs().len() >= lines_before + 200).then_some(()),
    );
    assert_eq!(unreachable_warnings(&app, "otlp-traces"), 1);
    assert_eq!(unreachable_warnings(&app, "pyroscope"), 1);
}

#[test]
fn with_backends_that_hang_no_request_waits_on_an_exporter() {
    // Both backends accept connections and never answer; the exporter would wait its full
    // 10 s timeout. The bound below is 5x under that: it fails only if a request waits on an
    // export, not because the machine is slow.
    let tempo = CaptureServer::black_hole();
    let pyroscope = CaptureServer::black_hole();
    let app = RunningApp::spawn(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", tempo.url()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        ("OTEL_BSP_EXPORT_TIMEOUT", "10000".into()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64".into()),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16".into()),
        ("PYROSCOPE_SERVER_ADDRESS", pyroscope.url()),
        ("PYROSCOPE_PUSH_INTERVAL_SECONDS", "1".into()),
    ]);
    let slowest = burst(&app, 300);
    assert!(
        slowest < Duration::from_secs(2),
        "a request took {slowest:?} while exporters hung"
    );
}
