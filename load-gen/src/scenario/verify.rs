//! Proves a scenario did what it claims: polls every alert source (Prometheus, Loki's ruler,
//! Alertmanager: `alert_sources`) while the scenario runs, notes when and where each alert
//! became active, and judges the expectations. Only what the run caused counts: an alert already
//! active when it started, or one that appeared before its first fault, is noted apart and never
//! passes an expectation.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context;

use super::{
    ExpectedState, Scenario,
    alert_sources::{Alert, AlertSource},
};

/// Services whose alerts a scenario is answerable for (`none_firing_at_end`).
const OUR_SERVICES: [&str; 2] = ["sample-app", "sample-app-downstream"];

/// When and where an alert was seen, and in which state.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub at: Duration,
    pub state: String,
    pub source: &'static str,
}

/// What the watch has seen: alerts that became active during the run, from the first fault on
/// (`caused`), and those active before that could be the run's doing (`earlier`: at the first
/// poll, or appearing before the first fault).
#[derive(Debug, Clone, Default)]
pub struct Sightings {
    pub caused: BTreeMap<String, Sighting>,
    pub earlier: BTreeMap<String, Sighting>,
    /// When each alert in `caused` was first seen firing.
    pub fired: BTreeMap<String, Sighting>,
    active: Option<BTreeSet<String>>,
}

impl Sightings {
    /// One poll's alerts (about the sample services or no service), `at` into the run; faults
    /// start at `counts_from`. An alert counts when it becomes active: it was not at the poll
    /// before.
    pub fn record(&mut self, at: Duration, counts_from: Duration, alerts: &[Alert]) {
        let ours: Vec<&Alert> = alerts.iter().filter(|a| about_our_services(a)).collect();
        for alert in &ours {
            let name = alert.name().to_owned();
            let new = self
                .active
                .as_ref()
                .is_some_and(|prev| !prev.contains(&name));
            let into = if new && at >= counts_from {
                &mut self.caused
            } else {
                &mut self.earlier
            };
            if new || self.active.is_none() {
                into.entry(name).or_insert(Sighting {
                    at,
                    state: alert.state.clone(),
                    source: alert.source,
                });
            }
        }
        for alert in &ours {
            if alert.state == "firing" && self.caused.contains_key(alert.name()) {
                self.fired
                    .entry(alert.name().to_owned())
                    .or_insert(Sighting {
                        at,
                        state: alert.state.clone(),
                        source: alert.source,
                    });
            }
        }
        self.active = Some(ours.iter().map(|a| a.name().to_owned()).collect());
    }
}

/// Watches the alert sources during a scenario.
pub struct AlertWatch {
    sources: Vec<AlertSource>,
    start: Instant,
    counts_from: Duration,
    sightings: Mutex<Sightings>,
}

