//! Runs the load: an open-model scheduler (request *i* sent at `start + due(i)`, whatever the
//! server is doing) or closed-model workers (each sends its next request when the last one is
//! answered), every request recorded from its intended time into the run's statistics, and a
//! stop signal (Ctrl-C, SIGTERM, a scenario's end) that stops scheduling, gives what is in
//! flight at most [`STOP_DRAIN`] and then cancels it, and still yields a report (which counts
//! the cancelled requests apart: the target may or may not have served them).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{SeedableRng, rngs::SmallRng};
use tokio::sync::{Semaphore, watch};

use crate::{
    client::{Answered, Dedicated, ErrorKind, Outgoing, Pool},
    client_spans::{ClientTracer, RequestFacts, RequestSpan},
    metrics::{LoadMetrics, Outcome},
    mix::RequestMix,
    progress::Progress,
    report::{LATE_AFTER, Model, Report, RunFacts, RunStats},
    schedule::ArrivalSchedule,
    signals::stopped,
};

/// How the load is shaped.
#[derive(Debug, Clone)]
pub enum LoadShape {
    Open {
        schedule: ArrivalSchedule,
        max_in_flight: usize,
    },
    Closed {
        concurrency: usize,
        duration: Duration,
    },
}

pub struct RunPlan {
    pub pool: Arc<Pool>,
    pub shape: LoadShape,
    pub mix: Arc<RequestMix>,
    pub max_requests: Option<u64>,
    /// Seeds the request mix (never the trace ids: those are random per process).
    pub seed: u64,
    /// Makes each request's client span and `traceparent`.
    pub tracer: ClientTracer,
    pub metrics: Option<LoadMetrics>,
    pub progress: Progress,
    /// How long in-flight requests may take to finish once scheduling stops.
    pub drain_timeout: Duration,
    /// Per request (closed-model connections are made here; the pool has its own).
    pub request_timeout: Duration,
}

/// Fires when the run should stop early.
pub type StopSignal = watch::Receiver<bool>;

/// After a stop, how long requests in flight may still finish before they are cancelled: a stop
/// ends the run within this plus the time to print the report, whatever the target does.
pub const STOP_DRAIN: Duration = Duration::from_millis(800);

/// How long after its schedule's end an overloaded open-model run may still send late requests.
const SEND_GRACE: Duration = Duration::from_secs(1);

/// Statistics are kept in shards so concurrent requests rarely share a lock; the report and
/// the progress line merge them.
const SHARDS: usize = 16;

struct Shared {
    pool: Arc<Pool>,
    mix: Arc<RequestMix>,
    shards: Vec<Mutex<RunStats>>,
    metrics: Option<LoadMetrics>,
    tracer: ClientTracer,
    start: Instant,
}

