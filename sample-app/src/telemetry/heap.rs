//! Heap profiles from jemalloc's sampling profiler: which code holds memory now (in-use) and
//! which code allocated it (allocated), as pprof with Go's four memory sample types, so
//! Pyroscope files them under the same profile type ids as a Go service's heap profile.
//!
//! jemalloc samples about one allocation per `2^lg_prof_sample` bytes (512 KiB here, set at
//! build time in `.cargo/config.toml`) and records its stack; `prof.dump` writes every sampled
//! stack with its live (`curobjs`, `curbytes`) and cumulative (`accumobjs`, `accumbytes`)
//! counts. We read that dump, unbias the counts as `jeprof` does, drop the allocator's own
//! frames so each stack ends at the code that asked for memory, and encode:
//! - for a **push** window, allocations *since the previous window* (Pyroscope adds windows up,
//!   so cumulative counts would be counted again in every window) and what is in use now;
//! - for **`GET /debug/pprof/heap`**, allocations since start and what is in use now, as Go's
//!   `/debug/pprof/heap` does.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    time::SystemTime,
};

use anyhow::{Context, bail};
use cpu_sampler::{Frame, Symbolizer};

use super::{
    pprof_encode::PprofBuilder,
    profiles::{ProfileKind, ProfileWindow},
};

/// The sample types, in Go's order. With period type `space`/`bytes`, Pyroscope 2.2.1 names
/// the profile `memory` (any sample type containing `alloc_` or `inuse_`:
/// pkg/og/convert/pprof/profile.go:191) and builds each type id as
/// `name:type:unit:period_type:period_unit` (pkg/phlaredb/labels/labels.go:45-56): see
/// [`MEMORY_PROFILE_TYPES`].
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];
pub const PERIOD_TYPE: (&str, &str) = ("space", "bytes");

/// The Pyroscope profile type ids our heap profiles become (see [`SAMPLE_TYPES`]).
pub const MEMORY_PROFILE_TYPES: [&str; 4] = [
    "memory:alloc_objects:count:space:bytes",
    "memory:alloc_space:bytes:space:bytes",
    "memory:inuse_objects:count:space:bytes",
    "memory:inuse_space:bytes:space:bytes",
];

/// Leading (innermost) frames that belong to the allocator, not to the code that allocated:
/// jemalloc, Rust's allocation shims and `alloc`/`core` internals (`Vec::with_capacity`…).
const ALLOCATOR_FRAMES: &[&str] = &[
    "alloc::",
    "<alloc::",
    "core::",
    "<core::",
    "std::alloc",
    "__rust",
    "__rdl",
    "__rg_",
    "tikv_jemalloc",
    "<tikv_jemalloc",
    "_rjem_",
    "je_",
    "prof_",
    "imalloc",
    "ialloc",
    "iralloc",
    "malloc",
    "calloc",
    "realloc",
    "do_rallocx",
    "mallocx",
    "rallocx",
    "arena_",
    "tcache_",
    "te_",
    "_Unwind",
    "0x",
];

/// Live and cumulative counts of one stack, unbiased.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    inuse_objects: f64,
    inuse_bytes: f64,
    alloc_objects: f64,
    alloc_bytes: f64,
}

/// Heap dumps, and the cumulative counts of the last pushed window (for deltas).
#[derive(Default)]
pub struct HeapProfiler {
    pushed: HashMap<Vec<usize>, Counts>,
}

/// Whether the allocations of a profile are counted since start or since the last push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocations {
    SinceStart,
    SinceLastPush,
}

impl HeapProfiler {
    /// Switches jemalloc's sampling on. Fails when the binary's jemalloc has no profiler
    /// (`opt.prof` is false: another allocator, or `_RJEM_MALLOC_CONF=prof:false`).
    pub fn start() -> anyhow::Result<Self> {
        let ctl = jemalloc_pprof::PROF_CTL.as_ref().context(
            "jemalloc's heap profiler is not available in this binary (built without \
             .cargo/config.toml's JEMALLOC_SYS_WITH_MALLOC_CONF, or _RJEM_MALLOC_CONF has prof:false)",
        )?;
        ctl.blocking_lock()
            .activate()
            .context("while activating jemalloc's heap profiler")?;
        Ok(Self::default())
    }

