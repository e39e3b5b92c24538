//! The unsafe part, kept small: the `SIGPROF` handler, the timer that raises it, and the
//! preallocated buffer the handler writes into.
//!
//! The buffer is a fixed array of records, each with a state (`FREE` → `WRITING` → `READY` →
//! `FREE`). The handler claims a `FREE` record with a compare-exchange (so handlers on several
//! threads never share one), fills it, and publishes it with a release store of `READY`. The
//! drainer reads `READY` records after an acquire load and frees them. No lock, no allocation,
//! and a full buffer only costs a dropped sample (counted).

use std::{
    cell::UnsafeCell,
    ffi::c_void,
    sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
};

use crate::{Sample, SpanLabels, labels::thread_span};

/// The deepest stack a sample keeps (innermost frames first; deeper ones are cut).
pub const MAX_DEPTH: usize = 128;
/// Records in the buffer: at 100 Hz of process CPU time on a few cores, a drain every 100 ms
/// finds a few dozen at most.
const RECORDS: usize = 512;

const FREE: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

#[derive(Clone, Copy)]
struct Data {
    depth: usize,
    frames: [usize; MAX_DEPTH],
    span: Option<SpanLabels>,
}

struct Record {
    state: AtomicU8,
    data: UnsafeCell<Data>,
}

struct Buffer {
    next: AtomicUsize,
    dropped: AtomicU64,
    records: [Record; RECORDS],
}

// SAFETY: a record's `data` is written only by the one handler that moved its state from FREE
// to WRITING, and read only by the drainer after it saw READY (acquire, pairing with the
// handler's release); the state machine gives each side exclusive access in turn.
unsafe impl Sync for Buffer {}

static BUFFER: Buffer = Buffer {
    next: AtomicUsize::new(0),
    dropped: AtomicU64::new(0),
    records: [const {
        Record {
            state: AtomicU8::new(FREE),
            data: UnsafeCell::new(Data {
                depth: 0,
                frames: [0; MAX_DEPTH],
                span: None,
            }),
        }
    }; RECORDS],
};

static RUNNING: AtomicBool = AtomicBool::new(false);

/// Why the sampler did not start.
#[derive(Debug)]
pub enum StartError {
    /// Another [`Sampler`] runs in this process (they would share one signal and timer).
    AlreadyRunning,
    /// Installing the handler or the timer failed.
    Os(std::io::Error),
    /// Not Linux: no `SIGPROF` sampler here.
    Unsupported,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadyRunning => f.write_str("a CPU sampler is already running in this process"),
            Self::Os(e) => write!(f, "could not install the SIGPROF sampler: {e}"),
            Self::Unsupported => f.write_str("CPU sampling needs Linux"),
        }
    }
}

impl std::error::Error for StartError {}

/// The running sampler; dropping it stops the timer (the handler then ignores `SIGPROF`).
#[derive(Debug)]
pub struct Sampler {
    _private: (),
}

impl Sampler {
    /// Starts sampling the whole process at `hz` samples per second of CPU time (1–1000).
    pub fn start(hz: u32) -> Result<Self, StartError> {
        if !cfg!(target_os = "linux") {
            return Err(StartError::Unsupported);
        }
        if RUNNING.swap(true, Ordering::AcqRel) {
            return Err(StartError::AlreadyRunning);
        }
        // Warm the unwinder up on this thread, outside any handler: its first use may
        // initialise state, which a signal handler must not be the one to do.
        backtrace::trace(|_| false);
        if let Err(e) = install_handler().and_then(|()| set_timer(hz.clamp(1, 1000))) {
            let _ = set_timer(0);
            RUNNING.store(false, Ordering::Release);
            return Err(StartError::Os(e));
        }
        Ok(Self { _private: () })
    }

    /// Moves every finished sample into `into`; returns how many were dropped (buffer full or
    /// unwinding failed) since the last call.
    pub fn drain(&self, into: &mut Vec<Sample>) -> u64 {
        drain_records(into);
        BUFFER.dropped.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        let _ = set_timer(0);
        // SIG_IGN, not SIG_DFL: a SIGPROF still pending would otherwise terminate the process.
        let _ = set_disposition(libc::SIG_IGN);
        let mut rest = Vec::new();
        drain_records(&mut rest);
        RUNNING.store(false, Ordering::Release);
    }
}

