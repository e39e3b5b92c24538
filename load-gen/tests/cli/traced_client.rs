//! load-gen is a traced client that can run forever: every request it sends is a client span
//! exported over OTLP and the parent of the server span it causes, trace ids never repeat —
//! across requests, runs with the same seed, or `--repeat` iterations — and a repeated scenario
//! keeps its metrics endpoint (bound once per process) through every iteration.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader as AsyncBufReader};

use crate::support::{Behaviour, TestServer, free_port, interrupt, workspace_root};

/// The real OTLP receiver (`scripts/otlp_sink.py`, PyPI `oteltest`), its spans collected.
struct OtlpReceiver {
    child: Child,
    grpc_port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl OtlpReceiver {
    fn start() -> Self {
        let python = std::env::var_os("SAMPLE_APP_TEST_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
        let mut child = Command::new(python)
            .arg(workspace_root().join("scripts/otlp_sink.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the OTLP receiver starts (run scripts/test once to install it)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ports: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(span) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(span);
                }
            }
        });
        let grpc_port = ports["grpc_port"].as_u64().unwrap() as u16;
        Self {
            child,
            grpc_port,
            spans,
        }
    }

    fn load_gen_spans(&self) -> Vec<Value> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s["resource"]["service.name"] == "load-gen")
            .cloned()
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run_traced(receiver: &OtlpReceiver, target: &str) -> Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_load-gen"))
        .args([
            "run",
            "--target",
            target,
            "--rate",
            "50",
            "--duration",
            "1s",
        ])
        .args(["--output", "json", "--quiet", "--seed", "7"])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", receiver.grpc_port),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .current_dir(workspace_root())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn every_request_is_an_exported_client_span_and_no_trace_id_repeats_across_runs() {
    // Arrange
    let receiver = OtlpReceiver::start();
    let server = TestServer::start(Behaviour::default()).await;

    // Act: the same seed twice — the same request mix, and it must not mean the same traces.
    let first = run_traced(&receiver, &server.url).await;
    let second = run_traced(&receiver, &server.url).await;

    // Assert: every request sent is a span (the process flushed them before exiting)…
    let sent =
        first["total_requests"].as_u64().unwrap() + second["total_requests"].as_u64().unwrap();
    let spans = receiver.load_gen_spans();
    assert_eq!(spans.len() as u64, sent, "one client span per request");
    // …each a root client span (kind 3) with the HTTP attributes and outcome…
    for span in &spans {
        assert_eq!(span["kind"], 3, "{span}");
        assert_eq!(span["parent_span_id"], "", "{span}");
        assert_eq!(
            span["attributes"]["http.response.status_code"], 200,
            "{span}"
        );
        assert!(
            span["attributes"]["url.full"]
                .as_str()
                .unwrap()
                .starts_with(&server.url)
        );
    }
    // …whose ids are the ones the target received, and no trace id appears twice.
    let trace_ids: HashSet<&str> = spans
        .iter()
        .map(|s| s["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(trace_ids.len(), spans.len(), "a trace id was reused");
    let by_trace: HashMap<&str, &str> = spans
        .iter()
        .map(|s| {
            (
                s["trace_id"].as_str().unwrap(),
                s["span_id"].as_str().unwrap(),
            )
        })
        .collect();
    for arrival in server.arrivals.lock().unwrap().iter() {
        let parts: Vec<&str> = arrival.traceparent.as_deref().unwrap().split('-').collect();
        assert_eq!(
            by_trace.get(parts[1]),
            Some(&parts[2]),
            "{arrival:?} is not a span's context"
        );
        assert_eq!(parts[3], "01");
    }
}

const QUICK: &str = "description = \"quick\"\n[traffic]\nrate = 20\nduration = \"1s\"\n";

#[tokio::test]
async fn a_repeated_scenario_keeps_its_metrics_endpoint_through_every_iteration() {
    // Arrange
    let server = TestServer::start(Behaviour::default()).await;
    let dir = std::env::temp_dir().join(format!("load-gen-repeat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("quick.toml"), QUICK).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());

    // Act: four iterations of a one-second scenario.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_load-gen"))
        .args([
            "scenario",
            "run",
            "quick",
            "--repeat",
            "--quiet",
            "--target",
            &server.url,
        ])
        .args(["--dir", dir.to_str().unwrap(), "--metrics-listen", &metrics])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = AsyncBufReader::new(child.stderr.take().unwrap()).lines();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        let mut seen = Vec::new();
        while let Some(line) = stderr.next_line().await.unwrap() {
            seen.push(line.clone());
            if line.contains("iteration 4") {
                return seen;
            }
        }
        panic!("load-gen exited during the iterations: {seen:#?}");
    })
    .await
    .expect("four iterations within 30 s");

    // Assert: still running, still serving its metrics, with the requests of every iteration.
    assert!(child.try_wait().unwrap().is_none(), "{seen:#?}");
    let body = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sent: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("loadgen_requests_sent_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(
        sent >= 3.0 * 20.0 * 0.9,
        "{sent} requests after three iterations:\n{body}"
    );
    let output = interrupt(child, Duration::from_secs(20)).await;
    assert_eq!(output.status.code(), Some(130));
    let _ = std::fs::remove_dir_all(dir);
}
