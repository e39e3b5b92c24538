//! Test fixtures: the app as a process, the OTLP receiver, a Pyroscope stand-in, and polling
//! with a deadline (never a bare sleep).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The Python that has the test tools (`scripts/test` creates `.venv`).
pub fn python() -> PathBuf {
    let path = std::env::var_os("SAMPLE_APP_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "{} not found: run scripts/test once to install the test tools",
        path.display()
    );
    path
}

/// Polls `probe` every 20 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    crate::unused_port::unused_port()
}

type Lines = Arc<Mutex<Vec<Value>>>;

/// Reads JSON lines from `source` into a shared list on a background thread.
fn collect_json_lines(
    source: impl Read + Send + 'static,
    into: Lines,
    first: Option<std::sync::mpsc::Sender<Value>>,
) {
    thread::spawn(move || {
        let mut first = first;
        for line in BufReader::new(source).lines().map_while(Result::ok) {
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(tx) = first.take() {
                let _ = tx.send(value);
                continue;
            }
            into.lock().unwrap().push(value);
        }
    });
}

/// The real OTLP receiver (`scripts/otlp_sink.py`), gRPC and HTTP.
pub struct OtlpSink {
    child: Child,
    pub grpc_port: u16,
    pub http_port: u16,
    spans: Lines,
}

impl OtlpSink {
    pub fn start() -> Self {
        let mut child = Command::new(python())
            .arg(workspace_root().join("scripts/otlp_sink.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the OTLP sink starts");
        let spans = Lines::default();
        let (tx, rx) = std::sync::mpsc::channel();
        collect_json_lines(child.stdout.take().unwrap(), spans.clone(), Some(tx));
        let ports = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the OTLP sink reports its ports");
        let port = |key: &str| ports[key].as_u64().unwrap() as u16;
        let (grpc_port, http_port) = (port("grpc_port"), port("http_port"));
        wait_until("the OTLP sink to listen", Duration::from_secs(10), || {
            (TcpStream::connect(("127.0.0.1", grpc_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", http_port)).is_ok())
            .then_some(())
        });
        Self {
            child,
            grpc_port,
            http_port,
            spans,
        }
    }

    pub fn find_span(&self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, Duration::from_secs(20), || {
            self.spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| predicate(s))
                .cloned()
        })
    }

    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `sample-app` binary running as a process, with its JSON log lines collected.
pub struct RunningApp {
    child: Child,
    pub address: String,
    logs: Lines,
}

impl RunningApp {
    pub fn spawn(env: &[(&str, String)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sample-app"));
        command
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for key in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_SERVICE_NAME",
            "PYROSCOPE_SERVER_ADDRESS",
            "RUST_LOG",
        ] {
            command.env_remove(key);
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().expect("sample-app starts");
        let logs = Lines::default();
        collect_json_lines(child.stdout.take().unwrap(), logs.clone(), None);
        let mut app = Self {
            child,
            address: String::new(),
            logs,
        };
        let listening = app.wait_for_log("the 'listening' line", |l| l["message"] == "listening");
        app.address = format!("http://{}", listening["address"].as_str().unwrap());
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The `/metrics` text of the running app.
    pub fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .expect("/metrics answers")
    }

    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    pub fn wait_for_log(&self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, Duration::from_secs(20), || {
            self.logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| predicate(l))
                .cloned()
        })
    }

    /// Sends SIGTERM and waits for the process to exit (its log lines stay readable).
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_until(
            "sample-app to exit after SIGTERM",
            Duration::from_secs(30),
            || self.child.try_wait().unwrap(),
        )
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request received by [`CaptureServer`].
#[derive(Clone, Debug)]
pub struct Captured {
    pub target: String,
    pub body: Vec<u8>,
}

/// A minimal HTTP/1.1 server that records each request and answers 200 (or never answers,
/// with `black_hole`): Pyroscope's stand-in, and an exporter target that hangs.
pub struct CaptureServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Captured>>>,
}

impl CaptureServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    pub fn black_hole() -> Self {
        Self::start_with(true)
    }

    fn start_with(black_hole: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let sink = requests.clone();
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let sink = sink.clone();
                thread::spawn(move || serve(stream, &sink, black_hole));
            }
        });
        Self { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(stream: TcpStream, sink: &Mutex<Vec<Captured>>, black_hole: bool) {
    if black_hole {
        // Hold the connection open and say nothing until the client gives up.
        let mut buf = [0u8; 4096];
        let mut stream = stream;
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        return;
    }
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        sink.lock().unwrap().push(Captured { target, body });
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// A blocking HTTP client for the tests.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The W3C `traceparent` a caller with these ids would send.
pub fn traceparent(trace_id: &str, parent_span_id: &str) -> String {
    format!("00-{trace_id}-{parent_span_id}-01")
}

/// Environment that points the app's trace exporter at `sink` with a short batch delay.
pub fn exporting_to(sink: &OtlpSink, protocol: &str) -> Vec<(&'static str, String)> {
    let endpoint = match protocol {
        "grpc" => format!("http://127.0.0.1:{}", sink.grpc_port),
        _ => format!("http://127.0.0.1:{}", sink.http_port),
    };
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

/// OTLP span kinds and status code, as the receiver reports them.
pub const SPAN_KIND_SERVER: u64 = 2;
pub const SPAN_KIND_CLIENT: u64 = 3;
pub const SPAN_STATUS_ERROR: u64 = 2;

/// Matches spans of `trace_id` with this kind from this service.
pub fn in_trace(trace_id: &str, kind: u64, service: &'static str) -> impl Fn(&Value) -> bool {
    let trace_id = trace_id.to_owned();
    move |s: &Value| {
        s["trace_id"] == trace_id.as_str()
            && s["kind"] == kind
            && s["resource"]["service.name"] == service
    }
}
