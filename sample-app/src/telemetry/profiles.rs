//! Continuous CPU profiling with the `pprof` crate at ~100 Hz. One thread owns the process's
//! only profiler (two would fight over the profiling signal and timer) and cuts time into
//! windows: a push window every `push_interval` for Pyroscope, or a window of the length a
//! `GET /debug/pprof/profile?seconds=N` asked for. Every window with samples is also sent to
//! the uploader, so pull requests never leave a gap in what Pyroscope sees.

use std::{
    collections::VecDeque,
    sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use pprof::protos::Message;
use tokio::sync::oneshot;

/// Samples per second: enough for a useful flame graph, well under 1 % CPU (measured in
/// docs/benchmarks.md; 1000 Hz loses most samples to the signal handler).
pub const SAMPLING_HZ: i32 = 100;
/// The longest window a pull request may ask for.
pub const MAX_PULL_SECONDS: u64 = 60;
/// Pull requests that may wait for their window at once; more get "busy".
const MAX_WAITING_PULLS: usize = 4;

/// The CPU samples of one window, encoded as a pprof protobuf.
#[derive(Debug, Clone)]
pub struct ProfileWindow {
    pub from: SystemTime,
    pub until: SystemTime,
    pub sample_count: usize,
    pub pprof: Vec<u8>,
}

enum Command {
    Pull {
        window: Duration,
        reply: oneshot::Sender<Result<ProfileWindow, String>>,
    },
    Stop,
}

/// Why a pull request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{MAX_WAITING_PULLS} profile requests are already waiting; retry when they are done")]
    Busy,
    #[error("the profiler has stopped")]
    Stopped,
    #[error("profiling failed: {0}")]
    Failed(String),
}

/// The running profiler; dropping every handle stops it.
#[derive(Clone, Debug)]
pub struct CpuProfiler {
    commands: SyncSender<Command>,
}

/// Where finished windows go: the Pyroscope uploader, when one is configured.
pub type WindowSink = tokio::sync::mpsc::Sender<ProfileWindow>;

impl CpuProfiler {
    /// Starts the profiling thread. Without a sink it samples only while a pull request waits.
    pub fn start(
        push_interval: Duration,
        sink: Option<WindowSink>,
    ) -> anyhow::Result<(Self, thread::JoinHandle<()>)> {
        let (commands, inbox) = mpsc::sync_channel(MAX_WAITING_PULLS);
        let handle = thread::Builder::new()
            .name("cpu-profiler".into())
            .spawn(move || {
                Windows {
                    inbox,
                    sink,
                    push_interval,
                    waiting: VecDeque::new(),
                }
                .run()
            })
            .context("while starting the profiler thread")?;
        Ok((Self { commands }, handle))
    }

    /// Profiles the next `window` of CPU time and returns it as pprof.
    pub async fn pull(&self, window: Duration) -> Result<ProfileWindow, PullError> {
        let (reply, answer) = oneshot::channel();
        match self.commands.try_send(Command::Pull { window, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(PullError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(PullError::Stopped),
        }
        match answer.await {
            Ok(result) => result.map_err(PullError::Failed),
            Err(_) => Err(PullError::Stopped),
        }
    }

    /// Ends the current window early (it is still pushed) and stops the thread.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }
}

type Reply = oneshot::Sender<Result<ProfileWindow, String>>;

struct Windows {
    inbox: mpsc::Receiver<Command>,
    sink: Option<WindowSink>,
    push_interval: Duration,
    waiting: VecDeque<(Duration, Reply)>,
}

impl Windows {
    fn run(mut self) {
        loop {
            let (length, reply) = match self.next_window() {
                Some(next) => next,
                None => return,
            };
            let stop = self.profile_window(length, reply);
            if stop {
                return;
            }
        }
    }

    /// The next window to profile: a waiting pull first, else a push window, else sleep until
    /// a pull arrives. `None` means stop.
    fn next_window(&mut self) -> Option<(Duration, Option<Reply>)> {
        if let Some((length, reply)) = self.waiting.pop_front() {
            return Some((length, Some(reply)));
        }
        let command = if self.sink.is_some() {
            match self.inbox.try_recv() {
                Ok(command) => command,
                Err(mpsc::TryRecvError::Empty) => return Some((self.push_interval, None)),
                Err(mpsc::TryRecvError::Disconnected) => return None,
            }
        } else {
            self.inbox.recv().ok()?
        };
        match command {
            Command::Pull { window, reply } => Some((window, Some(reply))),
            Command::Stop => None,
        }
    }

    /// Profiles one window; returns whether the thread should stop afterwards.
    fn profile_window(&mut self, length: Duration, reply: Option<Reply>) -> bool {
        let guard = match pprof::ProfilerGuardBuilder::default()
            .frequency(SAMPLING_HZ)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
        {
            Ok(guard) => guard,
            Err(e) => {
                tracing::warn!(error = %e, "could not start the CPU profiler; retrying next window");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e.to_string()));
                }
                return self.wait(Instant::now() + self.push_interval, true);
            }
        };
        let from = SystemTime::now();
        // A pull window runs its full length; a push window is cut short by a pull request.
        let stop = self.wait(Instant::now() + length, reply.is_some());
        let window = encode(&guard, from).map_err(|e| format!("{e:#}"));
        drop(guard);

        if let Some(reply) = reply {
            let _ = reply.send(window.clone());
        }
        match (window, &self.sink) {
            (Ok(window), Some(sink)) if window.sample_count > 0 => {
                if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = sink.try_send(window)
                {
                    tracing::debug!("profile upload queue full; dropped one window");
                }
            }
            (Err(e), _) => tracing::warn!(error = %e, "could not encode a CPU profile"),
            _ => {}
        }
        stop
    }

    /// Waits until `deadline`, queueing pull requests. Returns `true` on stop. When
    /// `run_to_deadline` is false, the first pull request ends the wait early.
    fn wait(&mut self, deadline: Instant, run_to_deadline: bool) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(left) {
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) | Ok(Command::Stop) => return true,
                Ok(Command::Pull { window, reply }) => {
                    if self.waiting.len() >= MAX_WAITING_PULLS {
                        let _ = reply.send(Err(PullError::Busy.to_string()));
                        continue;
                    }
                    self.waiting.push_back((window, reply));
                    if !run_to_deadline {
                        return false;
                    }
                }
            }
        }
    }
}

fn encode(guard: &pprof::ProfilerGuard<'_>, from: SystemTime) -> anyhow::Result<ProfileWindow> {
    let report = guard
        .report()
        .build()
        .context("while building the CPU profile report")?;
    let sample_count = report.data.values().map(|&n| n.max(0) as usize).sum();
    let profile = report
        .pprof()
        .context("while converting the report to pprof")?;
    Ok(ProfileWindow {
        from,
        until: SystemTime::now(),
        sample_count,
        pprof: profile.encode_to_vec(),
    })
}
