//! Heap profiles: pushed next to the CPU profile with Go's memory sample types, pulled from
//! `/debug/pprof/heap`, and the leak fault's allocation on top of the in-use profile until the
//! fault is cleared — read by the real `go tool pprof`.

use std::time::Duration;

use crate::{
    pprof_reading::{decode, go_tool_pprof, sample_types},
    support::{CaptureServer, RunningApp, client, wait_until},
};

const MIB: u64 = 1 << 20;

/// The first `lines` entries of `go tool pprof -sample_index=inuse_space -top`.
fn top_in_use(heap: &[u8], lines: usize) -> Vec<String> {
    let top = go_tool_pprof(&["-sample_index=inuse_space", "-top"], heap);
    top.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .take(lines)
        .map(str::to_owned)
        .collect()
}

fn pull_heap(app: &RunningApp) -> Vec<u8> {
    let response = client().get(app.url("/debug/pprof/heap")).send().unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().unwrap().to_vec()
}

#[test]
fn the_leaking_allocation_tops_the_in_use_heap_until_the_fault_is_cleared() {
    // Arrange: every request keeps 1 MiB, up to 48 MiB.
    let app = RunningApp::spawn(&[
        ("OTEL_TRACES_EXPORTER", "none".into()),
        ("SAMPLE_APP_FAULTS_ENABLED", "true".into()),
    ]);
    let plan = serde_json::json!({"leak_bytes_per_request": MIB, "leak_cap_bytes": 48 * MIB});
    let put = client()
        .put(app.url("/admin/faults"))
        .json(&plan)
        .send()
        .unwrap();
    assert_eq!(put.status(), 200);

    // Act
    for _ in 0..48 {
        assert_eq!(client().get(app.url("/")).send().unwrap().status(), 200);
    }
    let leaking = top_in_use(&pull_heap(&app), 5);
    let delete = client().delete(app.url("/admin/faults")).send().unwrap();
    assert_eq!(delete.status(), 200);
    let cleared = go_tool_pprof(&["-sample_index=inuse_space", "-top"], &pull_heap(&app));

    // Assert
    assert!(
        leaking.iter().any(|l| l.contains("leak_memory")),
        "leak_memory is not among the top 5 in-use frames:\n{}",
        leaking.join("\n")
    );
    assert!(
        !cleared.contains("leak_memory"),
        "leak_memory still holds memory after DELETE /admin/faults:\n{cleared}"
    );
}

#[test]
fn heap_profiles_are_pushed_with_the_memory_sample_types() {
    let pyroscope = CaptureServer::start();
    let app = RunningApp::spawn(&[
        ("OTEL_TRACES_EXPORTER", "none".into()),
        ("PYROSCOPE_SERVER_ADDRESS", pyroscope.url()),
        ("PYROSCOPE_PUSH_INTERVAL_SECONDS", "1".into()),
    ]);

    let push = wait_until("a pushed heap profile", Duration::from_secs(20), || {
        let response = client()
            .get(app.url("/generate-load?ms=50"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        let pushes = pyroscope.requests.lock().unwrap().clone();
        pushes
            .into_iter()
            .find(|p| p.target.contains("spyName=rust-jemalloc"))
    });

    let url = url::Url::parse(&format!("http://x{}", push.target)).unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(url.path(), "/ingest");
    assert_eq!(query["format"], "pprof");
    assert!(
        query["name"].contains("service_name=sample-app"),
        "{}",
        query["name"]
    );
    let profile = decode(&push.body);
    let types: Vec<String> = sample_types(&profile)
        .into_iter()
        .map(|(ty, unit)| format!("{ty}:{unit}"))
        .collect();
    assert_eq!(
        types,
        [
            "alloc_objects:count",
            "alloc_space:bytes",
            "inuse_objects:count",
            "inuse_space:bytes"
        ]
    );
    let period = profile.period_type.as_ref().unwrap();
    let s = |i: i64| profile.string_table[i as usize].as_str();
    assert_eq!((s(period.ty), s(period.unit)), ("space", "bytes"));
    assert!(!profile.sample.is_empty());
}

#[test]
fn with_heap_profiles_off_the_heap_endpoint_says_so() {
    let app = RunningApp::spawn(&[
        ("OTEL_TRACES_EXPORTER", "none".into()),
        ("SAMPLE_APP_HEAP_PROFILES", "off".into()),
    ]);
    let response = client().get(app.url("/debug/pprof/heap")).send().unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("SAMPLE_APP_HEAP_PROFILES"),
        "{body}"
    );
}
