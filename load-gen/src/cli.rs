//! Command-line options, and turning them into a validated run plan.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    client::{Pool, Target},
    client_spans::ClientTracer,
    metrics::LoadMetrics,
    mix::RequestMix,
    note,
    progress::Progress,
    run::{LoadShape, RunPlan},
    schedule::ArrivalSchedule,
};

#[derive(Debug, Parser)]
#[command(
    name = "load-gen",
    version,
    about = "Open-model load generator and scenario runner for the sample service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send load to a target and print a report.
    Run(RunArgs),
    /// List or run incident scenarios (traffic + faults + the alerts they must trip).
    #[command(subcommand)]
    Scenario(ScenarioCommand),
    /// Between labs: clear both services' fault plans, then wait until the quick alerts have
    /// resolved (the slow burn-rate ones are named, with how long they hold).
    Reset(ResetArgs),
    /// Exit 0 if URL answers 2xx within 3 s, 1 otherwise (container healthchecks, no shell).
    Check {
        /// The URL to GET.
        url: String,
    },
    /// Write a week of the sample service's request metrics, as OpenMetrics text for
    /// `promtool tsdb create-blocks-from openmetrics` (docs/history.md).
    History(crate::history::HistoryArgs),
    /// Prove the running stack works, through its services' HTTP APIs: a checklist, one line
    /// per check (`docker compose run --rm verify`; docs/troubleshooting.md explains each ✗).
    Verify(Box<crate::verify_stack::VerifyArgs>),
    /// Receive Alertmanager webhooks and log each alert as a JSON line (an offline receiver).
    AlertLog {
        /// Address to listen on.
        #[arg(long, env = "ALERT_LOG_LISTEN", default_value = "127.0.0.1:9095")]
        listen: SocketAddr,
    },
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The entry service.
    #[arg(long, env = "LOADGEN_TARGET")]
    pub target: String,
    /// The downstream service, whose faults are cleared too.
    #[arg(long, env = "LOADGEN_DOWNSTREAM")]
    pub downstream: Option<String>,
    /// Prometheus, to wait for the alerts to resolve (without it: clear the faults only).
    #[arg(long, env = "LOADGEN_PROMETHEUS")]
    pub prometheus: Option<String>,
    /// Give up waiting (exit 1) after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// List the scenarios in the scenario directory.
    List(ScenarioDir),
    /// Run one scenario; with --prometheus, --loki or --alertmanager, verify its alerts and exit
    /// non-zero if they fail.
    Run(Box<ScenarioRunArgs>),
}

#[derive(Debug, Args)]
pub struct ScenarioDir {
    /// Where scenario files (`NAME.toml`) live.
    #[arg(
        long,
        env = "LOADGEN_SCENARIO_DIR",
        default_value = "load-gen/scenarios"
    )]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ScenarioRunArgs {
    /// The scenario's name (its file name without `.toml`).
    pub name: String,
    #[command(flatten)]
    pub dir: ScenarioDir,
    /// The entry service (traffic goes here; its `/admin/faults` for `service = "entry"`).
    #[arg(long, env = "LOADGEN_TARGET", default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// The downstream service, for faults with `service = "downstream"`.
    #[arg(long, env = "LOADGEN_DOWNSTREAM")]
    pub downstream: Option<String>,
    /// Prometheus to verify the expected alerts against (its rules API).
    #[arg(long, env = "LOADGEN_PROMETHEUS")]
    pub prometheus: Option<String>,
    /// Loki, whose ruler evaluates the log alerts (its Prometheus-compatible rules API).
    #[arg(long, env = "LOADGEN_LOKI")]
    pub loki: Option<String>,
    /// Alertmanager: sees the firing alerts of every source that sends to it.
    #[arg(long, env = "LOADGEN_ALERTMANAGER")]
    pub alertmanager: Option<String>,
    /// Grafana, to print links to the evidence.
    #[arg(long, env = "LOADGEN_GRAFANA")]
    pub grafana: Option<String>,
    /// Run the scenario again and again until stopped (the stack's background traffic).
    #[arg(long)]
    pub repeat: bool,
    /// Multiply every duration and offset of the scenario (0.1: ten times faster, for CI).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Options shared by `run` and `scenario run`.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Give up on a request after this long (waiting for a connection included).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Seed for the request mix (reproducible runs; `--repeat` iteration n uses seed + n - 1).
    /// Trace ids are always random per process.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A request-mix file (TOML, see load-gen/mixes/default.toml); the built-in mix otherwise.
    #[arg(long)]
    pub mix: Option<PathBuf>,
    /// Most TCP connections to the target at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub connections: u32,
    /// Open model: most requests in flight; a due request beyond this is dropped and counted.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,
    /// The sampled flag of each request's trace (its client span and traceparent).
    #[arg(long, default_value = "true", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub trace_sampled: bool,
    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Serve the generator's own Prometheus metrics on this address.
    #[arg(long, env = "LOADGEN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// No live progress on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Exit with 1 (and say so) when more than this share of the requests got no answer at all
    /// (refused, reset, timed out): a run against a dead target is not a success. 1 turns it off.
    #[arg(long, default_value_t = 0.5, value_parser = parse_ratio)]
    pub max_error_ratio: f64,
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("'{text}' is not a ratio from 0 to 1")),
    }
}

