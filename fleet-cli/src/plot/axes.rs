//! The axes whose ticks plotters cannot choose for us: time, ticked in minutes, hours, days
//! or weeks as the span asks; wait, spread so that seconds and hours both show; and cost,
//! logarithmic with round ticks in every decade it spans.

use std::ops::Range;

use chrono::DateTime;
use plotters::coord::ranged1d::{
    KeyPointHint, KeyPointWeight, NoDefaultFormatting, Ranged, ValueFormatter,
};

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;
/// 1970-01-05, the first Monday after the Unix epoch: weeks start on Mondays.
const FIRST_MONDAY: i64 = 4 * DAY;

/// Steps between time ticks, shortest first, in seconds.
const TIME_STEPS_S: [i64; 16] = [
    MINUTE,
    2 * MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    15 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    WEEK,
    2 * WEEK,
    4 * WEEK,
];

/// A time axis in Unix seconds (UTC), labelled at the shortest step that fits `max_labels`
/// ticks: `HH:MM` below a day (a midnight tick shows its day instead), `Tue 01` for days,
/// `Oct 07` for weeks (which start on Mondays).
#[derive(Debug, Clone, Copy)]
pub struct TimeAxis {
    start: i64,
    end: i64,
    label_step: i64,
}

impl TimeAxis {
    /// The axis from `start` to `end` (at least a minute long) with at most `max_labels`
    /// labelled ticks.
    pub fn new(start: i64, end: i64, max_labels: usize) -> Self {
        let end = end.max(start + MINUTE);
        TimeAxis {
            start,
            end,
            label_step: step_for(start, end, max_labels),
        }
    }

    /// The labelled ticks.
    pub fn label_ticks(&self) -> Vec<i64> {
        ticks(self.start, self.end, self.label_step)
    }

    /// The label of the tick at `t`.
    pub fn label(&self, t: i64) -> String {
        let format = if self.label_step >= WEEK {
            "%b %d"
        } else if self.label_step >= DAY || t.rem_euclid(DAY) == 0 {
            "%a %d"
        } else {
            "%H:%M"
        };
        DateTime::from_timestamp(t, 0)
            .map(|d| d.format(format).to_string())
            .unwrap_or_default()
    }

    /// The axis's description: what it is, its zone and the dates it spans.
    pub fn describe(&self) -> String {
        let at = |t: i64| {
            DateTime::from_timestamp(t, 0)
                .map(|d| d.format("%a %Y-%m-%d %H:%M").to_string())
                .unwrap_or_default()
        };
        format!("time (UTC), {} to {}", at(self.start), at(self.end))
    }
}

/// The shortest step with at most `max` ticks from `start` to `end` (the longest if none).
fn step_for(start: i64, end: i64, max: usize) -> i64 {
    TIME_STEPS_S
        .iter()
        .copied()
        .find(|&step| ticks(start, end, step).len() <= max)
        .unwrap_or(TIME_STEPS_S[TIME_STEPS_S.len() - 1])
}

/// Ticks every `step` seconds from `start` to `end`, on whole steps of the day (midnight,
/// the hour) or, for weeks, on Mondays.
fn ticks(start: i64, end: i64, step: i64) -> Vec<i64> {
    let origin = if step >= WEEK { FIRST_MONDAY } else { 0 };
    let first = origin + (start - origin).div_euclid(step) * step;
    let first = if first < start { first + step } else { first };
    (0..)
        .map(|k| first + k * step)
        .take_while(|&t| t <= end)
        .collect()
}

