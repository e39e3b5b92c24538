//! Span profiles, end to end: each sampled server span carries `pyroscope.profile.id` (its own
//! span id, as the real OTLP receiver decodes it), and the CPU samples taken during a request's
//! work carry that span id, its trace id and its name, in the pushed and in the pulled profile.
//! Deadlines, not timings: each test waits for what it needs or fails after its deadline.

use std::{collections::HashSet, thread, time::Duration};

use pprof::protos::Profile;

use crate::{
    pprof_reading::{decode, go_tool_pprof, labels, samples_of_span, stack},
    support::{
        CaptureServer, OtlpSink, RunningApp, SPAN_KIND_SERVER, client, exporting_to, in_trace,
        traceparent, wait_until,
    },
};

const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACE_B: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The CPU profiles the app pushed so far (heap pushes have another spy name).
fn pushed_cpu_profiles(pyroscope: &CaptureServer) -> Vec<Profile> {
    let pushes = pyroscope.requests.lock().unwrap().clone();
    pushes
        .iter()
        .filter(|push| push.target.contains("spyName=rust-pprof"))
        .map(|push| decode(&push.body))
        .collect()
}

fn pushing_app(sink: &OtlpSink, pyroscope: &CaptureServer) -> RunningApp {
    let mut env = exporting_to(sink, "grpc");
    env.push(("PYROSCOPE_SERVER_ADDRESS", pyroscope.url()));
    env.push(("PYROSCOPE_PUSH_INTERVAL_SECONDS", "1".into()));
    RunningApp::spawn(&env)
}

/// Starts `GET /generate-load?ms=<ms>` in trace `trace_id` on its own thread.
fn burn(app: &RunningApp, trace_id: &str, ms: u64) -> thread::JoinHandle<u16> {
    let url = app.url(&format!("/generate-load?ms={ms}"));
    let header = traceparent(trace_id, CALLER_SPAN);
    thread::spawn(move || {
        let response = client().get(url).header("traceparent", header).send();
        response.unwrap().status().as_u16()
    })
}

