//! The frame every attack runs in, and what it asserts afterwards:
//! - no answer to the hostile input is a 5xx, and no access line says one was sent;
//! - nothing panicked (stderr) and the process is still running;
//! - a normal client, asking all along, was answered every time (its latency is reported,
//!   never asserted: this machine is shared);
//! - `/metrics` has no more sample lines than `docs/contracts.md` allows
//!   (`worst_case_samples`);
//! - resident memory comes back near where it was before the attack ([`RSS_SLACK_KIB`]).
//!
//! Each attack prints one `hostile:` line with what it measured (`--no-capture` shows it).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    raw::{self, Answer},
    target::{Target, contract_worst_case_samples, rss_kib, sample_lines},
};

/// How far above its pre-attack level resident memory may stay once the attack is over.
/// Measured first: after 300 connections at once, the service settles about 10 MiB above its
/// baseline (debug and release builds alike: jemalloc keeps the extents it grew for the
/// connections' buffers) and stays there however many floods follow. 16 MiB leaves room for
/// that; a leak is caught by its slope instead ([`crate::floods`] repeats its flood and
/// compares rounds).
pub const RSS_SLACK_KIB: u64 = 16 * 1024;

/// How long memory may take to come back (decay runs on allocations, so a trickle of normal
/// requests keeps it going).
const SETTLE: Duration = Duration::from_secs(25);

/// The normal client's view of the attack.
#[derive(Debug, Default)]
pub struct BystanderView {
    pub answered: usize,
    pub failures: Vec<String>,
    pub latencies: Vec<Duration>,
}

impl BystanderView {
    pub fn percentile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// A normal client asking `GET /api/inventory/bystander` every 25 ms on its own connection,
/// until stopped (at most 4,000 requests or 3 minutes). It also samples the target's RSS.
pub struct Bystander {
    stop: Arc<AtomicBool>,
    peak_rss_kib: Arc<AtomicU64>,
    handle: thread::JoinHandle<BystanderView>,
}

impl Bystander {
    pub fn start(address: SocketAddr, pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
        let (stop_flag, peak) = (stop.clone(), peak_rss_kib.clone());
        let handle = thread::spawn(move || {
            let mut view = BystanderView::default();
            let deadline = Instant::now() + Duration::from_secs(180);
            for _ in 0..4_000 {
                if stop_flag.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                if let Some(rss) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                let answer = raw::get(address, "/api/inventory/bystander");
                match answer.status {
                    Some(200) => {
                        view.answered += 1;
                        view.latencies.push(answer.elapsed);
                    }
                    other => view.failures.push(format!(
                        "{other:?} after {:?}: {}",
                        answer.elapsed, answer.head
                    )),
                }
                thread::sleep(Duration::from_millis(25));
            }
            view
        });
        Self {
            stop,
            peak_rss_kib,
            handle,
        }
    }

    pub fn finish(self) -> (BystanderView, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let view = self.handle.join().expect("the bystander thread");
        (view, self.peak_rss_kib.load(Ordering::Relaxed))
    }
}

/// What one attack did and what it cost.
pub struct Measured {
    /// How many answers had each status (`closed`: none, the connection was closed).
    pub statuses: BTreeMap<String, usize>,
}

/// Runs `attack` against `target` beside a normal client, then checks everything the module
/// docs list. `attack` returns the answers it got.
pub fn withstand(
    target: &mut Target,
    name: &str,
    attack: impl FnOnce(SocketAddr) -> Vec<Answer>,
) -> Measured {
    let bound = contract_worst_case_samples();
    let rss_before = target.rss_kib();
    let bystander = Bystander::start(target.address, target.pid());
    let started = Instant::now();
    let answers = attack(target.address);
    let attack_time = started.elapsed();
    let (view, rss_peak) = bystander.finish();

    let mut statuses = BTreeMap::new();
    for answer in &answers {
        let key = answer.status.map_or("closed".to_owned(), |s| s.to_string());
        *statuses.entry(key).or_insert(0) += 1;
    }
    let server_errors: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status.is_some_and(|s| s >= 500))
        .collect();
    assert!(
        server_errors.is_empty(),
        "{name}: hostile input got 5xx answers: {:?}",
        server_errors
            .iter()
            .map(|a| &a.head)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        target.is_running(),
        "{name}: the service died\n{}",
        target.stderr()
    );
    let stderr = target.stderr();
    assert!(!stderr.contains("panicked"), "{name}: a panic:\n{stderr}");
    let logged_5xx: Vec<_> = target
        .settled_logs()
        .into_iter()
        .filter(|l| l["target"] == "access" && l["status"].as_u64().is_some_and(|s| s >= 500))
        .collect();
    assert!(
        logged_5xx.is_empty(),
        "{name}: 5xx access lines: {logged_5xx:?}"
    );
    assert!(
        view.failures.is_empty() && view.answered > 0,
        "{name}: the normal client was not served ({} answered): {:?}",
        view.answered,
        view.failures
    );

    let samples = sample_lines(&target.metrics());
    assert!(
        samples <= bound,
        "{name}: /metrics has {samples} sample lines, docs/contracts.md bounds it at {bound}"
    );
    let rss_after = settle(target, rss_before);
    eprintln!(
        "hostile: {name}: {} requests in {:.1} s {statuses:?}; series {samples} of {bound}; \
         RSS {:.1} → peak {:.1} → {:.1} MiB; normal client: {} answered, p50 {:.1} ms, \
         max {:.1} ms",
        answers.len(),
        attack_time.as_secs_f64(),
        mib(rss_before),
        mib(rss_peak.max(rss_before)),
        mib(rss_after),
        view.answered,
        ms(view.percentile(0.5)),
        ms(view.percentile(1.0)),
    );
    assert!(
        rss_after <= rss_before + RSS_SLACK_KIB,
        "{name}: resident memory stayed at {:.1} MiB, {:.1} MiB above the {:.1} MiB before the \
         attack (slack {:.1} MiB)",
        mib(rss_after),
        mib(rss_after.saturating_sub(rss_before)),
        mib(rss_before),
        mib(RSS_SLACK_KIB)
    );
    Measured { statuses }
}

/// Waits (with a trickle of normal requests) until RSS is within the slack, or [`SETTLE`]
/// has passed; returns the last reading.
fn settle(target: &Target, before: u64) -> u64 {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = target.rss_kib();
        if now <= before + RSS_SLACK_KIB || Instant::now() > deadline {
            return now;
        }
        raw::get(target.address, "/health");
        thread::sleep(Duration::from_millis(200));
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
