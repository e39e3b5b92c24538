//! `load-gen history`: a week of the sample service's past, as the OpenMetrics text that
//! `promtool tsdb create-blocks-from openmetrics` turns into Prometheus blocks.
//!
//! The past is made of the same parts as live traffic: the baseline scenario's rate (shaped by
//! the hour and the weekday, [`calendar::shape`]), requests drawn from load-gen's own mix, and
//! the scenarios' fault timelines at known past times ([`calendar::INCIDENTS`]). Each request is
//! served by a model of the service ([`model`]) and counted in the same histograms, with the
//! same names, labels and bucket boundaries the service exports, plus `origin="history"` on
//! every series so nobody mistakes it for live data. Samples are written once a `step`, one
//! file per UTC day (promtool holds a whole file in memory), each a complete OpenMetrics
//! document ending in `# EOF`; a `manifest.json` says what is where.

pub mod calendar;
pub mod model;
mod openmetrics;
pub mod rules;

use std::{
    fs,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use anyhow::{Context, bail};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::Serialize;

use crate::{
    mix::RequestMix,
    scenario::{Scenario, Service, Traffic},
    schedule::ArrivalSchedule,
};
use calendar::{DAY, HOUR, Placed};
use model::{FaultEffect, Faults};
pub use openmetrics::{BUCKETS, ORIGIN_LABEL, ORIGIN_VALUE};

/// The labels Prometheus' scrape of each service adds (prometheus/prometheus.yml: job
/// `sample-app`, the target's address, and the `service` label of the target).
pub const ENTRY: Target = Target {
    service: "sample-app",
    instance: "sample-app:8080",
};
pub const DOWNSTREAM: Target = Target {
    service: "sample-app-downstream",
    instance: "sample-app-downstream:8080",
};
pub const JOB: &str = "sample-app";

/// History starts this much more than `days` before its end, so that `offset 1w` over a
/// 5-minute window has samples from the stack's first minute.
pub const LEAD: i64 = HOUR;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub service: &'static str,
    pub instance: &'static str,
}

/// What to generate.
pub struct HistoryPlan {
    /// First and last sample times (Unix seconds, multiples of `step`).
    pub start: i64,
    pub end: i64,
    pub step: i64,
    /// The background traffic's mean rate (requests/s), shaped by [`calendar::shape`].
    pub base_rate: f64,
    pub mix: Arc<RequestMix>,
    pub incidents: Vec<Placed>,
    pub skipped: Vec<String>,
    pub seed: u64,
}

impl HistoryPlan {
    /// `days` (plus [`LEAD`]) ending at `end`, with the baseline's rate and the incidents of
    /// the scenarios in `scenario_dir` (none with `incidents = false`).
    pub fn new(
        scenario_dir: &Path,
        end: i64,
        days: u32,
        step: i64,
        mix: Arc<RequestMix>,
        incidents: bool,
        seed: u64,
    ) -> anyhow::Result<Self> {
        if !(1..=30).contains(&days) {
            bail!("--days must be from 1 to 30, got {days}");
        }
        if !(10..=300).contains(&step) || DAY % step != 0 {
            bail!(
                "--step must be 10 s to 5 min and divide a day evenly (10s, 15s, 30s, 1m, 2m, 5m…), got {step} s"
            );
        }
        let end = end.div_euclid(step) * step;
        let start = end - i64::from(days) * DAY - LEAD;
        let baseline = Scenario::load(scenario_dir, "baseline")
            .context("the background traffic's rate is the baseline scenario's")?;
        let base_rate = match baseline.traffic {
            Traffic::Rate { rate, .. } => rate,
            Traffic::Stages(_) => {
                bail!("the baseline scenario must have a constant rate to shape a week from")
            }
        };
        let (placed, skipped) = if incidents {
            let mut scenarios = Vec::new();
            for &(day, time, name) in calendar::INCIDENTS {
                let scenario = Scenario::load(scenario_dir, name)
                    .with_context(|| format!("the history's incident {name}"))?;
                scenarios.push((day, time, scenario));
            }
            calendar::place(&scenarios, start, end)
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(Self {
            start,
            end,
            step,
            base_rate,
            mix,
            incidents: placed,
            skipped,
            seed,
        })
    }
}

/// A placed incident's traffic and fault timeline, ready to ask "what at offset t?".
struct Timeline {
    start: i64,
    end: i64,
    schedule: ArrivalSchedule,
    /// (offset seconds, service, plan or cleared), in time order.
    steps: Vec<(f64, Service, Option<FaultEffect>)>,
}

impl Timeline {
    fn new(placed: &Placed) -> anyhow::Result<Self> {
        let scenario = &placed.scenario;
        let schedule = match &scenario.traffic {
            Traffic::Rate { rate, duration } => ArrivalSchedule::constant(*rate, *duration)?,
            Traffic::Stages(spec) => ArrivalSchedule::from_stages(spec)?,
        };
        let steps = scenario
            .faults
            .iter()
            .map(|f| {
                let plan = f.plan.as_ref().map(FaultEffect::from_plan).transpose()?;
                Ok((f.at.as_secs_f64(), f.service, plan))
            })
            .collect::<anyhow::Result<_>>()
            .with_context(|| format!("a fault plan of {}", scenario.name))?;
        Ok(Self {
            start: placed.start,
            end: placed.end(),
            schedule,
            steps,
        })
    }

