//! Continuous profiling: one thread owns the CPU sampler ([`cpu_sampler`], ~100 Hz), the heap
//! profiler ([`super::heap`]) and the symbol cache, and cuts what they collect into windows.
//!
//! Every 100 ms it drains the sampler's buffer into every open window: the push window (every
//! `push_interval`, for Pyroscope) and any pull windows (`GET /debug/pprof/profile?seconds=N`),
//! which run side by side, so a pull never leaves a gap in what Pyroscope sees. When the push
//! window closes it is encoded as pprof together with a heap profile, and both go to the
//! uploader. The sampler runs only while a window is open (without Pyroscope: only during a
//! pull), so an idle profiler costs nothing.
//!
//! Each CPU sample taken while a request's work was entered on the sampled thread carries the
//! labels `span_id`, `trace_id` and `span_name` (see [`super::span_profiles`]). Pyroscope 2.2.1
//! keeps `span_id` and `trace_id` per sample and turns the other sample labels into series
//! labels (pkg/model/pprofsplit/pprof_split.go:37-38, names at pkg/pprof/pprof.go:1101-1103),
//! and Grafana selects one span's samples for "Profiles for this span". A CPU sample becomes
//! `process_cpu:cpu:nanoseconds:cpu:nanoseconds` (and `process_cpu:samples:count:cpu:nanoseconds`):
//! pkg/og/convert/pprof/profile.go:188-189 and pkg/phlaredb/labels/labels.go:45-56.

use std::{
    collections::HashMap,
    sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use cpu_sampler::{Sample, Sampler, SpanLabels, Symbolizer};
use tokio::sync::oneshot;

use super::{
    heap::{Allocations, HeapProfiler},
    pprof_encode::PprofBuilder,
    span_profiles::SPAN_NAMES,
};

/// CPU samples per second: enough for a useful flame graph, well under 1 % CPU.
pub const SAMPLING_HZ: i32 = 100;
/// One CPU sample stands for this much CPU time.
const PERIOD_NANOS: i64 = 1_000_000_000 / SAMPLING_HZ as i64;
/// The longest window a pull request may ask for.
pub const MAX_PULL_SECONDS: u64 = 60;
/// Pull windows that may be open at once; more get "busy".
const MAX_OPEN_PULLS: usize = 4;
/// How often the sampler's buffer is drained (it holds 512 samples).
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// What a window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    Cpu,
    Heap,
}

/// One profile, encoded as a pprof protobuf.
#[derive(Debug, Clone)]
pub struct ProfileWindow {
    pub kind: ProfileKind,
    pub from: SystemTime,
    pub until: SystemTime,
    pub sample_count: usize,
    pub pprof: Vec<u8>,
}

type Reply = oneshot::Sender<Result<ProfileWindow, PullError>>;

enum Command {
    Pull { window: Duration, reply: Reply },
    Heap { reply: Reply },
    Stop,
}

/// Why a pull request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{MAX_OPEN_PULLS} profile requests are already waiting; retry when they are done")]
    Busy,
    #[error("the profiler has stopped")]
    Stopped,
    #[error("profiling failed: {0}")]
    Failed(String),
}

/// Where finished windows go: the Pyroscope uploader, when one is configured.
pub type WindowSink = tokio::sync::mpsc::Sender<ProfileWindow>;

/// What the profiler thread does.
#[derive(Debug, Clone)]
pub struct ProfilerSettings {
    pub push_interval: Duration,
    /// `None`: no push windows; CPU is sampled only while a pull waits.
    pub sink: Option<WindowSink>,
    /// Sample heap allocations (jemalloc) and push / serve heap profiles.
    pub heap: bool,
}

/// The running profiler; dropping every handle stops it.
#[derive(Clone, Debug)]
pub struct Profiler {
    commands: SyncSender<Command>,
}