    /// The heap now, encoded as pprof.
    pub fn profile(
        &mut self,
        symbols: &mut Symbolizer,
        allocations: Allocations,
        from: SystemTime,
    ) -> anyhow::Result<ProfileWindow> {
        let (period, stacks) = dump()?;
        let mut builder = PprofBuilder::new(symbols, &SAMPLE_TYPES, PERIOD_TYPE, period)
            .trim_leaf(is_allocator_frame);
        for (stack, counts) in &stacks {
            let previous = match allocations {
                Allocations::SinceStart => Counts::default(),
                Allocations::SinceLastPush => self.pushed.get(stack).copied().unwrap_or_default(),
            };
            let values = values(counts, &previous);
            if values.iter().all(|&v| v == 0) {
                continue;
            }
            let frames = without_allocator_frames(&mut builder, stack);
            builder.sample(frames, false, values.to_vec(), &[]);
        }
        if allocations == Allocations::SinceLastPush {
            self.pushed = stacks;
        }
        let until = SystemTime::now();
        Ok(ProfileWindow {
            kind: ProfileKind::Heap,
            from,
            until,
            sample_count: builder.sample_count(),
            pprof: builder.encode(from, until),
        })
    }
}

/// `[alloc_objects, alloc_space, inuse_objects, inuse_space]`; allocations since `previous`
/// (a smaller cumulative count means the profiler was reset: count from zero).
fn values(now: &Counts, previous: &Counts) -> [i64; 4] {
    let since = |now: f64, before: f64| if now >= before { now - before } else { now };
    [
        since(now.alloc_objects, previous.alloc_objects).round() as i64,
        since(now.alloc_bytes, previous.alloc_bytes).round() as i64,
        now.inuse_objects.round() as i64,
        now.inuse_bytes.round() as i64,
    ]
}

/// Source paths of allocator code: Rust's `alloc` and `core` libraries and jemalloc. Frames
/// named from debug information (shared libraries, through `backtrace`) may carry a bare name
/// (`alloc`, `from_elem`) with a file; the file is then what tells them apart.
const ALLOCATOR_FILES: &[&str] = &[
    "/library/alloc/",
    "/library/core/",
    "/library/std/src/alloc",
    "jemalloc",
];

fn is_allocator_frame(frame: &Frame) -> bool {
    let function = frame.function.as_str();
    // `<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem`: an `alloc` trait impl.
    let alloc_trait = function
        .split_once(" as ")
        .is_some_and(|(_, path)| path.starts_with("alloc::"));
    alloc_trait
        || ALLOCATOR_FRAMES
            .iter()
            .any(|prefix| function.starts_with(prefix))
        || ALLOCATOR_FILES.iter().any(|part| frame.file.contains(part))
}

/// The stack from the first address whose code is not all allocator (inlined frames included).
fn without_allocator_frames<'s>(builder: &mut PprofBuilder<'_>, stack: &'s [usize]) -> &'s [usize] {
    let first_own = stack
        .iter()
        .position(|&address| !builder.frames(address, true).iter().all(is_allocator_frame));
    // A stack that is allocator all the way down keeps its frames rather than vanish.
    first_own.map_or(stack, |i| &stack[i..])
}

/// Asks jemalloc for a dump and parses it: (sampling period in bytes, stacks with counts).
fn dump() -> anyhow::Result<(i64, HashMap<Vec<usize>, Counts>)> {
    let ctl = jemalloc_pprof::PROF_CTL
        .as_ref()
        .context("jemalloc's heap profiler is not available")?;
    let file = ctl
        .blocking_lock()
        .dump()
        .context("while dumping the heap profile")?;
    parse(BufReader::new(file))
}

/// Parses jemalloc's `heap_v2` dump: a `heap_v2/<period>` line, then `@ addr…` stack lines
/// (innermost first), each followed by `t*: curobjs: curbytes [accumobjs: accumbytes]`.
fn parse(dump: impl BufRead) -> anyhow::Result<(i64, HashMap<Vec<usize>, Counts>)> {
    let mut lines = dump.lines();
    let header = lines.next().context("an empty heap dump")??;
    let period: f64 = header
        .trim()
        .strip_prefix("heap_v2/")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("not a jemalloc heap_v2 dump: {header:?}"))?;
    let mut stacks: HashMap<Vec<usize>, Counts> = HashMap::new();
    let mut stack: Option<Vec<usize>> = None;
    for line in lines {
        let line = line?;
        let line = line.trim();
        if line == "MAPPED_LIBRARIES:" {
            break;
        }
        if let Some(addresses) = line.strip_prefix("@ ") {
            let parsed: Result<Vec<usize>, _> = addresses
                .split_ascii_whitespace()
                .map(|a| usize::from_str_radix(a.trim_start_matches("0x"), 16))
                .collect();
            stack = Some(parsed.context("a heap dump stack with a bad address")?);
        } else if let Some(counts) = line.strip_prefix("t*:")
            && let Some(stack) = stack.take()
        {
            let counts = parse_counts(counts, period)?;
            let entry = stacks.entry(stack).or_default();
            entry.inuse_objects += counts.inuse_objects;
            entry.inuse_bytes += counts.inuse_bytes;
            entry.alloc_objects += counts.alloc_objects;
            entry.alloc_bytes += counts.alloc_bytes;
        }
    }
    Ok((period as i64, stacks))
}

