//! `stack-verify`: proves a running four-signal stack works, through its services' published
//! HTTP APIs only — the same checks against a Docker Compose stack (by compose hostname, as
//! `docker compose run --rm verify`), a Kubernetes install (port-forwarded) or the no-Docker
//! runner (`scripts/stack.py run verify`). `load-gen verify` is its command line.
//!
//! Every check retries while what it needs may still come (a service starting, no data yet),
//! until one deadline (`--wait`); a definitive failure (a query the backend rejects, a wrong
//! answer) is reported at once. Results come back in the checks' order.

pub mod api;
pub mod checks;
pub mod expected;
pub mod report;

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::{
    sync::{Mutex, Semaphore, mpsc},
    time::Instant,
};
use url::Url;

pub use api::{Attempt, Problem, ProblemKind};
pub use report::{CheckResult, Report};

/// Where each service answers.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub sample_app: Url,
    pub sample_app_downstream: Url,
    pub prometheus: Url,
    pub alertmanager: Url,
    pub loki: Url,
    pub tempo: Url,
    pub pyroscope: Url,
    pub alloy: Url,
    pub grafana: Url,
    /// alert-log publishes no port: checked directly only inside the stack's network.
    pub alert_log: Option<Url>,
}

impl Endpoints {
    /// The compose hostnames and container ports (docs/contracts.md, Ports): what a container
    /// on the stack's network reaches.
    pub fn compose() -> Self {
        let url = |s: &str| Url::parse(s).expect("a valid constant URL");
        Self {
            sample_app: url("http://sample-app:8080"),
            sample_app_downstream: url("http://sample-app-downstream:8080"),
            prometheus: url("http://prometheus:9090"),
            alertmanager: url("http://alertmanager:9093"),
            loki: url("http://loki:3100"),
            tempo: url("http://tempo:3200"),
            pyroscope: url("http://pyroscope:4040"),
            alloy: url("http://alloy:12345"),
            grafana: url("http://grafana:3000"),
            alert_log: Some(url("http://alert-log:9095")),
        }
    }

    /// The host ports `.env` publishes on 127.0.0.1 (its defaults): what `cargo run` on the
    /// Docker host reaches. alert-log publishes none.
    pub fn host() -> Self {
        let url = |port: u16| Url::parse(&format!("http://127.0.0.1:{port}")).expect("a valid URL");
        Self {
            sample_app: url(8080),
            sample_app_downstream: url(8081),
            prometheus: url(9090),
            alertmanager: url(9093),
            loki: url(3100),
            tempo: url(3200),
            pyroscope: url(4040),
            alloy: url(12345),
            grafana: url(3000),
            alert_log: None,
        }
    }

    /// (service, URL) of every endpoint, for the report.
    pub fn list(&self) -> Vec<(String, String)> {
        let mut list = vec![
            ("sample-app", &self.sample_app),
            ("sample-app-downstream", &self.sample_app_downstream),
            ("prometheus", &self.prometheus),
            ("alertmanager", &self.alertmanager),
            ("loki", &self.loki),
            ("tempo", &self.tempo),
            ("pyroscope", &self.pyroscope),
            ("alloy", &self.alloy),
            ("grafana", &self.grafana),
        ];
        if let Some(url) = &self.alert_log {
            list.push(("alert-log", url));
        }
        list.into_iter()
            .map(|(name, url)| (name.to_owned(), api::redact(url)))
            .collect()
    }
}

/// What a run is told.
#[derive(Debug, Clone)]
pub struct Options {
    pub endpoints: Endpoints,
    /// Grafana's admin user and password: its data source and alerting provisioning APIs are
    /// for admins.
    pub grafana_user: String,
    pub grafana_password: String,
    /// How long checks may wait for a starting stack to answer and have data.
    pub wait: Duration,
    /// Each HTTP request's timeout.
    pub request_timeout: Duration,
    /// Send a test alert through Alertmanager to alert-log (the alerting checks).
    pub probe_alert: bool,
    /// Only the checks whose id starts with one of these (all when empty).
    pub only: Vec<String>,
}

