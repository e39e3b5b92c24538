//! Proves a scenario did what it claims: polls every alert source (Prometheus, Loki's ruler,
//! Alertmanager: `alert_sources`) while the scenario runs, notes when and where each alert was
//! first seen pending or firing, and judges the expectations.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context;

use super::{
    Scenario,
    alert_sources::{Alert, AlertSource},
};

/// Services whose alerts a scenario is answerable for (`none_firing_at_end`).
const OUR_SERVICES: [&str; 2] = ["sample-app", "sample-app-downstream"];

/// When and where an alert was first seen, and in which state.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub at: Duration,
    pub state: String,
    pub source: &'static str,
}

/// Watches the alert sources during a scenario.
pub struct AlertWatch {
    sources: Vec<AlertSource>,
    start: Instant,
    /// Alert name → its first sighting.
    seen: Mutex<BTreeMap<String, Sighting>>,
}

impl AlertWatch {
    pub fn new(sources: Vec<AlertSource>, start: Instant) -> Self {
        Self {
            sources,
            start,
            seen: Mutex::default(),
        }
    }

    /// The alerts active right now (pending or firing) in every source.
    pub async fn active(&self) -> anyhow::Result<Vec<Alert>> {
        let mut all = Vec::new();
        for source in &self.sources {
            let alerts = source.active().await.with_context(|| {
                format!(
                    "while reading the alerts of {} at {}",
                    source.name(),
                    source.base
                )
            })?;
            all.extend(alerts);
        }
        Ok(all)
    }

    /// Polls once and remembers alerts seen for the first time: alerts about the sample
    /// services, or about no service at all. An alert of the same name about another service
    /// (a backend, a test stream) is not the scenario's doing.
    pub async fn poll(&self) -> anyhow::Result<()> {
        let alerts = self.active().await?;
        let at = self.start.elapsed();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for alert in alerts.into_iter().filter(about_our_services) {
            seen.entry(alert.name().to_owned()).or_insert(Sighting {
                at,
                state: alert.state.clone(),
                source: alert.source,
            });
        }
        Ok(())
    }

    pub fn seen(&self) -> BTreeMap<String, Sighting> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn about_our_services(alert: &Alert) -> bool {
    alert
        .labels
        .get("service")
        .is_none_or(|s| OUR_SERVICES.contains(&s.as_str()))
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
        seen: &BTreeMap<String, Sighting>,
        firing_at_end: &[Alert],
    ) -> Self {
        let first_fault = scenario.faults.first().map_or(Duration::ZERO, |f| f.at);
        let deadline = first_fault + scenario.within;
        let mut lines = Vec::new();
        let mut passed = true;
        for expected in &scenario.expected_alerts {
            match seen.get(expected) {
                Some(s) if s.at <= deadline => {
                    lines.push(format!(
                        "PASS  {expected} became {} {:.0} s into the run ({})",
                        s.state,
                        s.at.as_secs_f64(),
                        s.source
                    ));
                }
                Some(s) => {
                    passed = false;
                    lines.push(format!(
                        "FAIL  {expected} became {} only at {:.0} s (deadline {:.0} s; {})",
                        s.state,
                        s.at.as_secs_f64(),
                        deadline.as_secs_f64(),
                        s.source
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
            source: "Prometheus",
        }
    }

    fn sighting(secs: u64, state: &str, source: &'static str) -> Sighting {
        Sighting {
            at: Duration::from_secs(secs),
            state: state.into(),
            source,
        }
    }

    #[test]
    fn an_expected_alert_passes_only_within_its_window_after_the_first_fault() {
        let s = scenario(&["A", "B", "C"], false);
        let seen: BTreeMap<_, _> = [
            ("A".to_owned(), sighting(39, "pending", "Loki ruler")),
            ("B".to_owned(), sighting(41, "firing", "Prometheus")),
        ]
        .into();
        let v = Verdict::judge(&s, &seen, &[]);
        assert!(!v.passed);
        assert!(
            v.lines[0] == "PASS  A became pending 39 s into the run (Loki ruler)"
                && v.lines[1].starts_with("FAIL  B")
                && v.lines[2].contains("never"),
            "{:?}",
            v.lines
        );
    }

    #[test]
    fn only_alerts_about_the_sample_services_or_no_service_are_the_scenarios() {
        assert!(about_our_services(&alert(
            "ErrorLogBurst",
            "sample-app",
            "pending"
        )));
        assert!(!about_our_services(&alert(
            "ErrorLogBurst",
            "ruler-check",
            "pending"
        )));
        let mut unlabelled = alert("TempoDroppingSpans", "x", "firing");
        unlabelled.labels.remove("service");
        assert!(about_our_services(&unlabelled));
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
