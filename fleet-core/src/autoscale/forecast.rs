//! Forecasting from recent weeks: CI demand repeats by the hour of the week (work hours,
//! nights, weekends, the Monday morning rush). The fleet records the highest demand (jobs
//! waiting plus running, in job slots) it saw in each hour of the last weeks; with
//! `policy.forecast` on, the policy keeps enough stopped VMs to meet the highest demand seen
//! in this hour and the next in those weeks, so the pool is pre-warmed before a known surge
//! and left to shrink (by `stopped_time`) through hours that were quiet.
//!
//! Hours are counted in UTC from the Unix epoch, so a week here runs Thursday to Thursday;
//! only the hour of the week matters. A daylight saving change shifts local habits by an
//! hour for the weeks that straddle it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::stack::Effective;

/// Weeks of history kept: this one and the three before.
pub const WEEKS: i64 = 4;
const HOURS: usize = 168;
const WEEK_S: i64 = 7 * 24 * 3600;

/// The highest demand seen per hour of the week, for the last [`WEEKS`] weeks. Recorded in
/// state whether or not `policy.forecast` is on, so turning it on finds history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forecast {
    /// Oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    weeks: Vec<Week>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Week {
    /// Weeks since the Unix epoch.
    week: i64,
    /// Highest demand in each hour of it, in job slots.
    peaks: Vec<u32>,
}

fn slot(t: DateTime<Utc>) -> (i64, usize) {
    let s = t.timestamp();
    (s.div_euclid(WEEK_S), (s.rem_euclid(WEEK_S) / 3600) as usize)
}

impl Forecast {
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.weeks.is_empty()
    }

    /// Records `demand` (jobs waiting plus running, in slots) seen at `now`. Returns whether
    /// the record changed (a new peak for this hour).
    pub fn observe(&mut self, now: DateTime<Utc>, demand: u32) -> bool {
        let (week, hour) = slot(now);
        if self.weeks.last().is_none_or(|w| w.week < week) {
            if demand == 0 {
                // An empty hour in a new week adds nothing a zero would not say.
                return false;
            }
            self.weeks.push(Week {
                week,
                peaks: vec![0; HOURS],
            });
            self.weeks.retain(|w| w.week > week - WEEKS);
        }
        let Some(w) = self.weeks.iter_mut().rev().find(|w| w.week == week) else {
            // A clock that went back a week: keep what was recorded.
            return false;
        };
        let peak = &mut w.peaks[hour];
        if demand > *peak {
            *peak = demand;
            return true;
        }
        false
    }

    /// The highest demand recorded in the hour of the week of `now` and in the next one,
    /// over the kept weeks (0 without history).
    pub fn expected_peak(&self, now: DateTime<Utc>) -> u32 {
        let mut best = 0;
        for ahead in [0, 3600] {
            let (week, hour) = slot(now + chrono::Duration::seconds(ahead));
            for w in &self.weeks {
                if w.week <= week && w.week > week - WEEKS {
                    best = best.max(w.peaks.get(hour).copied().unwrap_or(0));
                }
            }
        }
        best
    }
}

impl Effective {
    /// With `forecast` on, these settings with the demand `forecast` expects at `now`.
    pub fn with_forecast(mut self, forecast: &Forecast, now: DateTime<Utc>) -> Effective {
        if self.forecast {
            self.expected_peak = forecast.expected_peak(now);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday 2026-11-02 (UTC) at `h` hours, plus `weeks` weeks.
    fn monday(weeks: i64, h: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + chrono::Duration::hours(weeks * 168 + h)
    }

    #[test]
    fn a_surge_seen_last_week_is_expected_an_hour_ahead_this_week() {
        let mut f = Forecast::default();
        assert!(f.observe(monday(0, 9), 30));
        assert!(!f.observe(monday(0, 9), 12), "not a new peak");
        // A week later, at 8:00, the 9:00 surge is an hour ahead: expected.
        assert_eq!(f.expected_peak(monday(1, 8)), 30);
        assert_eq!(f.expected_peak(monday(1, 9)), 30);
        // Not at 7:00, nor at 10:00 once it has passed, nor on Tuesday.
        assert_eq!(f.expected_peak(monday(1, 7)), 0);
        assert_eq!(f.expected_peak(monday(1, 10)), 0);
        assert_eq!(f.expected_peak(monday(1, 33)), 0);
    }

    #[test]
    fn only_the_last_four_weeks_count() {
        let mut f = Forecast::default();
        f.observe(monday(0, 9), 30);
        f.observe(monday(1, 9), 5);
        assert_eq!(f.expected_peak(monday(3, 9)), 30);
        // Four weeks on, the first week is forgotten.
        assert_eq!(f.expected_peak(monday(4, 9)), 5);
        f.observe(monday(4, 0), 1);
        assert_eq!(f.weeks.len(), 2, "weeks 1 and 4 kept");
        assert_eq!(f.expected_peak(monday(4, 9)), 5);
        assert_eq!(f.expected_peak(monday(5, 9)), 0);
    }

    #[test]
    fn quiet_weeks_record_nothing_and_a_clock_going_back_changes_nothing() {
        let mut f = Forecast::default();
        assert!(!f.observe(monday(0, 9), 0));
        assert!(f.is_empty());
        f.observe(monday(2, 9), 4);
        assert!(!f.observe(monday(0, 9), 50));
        assert_eq!(f.expected_peak(monday(2, 9)), 4);
    }
}