    fn faults_at(&self, offset: f64) -> Faults<'_> {
        let mut faults = Faults::default();
        for (at, service, plan) in &self.steps {
            if *at > offset {
                break;
            }
            match service {
                Service::Entry => faults.entry = plan.as_ref(),
                Service::Downstream => faults.downstream = plan.as_ref(),
            }
        }
        faults
    }
}

/// What was written, for the manifest and the summary line.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub origin: String,
    pub start: String,
    pub end: String,
    pub start_unix: i64,
    pub end_unix: i64,
    pub step_seconds: i64,
    pub base_rate: f64,
    pub files: Vec<String>,
    pub series: usize,
    pub samples: u64,
    pub requests: u64,
    pub bytes: u64,
    pub incidents: Vec<ManifestIncident>,
    pub skipped: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ManifestIncident {
    pub scenario: String,
    pub description: String,
    pub start: String,
    pub end: String,
    pub weekday: String,
    pub planned: String,
    pub moved: Option<String>,
}

/// Poisson-distributed arrivals in one step (normal approximation for large means).
fn arrivals(mean: f64, rng: &mut SmallRng) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean < 30.0 {
        let limit = (-mean).exp();
        let mut product = rng.random::<f64>();
        let mut n = 0;
        while product > limit {
            product *= rng.random::<f64>();
            n += 1;
        }
        return n;
    }
    // Box–Muller.
    let (u1, u2) = (
        rng.random::<f64>().max(f64::MIN_POSITIVE),
        rng.random::<f64>(),
    );
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (mean + mean.sqrt() * z).round().max(0.0) as u64
}

