//! Time in the history: the daily and weekly shape of the background traffic, and when in the
//! past week each scenario's incident happened. Times are Unix seconds, UTC.

use anyhow::Context;

use crate::scenario::Scenario;

pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86_400;
pub const WEEK: i64 = 7 * DAY;

pub const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Monday 0 … Sunday 6 (1970-01-01 was a Thursday).
pub fn weekday(t: i64) -> usize {
    (t.div_euclid(DAY) + 3).rem_euclid(7) as usize
}

/// The background traffic's rate at `t` as a multiple of the baseline scenario's rate: a
/// working day's curve (lowest about 03:00 UTC at 0.35x, highest about 15:00 at 1.65x) and
/// quieter weekends (0.6x; weekdays 1.16x), so over a week the mean is close to the baseline rate.
pub fn shape(t: i64) -> f64 {
    let hour = t.rem_euclid(DAY) as f64 / HOUR as f64;
    let daily = 1.0 - 0.65 * (std::f64::consts::TAU * (hour - 3.0) / 24.0).cos();
    let weekly = if weekday(t) >= 5 { 0.6 } else { 1.16 };
    daily * weekly
}

/// When each scenario's incident happened: a weekday and a time of day (UTC). Each lands in
/// the past week once; the names are scenario files, read like `scenario run` reads them.
pub const INCIDENTS: &[(usize, i64, &str)] = &[
    (0, 10 * HOUR, "error-storm"),
    (1, 14 * HOUR, "slo-burn"),
    (2, 11 * HOUR, "slow-dependency"),
    (3, 15 * HOUR, "cpu-hog"),
    (4, 9 * HOUR + 30 * MINUTE, "spike"),
    (4, 16 * HOUR, "error-logs"),
    (5, 13 * HOUR, "fault-tour"),
    (6, 3 * HOUR, "memory-leak"),
];

/// No incident ends later than this before the history does: every alert window of the rules
/// (the longest short window of a burn-rate alert is 6 h) is clean when the stack starts, so
/// nothing from the past fires as if it were happening now.
pub const QUIET_BEFORE_END: i64 = 6 * HOUR;

/// A scenario's incident placed in the history.
#[derive(Debug, Clone)]
pub struct Placed {
    pub scenario: Scenario,
    pub start: i64,
    /// The weekday and time of day it was planned for.
    pub planned: String,
    /// Why it is not where it was planned (it would have ended in the quiet hours before the
    /// end), or `None`.
    pub moved: Option<String>,
}

impl Placed {
    pub fn end(&self) -> i64 {
        self.start + self.scenario.duration.as_secs() as i64
    }
}

/// Places each incident at the latest time its slot had in `[start, end − QUIET_BEFORE_END]`.
/// A slot whose latest occurrence falls in the quiet hours moves whole days earlier; one that
/// fits nowhere, or would overlap another incident, is left out (and said so in `skipped`).
pub fn place(
    scenarios: &[(usize, i64, Scenario)],
    start: i64,
    end: i64,
) -> (Vec<Placed>, Vec<String>) {
    let latest_end = end - QUIET_BEFORE_END;
    let mut placed: Vec<Placed> = Vec::new();
    let mut skipped = Vec::new();
    for (day, time, scenario) in scenarios {
        let duration = scenario.duration.as_secs() as i64;
        let planned = format!(
            "{} {:02}:{:02} UTC",
            WEEKDAYS[*day],
            time / HOUR,
            time % HOUR / MINUTE
        );
        // The slot's latest occurrence that ends in time.
        let monday = latest_monday(latest_end - duration);
        let mut at = monday + *day as i64 * DAY + time;
        if at > latest_end - duration {
            at -= WEEK;
        }
        let mut moved = None;
        if at < start {
            // Its next occurrence ends in the quiet hours: a day or more earlier instead.
            let mut earlier = at + WEEK;
            let mut days = 0;
            while earlier > latest_end - duration {
                earlier -= DAY;
                days += 1;
            }
            if earlier >= start {
                moved = Some(format!(
                    "moved {days} day{} earlier: its slot ends less than {} h before the history does",
                    if days == 1 { "" } else { "s" },
                    QUIET_BEFORE_END / HOUR
                ));
                at = earlier;
            }
        }
        if at < start {
            skipped.push(format!(
                "{} ({planned}): does not fit in the history",
                scenario.name
            ));
            continue;
        }
        let candidate = Placed {
            scenario: scenario.clone(),
            start: at,
            planned,
            moved,
        };
        if let Some(other) = placed
            .iter()
            .find(|p| p.start < candidate.end() && candidate.start < p.end())
        {
            skipped.push(format!(
                "{} ({}): would overlap {}",
                scenario.name, candidate.planned, other.scenario.name
            ));
            continue;
        }
        placed.push(candidate);
    }
    placed.sort_by_key(|p| p.start);
    (placed, skipped)
}

