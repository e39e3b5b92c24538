//! What a run measured: counters and two HDR histograms, from which the final report (a table
//! for people, JSON for tools; schema in `load-gen/report.schema.json`) is built. Memory is
//! fixed however long the run: histograms have a fixed size and counters are counters.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::ErrorKind;

/// A request that starts this much after its intended time counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(10);

/// Everything recorded during a run.
pub struct RunStats {
    /// From the intended send time to the end of the answer (what a user waited).
    latency_us: Histogram<u64>,
    /// From the actual send to the end of the answer (what a closed-loop tool would report).
    service_us: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<ErrorKind, u64>,
    pub sent: u64,
    pub dropped: u64,
    pub late: u64,
    /// Offset from the start of the run of the last send.
    pub last_send: Duration,
}

impl Default for RunStats {
    fn default() -> Self {
        let histogram =
            || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Self {
            latency_us: histogram(),
            service_us: histogram(),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            sent: 0,
            dropped: 0,
            late: 0,
            last_send: Duration::ZERO,
        }
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 3_600_000_000)
}

impl RunStats {
    pub fn record(
        &mut self,
        outcome: Result<u16, ErrorKind>,
        latency: Duration,
        service_time: Duration,
    ) {
        self.latency_us.saturating_record(micros(latency));
        self.service_us.saturating_record(micros(service_time));
        match outcome {
            Ok(status) => *self.statuses.entry(status).or_default() += 1,
            Err(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    /// Adds `other` (another shard of the same run) into this one.
    pub fn merge(&mut self, other: &RunStats) {
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.service_us.add(&other.service_us);
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(*kind).or_default() += n;
        }
        self.sent += other.sent;
        self.dropped += other.dropped;
        self.late += other.late;
        self.last_send = self.last_send.max(other.last_send);
    }

    pub fn completed(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().sum::<u64>()
            + self
                .statuses
                .iter()
                .filter(|(s, _)| **s >= 500)
                .map(|(_, n)| n)
                .sum::<u64>()
    }

    /// Latency percentile so far, in ms (for progress lines).
    pub fn latency_ms_at(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// How the load was shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    Open,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self {
                count: 0,
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                max: 0.0,
            };
        }
        Self {
            count: h.len(),
            mean: h.mean().round() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The final report of a run (`--output json` prints it as is; schema version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub target: String,
    pub model: Model,
    /// Average offered rate of an open-model run (requests/s); null for closed-model runs.
    pub target_rate_per_second: Option<f64>,
    pub duration_seconds: f64,
    /// Requests that got an answer or failed.
    pub total_requests: u64,
    pub sent: u64,
    pub achieved_rate_per_second: f64,
    /// Answers by HTTP status code.
    pub status_counts: BTreeMap<String, u64>,
    /// Requests without an answer, by cause (every kind is listed, zero or not).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Due requests not sent because `--max-in-flight` requests were already waiting.
    pub dropped: u64,
    /// Sent, but still unanswered when the run stopped: cancelled, not waited for (the target
    /// may or may not have served them).
    pub cancelled: u64,
    /// Requests sent more than 10 ms after their intended time.
    pub late: u64,
    /// Open model: whether the offered rate was delivered (nothing dropped, ≤ 1 % late, and
    /// ≥ 99 % of the target rate achieved). Null for closed-model runs.
    pub rate_met: Option<bool>,
    /// Stopped early by Ctrl-C / SIGTERM: the numbers cover the part that ran.
    pub interrupted: bool,
    /// From the intended send time (no coordinated omission), in milliseconds.
    pub latency_ms: Percentiles,
    /// From the actual send time: what a closed-loop tool would have reported, in milliseconds.
    pub service_time_ms: Percentiles,
}

pub struct RunFacts {
    pub target: String,
    pub model: Model,
    pub target_rate: Option<f64>,
    pub elapsed: Duration,
    /// The time over which requests were scheduled (open model) or sent (closed).
    pub send_window: Duration,
    pub interrupted: bool,
}

impl Report {
    pub fn build(stats: &RunStats, facts: RunFacts) -> Self {
        let window = facts
            .send_window
            .max(stats.last_send)
            .as_secs_f64()
            .max(1e-9);
        let achieved = stats.sent as f64 / window;
        let rate_met = facts.target_rate.map(|target| {
            stats.dropped == 0 && stats.late * 100 <= stats.sent && achieved >= 0.99 * target
        });
        Self {
            schema_version: 1,
            target: facts.target,
            model: facts.model,
            target_rate_per_second: facts.target_rate.map(round3),
            duration_seconds: round3(facts.elapsed.as_secs_f64()),
            total_requests: stats.completed(),
            sent: stats.sent,
            achieved_rate_per_second: round3(achieved),
            status_counts: stats
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            errors_by_kind: ErrorKind::ALL
                .iter()
                .map(|k| {
                    (
                        k.as_str().to_owned(),
                        stats.errors.get(k).copied().unwrap_or(0),
                    )
                })
                .collect(),
            dropped: stats.dropped,
            cancelled: stats.sent.saturating_sub(stats.completed()),
            late: stats.late,
            rate_met,
            interrupted: facts.interrupted,
            latency_ms: Percentiles::of(&stats.latency_us),
            service_time_ms: Percentiles::of(&stats.service_us),
        }
    }

    /// The summary table for a terminal.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nload-gen report: {} ({} model{})",
            self.target,
            match self.model {
                Model::Open => "open",
                Model::Closed => "closed",
            },
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "  duration        {:>10.1} s", self.duration_seconds);
        let _ = writeln!(out, "  sent            {:>10}", self.sent);
        let _ = writeln!(out, "  completed       {:>10}", self.total_requests);
        match self.target_rate_per_second {
            Some(target) => {
                let _ = writeln!(
                    out,
                    "  achieved rate   {:>10.1} /s  (target {target:.1} /s)",
                    self.achieved_rate_per_second
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  achieved rate   {:>10.1} /s",
                    self.achieved_rate_per_second
                );
            }
        }
        let _ = writeln!(
            out,
            "  dropped         {:>10}\n  late (>10 ms)   {:>10}",
            self.dropped, self.late
        );
        if self.cancelled > 0 {
            let _ = writeln!(
                out,
                "  cancelled       {:>10}  (in flight when the run stopped)",
                self.cancelled
            );
        }
        if self.rate_met == Some(false) {
            let _ = writeln!(
                out,
                "  ! the target rate was NOT met: the target or this machine could not keep up"
            );
        }
        let statuses: Vec<String> = self
            .status_counts
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  status codes    {}",
            if statuses.is_empty() {
                "none".into()
            } else {
                statuses.join(", ")
            }
        );
        let errors: Vec<String> = self
            .errors_by_kind
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  errors          {}",
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "  latency (ms)       p50      p90      p99    p99.9      max"
        );
        for (label, p) in [
            ("from intended", &self.latency_ms),
            ("service time ", &self.service_time_ms),
        ] {
            let _ = writeln!(
                out,
                "  {label} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                p.p50, p.p90, p.p99, p.p99_9, p.max
            );
        }
        out
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(target_rate: Option<f64>, window_s: u64) -> RunFacts {
        RunFacts {
            target: "http://127.0.0.1:1".into(),
            model: Model::Open,
            target_rate,
            elapsed: Duration::from_secs(window_s),
            send_window: Duration::from_secs(window_s),
            interrupted: false,
        }
    }

