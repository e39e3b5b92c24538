//! When each request is due. An open-model run sends request *i* at `start + due(i)` whether
//! or not earlier ones have finished, so a slow server cannot slow the arrivals down (which is
//! what hides stalls in closed-loop tools: "coordinated omission").
//!
//! A schedule is a list of segments, each ramping linearly from one rate to another over its
//! duration; `--rate N --duration D` is one flat segment, `--stages 30s:50,2m:200` ramps
//! 0→50 then 50→200. Request *i* is due when the arrivals integrated so far reach *i*.

use std::time::Duration;

use anyhow::{Context, bail};

/// The highest rate load-gen accepts: above what one machine can send (load-gen sends tens of
/// thousands of requests a second on a laptop core), so a higher one is a typo, not a plan.
pub const MAX_RATE: f64 = 1_000_000.0;

/// The longest schedule: far beyond any load test, and far from where time arithmetic overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(31 * 24 * 3600);

fn check_rate(rate: f64, what: &str) -> anyhow::Result<()> {
    if rate > MAX_RATE {
        bail!(
            "{what}: {rate} requests/s is more than one machine can send (load-gen accepts at most {MAX_RATE:.0}/s): \
             split the load across several load-gens"
        );
    }
    Ok(())
}

fn check_duration(duration: Duration, what: &str) -> anyhow::Result<()> {
    if duration > MAX_DURATION {
        bail!(
            "{what}: {} is longer than load-gen runs (at most 31 days)",
            humantime::format_duration(duration)
        );
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub duration: Duration,
    pub from_rate: f64,
    pub to_rate: f64,
}

impl Segment {
    /// Arrivals over the whole segment (the area under the rate).
    fn arrivals(&self) -> f64 {
        (self.from_rate + self.to_rate) / 2.0 * self.duration.as_secs_f64()
    }

    /// The time into the segment at which `n` arrivals have accumulated (`n` ≤ `arrivals()`).
    fn time_of(&self, n: f64) -> f64 {
        let (a, b, t) = (self.from_rate, self.to_rate, self.duration.as_secs_f64());
        let slope = (b - a) / t;
        if slope.abs() < 1e-12 {
            return n / a;
        }
        // a·x + slope·x²/2 = n  →  x = (−a + √(a² + 2·slope·n)) / slope
        let discriminant = (a * a + 2.0 * slope * n).max(0.0);
        (-a + discriminant.sqrt()) / slope
    }
}

/// The arrival plan of an open-model run.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrivalSchedule {
    segments: Vec<Segment>,
}