/// Midnight UTC of the Monday of `t`'s week.
fn latest_monday(t: i64) -> i64 {
    let midnight = t.div_euclid(DAY) * DAY;
    midnight - weekday(t) as i64 * DAY
}

/// `now`, or an RFC 3339 time (`2026-05-04T12:00:00Z`), as Unix seconds.
pub fn parse_time(text: &str) -> anyhow::Result<i64> {
    if text == "now" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the system clock is before 1970")?;
        return Ok(now.as_secs() as i64);
    }
    let at = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!("'{text}' is not a time: give `now` or RFC 3339 like 2026-05-04T12:00:00Z")
    })?;
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .with_context(|| format!("'{text}' is before 1970"))?
        .as_secs();
    Ok(secs as i64)
}

/// RFC 3339, UTC, whole seconds.
pub fn format_time(t: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(minutes: u64) -> Scenario {
        Scenario::parse(
            "x",
            &format!("description = \"x\"\n[traffic]\nrate = 1\nduration = \"{minutes}m\"\n"),
        )
        .unwrap()
    }

    #[test]
    fn weekdays_and_times_are_utc() {
        let tuesday = parse_time("2026-12-01T14:00:00Z").unwrap();
        assert_eq!(WEEKDAYS[weekday(tuesday)], "Tuesday");
        assert_eq!(format_time(tuesday), "2026-12-01T14:00:00Z");
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn the_shape_averages_to_about_one_over_a_week() {
        let mean = (0..WEEK / 600).map(|i| shape(i * 600)).sum::<f64>() / (WEEK / 600) as f64;
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
        let night = shape(parse_time("2026-12-01T03:00:00Z").unwrap());
        let afternoon = shape(parse_time("2026-12-01T15:00:00Z").unwrap());
        assert!(afternoon > 4.0 * night);
    }

    #[test]
    fn each_incident_lands_on_its_weekday_in_the_past_week() {
        // A Thursday at noon: Tuesday's slot is two days back.
        let end = parse_time("2026-12-03T12:00:00Z").unwrap();
        let (placed, skipped) = place(&[(1, 14 * HOUR, scenario(17))], end - WEEK - HOUR, end);
        assert!(skipped.is_empty());
        assert_eq!(
            format_time(placed[0].start),
            "2026-12-01T14:00:00Z".to_owned()
        );
        assert!(placed[0].moved.is_none());
    }

    #[test]
    fn a_slot_in_the_quiet_hours_moves_a_day_earlier() {
        // Tuesday 16:00: the Tuesday 14:00 incident would end 1 h 43 min before the end.
        let end = parse_time("2026-12-01T16:00:00Z").unwrap();
        let (placed, _) = place(&[(1, 14 * HOUR, scenario(17))], end - WEEK - HOUR, end);
        assert_eq!(format_time(placed[0].start), "2026-11-30T14:00:00Z");
        assert!(
            placed[0]
                .moved
                .as_deref()
                .unwrap()
                .contains("1 day earlier")
        );
        assert!(placed[0].end() <= end - QUIET_BEFORE_END);
    }

    #[test]
    fn overlapping_or_unfitting_incidents_are_left_out_and_named() {
        let end = parse_time("2026-12-03T12:00:00Z").unwrap();
        let (placed, skipped) = place(
            &[(1, 14 * HOUR, scenario(17)), (1, 14 * HOUR, scenario(5))],
            end - WEEK,
            end,
        );
        assert_eq!(placed.len(), 1);
        assert!(skipped[0].contains("overlap"), "{skipped:?}");
        // A day is room enough: the slot moves to Wednesday 14:00.
        let (placed, _) = place(&[(1, 14 * HOUR, scenario(17))], end - DAY, end);
        assert_eq!(format_time(placed[0].start), "2026-12-02T14:00:00Z");
        assert!(
            placed[0]
                .moved
                .as_deref()
                .unwrap()
                .contains("6 days earlier")
        );
        // Seven hours are not: every occurrence of the slot is outside them.
        let (placed, skipped) = place(&[(1, 14 * HOUR, scenario(17))], end - 7 * HOUR, end);
        assert!(
            placed.is_empty() && skipped[0].contains("does not fit"),
            "{skipped:?}"
        );
    }
}