fn drain_records(into: &mut Vec<Sample>) {
    for record in &BUFFER.records {
        if record.state.load(Ordering::Acquire) != READY {
            continue;
        }
        // SAFETY: READY means the handler finished writing and released the record; until we
        // store FREE below no handler can claim it, so this is the only access.
        let data = unsafe { *record.data.get() };
        record.state.store(FREE, Ordering::Release);
        into.push(Sample {
            frames: data.frames[..data.depth].to_vec(),
            span: data.span,
        });
    }
}

fn install_handler() -> std::io::Result<()> {
    set_disposition(on_sigprof as *const () as libc::sighandler_t)
}

fn set_disposition(handler: libc::sighandler_t) -> std::io::Result<()> {
    // SAFETY: `sigaction` is plain data; zeroed is a valid initial value (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler;
    // SA_RESTART: a sampled thread's interrupted system call resumes instead of failing EINTR.
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `action` is fully initialised and outlives the call; a null old-action pointer is
    // allowed. The handler only does async-signal-safe work (see `on_sigprof`).
    let rc = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn set_timer(hz: u32) -> std::io::Result<()> {
    let period = if hz == 0 {
        0
    } else {
        1_000_000 / i64::from(hz)
    };
    let tick = libc::timeval {
        tv_sec: 0,
        tv_usec: period as libc::suseconds_t,
    };
    let timer = libc::itimerval {
        it_interval: tick,
        it_value: tick,
    };
    // SAFETY: `timer` is initialised and outlives the call; a null old-value pointer is allowed.
    let rc = unsafe { libc::setitimer(libc::ITIMER_PROF, &timer, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The interrupted instruction, from the signal context.
fn interrupted_pc(context: *mut c_void) -> Option<usize> {
    if context.is_null() {
        return None;
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        // SAFETY: for an SA_SIGINFO handler the kernel passes a valid `ucontext_t`, alive for
        // the handler's duration; we only read one register.
        let uc = unsafe { &*(context as *const libc::ucontext_t) };
        Some(uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize)
    }
    #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
    {
        // SAFETY: as above: a valid `ucontext_t` for the handler's duration, read only.
        let uc = unsafe { &*(context as *const libc::ucontext_t) };
        Some(uc.uc_mcontext.pc as usize)
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        None
    }
}

/// The SIGPROF handler. Async-signal-safe: atomics, a stack walk into a preallocated record,
/// `errno` saved and restored; no allocation, no lock, no panic path.
extern "C" fn on_sigprof(_signal: libc::c_int, _info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: `__errno_location` returns this thread's errno; reading and restoring it keeps
    // the interrupted code's view of errno intact.
    let errno = unsafe { *libc::__errno_location() };
    let span = thread_span();
    let pc = interrupted_pc(context);
    match claim() {
        Some(record) => {
            // SAFETY: `claim` moved this record from FREE to WRITING, so no other handler and
            // not the drainer touches its data until we publish it.
            let data = unsafe { &mut *record.data.get() };
            let depth = walk_stack(pc, &mut data.frames);
            data.depth = depth;
            data.span = span;
            let state = if depth == 0 { FREE } else { READY };
            if depth == 0 {
                BUFFER.dropped.fetch_add(1, Ordering::Relaxed);
            }
            record.state.store(state, Ordering::Release);
        }
        None => {
            BUFFER.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn claim() -> Option<&'static Record> {
    for _ in 0..8 {
        let index = BUFFER.next.fetch_add(1, Ordering::Relaxed) % RECORDS;
        let record = &BUFFER.records[index];
        if record
            .state
            .compare_exchange(FREE, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Some(record);
        }
    }
    None
}

/// Writes the interrupted code's frames into `frames`, skipping the handler's own frames (all
/// frames above the one at the interrupted `pc`). Returns the depth, 0 when `pc` was not found.
fn walk_stack(pc: Option<usize>, frames: &mut [usize; MAX_DEPTH]) -> usize {
    let mut depth = 0;
    let mut found = pc.is_none();
    // SAFETY: `trace_unsynchronized` is unsafe only because it takes no lock against
    // concurrent traces; the libgcc unwinder it uses keeps no shared mutable state of its own
    // for this walk (glibc ≥ 2.35 finds unwind tables without a lock). This is the same
    // unwinding pprof-rs and gperftools do from their SIGPROF handlers. The closure only
    // writes into the preallocated array.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if !found {
                found = Some(ip) == pc;
                if !found {
                    return true;
                }
            }
            frames[depth] = ip;
            depth += 1;
            depth < MAX_DEPTH
        });
    }
    if found { depth } else { 0 }
}
