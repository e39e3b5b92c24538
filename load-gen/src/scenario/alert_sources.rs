//! Where a scenario looks for its alerts. Prometheus (`/api/v1/alerts`) and Loki's ruler
//! (`/prometheus/api/v1/alerts`, the same format) report their own alerts while pending and
//! firing, and list their rules (`…/rules`), so an expected alert no source defines is an error
//! before any traffic. Alertmanager (`/api/v2/alerts`) sees the firing alerts of every source
//! that sends to it, but knows no rules.

use std::{collections::BTreeMap, collections::BTreeSet, time::Duration};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::client::fetch;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The APIs an alert can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Prometheus,
    LokiRuler,
    Alertmanager,
}

/// One place to read alerts from: its kind and base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSource {
    pub kind: SourceKind,
    pub base: String,
}

/// An alert as a source reports it; `state` is `pending` or `firing`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub state: String,
    pub source: &'static str,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    status: String,
    data: T,
}

/// The `data` of a Prometheus-style API answer (Prometheus' and Loki's ruler's), which must
/// say `"status": "success"`.
fn envelope_data<T: serde::de::DeserializeOwned>(body: &str) -> anyhow::Result<T> {
    let parsed: Envelope<T> = serde_json::from_str(body)?;
    if parsed.status != "success" {
        bail!("status '{}'", parsed.status);
    }
    Ok(parsed.data)
}

#[derive(Deserialize)]
struct AlertsData {
    alerts: Vec<RuleAlert>,
}

#[derive(Deserialize)]
struct RuleAlert {
    labels: BTreeMap<String, String>,
    state: String,
}

#[derive(Deserialize)]
struct RulesData {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct ManagedAlert {
    labels: BTreeMap<String, String>,
}

impl AlertSource {
    pub fn new(kind: SourceKind, base: &str) -> Self {
        Self {
            kind,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// How the verdict names it.
    pub fn name(&self) -> &'static str {
        match self.kind {
            SourceKind::Prometheus => "Prometheus",
            SourceKind::LokiRuler => "Loki ruler",
            SourceKind::Alertmanager => "Alertmanager",
        }
    }

    fn alerts_url(&self) -> String {
        match self.kind {
            SourceKind::Prometheus => format!("{}/api/v1/alerts", self.base),
            SourceKind::LokiRuler => format!("{}/prometheus/api/v1/alerts", self.base),
            SourceKind::Alertmanager => format!("{}/api/v2/alerts", self.base),
        }
    }

    fn rules_url(&self) -> Option<String> {
        match self.kind {
            SourceKind::Prometheus => Some(format!("{}/api/v1/rules", self.base)),
            SourceKind::LokiRuler => Some(format!("{}/prometheus/api/v1/rules", self.base)),
            SourceKind::Alertmanager => None,
        }
    }

    /// The alerts pending or firing now.
    pub async fn active(&self) -> anyhow::Result<Vec<Alert>> {
        let url = self.alerts_url();
        let body = get(&url).await?;
        self.parse_alerts(&body)
            .with_context(|| format!("{url} did not answer like the {} alerts API", self.name()))
    }

    /// The names of its alerting rules; `None` for Alertmanager, which has no rules.
    pub async fn alerting_rules(&self) -> anyhow::Result<Option<BTreeSet<String>>> {
        let Some(url) = self.rules_url() else {
            return Ok(None);
        };
        let body = get(&url).await?;
        parse_rules(&body)
            .map(Some)
            .with_context(|| format!("{url} did not answer like the {} rules API", self.name()))
    }

    pub fn parse_alerts(&self, body: &str) -> anyhow::Result<Vec<Alert>> {
        let source = self.name();
        if self.kind == SourceKind::Alertmanager {
            let alerts: Vec<ManagedAlert> = serde_json::from_str(body)?;
            // Alertmanager holds only alerts a ruler sent while firing (active, silenced or
            // inhibited: all of them fired).
            return Ok(alerts
                .into_iter()
                .map(|a| Alert {
                    labels: a.labels,
                    state: "firing".into(),
                    source,
                })
                .collect());
        }
        Ok(envelope_data::<AlertsData>(body)?
            .alerts
            .into_iter()
            .map(|a| Alert {
                labels: a.labels,
                state: a.state,
                source,
            })
            .collect())
    }
}

pub fn parse_rules(body: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(envelope_data::<RulesData>(body)?
        .groups
        .into_iter()
        .flat_map(|g| g.rules)
        .filter(|r| r.kind == "alerting")
        .map(|r| r.name)
        .collect())
}

async fn get(url: &str) -> anyhow::Result<String> {
    let (status, body) = fetch(hyper::Method::GET, url, None, TIMEOUT).await?;
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    Ok(body)
}

/// Fails before any traffic when an expected alert is a rule of none of the sources: it could
/// never be seen. With Alertmanager among them nothing is checked (it sees every source's
/// alerts and knows no rules).
pub async fn check_expected(sources: &[AlertSource], expected: &[String]) -> anyhow::Result<()> {
    if expected.is_empty() || sources.is_empty() {
        return Ok(());
    }
    let mut defined = BTreeSet::new();
    for source in sources {
        let rules = source.alerting_rules().await.with_context(|| {
            format!(
                "while listing the alerting rules of {} at {}",
                source.name(),
                source.base
            )
        })?;
        match rules {
            Some(names) => defined.extend(names),
            None => return Ok(()),
        }
    }
    let missing: Vec<&str> = expected
        .iter()
        .filter(|a| !defined.contains(*a))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let watched: Vec<String> = sources
            .iter()
            .map(|s| format!("{} ({})", s.name(), s.base))
            .collect();
        bail!(
            "expect.alerts: {} is a rule of none of {}. Alerts written in LogQL are Loki's ruler's: \
             pass --loki URL (LOADGEN_LOKI); Alertmanager sees the alerts of every source: \
             --alertmanager URL (LOADGEN_ALERTMANAGER)",
            missing.join(", "),
            watched.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULER_ALERTS: &str = r#"{"status":"success","data":{"alerts":[
        {"labels":{"alertname":"ErrorLogBurst","service":"sample-app","severity":"warning"},"annotations":{},"state":"pending","activeAt":"2026-11-21T00:00:00Z","value":"8"}]}}"#;

