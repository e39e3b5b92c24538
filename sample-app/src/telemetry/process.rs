//! The standard `process_*` metrics (the names every Prometheus client uses), read from `/proc`
//! at scrape time. On systems without `/proc` the collector emits nothing.

use std::fs;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::{MetricType, exemplar::Exemplar},
    registry::Unit,
};

/// Linux reports CPU times in `USER_HZ` ticks, which is 100 on every architecture Linux ships.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Default)]
pub struct ProcessCollector;

impl ProcessCollector {
    pub fn new() -> Self {
        Self
    }
}

/// One reading of the process's resource use.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessSnapshot {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub start_time_seconds: f64,
    pub threads: f64,
    pub open_fds: f64,
    pub max_fds: f64,
}

impl ProcessSnapshot {
    /// Reads `/proc/self`; `None` where there is no procfs.
    pub fn read() -> Option<Self> {
        let stat = fs::read_to_string("/proc/self/stat").ok()?;
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let boot_time = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time_seconds(&s));
        let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as f64)
            .unwrap_or(0.0);
        Self::parse(&stat, &status, &limits, boot_time.unwrap_or(0.0), open_fds)
    }

    fn parse(
        stat: &str,
        status: &str,
        limits: &str,
        boot_time: f64,
        open_fds: f64,
    ) -> Option<Self> {
        // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
        let after_name = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // `fields[0]` is field 3 (state) of proc(5), so field N is `fields[N - 3]`.
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
                .map(|kb| kb * 1024.0)
        };
        let max_fds = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) / TICKS_PER_SECOND,
            resident_bytes: kib("VmRSS:").unwrap_or(0.0),
            virtual_bytes: field(23)?,
            start_time_seconds: boot_time + field(22)? / TICKS_PER_SECOND,
            threads: field(20)?,
            open_fds,
            max_fds,
        })
    }
}

fn boot_time_seconds(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = ProcessSnapshot::read() else {
            return Ok(());
        };
        let no_exemplar: Option<&Exemplar<NoLabelSet, f64>> = None;
        encoder
            .encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?
            .encode_counter(&s.cpu_seconds, no_exemplar)?;
        for (name, help, unit, value) in [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                s.resident_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                s.virtual_bytes,
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds",
                Some(Unit::Seconds),
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                None,
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                s.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                None,
                s.threads,
            ),
        ] {
            encoder
                .encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?
                .encode_gauge(&value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files_including_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (my (odd) app) S 1 42 42 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 7 0 1000 123456789 2000 18446744073709551615";
        let status = "Name:\tapp\nVmRSS:\t    2048 kB\n";
        let limits = "Limit Soft Hard Units\nMax open files            1024                 4096                 files\n";
        let s = ProcessSnapshot::parse(stat, status, limits, 1_700_000_000.0, 9.0).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.resident_bytes, 2048.0 * 1024.0);
        assert_eq!(s.virtual_bytes, 123_456_789.0);
        assert_eq!(s.threads, 7.0);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!((s.open_fds, s.max_fds), (9.0, 1024.0));
    }

    #[test]
    fn reads_this_process() {
        let s = ProcessSnapshot::read().expect("Linux has /proc");
        assert!(s.resident_bytes > 0.0 && s.open_fds > 0.0 && s.start_time_seconds > 1.6e9);
    }
}
