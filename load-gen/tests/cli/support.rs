//! A test HTTP server that records when each request arrived (and its traceparent) and can
//! delay, stall or never answer; and a way to run the `load-gen` binary.

use std::{
    convert::Infallible,
    path::PathBuf,
    process::Output,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

#[derive(Clone, Default)]
pub struct Behaviour {
    /// Every answer waits this long.
    pub delay: Duration,
    /// Requests arriving inside this window wait until its end (a 1 s GC pause, say).
    pub stall: Option<(Duration, Duration)>,
    /// Accept and read, never answer.
    pub never_answer: bool,
    /// The body of every answer (`{}` by default).
    pub body: Option<&'static str>,
    /// Bodies by request path, before `body` (a stand-in for an API with several endpoints).
    pub routes: &'static [(&'static str, &'static str)],
    /// Bodies by path for requests arriving this long after the server started, before
    /// `routes` (an alert that becomes active while a scenario runs).
    pub later: Option<(Duration, &'static [(&'static str, &'static str)])>,
}

#[derive(Clone, Debug)]
pub struct Arrival {
    pub at: Duration,
    pub traceparent: Option<String>,
}

pub struct TestServer {
    pub url: String,
    pub arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl TestServer {
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::start_on("127.0.0.1:0", behaviour).await
    }

    /// The same on a given address (`[::1]:0` for IPv6).
    pub async fn start_on(address: &str, behaviour: Behaviour) -> Self {
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
        let started = Instant::now();
        let seen = arrivals.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, behaviour) = (seen.clone(), behaviour.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let at = started.elapsed();
                        let later = behaviour
                            .later
                            .filter(|(after, _)| at >= *after)
                            .map_or(&[][..], |(_, routes)| routes);
                        let routed = later
                            .iter()
                            .chain(behaviour.routes)
                            .find(|(path, _)| *path == req.uri().path())
                            .map(|(_, body)| *body);
                        let traceparent = req
                            .headers()
                            .get("traceparent")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        seen.lock().unwrap().push(Arrival { at, traceparent });
                        let behaviour = behaviour.clone();
                        async move {
                            if behaviour.never_answer {
                                std::future::pending::<()>().await;
                            }
                            let mut wait = behaviour.delay;
                            if let Some((from, to)) = behaviour.stall
                                && at >= from
                                && at < to
                            {
                                wait += to - at;
                            }
                            tokio::time::sleep(wait).await;
                            let body = routed.or(behaviour.body).unwrap_or("{}");
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                body.as_bytes(),
                            ))))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, arrivals }
    }

    pub fn count(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs `load-gen ARGS` to completion (from the workspace root) and returns its output.
pub async fn load_gen(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_load-gen"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .await
        .expect("load-gen runs")
}

/// Runs load-gen with `--output json --quiet` and parses its report.
pub async fn report(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json", "--quiet"]);
    let output = load_gen(&all).await;
    assert!(
        output.status.success(),
        "load-gen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

/// A port nothing listens on: refused when called, free when bound.
pub fn free_port() -> u16 {
    crate::unused_port::unused_port()
}

/// Sends SIGINT (what Ctrl-C sends) to `child` and waits, at most `within`, for it to exit.
pub async fn interrupt(child: tokio::process::Child, within: Duration) -> Output {
    let pid = child.id().expect("the child is running").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::timeout(within, child.wait_with_output())
        .await
        .expect("it stops promptly after Ctrl-C")
        .unwrap()
}