/// `POST /api/orders` in trace `trace_id`.
fn create_order(app: &RunningApp, trace_id: &str) {
    let response = client()
        .post(app.url("/api/orders"))
        .header("traceparent", traceparent(trace_id, CALLER_SPAN))
        .json(&serde_json::json!({"item": "widget", "quantity": 1}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
}

fn has_burn_cpu(profile: &Profile, sample: &pprof::protos::Sample) -> bool {
    stack(profile, sample)
        .iter()
        .any(|f| f.ends_with("burn_cpu"))
}

#[test]
fn concurrent_burning_requests_each_get_a_profile_of_their_own_span() {
    // Arrange
    let sink = OtlpSink::start();
    let pyroscope = CaptureServer::start();
    let app = pushing_app(&sink, &pyroscope);

    // Act: two requests burn CPU at the same time, each in a trace of its own.
    let burns = [burn(&app, TRACE_A, 500), burn(&app, TRACE_B, 500)];
    for b in burns {
        assert_eq!(b.join().unwrap(), 200);
    }

    // Assert: each server span names itself as its profile id...
    for trace_id in [TRACE_A, TRACE_B] {
        let span = sink.find_span(
            "the server span of a burning request",
            in_trace(trace_id, SPAN_KIND_SERVER, "sample-app"),
        );
        let span_id = span["span_id"].as_str().unwrap().to_owned();
        assert_eq!(span["attributes"]["pyroscope.profile.id"], span_id.as_str());

        // ...and the pushed profiles hold samples labelled with it that show burn_cpu, with
        // the trace id. (The span's name is checked on the pulled profile below: a window
        // cut while the request still runs has no name for it yet.)
        wait_until(
            &format!("pushed burn_cpu samples labelled span_id={span_id}"),
            Duration::from_secs(20),
            || {
                pushed_cpu_profiles(&pyroscope)
                    .iter()
                    .any(|p| {
                        samples_of_span(p, &span_id)
                            .iter()
                            .any(|s| has_burn_cpu(p, s) && labels(p, s)["trace_id"] == trace_id)
                    })
                    .then_some(())
            },
        );
    }
}

#[test]
fn a_request_that_does_not_burn_gets_no_burn_samples_while_another_burns() {
    // Arrange: span export off (spans are still sampled, so still labelled).
    let pyroscope = CaptureServer::start();
    let app = RunningApp::spawn(&[
        ("OTEL_TRACES_EXPORTER", "none".into()),
        ("PYROSCOPE_SERVER_ADDRESS", pyroscope.url()),
        ("PYROSCOPE_PUSH_INTERVAL_SECONDS", "1".into()),
    ]);

    // Act: one request burns for 2 s while orders are created, each in its own trace, until
    // the orders themselves have been sampled a few times.
    let burner = burn(&app, TRACE_A, 2000);
    let mut order_traces = HashSet::new();
    let profiles = wait_until(
        "CPU samples labelled with order requests",
        Duration::from_secs(30),
        || {
            for _ in 0..20 {
                let trace_id = format!("{:032x}", 0x5eed_0000_u64 + order_traces.len() as u64);
                create_order(&app, &trace_id);
                order_traces.insert(trace_id);
            }
            let profiles = pushed_cpu_profiles(&pyroscope);
            let sampled = profiles
                .iter()
                .flat_map(|p| p.sample.iter().map(move |s| labels(p, s)))
                .filter(|l| l.get("trace_id").is_some_and(|t| order_traces.contains(t)))
                .count();
            (sampled >= 3).then_some(profiles)
        },
    );
    assert_eq!(burner.join().unwrap(), 200);

    // Assert: order samples never show the burn; the burning request's samples do.
    let mut burning_samples = 0;
    for profile in &profiles {
        for sample in &profile.sample {
            let labels = labels(profile, sample);
            let Some(trace_id) = labels.get("trace_id") else {
                continue;
            };
            if order_traces.contains(trace_id) {
                assert!(
                    !has_burn_cpu(profile, sample),
                    "an order request was charged for burn_cpu: {:?}",
                    stack(profile, sample)
                );
            } else if trace_id == TRACE_A && has_burn_cpu(profile, sample) {
                burning_samples += 1;
            }
        }
    }
    assert!(
        burning_samples > 0,
        "no burn_cpu sample of the burning request"
    );
}

#[test]
fn go_tool_pprof_reads_the_span_labels_of_the_pulled_profile() {
    // Arrange
    let app = RunningApp::spawn(&[("OTEL_TRACES_EXPORTER", "none".into())]);
    let target = app.url("/debug/pprof/profile?seconds=2");
    let puller = thread::spawn(move || client().get(target).send().unwrap().bytes().unwrap());

    // Act: burn in one trace until the pull answers (bounded), so the burn overlaps the window.
    for _ in 0..50 {
        assert_eq!(burn(&app, TRACE_A, 200).join().unwrap(), 200);
        if puller.is_finished() {
            break;
        }
    }
    let body = puller.join().unwrap();

    // Assert: pprof lists the labels, and focusing on one burning span shows burn_cpu.
    let tags = go_tool_pprof(&["-tags"], &body);
    assert!(tags.contains("span_id:"), "{tags}");
    assert!(tags.contains(TRACE_A), "{tags}");
    assert!(tags.contains("GET /generate-load"), "{tags}");
    let profile = decode(&body);
    let span_id = profile
        .sample
        .iter()
        .filter(|s| has_burn_cpu(&profile, s))
        .find_map(|s| labels(&profile, s).get("span_id").cloned())
        .expect("a burn_cpu sample labelled with its span");
    let access_line = app.wait_for_log("the access line of that span", |l| {
        l["target"] == "access" && l["span_id"] == span_id.as_str()
    });
    assert_eq!(access_line["trace_id"], TRACE_A);
    let focused = go_tool_pprof(&[&format!("-tagfocus=span_id={span_id}"), "-top"], &body);
    assert!(focused.contains("burn_cpu"), "{focused}");
}

#[test]
fn with_span_profiles_off_samples_carry_no_span_and_spans_no_profile_id() {
    // Arrange
    let sink = OtlpSink::start();
    let mut env = exporting_to(&sink, "grpc");
    env.push(("SAMPLE_APP_SPAN_PROFILES", "off".into()));
    let app = RunningApp::spawn(&env);
    let target = app.url("/debug/pprof/profile?seconds=1");
    let puller = thread::spawn(move || client().get(target).send().unwrap().bytes().unwrap());

    // Act
    for _ in 0..50 {
        assert_eq!(burn(&app, TRACE_A, 200).join().unwrap(), 200);
        if puller.is_finished() {
            break;
        }
    }
    let profile = decode(&puller.join().unwrap());

    // Assert
    assert!(profile.sample.iter().any(|s| has_burn_cpu(&profile, s)));
    assert!(profile.sample.iter().all(|s| s.label.is_empty()));
    let span = sink.find_span(
        "the server span",
        in_trace(TRACE_A, SPAN_KIND_SERVER, "sample-app"),
    );
    assert!(
        span["attributes"].get("pyroscope.profile.id").is_none(),
        "{span}"
    );
}