/// A check's work: one attempt, a pass with what was found or a [`Problem`].
pub type AttemptFuture = Pin<Box<dyn Future<Output = Attempt> + Send>>;
type Run = Box<dyn Fn(Arc<Ctx>) -> AttemptFuture + Send + Sync>;

/// What to tell the reader when a check fails.
#[derive(Debug, Clone, Default)]
pub struct Hint {
    pub cause: String,
    pub look: String,
    /// The anchor in docs/troubleshooting.md (`verify-logs` …).
    pub anchor: &'static str,
}

/// One check: what it proves, which services it needs, and how to attempt it.
pub struct Check {
    pub id: String,
    pub section: &'static str,
    pub name: String,
    pub needs: Vec<&'static str>,
    pub hint: Hint,
    run: Run,
}

impl Check {
    pub fn new<F, Fut>(
        id: impl Into<String>,
        section: &'static str,
        name: impl Into<String>,
        needs: &[&'static str],
        hint: Hint,
        run: F,
    ) -> Self
    where
        F: Fn(Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Attempt> + Send + 'static,
    {
        Self {
            id: id.into(),
            section,
            name: name.into(),
            needs: needs.to_vec(),
            hint,
            run: Box::new(move |ctx| Box::pin(run(ctx))),
        }
    }
}

/// What every check shares: the clients, the deadline, and what was found once for all (a
/// complete trace to start the correlations from, Grafana's data source settings).
pub struct Ctx {
    pub options: Options,
    pub prometheus: api::Api,
    pub alertmanager: api::Api,
    pub loki: api::Api,
    pub tempo: api::Api,
    pub pyroscope: api::Api,
    pub alloy: api::Api,
    pub grafana: api::Api,
    pub sample_app: api::Api,
    pub sample_app_downstream: api::Api,
    pub alert_log: Option<api::Api>,
    pub started: Instant,
    pub deadline: Instant,
    /// Made up once per run, so each run's probe alert is its own.
    pub run_id: String,
    pub(crate) cache: Mutex<HashMap<String, serde_json::Value>>,
    pub(crate) discovery: Mutex<()>,
}

impl Ctx {
    pub fn new(options: Options) -> Self {
        let e = &options.endpoints;
        let t = options.request_timeout;
        let started = Instant::now();
        Self {
            prometheus: api::Api::new("prometheus", e.prometheus.clone(), t),
            alertmanager: api::Api::new("alertmanager", e.alertmanager.clone(), t),
            loki: api::Api::new("loki", e.loki.clone(), t),
            tempo: api::Api::new("tempo", e.tempo.clone(), t),
            pyroscope: api::Api::new("pyroscope", e.pyroscope.clone(), t),
            alloy: api::Api::new("alloy", e.alloy.clone(), t),
            grafana: api::Api::new("grafana", e.grafana.clone(), t)
                .with_basic_auth(&options.grafana_user, &options.grafana_password),
            sample_app: api::Api::new("sample-app", e.sample_app.clone(), t),
            sample_app_downstream: api::Api::new(
                "sample-app-downstream",
                e.sample_app_downstream.clone(),
                t,
            ),
            alert_log: e
                .alert_log
                .clone()
                .map(|url| api::Api::new("alert-log", url, t)),
            started,
            deadline: started + options.wait,
            run_id: format!("{:x}", (api::now_s() * 1000.0) as u64),
            cache: Mutex::new(HashMap::new()),
            discovery: Mutex::new(()),
            options,
        }
    }

    /// A value found once for the whole run: `find` is attempted (one at a time) until it
    /// succeeds; what it found is kept.
    pub async fn once<F, Fut>(&self, key: &str, find: F) -> Attempt<serde_json::Value>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Attempt<serde_json::Value>>,
    {
        let _one_at_a_time = self.discovery.lock().await;
        if let Some(found) = self.cache.lock().await.get(key) {
            return Ok(found.clone());
        }
        let found = find().await?;
        self.cache
            .lock()
            .await
            .insert(key.to_owned(), found.clone());
        Ok(found)
    }
}

/// How many attempts run at once (the stack is small; a laptop runs it).
const PARALLEL: usize = 6;
/// Between two attempts of a check that is waiting.
const POLL: Duration = Duration::from_secs(3);

/// Runs the checks, calling `progress` with each result in the checks' order as soon as it and
/// every check before it are done.
pub async fn run(
    options: Options,
    checks: Vec<Check>,
    mut progress: impl FnMut(&CheckResult),
) -> Report {
    let endpoints = options.endpoints.list();
    let ctx = Arc::new(Ctx::new(options));
    let permits = Arc::new(Semaphore::new(PARALLEL));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let total = checks.len();
    for (index, check) in checks.into_iter().enumerate() {
        let ctx = ctx.clone();
        let permits = permits.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = run_one(&ctx, &permits, check).await;
            let _ = tx.send((index, result));
        });
    }
    drop(tx);
    let mut done: Vec<Option<CheckResult>> = (0..total).map(|_| None).collect();
    let mut next = 0;
    while let Some((index, result)) = rx.recv().await {
        done[index] = Some(result);
        while next < total
            && let Some(result) = &done[next]
        {
            progress(result);
            next += 1;
        }
    }
    let results: Vec<CheckResult> = done.into_iter().flatten().collect();
    Report::new(results, ctx.started.elapsed().as_secs_f64(), endpoints)
}

