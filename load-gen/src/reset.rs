//! `load-gen reset`: between two labs, back to a quiet stack. It clears the fault plans of both
//! services (a scenario clears its own; this is for one that was killed), then waits — with a
//! deadline — until the alerts that follow an incident by minutes have resolved, and names the
//! ones that cannot: the slow burn-rate alerts, whose long windows keep an incident for hours.
//!
//! How long each alert outlives its incident follows from its rule: a multi-window burn-rate
//! alert holds while its *short* window still contains enough of the incident — the page's
//! 5 m / 30 m windows (minutes), the ticket's 2 h / 6 h windows (hours).

use std::{collections::BTreeSet, time::Duration};

use anyhow::Context;
use hyper::Method;

use crate::{
    client::fetch,
    note,
    run::StopSignal,
    scenario::{AlertSource, SourceKind},
    signals::stopped,
};

const POLL_EVERY: Duration = Duration::from_secs(5);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Alerts that can stay for hours after a short incident, with the window that keeps them.
const SLOW_TO_CLEAR: &[(&str, &str)] = &[
    (
        "SampleAppErrorBudgetBurnTicket",
        "its 2 h and 6 h windows hold an incident for up to 6 hours",
    ),
    (
        "SampleAppLatencyBudgetBurnTicket",
        "its 2 h and 6 h windows hold an incident for up to 6 hours",
    ),
];

/// Where to reset.
pub struct ResetPlan {
    pub services: Vec<String>,
    pub prometheus: Option<String>,
    pub wait: Duration,
}

/// Clears the faults, then waits for the quick alerts to resolve. `Ok(true)` when the stack is
/// quiet (slow alerts may remain, and are named), `Ok(false)` when the deadline passed first.
pub async fn reset(plan: &ResetPlan, mut stop: StopSignal) -> anyhow::Result<bool> {
    for base in &plan.services {
        let url = format!("{}/admin/faults", base.trim_end_matches('/'));
        let (status, answer) = fetch(Method::DELETE, &url, None, ADMIN_TIMEOUT)
            .await
            .with_context(|| format!("while clearing the fault plan at {url}"))?;
        anyhow::ensure!(
            status.is_success(),
            "DELETE {url} answered {status}: {answer} (is SAMPLE_APP_FAULTS_ENABLED=true?)"
        );
        note!("load-gen: cleared the fault plan at {url}");
    }
    let Some(prometheus) = &plan.prometheus else {
        return Ok(true);
    };
    let source = AlertSource::new(SourceKind::Prometheus, prometheus);
    let deadline = tokio::time::Instant::now() + plan.wait;
    let mut last_seen = BTreeSet::new();
    loop {
        let active = tokio::select! {
            active = source.active() => active?,
            () = stopped(&mut stop) => anyhow::bail!("stopped while waiting for the alerts to resolve"),
        };
        let (slow, quick): (Vec<_>, Vec<_>) = active
            .iter()
            .filter(|a| {
                a.labels
                    .get("service")
                    .is_some_and(|s| s.starts_with("sample-app"))
            })
            .partition(|a| SLOW_TO_CLEAR.iter().any(|(name, _)| *name == a.name()));
        let quick: BTreeSet<String> = quick
            .iter()
            .map(|a| format!("{} ({}, {})", a.name(), a.labels["service"], a.state))
            .collect();
        if quick.is_empty() {
            for alert in &slow {
                let why = SLOW_TO_CLEAR
                    .iter()
                    .find(|(n, _)| *n == alert.name())
                    .map(|(_, w)| *w);
                note!(
                    "load-gen: still {}: {} on {}: {} (it does not disturb the next lab; `docker compose down -v` forgets it)",
                    alert.state,
                    alert.name(),
                    alert.labels["service"],
                    why.unwrap_or_default()
                );
            }
            note!("load-gen: quiet: no fault plan on, no quick alert pending or firing");
            return Ok(true);
        }
        if quick != last_seen {
            note!(
                "load-gen: waiting for: {}",
                quick.iter().cloned().collect::<Vec<_>>().join(", ")
            );
            last_seen = quick;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            note!(
                "load-gen: still active after {}",
                humantime::format_duration(plan.wait)
            );
            return Ok(false);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY.min(deadline - now)) => {}
            () = stopped(&mut stop) => anyhow::bail!("stopped while waiting for the alerts to resolve"),
        }
    }
}
