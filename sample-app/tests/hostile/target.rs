//! The service under attack: the real `sample-app` binary as a process, configured as compose
//! runs it (faults enabled, spans sampled and exported), with its stdout (JSON logs) and stderr
//! collected, its resident memory read from `/proc`, and its `/metrics` counted.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::raw;

/// The binary to attack: `SAMPLE_APP_BIN` (say, a release build) or the one cargo built.
pub fn binary() -> PathBuf {
    std::env::var_os("SAMPLE_APP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sample-app")))
}

pub struct Target {
    child: Child,
    pub address: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl Target {
    /// Starts the service and waits until it listens and has served a few ordinary requests
    /// (so lazily built state is in the baseline, not counted as growth).
    pub fn spawn() -> Self {
        Self::spawn_with(&[])
    }

    /// As [`Target::spawn`], with `env` set on top (a variable set twice takes the later value).
    pub fn spawn_with(env: &[(&str, &str)]) -> Self {
        let closed = format!("127.0.0.1:{}", crate::unused_port::unused_port());
        let mut command = Command::new(binary());
        command
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("PYROSCOPE_SERVER_ADDRESS")
            .env_remove("RUST_LOG")
            .env_remove("OTEL_SERVICE_NAME")
            .env("SAMPLE_APP_FAULTS_ENABLED", "true")
            // Spans are sampled and exported (exemplars on /metrics, as in the stack); the
            // collector is absent, which costs one warning. Batches leave every 100 ms, so
            // the span queue (bounded at 2,048) does not pass for growth in RSS readings.
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}"))
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("sample-app starts");
        let logs: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stderr: Arc<Mutex<String>> = Arc::default();
        collect_json_lines(child.stdout.take().unwrap(), logs.clone());
        collect_text(child.stderr.take().unwrap(), stderr.clone());
        let mut target = Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            logs,
            stderr,
        };
        let listening =
            target.wait_for_log("the 'listening' line", |l| l["message"] == "listening");
        target.address = listening["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("the listening line names the address");
        for _ in 0..20 {
            raw::get(target.address, "/api/inventory/warm-up");
            raw::get(target.address, "/api/orders/1");
        }
        target.metrics();
        target
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).expect("the service is running")
    }

    /// The text of `/metrics`.
    pub fn metrics(&self) -> String {
        let answer = raw::exchange(
            self.address,
            &raw::request("GET", "/metrics", &[], b""),
            Duration::from_secs(30),
        );
        assert_eq!(answer.status, Some(200), "/metrics: {}", answer.head);
        answer.body_text()
    }

    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Every line logged before this call: the service writes its lines in batches, in order
    /// (src/telemetry/log_writer.rs), so once the access line of a request made now has been
    /// read, so has every line before it.
    pub fn settled_logs(&self) -> Vec<Value> {
        static BARRIERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let trace_id = format!(
            "{:032x}",
            0xba77_1e00_u128 << 64
                | u128::from(BARRIERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        );
        let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
        let answer = raw::exchange(
            self.address,
            &raw::request(
                "GET",
                "/api/orders/1",
                &[("traceparent", &traceparent)],
                b"",
            ),
            Duration::from_secs(30),
        );
        assert!(
            answer.status.is_some(),
            "the barrier request: {}",
            answer.head
        );
        self.wait_for_log("the barrier request's access line", |l| {
            l["target"] == "access" && l["trace_id"] == trace_id.as_str()
        });
        self.logs()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Still running (not crashed, not aborted).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn wait_for_log(&self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.logs.lock().unwrap().iter().find(|l| predicate(l)) {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Sample lines of an OpenMetrics text: what Prometheus' `sample_limit` counts.
pub fn sample_lines(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// Every value `label` takes in `metrics`.
pub fn label_values(metrics: &str, label: &str) -> BTreeSet<String> {
    let key = format!("{label}=\"");
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let start = l.find(&key)? + key.len();
            let end = l[start..].find('"')?;
            Some(l[start..start + end].to_owned())
        })
        .collect()
}

/// `scrape_limits.sample-app.worst_case_samples` of `docs/contracts.md`: the bound this suite
/// holds the service to, read from the page that states it.
pub fn contract_worst_case_samples() -> usize {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/contracts.md"),
    )
    .expect("docs/contracts.md");
    let line = doc
        .lines()
        .find(|l| l.trim_start().starts_with("sample-app: {sample_limit:"))
        .expect("the sample-app scrape limits in docs/contracts.md");
    let value = line
        .split("worst_case_samples:")
        .nth(1)
        .expect("worst_case_samples");
    value
        .trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .expect("worst_case_samples is a number")
}

fn collect_json_lines(source: impl Read + Send + 'static, into: Arc<Mutex<Vec<Value>>>) {
    thread::spawn(move || {
        for line in BufReader::new(source).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                into.lock().unwrap().push(value);
            }
        }
    });
}

fn collect_text(source: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    thread::spawn(move || {
        for line in BufReader::new(source).lines().map_while(Result::ok) {
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
}
