//! The history's series, counted as the service's histograms count, and written as OpenMetrics
//! text the way promtool's importer reads it: each family once per file, each series' samples
//! in time order, every line with its timestamp, `# EOF` last.

use std::{collections::HashMap, io::Write};

use super::{
    DOWNSTREAM, ENTRY, JOB, Target,
    model::{DOWNSTREAM_HOST, Outcome, Served},
};

/// The label every history series carries, and its value.
pub const ORIGIN_LABEL: &str = "origin";
pub const ORIGIN_VALUE: &str = "history";

/// The service's bucket boundaries (seconds) as its `/metrics` writes them in `le`
/// (sample-app/src/telemetry/metrics.rs, `DURATION_BUCKETS`; a test compares the two).
pub const BUCKETS: [(f64, &str); 14] = [
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.075, "0.075"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (0.75, "0.75"),
    (1.0, "1.0"),
    (2.5, "2.5"),
    (5.0, "5.0"),
    (7.5, "7.5"),
    (10.0, "10.0"),
];

struct Family {
    name: &'static str,
    help: &'static str,
}

/// Names and help texts as the service registers them.
const SERVER: Family = Family {
    name: "http_server_request_duration_seconds",
    help: "Duration of HTTP server requests, by method, route template and status",
};
const CLIENT: Family = Family {
    name: "http_client_request_duration_seconds",
    help: "Duration of HTTP calls to dependencies, by method, server and outcome",
};

/// Which series: the labels beyond job, instance, service and origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Server {
        service: &'static str,
        method: &'static str,
        route: &'static str,
        status: u16,
    },
    Client {
        status: Option<u16>,
        error_type: &'static str,
    },
}

impl Key {
    fn target(&self) -> Target {
        match self {
            Key::Server { service, .. } if *service == DOWNSTREAM.service => DOWNSTREAM,
            _ => ENTRY,
        }
    }

    fn family(&self) -> &'static Family {
        match self {
            Key::Server { .. } => &SERVER,
            Key::Client { .. } => &CLIENT,
        }
    }

    /// The label set, without `le`, in the order the lines carry it.
    fn labels(&self) -> String {
        let target = self.target();
        let mut out = format!(
            "job=\"{JOB}\",instance=\"{}\",service=\"{}\",{ORIGIN_LABEL}=\"{ORIGIN_VALUE}\"",
            target.instance, target.service
        );
        match self {
            Key::Server {
                method,
                route,
                status,
                ..
            } => out.push_str(&format!(
                ",http_request_method=\"{method}\",http_route=\"{route}\",http_response_status_code=\"{status}\""
            )),
            Key::Client { status, error_type } => {
                out.push_str(&format!(
                    ",http_request_method=\"GET\",server_address=\"{DOWNSTREAM_HOST}\""
                ));
                // Empty labels are absent in Prometheus (a scrape drops them): so here too.
                if let Some(status) = status {
                    out.push_str(&format!(",http_response_status_code=\"{status}\""));
                }
                if !error_type.is_empty() {
                    out.push_str(&format!(",error_type=\"{error_type}\""));
                }
            }
        }
        out
    }
}