async fn run_one(ctx: &Arc<Ctx>, permits: &Semaphore, check: Check) -> CheckResult {
    let started = Instant::now();
    let outcome = loop {
        let attempt = {
            // A closed semaphore cannot happen (it is never closed): run unthrottled then.
            let _permit = permits.acquire().await.ok();
            let remaining = ctx.deadline.saturating_duration_since(Instant::now());
            // An attempt may not outlast the deadline by more than one request's timeout.
            let limit = remaining + ctx.options.request_timeout;
            match tokio::time::timeout(limit, (check.run)(ctx.clone())).await {
                Ok(attempt) => attempt,
                Err(_) => Err(Problem::wait(format!(
                    "no answer within {:.0} s",
                    limit.as_secs_f64()
                ))),
            }
        };
        match attempt {
            Ok(detail) => break Ok(detail),
            Err(problem) if problem.kind == ProblemKind::Fail => break Err(problem),
            Err(problem) => {
                let remaining = ctx.deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    let waited = ctx.started.elapsed().as_secs_f64();
                    break Err(Problem {
                        text: format!("{} (still so after waiting {waited:.0} s)", problem.text),
                        ..problem
                    });
                }
                // The last attempt runs at the deadline.
                tokio::time::sleep(POLL.min(remaining)).await;
            }
        }
    };
    let passed = outcome.is_ok();
    let (detail, hint) = match outcome {
        Ok(detail) => (detail, Hint::default()),
        // A service that does not answer at all is the cause, whatever the check was about.
        Err(Problem {
            text,
            unreachable: Some(service),
            ..
        }) => (text, unreachable(service)),
        Err(problem) => (problem.text, check.hint),
    };
    let text = |text: String| (!passed && !text.is_empty()).then_some(text);
    CheckResult {
        id: check.id,
        section: check.section,
        name: check.name,
        passed,
        detail,
        needs: check.needs,
        cause: text(hint.cause),
        look: text(hint.look),
        help: (!passed && !hint.anchor.is_empty())
            .then(|| format!("{}#{}", report::TROUBLESHOOTING, hint.anchor)),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The hint when `service` did not answer at all.
fn unreachable(service: &str) -> Hint {
    Hint {
        cause: format!(
            "{service} is not running, still starting, or not reachable at the URL verify used"
        ),
        look: format!(
            "`docker compose ps {service}`, `docker compose logs {service}`; the URL verify used (--{service}-url, or --from-host)"
        ),
        anchor: "verify-unreachable",
    }
}