impl AlertWatch {
    /// `counts_from`: the first fault's offset (zero without faults).
    pub fn new(sources: Vec<AlertSource>, start: Instant, counts_from: Duration) -> Self {
        Self {
            sources,
            start,
            counts_from,
            sightings: Mutex::default(),
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

    /// Polls once. Alerts about another service than the sample services (a backend, a test
    /// stream) with the same name are not the scenario's doing and are left out.
    pub async fn poll(&self) -> anyhow::Result<()> {
        let alerts = self.active().await?;
        let at = self.start.elapsed();
        self.sightings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(at, self.counts_from, &alerts);
        Ok(())
    }

    pub fn sightings(&self) -> Sightings {
        self.sightings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
    pub fn judge(scenario: &Scenario, seen: &Sightings, firing_at_end: &[Alert]) -> Self {
        let first_fault = scenario.faults.first().map_or(Duration::ZERO, |f| f.at);
        let deadline = first_fault + scenario.within;
        let mut lines = Vec::new();
        let mut passed = true;
        for expected in &scenario.expected_alerts {
            let fired = seen.fired.get(expected);
            // Which state was seen when, always: "pending" and "firing" teach different things.
            let firing = match fired {
                Some(f) => format!(", firing {:.0} s in", f.at.as_secs_f64()),
                None => ", never firing during the run".to_owned(),
            };
            match seen.caused.get(expected) {
                Some(s)
                    if scenario.expected_state == ExpectedState::Firing
                        && fired.is_none_or(|f| f.at > deadline) =>
                {
                    passed = false;
                    lines.push(format!(
                        "FAIL  {expected} became {} {:.0} s into the run ({}){firing}: the scenario \
                         expects it firing within {:.0} s",
                        s.state,
                        s.at.as_secs_f64(),
                        s.source,
                        deadline.as_secs_f64()
                    ));
                }
                Some(s) if s.at <= deadline => {
                    lines.push(format!(
                        "PASS  {expected} became {} {:.0} s into the run ({}){firing}",
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
                    lines.push(match seen.earlier.get(expected) {
                        Some(s) => format!(
                            "FAIL  {expected} was already {} {:.0} s into the run ({}), before the \
                             first fault at {:.0} s, and never became active anew: not this run's \
                             doing. Wait until it resolves (docs/workshop/README.md, between labs) \
                             and run again",
                            s.state,
                            s.at.as_secs_f64(),
                            s.source,
                            first_fault.as_secs_f64()
                        ),
                        None => format!("FAIL  {expected} never became pending or firing"),
                    });
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
        let seen = Sightings {
            caused: [
                ("A".to_owned(), sighting(39, "pending", "Loki ruler")),
                ("B".to_owned(), sighting(41, "firing", "Prometheus")),
            ]
            .into(),
            ..Default::default()
        };
        let v = Verdict::judge(&s, &seen, &[]);
        assert!(!v.passed);
        assert!(
            v.lines[0]
                == "PASS  A became pending 39 s into the run (Loki ruler), never firing during the run"
                && v.lines[1].starts_with("FAIL  B")
                && v.lines[2].contains("never"),
            "{:?}",
            v.lines
        );
    }

    #[test]
    fn a_scenario_that_expects_firing_fails_on_an_alert_that_was_only_pending() {
        let text = "description = 'x'\n[traffic]\nrate = 1\nduration = '300s'\n[[fault]]\nat = '10s'\nservice = 'entry'\nplan = { cpu_burn_ms = 60 }\n[expect]\nalerts = ['Cpu']\nwithin = '200s'\nstate = 'firing'\n";
        let s = Scenario::parse("t", text).unwrap();
        let fault = Duration::from_secs(10);
        let mut seen = Sightings::default();
        seen.record(Duration::ZERO, fault, &[]);
        seen.record(
            Duration::from_secs(70),
            fault,
            &[alert("Cpu", "sample-app", "pending")],
        );
        let only_pending = Verdict::judge(&s, &seen, &[]);
        assert!(!only_pending.passed, "{:?}", only_pending.lines);
        assert!(
            only_pending.lines[0].contains(
                "never firing during the run: the scenario expects it firing within 210 s"
            ),
            "{:?}",
            only_pending.lines
        );
        seen.record(
            Duration::from_secs(190),
            fault,
            &[alert("Cpu", "sample-app", "firing")],
        );
        let fired = Verdict::judge(&s, &seen, &[]);
        assert!(fired.passed, "{:?}", fired.lines);
        assert_eq!(
            fired.lines[0],
            "PASS  Cpu became pending 70 s into the run (Prometheus), firing 190 s in"
        );
    }

    #[test]
    fn an_unknown_expected_state_is_refused() {
        let text =
            "description = 'x'\n[traffic]\nrate = 1\nduration = '3s'\n[expect]\nstate = 'fired'\n";
        let error = Scenario::parse("t", text).unwrap_err();
        assert!(format!("{error:#}").contains("expect.state"), "{error:#}");
    }

    #[test]
    fn only_an_alert_that_becomes_active_from_the_first_fault_on_counts() {
        let fault = Duration::from_secs(10);
        let a = |name: &str| alert(name, "sample-app", "pending");
        let mut seen = Sightings::default();
        seen.record(Duration::from_secs(0), fault, &[a("Stale"), a("Flapping")]);
        seen.record(Duration::from_secs(2), fault, &[a("Stale"), a("Early")]);
        seen.record(
            Duration::from_secs(12),
            fault,
            &[a("Stale"), a("Early"), a("Flapping"), a("New")],
        );
        assert_eq!(
            seen.caused.keys().collect::<Vec<_>>(),
            ["Flapping", "New"],
            "Flapping resolved and fired again after the fault"
        );
        assert_eq!(
            seen.earlier.keys().collect::<Vec<_>>(),
            ["Early", "Flapping", "Stale"]
        );
        let v = Verdict::judge(&scenario(&["Stale", "New"], false), &seen, &[]);
        assert!(
            !v.passed
                && v.lines[0].starts_with("FAIL  Stale was already pending 0 s into the run")
                && v.lines[0].contains("not this run's doing")
                && v.lines[1].starts_with("PASS  New became pending 12 s"),
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
                &Sightings::default(),
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
                &Sightings::default(),
                &[alert("SampleAppDown", "sample-app", "firing")]
            )
            .passed
        );
    }
}
