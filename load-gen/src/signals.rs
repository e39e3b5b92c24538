//! Ctrl-C and SIGTERM (`docker stop`) both stop a run gracefully: scheduling stops, requests
//! in flight are drained, and the (partial) report is still printed.

use tokio::sync::watch;

use crate::run::StopSignal;

/// A stop signal that fires on the first Ctrl-C or SIGTERM.
pub fn on_interrupt() -> StopSignal {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let sigterm = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! { _ = ctrl_c => {}, _ = sigterm => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        eprintln!("load-gen: stopping: draining requests in flight, then reporting");
        let _ = tx.send(true);
    });
    rx
}
