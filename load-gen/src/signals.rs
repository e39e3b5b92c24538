//! Ctrl-C and SIGTERM (`docker stop`) stop a run: scheduling stops, what is in flight gets at
//! most [`crate::run::STOP_DRAIN`] to finish and is then cancelled, faults are cleared with
//! their own short deadline, and the (partial) report is still printed — within 2 s whatever
//! the run was doing. A second signal exits at once, after one quick attempt to clear the
//! faults still switched on ([`FaultSwitches`]).
//!
//! The stop is a level, not an event: [`stopped`] resolves whenever the stop has been asked
//! for, before or after the caller started waiting, so no phase can miss it.

use std::{
    collections::BTreeSet,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use tokio::sync::watch;

use crate::{note, run::StopSignal};

/// How long a forced exit (the second signal) tries to clear the faults still on.
const FORCED_CLEAR: Duration = Duration::from_millis(500);

/// A stop signal that fires on the first Ctrl-C or SIGTERM; the second one exits with 130.
pub fn on_interrupt() -> StopSignal {
    let (tx, rx) = watch::channel(false);
    // Installed now, not in the task: a signal that comes before the task first runs is kept.
    let Some(mut signals) = Signals::install() else {
        return rx;
    };
    tokio::spawn(async move {
        signals.next().await;
        note!(
            "load-gen: stopping: cancelling what is in flight, then reporting (Ctrl-C again to exit at once)"
        );
        let _ = tx.send(true);
        signals.next().await;
        note!("load-gen: second signal: exiting now");
        FaultSwitches::clear_all_within(FORCED_CLEAR).await;
        std::process::exit(130);
    });
    rx
}

/// Resolves once a stop has been asked for (at once if it already was); never, if the sender
/// is gone without asking.
pub async fn stopped(stop: &mut StopSignal) {
    if stop.wait_for(|asked| *asked).await.is_err() {
        std::future::pending::<()>().await;
    }
}

struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Handlers for SIGINT and SIGTERM. They replace an inherited "ignore" (a shell starts
    /// background jobs with SIGINT ignored), and a process that is PID 1 of a container gets
    /// no default action for either, so both must be handled explicitly.
    fn install() -> Option<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(interrupt), Ok(terminate)) => Some(Self {
                    interrupt,
                    terminate,
                }),
                (Err(e), _) | (_, Err(e)) => {
                    note!("load-gen: cannot handle Ctrl-C/SIGTERM ({e}): a stop will kill the run");
                    None
                }
            }
        }
        #[cfg(not(unix))]
        Some(Self {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The fault-switch URLs (`…/admin/faults`) that hold a plan this process set and has not
/// cleared yet: what a forced exit still tries to clear.
pub struct FaultSwitches;

fn switched_on() -> &'static Mutex<BTreeSet<String>> {
    static ON: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    ON.get_or_init(Mutex::default)
}

impl FaultSwitches {
    pub fn note(url: &str, on: bool) {
        let mut set = switched_on().lock().unwrap_or_else(|p| p.into_inner());
        if on {
            set.insert(url.to_owned());
        } else {
            set.remove(url);
        }
    }

    async fn clear_all_within(deadline: Duration) {
        let urls: Vec<String> = switched_on()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut clears = tokio::task::JoinSet::new();
        for url in urls {
            clears.spawn(async move {
                match crate::client::fetch(hyper::Method::DELETE, &url, None, deadline).await {
                    Ok((status, _)) if status.is_success() => {
                        note!("load-gen: cleared faults at {url}")
                    }
                    Ok((status, _)) => note!("load-gen: could not clear faults at {url}: {status}"),
                    Err(e) => note!("load-gen: could not clear faults at {url}: {e:#}"),
                }
            });
        }
        let _ = tokio::time::timeout(deadline, clears.join_all()).await;
    }
}