/// `curobjs: curbytes [accumobjs: accumbytes]`, unbiased with jeprof's `AdjustSamples`:
/// each sampled byte stands for `1 / (1 - e^(-size/period))` bytes.
fn parse_counts(text: &str, period: f64) -> anyhow::Result<Counts> {
    let numbers: Vec<f64> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f64>())
        .collect::<Result<_, _>>()?;
    let [cur_objs, cur_bytes, acc_objs, acc_bytes] = numbers[..] else {
        bail!("a heap dump count line that is not 'objs: bytes [objs: bytes]': {text:?}");
    };
    let unbias = |objs: f64, bytes: f64| {
        if objs <= 0.0 || bytes <= 0.0 {
            return (0.0, 0.0);
        }
        let scale = 1.0 / (1.0 - (-(bytes / objs) / period).exp());
        (objs * scale, bytes * scale)
    };
    let (inuse_objects, inuse_bytes) = unbias(cur_objs, cur_bytes);
    let (alloc_objects, alloc_bytes) = unbias(acc_objs, acc_bytes);
    Ok(Counts {
        inuse_objects,
        inuse_bytes,
        alloc_objects,
        alloc_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "heap_v2/524288\n  t*: 34: 36000000 [40: 40000000]\n  t0: 34: 36000000 [40: 40000000]\n@ 0x10 0x20 0x30\n  t*: 33: 35955660 [33: 35955660]\n  t0: 33: 35955660 [33: 35955660]\n@ 0x10 0x40\n  t*: 0: 0 [7: 7000]\n\nMAPPED_LIBRARIES:\n5557676a5000-55576777c000 r--p 00000000 fe:00 1 /bin/x\n";

    #[test]
    fn a_dump_parses_into_unbiased_stacks_and_ignores_the_process_totals() {
        let (period, stacks) = parse(DUMP.as_bytes()).unwrap();
        assert_eq!(period, 524_288);
        assert_eq!(stacks.len(), 2);
        let leak = stacks[&vec![0x10, 0x20, 0x30]];
        // 33 sampled 1.09 MB objects stand for about 40 MiB.
        assert!(
            (leak.inuse_bytes / 1048576.0 - 39.2).abs() < 1.0,
            "{leak:?}"
        );
        assert_eq!(leak.inuse_bytes, leak.alloc_bytes);
        let freed = stacks[&vec![0x10, 0x40]];
        assert_eq!((freed.inuse_objects, freed.inuse_bytes), (0.0, 0.0));
        assert!(freed.alloc_objects > 7.0);
    }

    fn frame(function: &str, file: &str) -> Frame {
        Frame {
            function: function.into(),
            system_name: String::new(),
            file: file.into(),
            line: 0,
        }
    }

    #[test]
    fn allocator_frames_are_told_from_the_code_that_allocates() {
        let std_alloc = "/rustc/59807616e1fa/library/alloc/src/alloc.rs";
        for noise in [
            frame(
                "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
                "",
            ),
            frame("alloc::raw_vec::RawVecInner<A>::with_capacity_in", ""),
            frame("_rjem_je_malloc_default", ""),
            frame("__rust_alloc", ""),
            // A release build's inlined frame: a bare name, told by its file.
            frame("from_elem", std_alloc),
        ] {
            assert!(is_allocator_frame(&noise), "{noise:?}");
        }
        for code in [
            frame(
                "sample_app::faults::state::leak_memory",
                "sample-app/src/faults/state.rs",
            ),
            frame("leak_memory", "/src/sample-app/src/faults/state.rs"),
            frame(
                "<actix_http::h1::dispatcher::Dispatcher<T> as core::future::future::Future>::poll",
                "",
            ),
        ] {
            assert!(!is_allocator_frame(&code), "{code:?}");
        }
    }

    #[test]
    fn pushed_allocations_count_only_what_happened_since_the_last_push() {
        let before = Counts {
            alloc_objects: 10.0,
            alloc_bytes: 1000.0,
            ..Counts::default()
        };
        let now = Counts {
            inuse_objects: 2.0,
            inuse_bytes: 200.0,
            alloc_objects: 15.0,
            alloc_bytes: 1500.0,
        };
        assert_eq!(values(&now, &before), [5, 500, 2, 200]);
        assert_eq!(values(&before, &now), [10, 1000, 0, 0], "after a reset");
    }
}