impl ArrivalSchedule {
    pub fn constant(rate: f64, duration: Duration) -> anyhow::Result<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of requests per second, got {rate}");
        }
        check_rate(rate, "--rate")?;
        check_duration(duration, "--duration")?;
        Ok(Self {
            segments: vec![Segment {
                duration,
                from_rate: rate,
                to_rate: rate,
            }],
        })
    }

    /// Parses `30s:50,2m:200,30s:0`: ramp to each target rate over each duration, from 0.
    pub fn from_stages(spec: &str) -> anyhow::Result<Self> {
        let mut segments = Vec::new();
        let mut previous = 0.0;
        for stage in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (duration, rate) = stage
                .split_once(':')
                .with_context(|| format!("stage '{stage}' is not DURATION:RATE (like 30s:50)"))?;
            let duration = humantime::parse_duration(duration.trim()).with_context(|| {
                format!("stage '{stage}': '{duration}' is not a duration (like 30s or 2m)")
            })?;
            let rate: f64 = rate
                .trim()
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite() && *r >= 0.0)
                .with_context(|| {
                    format!("stage '{stage}': '{rate}' is not a rate (requests/s, ≥ 0)")
                })?;
            if duration.is_zero() {
                bail!("stage '{stage}' has a zero duration");
            }
            check_rate(rate, &format!("stage '{stage}'"))?;
            check_duration(duration, &format!("stage '{stage}'"))?;
            segments.push(Segment {
                duration,
                from_rate: previous,
                to_rate: rate,
            });
            previous = rate;
        }
        if segments.is_empty() {
            bail!("--stages needs at least one DURATION:RATE stage");
        }
        let total = segments
            .iter()
            .try_fold(Duration::ZERO, |sum, s| sum.checked_add(s.duration));
        check_duration(
            total.unwrap_or(Duration::MAX),
            &format!("--stages '{spec}'"),
        )?;
        if segments.iter().all(|s| s.arrivals() < 1.0) {
            bail!("--stages '{spec}' schedules no request at all");
        }
        Ok(Self { segments })
    }

    pub fn duration(&self) -> Duration {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// Requests the whole schedule sends.
    pub fn total_requests(&self) -> u64 {
        self.segments
            .iter()
            .map(Segment::arrivals)
            .sum::<f64>()
            .floor() as u64
    }

    /// The offered rate at `elapsed` (for the load generator's own metrics).
    pub fn rate_at(&self, elapsed: Duration) -> f64 {
        let mut start = Duration::ZERO;
        for s in &self.segments {
            if elapsed < start + s.duration {
                let x = (elapsed - start).as_secs_f64() / s.duration.as_secs_f64();
                return s.from_rate + (s.to_rate - s.from_rate) * x;
            }
            start += s.duration;
        }
        0.0
    }

    /// When request `index` (from 0) is due, or `None` past the end of the schedule.
    pub fn due(&self, index: u64) -> Option<Duration> {
        // Request i goes out once i arrivals have accumulated: the first at time zero.
        let mut remaining = index as f64;
        let mut start = 0.0;
        for segment in &self.segments {
            let arrivals = segment.arrivals();
            if remaining < arrivals {
                return Some(Duration::from_secs_f64(start + segment.time_of(remaining)));
            }
            remaining -= arrivals;
            start += segment.duration.as_secs_f64();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Option<Duration>) -> f64 {
        d.unwrap().as_secs_f64()
    }

    #[test]
    fn a_constant_rate_spaces_requests_evenly_from_time_zero() {
        let s = ArrivalSchedule::constant(200.0, Duration::from_secs(3)).unwrap();
        assert_eq!(s.total_requests(), 600);
        assert_eq!(secs(s.due(0)), 0.0);
        assert!((secs(s.due(1)) - 0.005).abs() < 1e-9);
        assert!((secs(s.due(599)) - 2.995).abs() < 1e-9);
        assert_eq!(s.due(600), None);
    }

    #[test]
    fn a_ramp_sends_the_area_under_the_rate_and_speeds_up_along_it() {
        let s = ArrivalSchedule::from_stages("10s:100").unwrap();
        assert_eq!(s.total_requests(), 500);
        // Half the arrivals of a 0→100 ramp have come at t = 10/√2 s.
        assert!((secs(s.due(250)) - 10.0 / 2f64.sqrt()).abs() < 1e-6);
        let gaps: Vec<f64> = (1..500)
            .map(|i| secs(s.due(i)) - secs(s.due(i - 1)))
            .collect();
        assert!(
            gaps.windows(2).all(|w| w[1] <= w[0] + 1e-12),
            "gaps shrink as the rate rises"
        );
        assert_eq!(s.rate_at(Duration::from_secs(5)), 50.0);
    }

    #[test]
    fn stages_chain_and_a_ramp_down_ends_the_run() {
        let s = ArrivalSchedule::from_stages("2s:10, 4s:10, 2s:0").unwrap();
        assert_eq!(s.duration(), Duration::from_secs(8));
        assert_eq!(s.total_requests(), 10 + 40 + 10);
        assert!(
            (secs(s.due(10)) - 2.0).abs() < 1e-9,
            "the flat stage starts where the ramp ended"
        );
        assert!(secs(s.due(59)) < 8.0);
    }

    #[test]
    fn bad_stages_and_rates_are_explained() {
        for (spec, says) in [
            ("30s", "DURATION:RATE"),
            ("soon:5", "not a duration"),
            ("10s:fast", "not a rate"),
            ("10s:-1", "not a rate"),
            ("0s:5", "zero duration"),
            ("", "at least one"),
            ("1s:0", "no request"),
        ] {
            let err = format!("{:#}", ArrivalSchedule::from_stages(spec).unwrap_err());
            assert!(err.contains(says), "{spec}: {err}");
        }
        assert!(ArrivalSchedule::constant(0.0, Duration::from_secs(1)).is_err());
        assert!(ArrivalSchedule::constant(f64::NAN, Duration::from_secs(1)).is_err());
    }
}
