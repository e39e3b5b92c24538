//! The scenario file format (`load-gen/scenarios/NAME.toml`), parsed and validated so a typo
//! is reported before any traffic is sent.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    description: String,
    traffic: RawTraffic,
    #[serde(default)]
    fault: Vec<RawFault>,
    #[serde(default)]
    expect: RawExpect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    rate: Option<f64>,
    stages: Option<String>,
    duration: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: String,
    service: String,
    plan: Option<toml::Table>,
    #[serde(default)]
    clear: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    #[serde(default)]
    alerts: Vec<String>,
    within: Option<String>,
    #[serde(default)]
    none_firing_at_end: bool,
    /// `pending` (the default: pending or firing will do) or `firing`.
    state: Option<String>,
}

/// The state an expected alert must reach within `expect.within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedState {
    /// Pending or firing: the rule's condition held.
    Active,
    /// Firing: the condition held for the rule's whole `for:`.
    Firing,
}

/// Which sample-app service a fault goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Entry,
    Downstream,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entry => "entry",
            Self::Downstream => "downstream",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Traffic {
    Rate { rate: f64, duration: Duration },
    Stages(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultStep {
    pub at: Duration,
    pub service: Service,
    /// The plan to PUT, or `None` to clear.
    pub plan: Option<serde_json::Value>,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub traffic: Traffic,
    pub duration: Duration,
    pub faults: Vec<FaultStep>,
    pub expected_alerts: Vec<String>,
    /// How long after the first fault (or the start) each expected alert has to appear.
    pub within: Duration,
    /// What "the alert fired" means for `expected_alerts`.
    pub expected_state: ExpectedState,
    pub none_firing_at_end: bool,
}

fn duration(field: &str, raw: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(raw)
        .with_context(|| format!("{field}: '{raw}' is not a duration (like 30s or 2m)"))
}

impl Scenario {
    pub fn parse(name: &str, text: &str) -> anyhow::Result<Self> {
        let raw: RawScenario = toml::from_str(text).context("not a valid scenario")?;
        let traffic = match (raw.traffic.rate, raw.traffic.stages, raw.traffic.duration) {
            (Some(rate), None, Some(d)) => Traffic::Rate {
                rate,
                duration: duration("traffic.duration", &d)?,
            },
            (None, Some(stages), None) => Traffic::Stages(stages),
            _ => bail!("traffic: give either rate and duration, or stages"),
        };
        let total = match &traffic {
            Traffic::Rate { rate, duration } => {
                crate::schedule::ArrivalSchedule::constant(*rate, *duration)?.duration()
            }
            Traffic::Stages(spec) => crate::schedule::ArrivalSchedule::from_stages(spec)
                .context("traffic.stages")?
                .duration(),
        };
        let mut faults = Vec::new();
        for (i, f) in raw.fault.into_iter().enumerate() {
            let what = format!("fault #{}", i + 1);
            let at = duration(&format!("{what}.at"), &f.at)?;
            if at >= total {
                bail!(
                    "{what}.at ({}) is not before the end of the traffic ({})",
                    f.at,
                    humantime::format_duration(total)
                );
            }
            let service = match f.service.as_str() {
                "entry" => Service::Entry,
                "downstream" => Service::Downstream,
                other => bail!("{what}.service: '{other}' is not entry or downstream"),
            };
            let plan = match (f.plan, f.clear) {
                (Some(plan), false) => Some(serde_json::to_value(plan).context("plan")?),
                (None, true) => None,
                _ => bail!("{what}: give either a plan or clear = true"),
            };
            faults.push(FaultStep { at, service, plan });
        }
        if faults.windows(2).any(|w| w[1].at < w[0].at) {
            bail!("faults must be in time order");
        }
        if raw.expect.alerts.iter().any(|a| a.trim().is_empty()) {
            bail!("expect.alerts: an alert name is empty");
        }
        let within = match raw.expect.within {
            Some(w) => duration("expect.within", &w)?,
            None => total,
        };
        let expected_state = match raw.expect.state.as_deref() {
            None | Some("pending") => ExpectedState::Active,
            Some("firing") => ExpectedState::Firing,
            Some(other) => bail!("expect.state: '{other}' is not 'pending' or 'firing'"),
        };
        Ok(Self {
            name: name.to_owned(),
            description: raw.description,
            traffic,
            duration: total,
            faults,
            expected_alerts: raw.expect.alerts,
            within,
            expected_state,
            none_firing_at_end: raw.expect.none_firing_at_end,
        })
    }

    pub fn load(dir: &Path, name: &str) -> anyhow::Result<Self> {
        if name.is_empty() || name.contains(['/', '\\', '.']) {
            bail!("'{name}' is not a scenario name (the file name without .toml)");
        }
        let path = dir.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            let known = list(dir)
                .map(|s| s.into_iter().map(|(n, _)| n).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            format!("while reading {} (scenarios here: {known})", path.display())
        })?;
        Self::parse(name, &text).with_context(|| format!("in {}", path.display()))
    }

    /// A copy with every offset and duration multiplied by `factor` (CI runs scenarios fast).
    pub fn scaled(&self, factor: f64) -> anyhow::Result<Self> {
        if !(0.01..=10.0).contains(&factor) {
            bail!("--time-scale must be from 0.01 to 10, got {factor}");
        }
        let scale = |d: Duration| d.mul_f64(factor);
        let traffic = match &self.traffic {
            Traffic::Rate { rate, duration } => Traffic::Rate {
                rate: *rate,
                duration: scale(*duration),
            },
            Traffic::Stages(spec) => Traffic::Stages(
                spec.split(',')
                    .map(|stage| {
                        let (d, r) = stage.split_once(':').unwrap_or((stage, "0"));
                        let d = humantime::parse_duration(d.trim())
                            .map(scale)
                            .unwrap_or_default();
                        format!("{}ms:{}", d.as_millis().max(1), r.trim())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        };
        Ok(Self {
            traffic,
            duration: scale(self.duration),
            faults: self
                .faults
                .iter()
                .map(|f| FaultStep {
                    at: scale(f.at),
                    ..f.clone()
                })
                .collect(),
            within: scale(self.within),
            ..self.clone()
        })
    }
}

/// Every scenario in `dir`, by name, each parsed (or the reason it does not parse).
pub fn list(dir: &Path) -> anyhow::Result<Vec<(String, anyhow::Result<Scenario>)>> {
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("while listing {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml")
            && let Some(name) = path.file_stem().and_then(|s| s.to_str())
        {
            let parsed = std::fs::read_to_string(&path)
                .map_err(anyhow::Error::from)
                .and_then(|t| Scenario::parse(name, &t));
            out.push((name.to_owned(), parsed));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
        description = "errors"
        [traffic]
        rate = 20
        duration = "3m"
        [[fault]]
        at = "20s"
        service = "entry"
        plan = { error_rate = 0.3, error_status = 503 }
        [[fault]]
        at = "2m"
        service = "entry"
        clear = true
        [expect]
        alerts = ["SampleAppHighErrorRatio"]
        within = "90s"
    "#;

    #[test]
    fn a_valid_scenario_parses_with_its_timeline() {
        let s = Scenario::parse("error-storm", VALID).unwrap();
        assert_eq!(s.duration, Duration::from_secs(180));
        assert_eq!(s.faults.len(), 2);
        assert_eq!(s.faults[0].plan.as_ref().unwrap()["error_rate"], 0.3);
        assert_eq!(s.faults[1].plan, None);
        assert_eq!(s.expected_alerts, ["SampleAppHighErrorRatio"]);
        let fast = s.scaled(0.1).unwrap();
        assert_eq!(
            (fast.duration, fast.faults[0].at, fast.within),
            (
                Duration::from_secs(18),
                Duration::from_secs(2),
                Duration::from_secs(9)
            )
        );
    }

    #[test]
    fn invalid_scenarios_say_what_is_wrong() {
        for (change, says) in [
            (
                ("duration = \"3m\"", "duration = \"soon\""),
                "not a duration",
            ),
            (("at = \"20s\"", "at = \"5m\""), "not before the end"),
            (
                (
                    "service = \"entry\"\n        plan",
                    "service = \"cache\"\n        plan",
                ),
                "not entry or downstream",
            ),
            (("clear = true", "clear = false"), "either a plan or clear"),
            (
                ("rate = 20", "rate = 20\n        stages = \"1s:5\""),
                "either rate and duration, or stages",
            ),
            (
                ("within = \"90s\"", "within = \"90s\"\n        colour = 1"),
                "colour",
            ),
            (("at = \"2m\"", "at = \"10s\""), "time order"),
        ] {
            let text = VALID.replacen(change.0, change.1, 1);
            let err = format!("{:#}", Scenario::parse("x", &text).unwrap_err());
            assert!(err.contains(says), "{change:?}: {err}");
        }
        assert!(Scenario::load(Path::new("."), "../etc/passwd").is_err());
    }
}