    #[test]
    fn prometheus_and_the_loki_ruler_report_pending_and_firing_alerts_in_one_format() {
        for kind in [SourceKind::Prometheus, SourceKind::LokiRuler] {
            let source = AlertSource::new(kind, "http://x/");
            let alerts = source.parse_alerts(RULER_ALERTS).unwrap();
            assert_eq!(
                (alerts[0].name(), alerts[0].state.as_str()),
                ("ErrorLogBurst", "pending")
            );
            assert_eq!(alerts[0].source, source.name());
        }
        assert_eq!(
            AlertSource::new(SourceKind::LokiRuler, "http://loki:3100/").alerts_url(),
            "http://loki:3100/prometheus/api/v1/alerts"
        );
    }

    #[test]
    fn every_alert_alertmanager_holds_has_fired() {
        let source = AlertSource::new(SourceKind::Alertmanager, "http://am:9093");
        let body = r#"[{"labels":{"alertname":"ServicePanicked"},"status":{"state":"suppressed","silencedBy":["x"],"inhibitedBy":[]},"generatorURL":"http://localhost:3000/explore"}]"#;
        let alerts = source.parse_alerts(body).unwrap();
        assert_eq!(
            (alerts[0].name(), alerts[0].state.as_str(), alerts[0].source),
            ("ServicePanicked", "firing", "Alertmanager")
        );
        assert!(source.rules_url().is_none());
    }

    #[test]
    fn only_alerting_rules_count_as_alerts_a_source_defines() {
        let body = r#"{"status":"success","data":{"groups":[{"name":"g","rules":[
            {"name":"ErrorLogBurst","type":"alerting"},{"name":"service_level:log_lines:rate1m","type":"recording"}]}]}}"#;
        assert_eq!(
            parse_rules(body).unwrap().into_iter().collect::<Vec<_>>(),
            ["ErrorLogBurst"]
        );
    }

    #[test]
    fn an_answer_that_is_not_the_api_is_an_error() {
        let source = AlertSource::new(SourceKind::LokiRuler, "http://x");
        assert!(
            source
                .parse_alerts(r#"{"status":"error","data":{"alerts":[]}}"#)
                .is_err()
        );
        assert!(source.parse_alerts("404 page not found").is_err());
        assert!(parse_rules(r#"{"alerts":[]}"#).is_err());
    }
}
