//! Tells the operator, once, that a telemetry backend (Tempo, Pyroscope) cannot be reached —
//! and once more when it comes back — instead of one warning per request or per batch. A
//! backend that stays down is reminded about at most every `REMIND_EVERY`.

use std::{
    fmt::Display,
    sync::Mutex,
    time::{Duration, Instant},
};

pub const REMIND_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct BackendHealth {
    backend: &'static str,
    endpoint: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the current outage was last reported; `None` while the backend is healthy.
    warned_at: Option<Instant>,
    failures_since_warning: u64,
}

/// What a report decided to log, returned so the decision can be tested without a subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Quiet,
    WarnedUnreachable,
    ReportedRecovered,
}

impl BackendHealth {
    pub fn new(backend: &'static str, endpoint: impl Into<String>) -> Self {
        Self {
            backend,
            endpoint: endpoint.into(),
            state: Mutex::default(),
        }
    }

    pub fn failure(&self, error: &dyn Display) -> Verdict {
        self.failure_at(Instant::now(), error)
    }

    pub fn success(&self) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.warned_at.take().is_none() {
            return Verdict::Quiet;
        }
        state.failures_since_warning = 0;
        tracing::info!(backend = self.backend, endpoint = %self.endpoint, "telemetry backend reachable again");
        Verdict::ReportedRecovered
    }

    pub fn failure_at(&self, now: Instant, error: &dyn Display) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let due = state
            .warned_at
            .is_none_or(|at| now.duration_since(at) >= REMIND_EVERY);
        if !due {
            state.failures_since_warning += 1;
            return Verdict::Quiet;
        }
        let suppressed = std::mem::take(&mut state.failures_since_warning);
        state.warned_at = Some(now);
        tracing::warn!(
            backend = self.backend,
            endpoint = %self.endpoint,
            error = %error,
            suppressed_failures = suppressed,
            "telemetry backend unreachable; requests are served as usual and its data is dropped until it is back \
             (next reminder in {} s)",
            REMIND_EVERY.as_secs()
        );
        Verdict::WarnedUnreachable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_reported_once_then_reminded_then_its_recovery_once() {
        let health = BackendHealth::new("tempo", "http://localhost:4317");
        let t0 = Instant::now();
        assert_eq!(
            health.failure_at(t0, &"refused"),
            Verdict::WarnedUnreachable
        );
        for s in 1..300 {
            assert_eq!(
                health.failure_at(t0 + Duration::from_secs(s), &"refused"),
                Verdict::Quiet
            );
        }
        assert_eq!(
            health.failure_at(t0 + REMIND_EVERY, &"refused"),
            Verdict::WarnedUnreachable
        );
        assert_eq!(health.success(), Verdict::ReportedRecovered);
        assert_eq!(health.success(), Verdict::Quiet);
        assert_eq!(
            health.failure_at(t0 + REMIND_EVERY, &"refused"),
            Verdict::WarnedUnreachable
        );
    }
}