impl Profiler {
    /// Starts the profiling thread; fails when heap profiling is asked for and unavailable.
    pub fn start(settings: ProfilerSettings) -> anyhow::Result<(Self, thread::JoinHandle<()>)> {
        let (commands, inbox) = mpsc::sync_channel(MAX_OPEN_PULLS);
        let (started, start_result) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("profiler".into())
            .spawn(move || {
                let heap = match settings.heap.then(HeapProfiler::start).transpose() {
                    Ok(heap) => heap,
                    Err(e) => return drop(started.send(Err(e))),
                };
                let _ = started.send(Ok(()));
                Windows::new(inbox, settings, heap).run();
            })
            .context("while starting the profiler thread")?;
        match start_result.recv() {
            Ok(Ok(())) => Ok((Self { commands }, handle)),
            Ok(Err(e)) => Err(e),
            Err(_) => anyhow::bail!("the profiler thread died while starting"),
        }
    }

    /// Profiles the next `window` of CPU time and returns it as pprof.
    pub async fn pull(&self, window: Duration) -> Result<ProfileWindow, PullError> {
        self.ask(|reply| Command::Pull { window, reply }).await
    }

    /// The heap now (allocations since start, memory in use) as pprof.
    pub async fn heap(&self) -> Result<ProfileWindow, PullError> {
        self.ask(|reply| Command::Heap { reply }).await
    }

