//! Proves a scenario did what it claims: polls Prometheus's alerts API while the scenario runs,
//! notes when each alert first became pending or firing, and judges the expectations.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::Deserialize;

use super::Scenario;
use crate::client::fetch;

/// Services whose alerts a scenario is answerable for (`none_firing_at_end`).
const OUR_SERVICES: [&str; 2] = ["sample-app", "sample-app-downstream"];

#[derive(Deserialize)]
struct AlertsResponse {
    status: String,
    data: AlertsData,
}

#[derive(Deserialize)]
struct AlertsData {
    alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub state: String,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// Watches Prometheus's alerts during a scenario.
pub struct AlertWatch {
    prometheus: String,
    start: Instant,
    /// Alert name → (first seen offset, state then).
    seen: Mutex<BTreeMap<String, (Duration, String)>>,
}

impl AlertWatch {
    pub fn new(prometheus: &str, start: Instant) -> Self {
        Self {
            prometheus: prometheus.trim_end_matches('/').to_owned(),
            start,
            seen: Mutex::default(),
        }
    }

    /// The alerts active right now (pending or firing).
    pub async fn active(&self) -> anyhow::Result<Vec<Alert>> {
        let url = format!("{}/api/v1/alerts", self.prometheus);
        let (status, body) = fetch(hyper::Method::GET, &url, None, Duration::from_secs(10)).await?;
        if !status.is_success() {
            bail!("{url} answered {status}");
        }
        let parsed: AlertsResponse = serde_json::from_str(&body)
            .with_context(|| format!("{url} did not answer like a Prometheus alerts API"))?;
        if parsed.status != "success" {
            bail!("{url} answered status '{}'", parsed.status);
        }
        Ok(parsed.data.alerts)
    }

    /// Polls once and remembers alerts seen for the first time.
    pub async fn poll(&self) -> anyhow::Result<()> {
        let alerts = self.active().await?;
        let at = self.start.elapsed();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for alert in alerts {
            seen.entry(alert.name().to_owned())
                .or_insert((at, alert.state.clone()));
        }
        Ok(())
    }

    pub fn seen(&self) -> BTreeMap<String, (Duration, String)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The judgement on one scenario run.
#[derive(Debug)]
pub struct Verdict {
    pub passed: bool,
    pub lines: Vec<String>,
}

impl Verdict {
    pub fn judge(
        scenario: &Scenario,
        seen: &BTreeMap<String, (Duration, String)>,
        firing_at_end: &[Alert],
    ) -> Self {
        let first_fault = scenario.faults.first().map_or(Duration::ZERO, |f| f.at);
        let deadline = first_fault + scenario.within;
        let mut lines = Vec::new();
        let mut passed = true;
        for expected in &scenario.expected_alerts {
            match seen.get(expected) {
                Some((at, state)) if *at <= deadline => {
                    lines.push(format!(
                        "PASS  {expected} became {state} {:.0} s into the run",
                        at.as_secs_f64()
                    ));
                }
                Some((at, state)) => {
                    passed = false;
                    lines.push(format!(
                        "FAIL  {expected} became {state} only at {:.0} s (deadline {:.0} s)",
                        at.as_secs_f64(),
                        deadline.as_secs_f64()
                    ));
                }
                None => {
                    passed = false;
                    lines.push(format!("FAIL  {expected} never became pending or firing"));
                }
            }
        }
        if scenario.none_firing_at_end {
            let ours: Vec<&str> = firing_at_end
                .iter()
                .filter(|a| {
                    a.state == "firing"
                        && a.labels
                            .get("service")
                            .is_some_and(|s| OUR_SERVICES.contains(&s.as_str()))
                })
                .map(Alert::name)
                .collect();
            if ours.is_empty() {
                lines.push("PASS  no alert about the sample services is firing at the end".into());
            } else {
                passed = false;
                lines.push(format!("FAIL  firing at the end: {}", ours.join(", ")));
            }
        }
        Self { passed, lines }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(alerts: &[&str], none_firing: bool) -> Scenario {
        let text = format!(
            "description = 'x'\n[traffic]\nrate = 1\nduration = '100s'\n[[fault]]\nat = '10s'\nservice = 'entry'\nplan = {{ error_rate = 1.0 }}\n[expect]\nalerts = {alerts:?}\nwithin = '30s'\nnone_firing_at_end = {none_firing}\n"
        );
        Scenario::parse("t", &text).unwrap()
    }

    fn alert(name: &str, service: &str, state: &str) -> Alert {
        let labels = [("alertname", name), ("service", service)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Alert {
            labels,
            state: state.into(),
        }
    }

    #[test]
    fn an_expected_alert_passes_only_within_its_window_after_the_first_fault() {
        let s = scenario(&["A", "B", "C"], false);
        let seen: BTreeMap<_, _> = [
            (
                "A".to_owned(),
                (Duration::from_secs(39), "pending".to_owned()),
            ),
            (
                "B".to_owned(),
                (Duration::from_secs(41), "firing".to_owned()),
            ),
        ]
        .into();
        let v = Verdict::judge(&s, &seen, &[]);
        assert!(!v.passed);
        assert!(
            v.lines[0].starts_with("PASS  A")
                && v.lines[1].starts_with("FAIL  B")
                && v.lines[2].contains("never"),
            "{:?}",
            v.lines
        );
    }

    #[test]
    fn a_quiet_scenario_fails_on_our_firing_alerts_only() {
        let s = scenario(&[], true);
        assert!(
            Verdict::judge(
                &s,
                &BTreeMap::new(),
                &[
                    alert("TempoDown", "tempo", "firing"),
                    alert("X", "sample-app", "pending")
                ]
            )
            .passed
        );
        assert!(
            !Verdict::judge(
                &s,
                &BTreeMap::new(),
                &[alert("SampleAppDown", "sample-app", "firing")]
            )
            .passed
        );
    }
}
