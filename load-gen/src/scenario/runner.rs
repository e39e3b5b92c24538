//! Runs a scenario: the traffic, the fault timeline against each service's `/admin/faults`,
//! the alert watch — and, whatever happens (normal end, error, Ctrl-C), clears every fault it
//! switched on before returning. A stop is seen in every phase (checks, alert polls, fault
//! switches, the traffic, the final alert read): what it interrupts is cancelled, not awaited.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hyper::Method;
use tokio::sync::watch;

use super::{
    AlertSource, AlertWatch, Scenario, Service, SourceKind, Traffic, Verdict, check_expected,
};
use crate::{
    cli::{CommonArgs, Instruments, check_reachable},
    client::{Target, fetch},
    note,
    report::Report,
    run::{LoadShape, RunPlan, StopSignal, execute},
    schedule::ArrivalSchedule,
    signals::{FaultSwitches, stopped},
};

const POLL_EVERY: Duration = Duration::from_secs(2);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long clearing the faults may take once a stop was asked for (all services at once).
const CLEAR_AFTER_STOP: Duration = Duration::from_millis(500);

/// Where the scenario acts, and where it looks for its alerts.
pub struct Endpoints {
    pub target: String,
    pub downstream: Option<String>,
    pub prometheus: Option<String>,
    /// Loki, whose ruler evaluates the alerts written in LogQL.
    pub loki: Option<String>,
    pub alertmanager: Option<String>,
    pub grafana: Option<String>,
}

pub struct ScenarioOutcome {
    pub report: Report,
    pub verdict: Option<Verdict>,
    pub links: Vec<String>,
    /// A stop was asked for while it ran (also after its traffic had ended).
    pub interrupted: bool,
    /// What went wrong besides the traffic (an alert source, a fault switch): the report of the
    /// traffic is still there to print.
    pub failure: Option<anyhow::Error>,
}

impl Endpoints {
    /// Every alert source given, in the order they are read.
    pub fn alert_sources(&self) -> Vec<AlertSource> {
        [
            (SourceKind::Prometheus, &self.prometheus),
            (SourceKind::LokiRuler, &self.loki),
            (SourceKind::Alertmanager, &self.alertmanager),
        ]
        .into_iter()
        .filter_map(|(kind, url)| url.as_deref().map(|u| AlertSource::new(kind, u)))
        .collect()
    }

    fn admin_url(&self, service: Service) -> anyhow::Result<String> {
        let base = match service {
            Service::Entry => &self.target,
            Service::Downstream => self
                .downstream
                .as_ref()
                .context("the scenario switches faults on the downstream: pass --downstream URL")?,
        };
        Ok(format!("{}/admin/faults", base.trim_end_matches('/')))
    }
}

pub async fn run_scenario(
    scenario: &Scenario,
    endpoints: &Endpoints,
    common: &CommonArgs,
    instruments: &Instruments,
    mut stop: StopSignal,
) -> anyhow::Result<ScenarioOutcome> {
    for step in &scenario.faults {
        endpoints.admin_url(step.service)?;
    }
    let target = unless_stopped(&mut stop, async {
        let target = Target::resolve(&endpoints.target)
            .await
            .context("--target")?;
        check_reachable(&target).await?;
        // An alert no source defines could never be seen: say so before any traffic or fault.
        check_expected(&endpoints.alert_sources(), &scenario.expected_alerts).await?;
        Ok(target)
    })
    .await?;
    let touched = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let result = run_inner(
        scenario,
        endpoints,
        common,
        instruments,
        stop.clone(),
        target,
        touched.clone(),
    )
    .await;
    let services: Vec<Service> = touched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .copied()
        .collect();
    // After a stop the faults get their own short deadline, so the whole stop stays within 2 s.
    let deadline = if *stop.borrow() {
        CLEAR_AFTER_STOP
    } else {
        ADMIN_TIMEOUT
    };
    let cleanup = clear_faults(endpoints, &services, deadline).await;
    let mut outcome = result?;
    if let Err(e) = cleanup {
        outcome.failure.get_or_insert(e);
    }
    Ok(outcome)
}

/// The stop as an error, for the phases before any traffic: the command exits with 130.
#[derive(Debug, thiserror::Error)]
#[error("stopped before the scenario's traffic started")]
pub struct StoppedBeforeTraffic;

/// `work`, unless the stop comes first (then `work` is dropped: whatever it awaited is cancelled).
async fn unless_stopped<T>(
    stop: &mut StopSignal,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        result = work => result,
        () = stopped(stop) => Err(StoppedBeforeTraffic.into()),
    }
}

