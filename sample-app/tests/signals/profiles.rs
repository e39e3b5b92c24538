//! CPU profiles: the pushed windows decode as pprof with CPU samples, carry `service_name`, and
//! show the CPU-heavy function by name; the pull endpoint's profile is readable by the real
//! `go tool pprof`.

use std::time::Duration;

use pprof::protos::{Message, Profile};

use crate::{
    pprof_reading::{function_names, go_tool_pprof},
    support::{CaptureServer, RunningApp, client, wait_until},
};

#[test]
fn pushed_profiles_are_pprof_with_cpu_samples_and_the_service_name_label() {
    // Arrange
    let pyroscope = CaptureServer::start();
    let app = RunningApp::spawn(&[
        ("OTEL_TRACES_EXPORTER", "none".into()),
        ("PYROSCOPE_SERVER_ADDRESS", pyroscope.url()),
        ("PYROSCOPE_PUSH_INTERVAL_SECONDS", "1".into()),
    ]);

    // Act: burn CPU until a pushed window shows the burn.
    let push = wait_until(
        "a pushed profile that shows burn_cpu",
        Duration::from_secs(30),
        || {
            let response = client()
                .get(app.url("/generate-load?ms=300"))
                .send()
                .unwrap();
            assert_eq!(response.status(), 200);
            let pushes = pyroscope.requests.lock().unwrap().clone();
            let mut cpu = pushes
                .into_iter()
                .filter(|p| p.target.contains("spyName=rust-pprof"));
            cpu.find_map(|push| {
                let profile =
                    Profile::decode(push.body.as_slice()).expect("a pushed body that is pprof");
                function_names(&profile)
                    .iter()
                    .any(|f| f.contains("burn_cpu"))
                    .then(|| (push.clone(), profile))
            })
        },
    );
    let (request, profile) = push;

    // Assert
    let url = url::Url::parse(&format!("http://x{}", request.target)).unwrap();
    assert_eq!(url.path(), "/ingest");
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["format"], "pprof");
    assert!(
        query["name"].starts_with("sample-app{"),
        "{}",
        query["name"]
    );
    assert!(
        query["name"].contains("service_name=sample-app"),
        "{}",
        query["name"]
    );
    assert!(query["name"].contains(&format!("service_version={}", env!("CARGO_PKG_VERSION"))));
    assert!(query["from"].parse::<u64>().unwrap() < query["until"].parse::<u64>().unwrap());
    let sample_types: Vec<(String, String)> = profile
        .sample_type
        .iter()
        .map(|t| {
            (
                profile.string_table[t.ty as usize].clone(),
                profile.string_table[t.unit as usize].clone(),
            )
        })
        .collect();
    assert!(
        sample_types.contains(&("cpu".into(), "nanoseconds".into())),
        "{sample_types:?}"
    );
    assert!(
        profile
            .sample
            .iter()
            .map(|s| s.value.iter().sum::<i64>())
            .sum::<i64>()
            > 0,
        "no CPU samples"
    );
}

#[test]
fn the_pull_endpoint_serves_a_profile_that_go_tool_pprof_reads() {
    let app = RunningApp::spawn(&[("OTEL_TRACES_EXPORTER", "none".into())]);
    let target = app.url("/debug/pprof/profile?seconds=2");
    let puller = std::thread::spawn(move || client().get(target).send().unwrap().bytes().unwrap());
    // Burn until the pull answers (bounded), so the burn overlaps the window however late it opens.
    for _ in 0..50 {
        let burn = client()
            .get(app.url("/generate-load?ms=200"))
            .send()
            .unwrap();
        assert_eq!(burn.status(), 200);
        if puller.is_finished() {
            break;
        }
    }
    let body = puller.join().unwrap();

    let top = go_tool_pprof(&["-top", "-nodecount=200"], &body);
    assert!(
        top.contains("burn_cpu"),
        "burn_cpu not in the profile:\n{top}"
    );
}