impl Shared {
    fn shard(&self, index: usize) -> std::sync::MutexGuard<'_, RunStats> {
        self.shards[index % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn merged(&self) -> RunStats {
        let mut all = RunStats::default();
        for shard in &self.shards {
            all.merge(&shard.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }

    /// The next request to send, with its own trace: its client span starts at `intended`.
    fn draw(&self, rng: &mut SmallRng, intended: Instant) -> (Outgoing, RequestSpan) {
        let planned = self.mix.draw(rng);
        let span = self.tracer.start(
            &RequestFacts {
                method: &planned.method,
                target: self.pool.target(),
                path_and_query: &planned.path_and_query,
                name: &planned.name,
            },
            intended.elapsed(),
        );
        let outgoing = Outgoing {
            method: planned.method,
            path_and_query: planned.path_and_query,
            body: planned.body,
            headers: planned.headers,
            traceparent: Some(span.traceparent.clone()),
        };
        (outgoing, span)
    }

    /// Records one finished request: latency from `intended`, service time from when it went
    /// out on a connection (or from `attempted` when it never did).
    fn record(
        &self,
        shard: usize,
        result: Result<Answered, ErrorKind>,
        span: RequestSpan,
        intended: Instant,
        attempted: Instant,
    ) {
        let finished = Instant::now();
        span.finish(result.as_ref().map(|(status, _)| *status).map_err(|k| *k));
        let (outcome, service_start) = match result {
            Ok((status, sent)) => (Ok(status.as_u16()), sent),
            Err(kind) => (Err(kind), attempted),
        };
        let latency = finished - intended;
        if let Some(m) = &self.metrics {
            m.in_flight.dec();
            m.duration.observe(latency.as_secs_f64());
            let outcome = match outcome {
                Ok(status) => format!("{}xx", status / 100),
                Err(kind) => kind.as_str().to_owned(),
            };
            m.completed.get_or_create(&Outcome { outcome }).inc();
        }
        self.shard(shard).record(
            outcome,
            latency,
            finished.saturating_duration_since(service_start),
        );
    }

    /// A request given up when the run stopped: it was sent, and will never be recorded.
    fn cancelled(&self, span: RequestSpan) {
        drop(span);
        if let Some(m) = &self.metrics {
            m.in_flight.dec();
        }
    }

    fn note_sent(&self, shard: usize, intended: Instant) {
        let now = Instant::now();
        let late = now.saturating_duration_since(intended) > LATE_AFTER;
        {
            let mut stats = self.shard(shard);
            stats.sent += 1;
            stats.late += u64::from(late);
            stats.last_send = stats.last_send.max(now - self.start);
        }
        if let Some(m) = &self.metrics {
            m.sent.inc();
            m.in_flight.inc();
            if late {
                m.late.inc();
            }
        }
    }
}

/// Runs the plan until it ends or `stop` fires; returns the report.
pub async fn execute(plan: RunPlan, mut stop: StopSignal) -> Report {
    let shared = Arc::new(Shared {
        pool: plan.pool.clone(),
        mix: plan.mix.clone(),
        shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        metrics: plan.metrics.clone(),
        tracer: plan.tracer.clone(),
        start: Instant::now(),
    });
    let ticker = plan.progress.start(shared.start, {
        let shared = shared.clone();
        move || {
            let stats = shared.merged();
            (
                stats.sent,
                stats.completed(),
                stats.failed(),
                stats.dropped,
                stats.latency_ms_at(0.5),
                stats.latency_ms_at(0.99),
            )
        }
    });
    let (model, target_rate, send_window, interrupted) = match &plan.shape {
        LoadShape::Open {
            schedule,
            max_in_flight,
        } => {
            let (window, interrupted) =
                run_open(&shared, schedule, *max_in_flight, &plan, &mut stop).await;
            let rate = schedule.total_requests() as f64 / schedule.duration().as_secs_f64();
            (Model::Open, Some(rate), window, interrupted)
        }
        LoadShape::Closed {
            concurrency,
            duration,
        } => {
            let (window, interrupted) =
                run_closed(&shared, *concurrency, *duration, &plan, &stop).await;
            (Model::Closed, None, window, interrupted)
        }
    };
    ticker.finish();
    let stats = shared.merged();
    Report::build(
        &stats,
        RunFacts {
            target: shared.pool.target().url.to_string(),
            model,
            target_rate,
            elapsed: shared.start.elapsed(),
            send_window,
            interrupted,
        },
    )
}

async fn run_open(
    shared: &Arc<Shared>,
    schedule: &ArrivalSchedule,
    max_in_flight: usize,
    plan: &RunPlan,
    stop: &mut StopSignal,
) -> (Duration, bool) {
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let (cancel, cancelled) = watch::channel(false);
    let mut rng = SmallRng::seed_from_u64(plan.seed);
    let mut interrupted = false;
    let mut index = 0u64;
    // Past this, whatever is still due is dropped in one step: an overloaded scheduler would
    // otherwise walk every slot it owes, and a run could outlast its --duration by hours.
    let send_until = shared.start + schedule.duration() + SEND_GRACE;
    while let Some(due) = schedule.due(index) {
        if plan.max_requests.is_some_and(|max| index >= max) {
            break;
        }
        let intended = shared.start + due;
        let now = Instant::now();
        if now >= send_until {
            let owed = schedule.total_requests().saturating_sub(index);
            let owed = plan
                .max_requests
                .map_or(owed, |max| owed.min(max.saturating_sub(index)));
            shared.shard(index as usize).dropped += owed;
            if let Some(m) = &shared.metrics {
                m.dropped.inc_by(owed);
            }
            break;
        }
        if now < intended {
            tokio::select! {
                _ = tokio::time::sleep_until(intended.into()) => {}
                () = stopped(stop) => { interrupted = true; break; }
            }
        } else if *stop.borrow() {
            interrupted = true;
            break;
        }
        if let Some(m) = &shared.metrics {
            m.offered_rate.set(schedule.rate_at(due));
        }
        let shard = index as usize;
        index += 1;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            shared.shard(shard).dropped += 1;
            if let Some(m) = &shared.metrics {
                m.dropped.inc();
            }
            continue;
        };
        shared.note_sent(shard, intended);
        let (outgoing, span) = shared.draw(&mut rng, intended);
        let (task, mut cancelled) = (shared.clone(), cancelled.clone());
        tokio::spawn(async move {
            let attempted = Instant::now();
            tokio::select! {
                result = task.pool.send(outgoing) => task.record(shard, result, span, intended, attempted),
                () = stopped(&mut cancelled) => task.cancelled(span),
            }
            drop(permit);
        });
    }
    if let Some(m) = &shared.metrics {
        m.offered_rate.set(0.0);
    }
    let window = if interrupted {
        shared.start.elapsed()
    } else {
        schedule.duration()
    };
    let grace = if interrupted {
        STOP_DRAIN
    } else {
        plan.drain_timeout
    };
    drain(&in_flight, max_in_flight, grace).await;
    let _ = cancel.send(true);
    (window, interrupted)
}

async fn run_closed(
    shared: &Arc<Shared>,
    concurrency: usize,
    duration: Duration,
    plan: &RunPlan,
    stop: &StopSignal,
) -> (Duration, bool) {
    let end = shared.start + duration;
    let claimed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let (task, claimed, stop, max) = (
            shared.clone(),
            claimed.clone(),
            stop.clone(),
            plan.max_requests,
        );
        let mut rng = SmallRng::seed_from_u64(plan.seed.wrapping_add(worker as u64));
        let mut connection = Dedicated::new(shared.pool.target().clone(), plan.request_timeout);
        workers.push(tokio::spawn(async move {
            while Instant::now() < end
                && !*stop.borrow()
                && max.is_none_or(|m| claimed.fetch_add(1, Ordering::Relaxed) < m)
            {
                let now = Instant::now();
                let (outgoing, span) = task.draw(&mut rng, now);
                // Counted as sent before it goes out: a request the stop cancels was sent.
                task.note_sent(worker, now);
                let result = connection.send(outgoing).await;
                task.record(worker, result, span, now, now);
            }
        }));
    }
    let aborts: Vec<_> = workers.iter().map(|w| w.abort_handle()).collect();
    let all_done = async {
        for w in workers {
            let _ = w.await;
        }
    };
    let mut asked = stop.clone();
    let stopped_then_drained = async {
        stopped(&mut asked).await;
        tokio::time::sleep(STOP_DRAIN).await;
    };
    let interrupted = tokio::select! {
        _ = all_done => *stop.borrow(),
        _ = tokio::time::sleep_until((end + plan.drain_timeout).into()) => true,
        () = stopped_then_drained => true,
    };
    // A worker still waiting for an answer is cancelled with the request it holds.
    aborts.iter().for_each(tokio::task::AbortHandle::abort);
    (shared.start.elapsed().min(duration), interrupted)
}

/// Waits until every in-flight request has finished, at most `timeout`.
async fn drain(in_flight: &Arc<Semaphore>, max_in_flight: usize, timeout: Duration) {
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(timeout, in_flight.acquire_many(all)).await;
}
