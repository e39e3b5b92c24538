//! Live progress: a redrawn line on a terminal, a plain line every few seconds otherwise (CI
//! logs, `docker logs`), or nothing. Always on stderr, so `--output json` stays clean.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// sent, completed, failed, dropped, p50 ms, p99 ms
pub type Snapshot = (u64, u64, u64, u64, f64, f64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Auto,
    Off,
}

pub struct Ticker {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn start(self, start: Instant, snapshot: impl Fn() -> Snapshot + Send + 'static) -> Ticker {
        if self == Progress::Off {
            return Ticker {
                task: None,
                bar: None,
            };
        }
        let tty = std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"),
            );
            bar
        });
        let every = if tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        };
        let line_bar = bar.clone();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.tick().await;
            loop {
                interval.tick().await;
                let line = describe(start.elapsed(), snapshot());
                match &line_bar {
                    Some(bar) => bar.set_message(line),
                    None => crate::note!("{line}"),
                }
            }
        });
        Ticker {
            task: Some(task),
            bar,
        }
    }
}

fn describe(elapsed: Duration, (sent, completed, failed, dropped, p50, p99): Snapshot) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!(
        "{:>6.1}s  sent {sent}  ({:.1}/s)  done {completed}  failed (5xx or no answer) {failed}  dropped {dropped}  p50 {p50:.1} ms  p99 {p99:.1} ms",
        secs,
        sent as f64 / secs
    )
}

impl Ticker {
    pub fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
