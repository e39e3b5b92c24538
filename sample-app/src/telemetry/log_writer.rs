//! Where the JSON log lines go: gathered in memory and written to stdout in batches, one `write`
//! for all the lines of the last few milliseconds, by a thread of their own.
//!
//! Writing each line to `std::io::stdout()` cost every request a `write` system call made while
//! holding stdout's lock; the other worker's access line waited on that lock (a futex wait and a
//! wake). `strace -f -c` under `wrk` counted 1.0 `write` and 0.54 `futex` calls per request with
//! all signals, against none with telemetry off, and `strace -k` put the futex calls in
//! `Stdout::write_all`'s contended lock. Here a line costs a short lock and a copy; the flusher
//! writes what gathered, in the order the lines were taken.
//!
//! What this gives up: lines reach stdout up to [`LINGER`] later, and a process killed with
//! SIGKILL (or by the OOM killer) loses the lines of its last [`LINGER`]. Every ordinary way out
//! writes them first: the telemetry guard flushes at shutdown and when it is dropped on an early
//! failure; a panic hook tries to flush before the panic message is printed (it does not wait
//! if a write is under way, in case the panic happened while this thread was writing).

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How long the flusher lets lines gather after the first one arrives.
pub const LINGER: Duration = Duration::from_millis(50);

/// Pending bytes at which the thread adding a line writes the batch itself (the flusher is
/// behind): memory stays bounded, and a writer that cannot keep up slows the loggers instead
/// of losing their lines. 64 KiB is a Linux pipe's default capacity (what `docker logs` reads
/// from); at 60,000 access lines a second that is about 400 writes a second. At 256 KiB the two
/// buffers grew to 512 KiB each, 1 MiB of the service's resident memory.
pub const FLUSH_AT: usize = 64 * 1024;
/// Each buffer's capacity: room for the line that crosses [`FLUSH_AT`], so it never grows
/// unless one line is longer than that room.
const CAPACITY: usize = FLUSH_AT + 16 * 1024;

/// A handle on the batch; clones share it.
#[derive(Clone)]
pub struct BatchedLines {
    shared: Arc<Shared>,
}

struct Shared {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// Signalled when `pending` stops being empty.
    arrived: Condvar,
    /// The destination, and an empty buffer to swap with `pending`. Held for the whole write,
    /// so batches leave in the order they were taken.
    out: Mutex<Out>,
}