impl CommonArgs {
    /// `Err` with a warning line when the report's share of requests without an answer is over
    /// `--max-error-ratio`.
    pub fn judge_errors(&self, report: &crate::report::Report) -> Result<(), String> {
        let unanswered: u64 = report.errors_by_kind.values().sum();
        let ratio = unanswered as f64 / report.total_requests.max(1) as f64;
        if report.total_requests > 0 && ratio > self.max_error_ratio {
            return Err(format!(
                "load-gen: {unanswered} of {} requests got no answer ({:.1} %, over --max-error-ratio {}): is the target up?",
                report.total_requests,
                100.0 * ratio,
                self.max_error_ratio
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where to send requests.
    #[arg(long, env = "LOADGEN_TARGET")]
    pub target: String,
    /// Open model: requests per second, sent on schedule whatever the target does.
    #[arg(long, conflicts_with_all = ["stages", "concurrency"])]
    pub rate: Option<f64>,
    /// Open model with ramps: `30s:50,2m:200,30s:0` (ramp to each rate over each duration).
    #[arg(long, conflicts_with_all = ["rate", "concurrency", "duration"])]
    pub stages: Option<String>,
    /// Closed model: this many workers, each sending as soon as its last answer arrived.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: Option<u32>,
    /// How long to run (with --rate or --concurrency).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests.
    #[arg(long)]
    pub max_requests: Option<u64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl CommonArgs {
    /// Every request in flight ends by its own timeout, so waiting a little longer than that
    /// collects them all.
    pub fn drain_timeout(&self) -> Duration {
        self.timeout + Duration::from_secs(1)
    }

    pub fn progress(&self) -> Progress {
        if self.quiet {
            Progress::Off
        } else {
            Progress::Auto
        }
    }

    pub fn load_mix(&self) -> anyhow::Result<Arc<RequestMix>> {
        Ok(Arc::new(match &self.mix {
            Some(path) => RequestMix::from_file(path)?,
            None => RequestMix::default_mix(),
        }))
    }

    pub fn pool(&self, target: Target) -> Arc<Pool> {
        Pool::new(target, self.connections as usize, self.timeout)
    }

    /// The process's own metrics endpoint and client tracer: made once per process, however
    /// many runs (`--repeat` iterations) use them — binding `--metrics-listen` again would
    /// fail with "address in use" at the second iteration.
    pub async fn instruments(&self) -> anyhow::Result<Instruments> {
        let tracer = ClientTracer::from_env(self.trace_sampled)?;
        let Some(address) = self.metrics_listen else {
            return Ok(Instruments {
                metrics: None,
                tracer,
            });
        };
        let metrics = LoadMetrics::default();
        let bound = metrics.clone().serve(address).await?;
        note!("load-gen metrics on http://{bound}/metrics");
        Ok(Instruments {
            metrics: Some(metrics),
            tracer,
        })
    }
}

/// What a load-gen process reports through: its metrics endpoint and its client spans.
#[derive(Clone)]
pub struct Instruments {
    pub metrics: Option<LoadMetrics>,
    pub tracer: ClientTracer,
}

impl RunArgs {
    pub fn shape(&self) -> anyhow::Result<LoadShape> {
        if self.duration.is_zero() {
            bail!("--duration must be longer than zero");
        }
        let max_in_flight = self.common.max_in_flight as usize;
        match (&self.rate, &self.stages, self.concurrency) {
            (Some(rate), None, None) => Ok(LoadShape::Open {
                schedule: ArrivalSchedule::constant(*rate, self.duration)?,
                max_in_flight,
            }),
            (None, Some(stages), None) => Ok(LoadShape::Open {
                schedule: ArrivalSchedule::from_stages(stages).context("--stages")?,
                max_in_flight,
            }),
            (None, None, Some(concurrency)) => Ok(LoadShape::Closed {
                concurrency: concurrency as usize,
                duration: self.duration,
            }),
            _ => bail!("say how to shape the load: --rate N, --stages SPEC, or --concurrency N"),
        }
    }

    pub async fn plan(&self, instruments: &Instruments) -> anyhow::Result<RunPlan> {
        let shape = self.shape()?;
        let mix = self.common.load_mix()?;
        let target = Target::resolve(&self.target).await.context("--target")?;
        check_reachable(&target).await?;
        Ok(RunPlan {
            pool: self.common.pool(target),
            shape,
            mix,
            max_requests: self.max_requests,
            seed: self.common.seed,
            tracer: instruments.tracer.clone(),
            metrics: instruments.metrics.clone(),
            progress: self.common.progress(),
            drain_timeout: self.common.drain_timeout(),
            request_timeout: self.common.timeout,
        })
    }
}

/// Fails up front, with the cause, when nothing listens at the target.
pub async fn check_reachable(target: &Target) -> anyhow::Result<()> {
    let connect = tokio::net::TcpStream::connect(target.address);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            Err(e).with_context(|| format!("cannot connect to {} ({})", target.url, target.address))
        }
        Err(_) => bail!(
            "cannot connect to {} ({}): no answer within 5 s",
            target.url,
            target.address
        ),
    }
}

/// `scenario run`: loads, optionally scales and repeats the scenario, prints each report and
/// verdict. Exit code 1 when a verification failed, 130 when interrupted. The metrics endpoint
/// and the tracer live as long as the process, across every `--repeat` iteration.
pub async fn run_scenario_command(
    args: Box<ScenarioRunArgs>,
    print_report: fn(&crate::report::Report, Output) -> anyhow::Result<()>,
) -> anyhow::Result<std::process::ExitCode> {
    use crate::scenario::Scenario;

    let scenario = Scenario::load(&args.dir.dir, &args.name)?.scaled(args.time_scale)?;
    let instruments = args.common.instruments().await?;
    let result = repeat_scenario(&args, &scenario, &instruments, print_report).await;
    let stopped = matches!(&result, Ok(code) if *code == std::process::ExitCode::from(130));
    instruments.tracer.shutdown(stopped).await;
    result
}

async fn repeat_scenario(
    args: &ScenarioRunArgs,
    scenario: &crate::scenario::Scenario,
    instruments: &Instruments,
    print_report: fn(&crate::report::Report, Output) -> anyhow::Result<()>,
) -> anyhow::Result<std::process::ExitCode> {
    use crate::scenario::{StoppedBeforeTraffic, run_scenario};
    use std::process::ExitCode;

    let endpoints = crate::scenario::runner_endpoints(args);
    let stop = crate::signals::on_interrupt();
    note!(
        "load-gen: scenario {}: {}",
        scenario.name,
        scenario.description
    );
    for iteration in 1u64.. {
        if args.repeat {
            note!("load-gen: scenario {} iteration {iteration}", scenario.name);
        }
        // Each iteration draws its own (still reproducible) request sequence: with one seed,
        // every iteration would send the same requests, and a rare route might never be hit.
        let common = CommonArgs {
            seed: args.common.seed.wrapping_add(iteration - 1),
            ..args.common.clone()
        };
        let outcome =
            match run_scenario(scenario, &endpoints, &common, instruments, stop.clone()).await {
                Ok(outcome) => outcome,
                Err(e) if e.is::<StoppedBeforeTraffic>() => {
                    note!("load-gen: {e}");
                    return Ok(ExitCode::from(130));
                }
                Err(e) => return Err(e),
            };
        print_report(&outcome.report, args.common.output)?;
        for link in &outcome.links {
            note!("evidence: {link}");
        }
        // The report is out first: an alert source or fault switch that failed loses nothing.
        if let Some(failure) = outcome.failure {
            return Err(failure);
        }
        // A stop in any phase ends the repetition, also one that came after the traffic ended.
        if outcome.interrupted || *stop.borrow() {
            return Ok(ExitCode::from(130));
        }
        if let Err(warning) = args.common.judge_errors(&outcome.report) {
            note!("{warning}");
            return Ok(ExitCode::FAILURE);
        }
        if let Some(verdict) = &outcome.verdict {
            for line in &verdict.lines {
                note!("{line}");
            }
            note!(
                "scenario {}: {}",
                scenario.name,
                if verdict.passed { "PASSED" } else { "FAILED" }
            );
            if !verdict.passed {
                return Ok(ExitCode::FAILURE);
            }
        }
        if !args.repeat {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