    async fn ask(
        &self,
        command: impl FnOnce(Reply) -> Command,
    ) -> Result<ProfileWindow, PullError> {
        let (reply, answer) = oneshot::channel();
        match self.commands.try_send(command(reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(PullError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(PullError::Stopped),
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(PullError::Stopped),
        }
    }

    /// Ends the current push window early (it is still pushed) and stops the thread.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }
}

/// CPU samples of one window, counted by (stack, span).
struct CpuWindow {
    from: SystemTime,
    counts: HashMap<(Vec<usize>, Option<SpanLabels>), i64>,
}

impl CpuWindow {
    fn open() -> Self {
        Self {
            from: SystemTime::now(),
            counts: HashMap::new(),
        }
    }

    fn add(&mut self, samples: &[Sample]) {
        for sample in samples {
            *self
                .counts
                .entry((sample.frames.clone(), sample.span))
                .or_default() += 1;
        }
    }

    /// Encodes the samples of the window that ended at `until`.
    fn encode(self, until: SystemTime, symbols: &mut Symbolizer) -> ProfileWindow {
        let mut builder = PprofBuilder::new(
            symbols,
            &[("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds"),
            PERIOD_NANOS,
        );
        let mut sample_count = 0;
        for ((frames, span), count) in self.counts {
            sample_count += count as usize;
            let values = vec![count, count * PERIOD_NANOS];
            let Some(span) = span else {
                builder.sample(&frames, true, values, &[]);
                continue;
            };
            let span_id = format!("{:016x}", span.span_id);
            let trace_id = format!("{:032x}", span.trace_id);
            let name = SPAN_NAMES.get(span.span_id);
            let mut labels = vec![
                ("span_id", span_id.as_str()),
                ("trace_id", trace_id.as_str()),
            ];
            if let Some(name) = &name {
                labels.push(("span_name", name));
            }
            builder.sample(&frames, true, values, &labels);
        }
        ProfileWindow {
            kind: ProfileKind::Cpu,
            from: self.from,
            until,
            sample_count,
            pprof: builder.encode(self.from, until),
        }
    }
}

struct Windows {
    inbox: mpsc::Receiver<Command>,
    settings: ProfilerSettings,
    heap: Option<HeapProfiler>,
    sampler: Option<Sampler>,
    symbols: Symbolizer,
    push: Option<(CpuWindow, Instant)>,
    pulls: Vec<(CpuWindow, Instant, Reply)>,
    drained: Vec<Sample>,
}

impl Windows {
    fn new(
        inbox: mpsc::Receiver<Command>,
        settings: ProfilerSettings,
        heap: Option<HeapProfiler>,
    ) -> Self {
        let push = settings
            .sink
            .is_some()
            .then(|| (CpuWindow::open(), Instant::now() + settings.push_interval));
        Self {
            inbox,
            settings,
            heap,
            sampler: None,
            symbols: Symbolizer::new(),
            push,
            pulls: Vec::new(),
            drained: Vec::new(),
        }
    }

    fn run(mut self) {
        loop {
            self.keep_sampler_while_windows_are_open();
            // With no window open there is nothing to drain: sleep until a command comes.
            let idle = self.push.is_none() && self.pulls.is_empty();
            let command = if idle {
                self.inbox
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                self.inbox.recv_timeout(DRAIN_EVERY)
            };
            let stop = match command {
                Ok(Command::Pull { window, reply }) => {
                    self.open_pull(window, reply);
                    false
                }
                Ok(Command::Heap { reply }) => {
                    let heap = self.heap_profile(Allocations::SinceStart, SystemTime::now());
                    let _ = reply.send(heap.map_err(PullError::Failed));
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => true,
            };
            self.drain();
            self.close_due_windows(stop);
            if stop {
                return;
            }
        }
    }

    fn keep_sampler_while_windows_are_open(&mut self) {
        let wanted = self.push.is_some() || !self.pulls.is_empty();
        if wanted && self.sampler.is_none() {
            match Sampler::start(SAMPLING_HZ as u32) {
                Ok(sampler) => self.sampler = Some(sampler),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start the CPU sampler");
                    for (_, _, reply) in self.pulls.drain(..) {
                        let _ = reply.send(Err(PullError::Failed(e.to_string())));
                    }
                }
            }
        } else if !wanted {
            self.sampler = None;
        }
    }

    fn open_pull(&mut self, window: Duration, reply: Reply) {
        if self.pulls.len() >= MAX_OPEN_PULLS {
            // Busy, not failed: the caller gets a 429 to retry, not a 503. (Sent as a string
            // once, it became `Failed`: an eleventh concurrent pull got a 5xx.)
            let _ = reply.send(Err(PullError::Busy));
            return;
        }
        self.pulls
            .push((CpuWindow::open(), Instant::now() + window, reply));
    }

    fn drain(&mut self) {
        let Some(sampler) = &self.sampler else { return };
        self.drained.clear();
        let dropped = sampler.drain(&mut self.drained);
        if dropped > 0 {
            tracing::debug!(
                dropped,
                "CPU samples dropped (buffer full or stack not walkable)"
            );
        }
        if let Some((window, _)) = &mut self.push {
            window.add(&self.drained);
        }
        for (window, _, _) in &mut self.pulls {
            window.add(&self.drained);
        }
    }

    /// Encodes and delivers every window whose time is up (all of them when `stopping`).
    fn close_due_windows(&mut self, stopping: bool) {
        let now = Instant::now();
        let until = SystemTime::now();
        let (due, open): (Vec<_>, Vec<_>) = self
            .pulls
            .drain(..)
            .partition(|(_, deadline, _)| stopping || *deadline <= now);
        self.pulls = open;
        for (window, _, reply) in due {
            let _ = reply.send(Ok(window.encode(until, &mut self.symbols)));
        }
        let push_due = self
            .push
            .as_ref()
            .is_some_and(|(_, deadline)| stopping || *deadline <= now);
        if push_due && let Some((window, _)) = self.push.take() {
            if !stopping {
                self.push = Some((CpuWindow::open(), now + self.settings.push_interval));
            }
            let from = window.from;
            let cpu = window.encode(until, &mut self.symbols);
            let heap = self.heap_profile(Allocations::SinceLastPush, from);
            self.send(Ok(cpu));
            if self.heap.is_some() {
                self.send(heap);
            }
        }
    }

    fn heap_profile(
        &mut self,
        allocations: Allocations,
        from: SystemTime,
    ) -> Result<ProfileWindow, String> {
        let heap = self
            .heap
            .as_mut()
            .ok_or("heap profiling is off (SAMPLE_APP_HEAP_PROFILES=off)")?;
        heap.profile(&mut self.symbols, allocations, from)
            .map_err(|e| format!("{e:#}"))
    }

    fn send(&self, window: Result<ProfileWindow, String>) {
        let Some(sink) = &self.settings.sink else {
            return;
        };
        match window {
            Ok(window) if window.sample_count > 0 => {
                if let Err(TrySendError::Full(_)) = sink.try_send(window).map_err(into_std) {
                    tracing::debug!("profile upload queue full; dropped one window");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not build a profile"),
        }
    }
}

fn into_std<T>(e: tokio::sync::mpsc::error::TrySendError<T>) -> TrySendError<T> {
    match e {
        tokio::sync::mpsc::error::TrySendError::Full(t) => TrySendError::Full(t),
        tokio::sync::mpsc::error::TrySendError::Closed(t) => TrySendError::Disconnected(t),
    }
}