impl Ranged for TimeAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = i64;

    fn map(&self, value: &i64, limit: (i32, i32)) -> i32 {
        let f = (*value - self.start) as f64 / (self.end - self.start) as f64;
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    /// The labelled ticks for the bold mesh; for the light mesh, the shortest step that
    /// fits the hint, so finer lines fall between the labels.
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<i64> {
        match hint.weight() {
            KeyPointWeight::Bold => self.label_ticks(),
            KeyPointWeight::Any => {
                let step = step_for(self.start, self.end, hint.max_num_points());
                if step < self.label_step {
                    ticks(self.start, self.end, step)
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn range(&self) -> Range<i64> {
        self.start..self.end
    }
}

impl ValueFormatter<i64> for TimeAxis {
    fn format_ext(&self, value: &i64) -> String {
        self.label(*value)
    }
}

/// Wait ticks, in seconds: every one is a round number of seconds, minutes, hours or days.
const WAIT_TICKS_S: [f64; 15] = [
    0.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14_400.0, 28_800.0,
    86_400.0, 172_800.0, 604_800.0,
];

/// Seconds at which the wait axis turns from nearly linear to nearly logarithmic.
const WAIT_KNEE_S: f64 = 10.0;

/// A wait axis from 0 to `max_s` seconds, drawn as `ln(1 + s / 10)`: 0 s has a place, the
/// seconds around a target get room, and an hour-long wait still fits on the same axis.
#[derive(Debug, Clone, Copy)]
pub struct WaitAxis {
    max_s: f64,
}

impl WaitAxis {
    /// The axis from 0 to the first tick at or above `max_s` (at least 30 s).
    pub fn new(max_s: f64) -> Self {
        let max_s = WAIT_TICKS_S
            .iter()
            .copied()
            .find(|&t| t >= max_s.max(30.0))
            .unwrap_or(max_s);
        WaitAxis { max_s }
    }

    /// The longest wait on the axis.
    pub fn max_s(&self) -> f64 {
        self.max_s
    }
}

fn warp(s: f64) -> f64 {
    (1.0 + s.max(0.0) / WAIT_KNEE_S).ln()
}

/// `s` seconds as the wait axis labels it: `30 s`, `2 min`, `1 h`, `2 d`.
pub fn wait_label(s: f64) -> String {
    let (value, unit) = if s < 60.0 {
        (s, "s")
    } else if s < 3600.0 {
        (s / 60.0, "min")
    } else if s < 86_400.0 {
        (s / 3600.0, "h")
    } else {
        (s / 86_400.0, "d")
    };
    if (value - value.round()).abs() < 0.05 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

impl Ranged for WaitAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = warp(*value) / warp(self.max_s);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    /// The round waits up to the end of the axis, thinned to the hint; no light lines.
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if !matches!(hint.weight(), KeyPointWeight::Bold) {
            return Vec::new();
        }
        let all: Vec<f64> = WAIT_TICKS_S
            .iter()
            .copied()
            .filter(|&t| t <= self.max_s)
            .collect();
        let every = all.len().div_ceil(hint.max_num_points().max(1)).max(1);
        all.into_iter().step_by(every).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.max_s
    }
}

impl ValueFormatter<f64> for WaitAxis {
    fn format_ext(&self, value: &f64) -> String {
        wait_label(*value)
    }
}

/// Round mantissas for cost ticks, sparsest first.
const COST_MANTISSAS: [&[f64]; 4] = [
    &[1.0],
    &[1.0, 2.0, 5.0],
    &[1.0, 2.0, 3.0, 5.0, 7.0],
    &[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
];

/// A logarithmic cost axis from `lo` to `hi` (both above zero): a policy's cheap and dear
/// configurations differ by tens of times, and a ratio reads the same anywhere on it.
/// Costs at or below `lo` are drawn at `lo`.
#[derive(Debug, Clone, Copy)]
pub struct CostAxis {
    lo: f64,
    hi: f64,
}

impl CostAxis {
    /// The axis around costs from `min` to `max`, with some room either side.
    pub fn new(min: f64, max: f64) -> Self {
        let lo = if min > 0.0 { min / 1.25 } else { 0.01 };
        let hi = (max * 1.25).max(lo * 10.0);
        CostAxis { lo, hi }
    }

    /// Round costs in the axis: the sparsest mantissas that give at least five ticks, or
    /// the densest that fit `max` if none does.
    fn ticks(&self, max: usize) -> Vec<f64> {
        let mut fitting = Vec::new();
        for mantissas in COST_MANTISSAS {
            let ticks = self.ticks_with(mantissas);
            if ticks.len() > max.max(1) {
                break;
            }
            if ticks.len() >= 5 {
                return ticks;
            }
            fitting = ticks;
        }
        fitting
    }

    fn ticks_with(&self, mantissas: &[f64]) -> Vec<f64> {
        let first = self.lo.log10().floor() as i32;
        let last = self.hi.log10().ceil() as i32;
        (first..=last)
            .flat_map(|d| mantissas.iter().map(move |m| round_cost(m * 10f64.powi(d))))
            .filter(|&c| c >= self.lo && c <= self.hi)
            .collect()
    }
}

/// `c` rounded to the digits a tick shows (1e-1 * 3 is 0.30000000000000004).
fn round_cost(c: f64) -> f64 {
    (c * 1e6).round() / 1e6
}

/// A cost tick as the axis labels it: `2000`, `50`, `0.5`.
pub fn cost_label(c: f64) -> String {
    if c >= 1.0 {
        format!("{c:.0}")
    } else {
        let decimals = (-c.log10()).ceil().max(1.0) as usize;
        format!("{c:.decimals$}")
    }
}

impl Ranged for CostAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let v = value.max(self.lo);
        let f = (v / self.lo).ln() / (self.hi / self.lo).ln();
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    /// Round costs for the bold mesh; no light lines.
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match hint.weight() {
            KeyPointWeight::Bold => self.ticks(hint.max_num_points()),
            KeyPointWeight::Any => Vec::new(),
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for CostAxis {
    fn format_ext(&self, value: &f64) -> String {
        cost_label(*value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-03-04 00:00 UTC, a Monday.
    const MONDAY: i64 = 1_709_510_400;

    #[test]
    fn two_weeks_are_ticked_by_day_with_the_weekday() {
        let axis = TimeAxis::new(MONDAY + 5 * HOUR, MONDAY + 14 * DAY + 3 * HOUR, 18);
        assert_eq!(axis.label_step, DAY);
        let labels: Vec<String> = axis.label_ticks().iter().map(|&t| axis.label(t)).collect();
        assert_eq!(labels.first().map(String::as_str), Some("Tue 05"));
        assert_eq!(labels.len(), 14);
        assert!(labels.contains(&"Sat 09".to_string()), "{labels:?}");
    }

    #[test]
    fn ninety_minutes_are_ticked_by_minutes_on_whole_steps() {
        let start = MONDAY + 10 * HOUR + 7 * MINUTE;
        let axis = TimeAxis::new(start, start + 90 * MINUTE, 18);
        assert_eq!(axis.label_step, 5 * MINUTE);
        let labels: Vec<String> = axis.label_ticks().iter().map(|&t| axis.label(t)).collect();
        assert_eq!(labels[..3], ["10:10", "10:15", "10:20"]);
    }

    #[test]
    fn a_midnight_tick_shows_its_day_between_hours() {
        let axis = TimeAxis::new(MONDAY + 18 * HOUR, MONDAY + 30 * HOUR, 18);
        let labels: Vec<String> = axis.label_ticks().iter().map(|&t| axis.label(t)).collect();
        assert!(labels.contains(&"Tue 05".to_string()), "{labels:?}");
        assert!(labels.contains(&"06:00".to_string()), "{labels:?}");
    }

    #[test]
    fn a_year_is_ticked_by_weeks_starting_on_mondays() {
        let axis = TimeAxis::new(MONDAY + DAY, MONDAY + 365 * DAY, 18);
        assert!(axis.label_step >= WEEK);
        for t in axis.label_ticks() {
            assert_eq!((t - MONDAY).rem_euclid(WEEK), 0);
        }
    }

    #[test]
    fn an_instant_gets_a_minute_long_axis_and_no_panic() {
        let axis = TimeAxis::new(MONDAY, MONDAY, 18);
        assert_eq!(axis.range(), MONDAY..MONDAY + MINUTE);
        assert_eq!(axis.map(&MONDAY, (0, 100)), 0);
    }

    #[test]
    fn light_lines_fall_between_the_labels() {
        let axis = TimeAxis::new(MONDAY, MONDAY + 14 * DAY, 18);
        let light = axis.key_points(18 * 4);
        assert_eq!(light.len(), 14 * 4 + 1);
    }

    #[test]
    fn wait_labels_use_the_unit_a_person_would() {
        let labels: Vec<String> = [0.0, 30.0, 90.0, 120.0, 3600.0, 172_800.0]
            .into_iter()
            .map(wait_label)
            .collect();
        assert_eq!(labels, ["0 s", "30 s", "1.5 min", "2 min", "1 h", "2 d"]);
    }

    #[test]
    fn the_wait_axis_gives_seconds_room_and_still_reaches_hours() {
        let axis = WaitAxis::new(5000.0);
        assert_eq!(axis.max_s(), 7200.0);
        let x = |s: f64| axis.map(&s, (0, 1000));
        assert_eq!(x(0.0), 0);
        assert_eq!(x(7200.0), 1000);
        // A minute takes more than a quarter of an axis that reaches two hours.
        assert!(x(60.0) > 250, "{}", x(60.0));
        assert!(x(30.0) < x(60.0) && x(60.0) < x(3600.0));
    }

    #[test]
    fn cost_ticks_are_round_in_every_decade_the_costs_span() {
        // A fleet at 400 and a baseline at 16,000: ticks below 1,000 too.
        let axis = CostAxis::new(400.0, 16_000.0);
        let ticks = axis.ticks(12);
        assert_eq!(ticks, [500.0, 1000.0, 2000.0, 5000.0, 10_000.0, 20_000.0]);
        let labels: Vec<String> = ticks.iter().map(|&c| cost_label(c)).collect();
        assert_eq!(labels[0], "500");
        let x = |c: f64| axis.map(&c, (0, 1000));
        // Ratios read the same anywhere: 500 to 1000 as 5000 to 10000.
        assert!((x(1000.0) - x(500.0) - (x(10_000.0) - x(5000.0))).abs() <= 1);
    }

    #[test]
    fn a_narrow_or_zero_cost_range_still_gets_ticks_and_no_panic() {
        let axis = CostAxis::new(0.0, 0.0);
        assert!(axis.range().start > 0.0);
        assert!(!axis.ticks(10).is_empty());
        assert_eq!(axis.map(&0.0, (0, 100)), 0);
        let narrow = CostAxis::new(0.3, 0.35);
        let labels: Vec<String> = narrow.ticks(12).iter().map(|&c| cost_label(c)).collect();
        assert!(labels.contains(&"0.3".to_string()), "{labels:?}");
    }
}