    #[test]
    fn the_report_counts_statuses_errors_and_percentiles() {
        let mut stats = RunStats::default();
        for ms in 1..=100 {
            stats.sent += 1;
            stats.record(
                Ok(if ms % 10 == 0 { 500 } else { 200 }),
                Duration::from_millis(ms),
                Duration::from_millis(1),
            );
        }
        stats.sent += 1;
        stats.record(
            Err(ErrorKind::Refused),
            Duration::from_millis(1),
            Duration::from_millis(1),
        );
        let report = Report::build(&stats, facts(Some(101.0), 1));
        assert_eq!(report.total_requests, 101);
        assert_eq!(
            (report.status_counts["200"], report.status_counts["500"]),
            (90, 10)
        );
        assert_eq!(report.errors_by_kind["refused"], 1);
        assert_eq!(report.errors_by_kind["timeout"], 0, "every kind is listed");
        assert!(
            (report.latency_ms.p50 - 50.0).abs() < 0.1
                && (report.latency_ms.max - 100.0).abs() < 0.1
        );
        assert_eq!(report.rate_met, Some(true));
        assert!(report.render_table().contains("refused: 1"));
    }

    #[test]
    fn dropped_requests_or_a_low_rate_mean_the_target_was_not_met() {
        let mut stats = RunStats {
            sent: 100,
            ..Default::default()
        };
        assert_eq!(
            Report::build(&stats, facts(Some(100.0), 1)).rate_met,
            Some(true)
        );
        stats.dropped = 1;
        let report = Report::build(&stats, facts(Some(100.0), 1));
        assert_eq!(report.rate_met, Some(false));
        assert!(report.render_table().contains("NOT met"));
        let slow = RunStats {
            sent: 100,
            last_send: Duration::from_secs(2),
            ..Default::default()
        };
        assert_eq!(
            Report::build(&slow, facts(Some(100.0), 1)).rate_met,
            Some(false),
            "sends spilled past the window"
        );
    }
}