/// A histogram's state: observations per bucket (the last is above every bound) and their sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let index = BUCKETS
            .iter()
            .position(|(bound, _)| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[index] += 1;
        self.sum += seconds;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

struct Track {
    key: Key,
    histogram: Histogram,
    /// (timestamp, state) not yet written.
    points: Vec<(i64, Histogram)>,
}

/// Every series of the history, and the samples not yet written.
#[derive(Default)]
pub struct SeriesSet {
    tracks: Vec<Track>,
    index: HashMap<Key, usize>,
    /// The latest snapshot's time, and everything before `written` is on disk.
    last_snapshot: Option<i64>,
    written: i64,
}

impl SeriesSet {
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    fn histogram(&mut self, key: Key) -> &mut Histogram {
        let next = self.tracks.len();
        let i = *self.index.entry(key.clone()).or_insert(next);
        if i == next {
            // A new series starts from zero one step earlier, as a counter starts at zero
            // when the process creates it: the first step's requests are then an increase
            // that rate() sees, not a starting value it cannot.
            let points = self
                .last_snapshot
                .filter(|&t| t >= self.written)
                .map(|t| vec![(t, Histogram::default())])
                .unwrap_or_default();
            self.tracks.push(Track {
                key,
                histogram: Histogram::default(),
                points,
            });
        }
        &mut self.tracks[i].histogram
    }

    fn record_served(&mut self, target: Target, served: &Served) {
        self.histogram(Key::Server {
            service: target.service,
            method: served.method,
            route: served.route,
            status: served.status,
        })
        .observe(served.seconds);
    }

    pub fn record(&mut self, outcome: &Outcome) {
        if let Some(served) = &outcome.entry {
            self.record_served(ENTRY, served);
        }
        if let Some(call) = &outcome.call {
            self.histogram(Key::Client {
                status: call.status,
                error_type: call.error_type,
            })
            .observe(call.seconds);
        }
        if let Some(served) = &outcome.downstream {
            self.record_served(DOWNSTREAM, served);
        }
    }

    /// Every series' state at `t` becomes a sample.
    pub fn snapshot(&mut self, t: i64) {
        for track in &mut self.tracks {
            track.points.push((t, track.histogram.clone()));
        }
        self.last_snapshot = Some(t);
    }

    /// Writes the samples before `cut` as one OpenMetrics document and forgets them; returns
    /// how many samples (lines) it wrote.
    pub fn write_until(&mut self, cut: i64, out: &mut impl Write) -> std::io::Result<u64> {
        let mut order: Vec<usize> = (0..self.tracks.len()).collect();
        order.sort_by(|&a, &b| self.tracks[a].key.cmp(&self.tracks[b].key));
        let mut samples = 0;
        let mut family: Option<&'static str> = None;
        for i in order {
            let track = &mut self.tracks[i];
            let keep = track.points.partition_point(|(t, _)| *t < cut);
            if keep == 0 {
                continue;
            }
            let f = track.key.family();
            if family != Some(f.name) {
                writeln!(out, "# HELP {} {}", f.name, f.help)?;
                writeln!(out, "# TYPE {} histogram", f.name)?;
                writeln!(out, "# UNIT {} seconds", f.name)?;
                family = Some(f.name);
            }
            let labels = track.key.labels();
            for (t, h) in track.points.drain(..keep) {
                let mut cumulative = 0;
                for (i, (_, le)) in BUCKETS.iter().enumerate() {
                    cumulative += h.counts[i];
                    writeln!(
                        out,
                        "{}_bucket{{{labels},le=\"{le}\"}} {cumulative} {t}",
                        f.name
                    )?;
                }
                let count = h.count();
                writeln!(out, "{}_bucket{{{labels},le=\"+Inf\"}} {count} {t}", f.name)?;
                writeln!(out, "{}_count{{{labels}}} {count} {t}", f.name)?;
                writeln!(out, "{}_sum{{{labels}}} {:.6} {t}", f.name, h.sum)?;
                samples += BUCKETS.len() as u64 + 3;
            }
        }
        writeln!(out, "# EOF")?;
        self.written = cut;
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::default();
        for s in [0.001, 0.005, 0.3, 20.0] {
            h.observe(s);
        }
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[7], 1, "0.3 s is in le=0.5");
        assert_eq!(h.counts[14], 1, "20 s is only in +Inf");
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn a_document_has_each_family_once_samples_in_time_order_and_an_eof() {
        let mut set = SeriesSet::default();
        set.snapshot(100);
        let served = Served {
            method: "GET",
            route: "/",
            status: 200,
            seconds: 0.002,
        };
        set.record_served(ENTRY, &served);
        set.snapshot(160);
        set.record_served(ENTRY, &served);
        set.snapshot(220);
        let mut out = Vec::new();
        let samples = set.write_until(200, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(samples, 2 * 17, "the zero at 100 and the sample at 160");
        assert_eq!(text.matches("# TYPE").count(), 1);
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains(
            "http_server_request_duration_seconds_count{job=\"sample-app\",instance=\"sample-app:8080\",service=\"sample-app\",origin=\"history\",http_request_method=\"GET\",http_route=\"/\",http_response_status_code=\"200\"} 1 160"
        ));
        assert!(
            !text.contains(" 220\n"),
            "later samples wait for the next file"
        );
        let rest = {
            let mut out = Vec::new();
            set.write_until(300, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(
            rest.contains("_count{") && rest.contains("} 2 220\n"),
            "{rest}"
        );
    }
}