/// Deletes the `.om` files in `dir`; how many there were.
fn remove_text_files(dir: &Path) -> anyhow::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("while listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "om") {
            fs::remove_file(&path)
                .with_context(|| format!("while removing the old {}", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Generates the history into `dir` (created if missing): one file per UTC day and
/// `manifest.json`. Files of an earlier run in `dir` are replaced.
pub fn generate(plan: &HistoryPlan, dir: &Path) -> anyhow::Result<Manifest> {
    fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    remove_text_files(dir)?;
    let timelines = plan
        .incidents
        .iter()
        .map(Timeline::new)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut rng = SmallRng::seed_from_u64(plan.seed);
    let mut series = openmetrics::SeriesSet::default();
    let mut manifest = Manifest {
        origin: ORIGIN_VALUE.into(),
        start: calendar::format_time(plan.start),
        end: calendar::format_time(plan.end),
        start_unix: plan.start,
        end_unix: plan.end,
        step_seconds: plan.step,
        base_rate: plan.base_rate,
        files: Vec::new(),
        series: 0,
        samples: 0,
        requests: 0,
        bytes: 0,
        incidents: plan
            .incidents
            .iter()
            .map(|p| ManifestIncident {
                scenario: p.scenario.name.clone(),
                description: p.scenario.description.clone(),
                start: calendar::format_time(p.start),
                end: calendar::format_time(p.end()),
                weekday: calendar::WEEKDAYS[calendar::weekday(p.start)].into(),
                planned: p.planned.clone(),
                moved: p.moved.clone(),
            })
            .collect(),
        skipped: plan.skipped.clone(),
    };
    let step = plan.step;
    let mut t = plan.start;
    // The first sample is the zero every counter starts from.
    series.snapshot(t);
    while t < plan.end {
        let day_end = (t.div_euclid(DAY) + 1) * DAY;
        while t < day_end.min(plan.end) {
            let from = t;
            t += step;
            manifest.requests += simulate_step(plan, &timelines, from, t, &mut series, &mut rng);
            series.snapshot(t);
        }
        // Each file holds the samples of one UTC day: [day start, day end).
        let last_day = t >= plan.end;
        let cut = if last_day { t + 1 } else { day_end };
        let day = calendar::format_time(cut - 1);
        let name = format!("history-{}.om", &day[..10]);
        let path = dir.join(&name);
        let file = fs::File::create(&path)
            .with_context(|| format!("while creating {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let written = series
            .write_until(cut, &mut out)
            .and_then(|n| out.flush().map(|()| n))
            .with_context(|| format!("while writing {}", path.display()))?;
        manifest.samples += written;
        manifest.bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        manifest.files.push(name);
    }
    manifest.series = series.len();
    let path = dir.join("manifest.json");
    fs::write(&path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("while writing {}", path.display()))?;
    Ok(manifest)
}

/// Serves the requests of `(from, to]` and counts them; returns how many load-gen sent.
fn simulate_step(
    plan: &HistoryPlan,
    timelines: &[Timeline],
    from: i64,
    to: i64,
    series: &mut openmetrics::SeriesSet,
    rng: &mut SmallRng,
) -> u64 {
    let width = (to - from) as f64;
    let middle = from as f64 + width / 2.0;
    let active: Vec<&Timeline> = timelines
        .iter()
        .filter(|tl| tl.start < to && from < tl.end)
        .collect();
    let background = arrivals(plan.base_rate * calendar::shape(middle as i64) * width, rng);
    let mut sent = 0;
    let mut send = |at: f64, series: &mut openmetrics::SeriesSet, rng: &mut SmallRng| {
        let faults = active
            .iter()
            .find(|tl| (tl.start as f64) <= at && at < tl.end as f64)
            .map(|tl| tl.faults_at(at - tl.start as f64))
            .unwrap_or_default();
        let request = plan.mix.draw(rng);
        let outcome = model::serve(&request.method, &request.path_and_query, faults, rng);
        series.record(&outcome);
        sent += 1;
    };
    for _ in 0..background {
        let at = from as f64 + rng.random::<f64>() * width;
        send(at, series, rng);
    }
    for tl in &active {
        // The scenario's own traffic, on top of the background (as `scenario run` beside the
        // stack's load-gen): its rate at the part of the step it covers.
        let lo = (from.max(tl.start) - tl.start) as f64;
        let hi = (to.min(tl.end) - tl.start) as f64;
        let rate = tl
            .schedule
            .rate_at(std::time::Duration::from_secs_f64((lo + hi) / 2.0));
        for _ in 0..arrivals(rate * (hi - lo), rng) {
            let at = tl.start as f64 + lo + rng.random::<f64>() * (hi - lo);
            send(at, series, rng);
        }
    }
    sent
}

/// One line saying what was written, and how long it took.
pub fn summary(manifest: &Manifest, took: Instant) -> String {
    format!(
        "load-gen history: {} to {} ({} s step): {} series, {} samples, {} requests, {:.1} MB in {} files, {:.1} s",
        manifest.start,
        manifest.end,
        manifest.step_seconds,
        manifest.series,
        manifest.samples,
        manifest.requests,
        manifest.bytes as f64 / 1e6,
        manifest.files.len(),
        took.elapsed().as_secs_f64()
    )
}

/// Writes one line per incident (for people: when each happened).
pub fn describe_incidents(manifest: &Manifest, out: &mut dyn Write) -> std::io::Result<()> {
    for i in &manifest.incidents {
        write!(
            out,
            "  {:<16} {} {} → {}",
            i.scenario, i.weekday, i.start, i.end
        )?;
        if let Some(moved) = &i.moved {
            write!(out, "  ({moved})")?;
        }
        writeln!(out)?;
    }
    for s in &manifest.skipped {
        writeln!(out, "  left out: {s}")?;
    }
    Ok(())
}

/// `load-gen history`: write a week of the service's past for Prometheus to backfill.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Where to write the files (created if missing; `.om` files of an earlier run are replaced).
    #[arg(long, env = "LOADGEN_HISTORY_DIR", default_value = "history")]
    pub output: PathBuf,
    /// How many days of history (plus one hour, so `offset 1w` answers from the first minute).
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// When the history ends: `now`, or an RFC 3339 time (2026-05-04T12:00:00Z).
    #[arg(long, default_value = "now")]
    pub end: String,
    /// One sample per series this often (10s to 5m; divides a day).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub step: std::time::Duration,
    /// No incidents: only the background traffic's daily and weekly shape.
    #[arg(long)]
    pub no_incidents: bool,
    /// Seed of the random draws (the same seed and end give the same history).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A request-mix file (TOML, see load-gen/mixes/default.toml); the built-in mix otherwise.
    #[arg(long)]
    pub mix: Option<PathBuf>,
    /// Recording-rule files to evaluate over the history (repeatable): writes `rules.yml`
    /// (every reference to a recorded series replaced by its expression, so promtool needs
    /// one pass) and `backfill.env` (the range) beside the data, for
    /// `promtool tsdb create-blocks-from rules`.
    #[arg(long = "rules")]
    pub rules: Vec<PathBuf>,
    /// Generate only once: when `--output` holds the marker of an earlier run, delete the
    /// text files that run left (Prometheus has them by now) and do nothing else.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub dir: crate::cli::ScenarioDir,
}

/// The file a finished `load-gen history` leaves in its output directory.
pub const MARKER: &str = "generated";

/// Runs `load-gen history`: generates, then says what and where on stderr.
pub fn run(args: &HistoryArgs) -> anyhow::Result<()> {
    let took = Instant::now();
    let marker = args.output.join(MARKER);
    if args.once && marker.exists() {
        let removed = remove_text_files(&args.output)?;
        crate::note!(
            "load-gen history: already generated ({}: {}); removed {removed} leftover text files, nothing else to do",
            marker.display(),
            fs::read_to_string(&marker).unwrap_or_default().trim()
        );
        return Ok(());
    }
    // Before anything is written: a rule file that cannot be used is an error at once.
    let rules = if args.rules.is_empty() {
        None
    } else {
        Some(rules::backfill_rules(&args.rules)?)
    };
    let end = calendar::parse_time(&args.end).context("--end")?;
    let now = calendar::parse_time("now")?;
    if end > now + 60 {
        bail!(
            "--end {} is in the future: Prometheus would refuse every live sample until then",
            args.end
        );
    }
    if args.step.subsec_nanos() != 0 {
        bail!("--step must be whole seconds");
    }
    let mix = Arc::new(match &args.mix {
        Some(path) => RequestMix::from_file(path)?,
        None => RequestMix::default_mix(),
    });
    let plan = HistoryPlan::new(
        &args.dir.dir,
        end,
        args.days,
        args.step.as_secs() as i64,
        mix,
        !args.no_incidents,
        args.seed,
    )?;
    let manifest = generate(&plan, &args.output)?;
    if let Some(made) = &rules {
        let path = args.output.join("rules.yml");
        fs::write(&path, &made.yaml)
            .with_context(|| format!("while writing {}", path.display()))?;
        // The rules are evaluated up to the last history sample, where live evaluation takes over.
        let env = format!(
            "HISTORY_START={}\nHISTORY_END={}\n",
            manifest.start_unix, manifest.end_unix
        );
        let path = args.output.join("backfill.env");
        fs::write(&path, env).with_context(|| format!("while writing {}", path.display()))?;
        crate::note!(
            "load-gen history: {} recording rules for promtool in rules.yml",
            made.count
        );
        for left in &made.left_out {
            crate::note!("load-gen history: not backfilled: {left}");
        }
    }
    fs::write(&marker, format!("{} to {}\n", manifest.start, manifest.end))
        .with_context(|| format!("while writing {}", marker.display()))?;
    crate::note!("{}", summary(&manifest, took));
    crate::note!("incidents (UTC):");
    let mut text = Vec::new();
    describe_incidents(&manifest, &mut text)?;
    crate::note!("{}", String::from_utf8_lossy(&text).trim_end());
    Ok(())
}