struct Out {
    sink: Box<dyn Write + Send>,
    spare: Vec<u8>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding either lock leaves bytes that are still whole lines (a line is
    // appended with one copy); carry on with them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BatchedLines {
    /// Batches for standard output, with the flusher thread started.
    pub fn stdout() -> io::Result<Self> {
        Self::to(Box::new(io::stdout()))
    }

    /// Batches for `sink`, with the flusher thread started.
    pub fn to(sink: Box<dyn Write + Send>) -> io::Result<Self> {
        let lines = Self {
            shared: Arc::new(Shared {
                pending: Mutex::new(Vec::with_capacity(CAPACITY)),
                arrived: Condvar::new(),
                out: Mutex::new(Out {
                    sink,
                    spare: Vec::with_capacity(CAPACITY),
                }),
            }),
        };
        let flusher = lines.clone();
        thread::Builder::new()
            .name("log-flusher".into())
            .spawn(move || flusher.run_flusher())?;
        Ok(lines)
    }

    /// Adds whole lines; never waits for a write unless [`FLUSH_AT`] bytes are pending.
    pub fn append(&self, lines: &[u8]) {
        let mut pending = lock(&self.shared.pending);
        let was_empty = pending.is_empty();
        pending.extend_from_slice(lines);
        let full = pending.len() >= FLUSH_AT;
        drop(pending);
        if full {
            self.flush();
        } else if was_empty {
            self.shared.arrived.notify_one();
        }
    }

    /// Writes every pending line now.
    pub fn flush(&self) {
        let mut out = lock(&self.shared.out);
        Self::write_pending(&self.shared, &mut out);
    }

    /// [`flush`](Self::flush) for a panic hook: gives up rather than wait, in case the panic
    /// happened while this thread held the lock.
    pub fn try_flush(&self) {
        if let Ok(mut out) = self.shared.out.try_lock() {
            Self::write_pending(&self.shared, &mut out);
        }
    }

    fn write_pending(shared: &Shared, out: &mut Out) {
        std::mem::swap(&mut *lock(&shared.pending), &mut out.spare);
        if out.spare.is_empty() {
            return;
        }
        // Logging has nowhere to report its own failure (a closed stdout): the lines are dropped,
        // as `write_all` to stdout dropped them before.
        let _ = out.sink.write_all(&out.spare);
        let _ = out.sink.flush();
        out.spare.clear();
    }

    fn run_flusher(&self) {
        loop {
            let mut pending = lock(&self.shared.pending);
            while pending.is_empty() {
                pending = self
                    .shared
                    .arrived
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            drop(pending);
            // Not waiting for a condition: the window in which the lines of concurrent
            // requests gather into one write.
            thread::sleep(LINGER);
            self.flush();
        }
    }
}

/// What the log layer writes a line through.
pub struct LineWriter<'a>(&'a BatchedLines);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedLines {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}

/// Flushes when dropped: the telemetry guard holds one, so a service that fails to start
/// still writes what it logged.
pub struct FlushOnDrop(pub BatchedLines);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// Chains a panic hook that writes the pending lines before the panic is reported, unless
/// a write is under way ([`BatchedLines::try_flush`]).
pub fn flush_on_panic(lines: BatchedLines) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        lines.try_flush();
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            *lock(&self.writes) += 1;
            lock(&self.bytes).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.bytes).clone()).unwrap()
        }
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_in_few_writes() {
        let sink = Sink::default();
        let lines = BatchedLines::to(Box::new(sink.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lines = lines.clone();
                thread::spawn(move || {
                    for i in 0..500 {
                        lines
                            .make_writer()
                            .write_all(format!("{{\"thread\":{t},\"i\":{i}}}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        wait_until("all lines written", || sink.text().lines().count() == 2000);
        let text = sink.text();
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a whole line"))
                .filter(|v| v["thread"] == t)
                .map(|v| v["i"].as_u64().unwrap() as usize)
                .collect();
            assert_eq!(
                mine,
                (0..500).collect::<Vec<_>>(),
                "thread {t}'s lines in order"
            );
        }
        // Far fewer writes than lines (each write is one batch); not a timing bound, a count.
        assert!(*lock(&sink.writes) < 1000, "{} writes", *lock(&sink.writes));
    }

    #[test]
    fn flush_writes_what_is_pending_at_once() {
        let sink = Sink::default();
        let lines = BatchedLines::to(Box::new(sink.clone())).unwrap();
        // The flusher cannot write while this test holds the destination, so the line is
        // still pending when the lock is released and `flush` runs.
        let held = lock(&lines.shared.out);
        lines.append(b"one\n");
        drop(held);
        lines.flush();
        assert_eq!(sink.text(), "one\n");
        lines.flush();
        assert_eq!(*lock(&sink.writes), 1, "nothing pending: no write");
    }

    #[test]
    fn pending_lines_stay_bounded_when_they_come_faster_than_the_flusher_writes() {
        let sink = Sink::default();
        let lines = BatchedLines::to(Box::new(sink.clone())).unwrap();
        let line = [vec![b'x'; 1023], vec![b'\n']].concat();
        let count = 3 * FLUSH_AT / line.len();
        for _ in 0..count {
            lines.append(&line);
            // The append that reaches FLUSH_AT writes the batch itself before it returns.
            assert!(lock(&lines.shared.pending).len() < FLUSH_AT);
        }
        wait_until("every line written", || {
            sink.text().len() == count * line.len()
        });
    }

    #[test]
    fn dropping_the_guard_writes_pending_lines() {
        let sink = Sink::default();
        let lines = BatchedLines::to(Box::new(sink.clone())).unwrap();
        let guard = FlushOnDrop(lines.clone());
        let held = lock(&lines.shared.out);
        lines.append(b"last words\n");
        drop(held);
        drop(guard);
        assert_eq!(sink.text(), "last words\n");
    }

    #[test]
    fn try_flush_does_not_wait_for_a_held_destination() {
        let sink = Sink::default();
        let lines = BatchedLines::to(Box::new(sink.clone())).unwrap();
        let held = lock(&lines.shared.out);
        lines.append(b"x\n");
        lines.try_flush();
        // Nothing can have written while the destination is held.
        assert_eq!(sink.text(), "", "the held lock was not waited for");
        drop(held);
        lines.flush();
        assert_eq!(sink.text(), "x\n");
    }
}