async fn run_inner(
    scenario: &Scenario,
    endpoints: &Endpoints,
    common: &CommonArgs,
    instruments: &Instruments,
    mut user_stop: StopSignal,
    target: Target,
    touched: Arc<std::sync::Mutex<BTreeSet<Service>>>,
) -> anyhow::Result<ScenarioOutcome> {
    let schedule = match &scenario.traffic {
        Traffic::Rate { rate, duration } => ArrivalSchedule::constant(*rate, *duration)?,
        Traffic::Stages(spec) => ArrivalSchedule::from_stages(spec)?,
    };
    let plan = RunPlan {
        pool: common.pool(target),
        shape: LoadShape::Open {
            schedule,
            max_in_flight: common.max_in_flight as usize,
        },
        mix: common.load_mix()?,
        max_requests: None,
        seed: common.seed,
        tracer: instruments.tracer.clone(),
        metrics: instruments.metrics.clone(),
        progress: common.progress(),
        drain_timeout: common.drain_timeout(),
        request_timeout: common.timeout,
    };
    // The traffic stops on the user's stop (in whatever phase it comes) or when the timeline fails.
    let (stop_run, run_stop) = watch::channel(false);
    let stop_run = Arc::new(stop_run);
    let forward = tokio::spawn({
        let (stop_run, mut user_stop) = (stop_run.clone(), user_stop.clone());
        async move {
            stopped(&mut user_stop).await;
            let _ = stop_run.send(true);
        }
    });
    let start = Instant::now();
    let run = tokio::spawn(execute(plan, run_stop));
    let sources = endpoints.alert_sources();
    let first_fault = scenario.faults.first().map_or(Duration::ZERO, |f| f.at);
    let watch =
        (!sources.is_empty()).then(|| Arc::new(AlertWatch::new(sources, start, first_fault)));

    let timeline = timeline(scenario, endpoints, watch.as_deref(), start, &touched);
    let timeline = tokio::select! {
        result = timeline => result,
        () = stopped(&mut user_stop) => Ok(Finished::Stopped),
    };
    if !matches!(timeline, Ok(Finished::Completed)) {
        let _ = stop_run.send(true);
    }
    let report = run.await.context("the load task failed")?;
    forward.abort();
    let mut failure = timeline.err();
    let interrupted = report.interrupted || *user_stop.borrow();

    let verdict = match &watch {
        Some(w) if !interrupted && failure.is_none() => {
            let at_end = tokio::select! {
                active = w.active() => active
                    .map_err(|e| failure = Some(e.context("while reading the alerts at the end")))
                    .ok(),
                () = stopped(&mut user_stop) => None,
            };
            at_end.map(|at_end| Verdict::judge(scenario, &w.sightings(), &at_end))
        }
        _ => None,
    };
    let links = evidence_links(endpoints.grafana.as_deref(), scenario, start);
    Ok(ScenarioOutcome {
        report,
        verdict,
        links,
        interrupted: interrupted || *user_stop.borrow(),
        failure,
    })
}

enum Finished {
    Completed,
    Stopped,
}

/// The fault steps at their times, and the alert polls between them until the scenario's end.
/// The caller races it against the stop: dropping it cancels a poll or switch in flight.
async fn timeline(
    scenario: &Scenario,
    endpoints: &Endpoints,
    watch: Option<&AlertWatch>,
    start: Instant,
    touched: &std::sync::Mutex<BTreeSet<Service>>,
) -> anyhow::Result<Finished> {
    let poll_until = |due: Instant| async move {
        loop {
            if let Some(w) = watch {
                w.poll()
                    .await
                    .context("while watching the scenario's alerts")?;
            }
            let now = Instant::now();
            if now >= due {
                return Ok::<(), anyhow::Error>(());
            }
            tokio::time::sleep(POLL_EVERY.min(due - now)).await;
        }
    };
    for step in &scenario.faults {
        poll_until(start + step.at).await?;
        // Noted before the call: a plan that half-applied must still be cleared.
        touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(step.service);
        apply(endpoints, step.service, step.plan.as_ref(), ADMIN_TIMEOUT).await?;
    }
    poll_until(start + scenario.duration).await?;
    Ok(Finished::Completed)
}

async fn apply(
    endpoints: &Endpoints,
    service: Service,
    plan: Option<&serde_json::Value>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let url = endpoints.admin_url(service)?;
    let (method, body) = match plan {
        Some(plan) => (Method::PUT, Some(plan.to_string())),
        None => (Method::DELETE, None),
    };
    let (status, answer) = fetch(method.clone(), &url, body, timeout)
        .await
        .with_context(|| format!("while switching faults on the {} service", service.as_str()))?;
    if !status.is_success() {
        bail!(
            "{method} {url} answered {status}: {answer} (is SAMPLE_APP_FAULTS_ENABLED=true on the {} service?)",
            service.as_str()
        );
    }
    FaultSwitches::note(&url, plan.is_some());
    match plan {
        Some(plan) => note!("load-gen: set faults on {}: {plan}", service.as_str()),
        None => note!("load-gen: cleared faults on {}", service.as_str()),
    }
    Ok(())
}

/// Clears faults on every service the scenario touched, all at once, each within `deadline`;
/// reports the first error.
async fn clear_faults(
    endpoints: &Endpoints,
    services: &[Service],
    deadline: Duration,
) -> anyhow::Result<()> {
    let clears = services.iter().map(|&service| async move {
        let result = apply(endpoints, service, None, deadline).await;
        if let Err(e) = &result {
            note!(
                "load-gen: could not clear faults on {}: {e:#}",
                service.as_str()
            );
        }
        result
    });
    let mut first_error = None;
    for result in futures_util::future::join_all(clears).await {
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn evidence_links(grafana: Option<&str>, scenario: &Scenario, start: Instant) -> Vec<String> {
    let Some(grafana) = grafana.map(|g| g.trim_end_matches('/')) else {
        return Vec::new();
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let from_ms = now_ms.saturating_sub(start.elapsed().as_millis() + 60_000);
    let range = format!("from={from_ms}&to={now_ms}");
    let mut links = vec![
        format!("{grafana}/d/four-signal-overview?{range}"),
        format!("{grafana}/d/service-drilldown?var-service=sample-app&{range}"),
    ];
    links.extend(
        scenario
            .expected_alerts
            .iter()
            .map(|a| format!("{grafana}/alerting/list?search=label:alertname%3D{a}")),
    );
    links
}
