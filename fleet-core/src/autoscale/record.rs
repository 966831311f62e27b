//! The demand record: what the fleet saw of its demand in the last four weeks, compact and
//! bounded, written by every reconcile (`up` on a timer and the daemon alike; the
//! simulator writes it the same way from what it shows the policy).
//!
//! Time is cut into ten-minute slots. For each slot with demand it keeps the highest demand
//! seen (jobs waiting plus running) and how many jobs arrived at each *rank*: a job that
//! arrives while `k - 1` others wait or run has rank `k`, and it finds a VM without a boot
//! exactly when the fleet (running and stopped) has at least `k` job slots. Ranks are kept
//! in a fixed set of buckets ([`LEVELS`]), so a slot costs a few numbers whatever the
//! demand. Arrivals are seen as rises of the demand between two observations, so a job
//! that comes and goes between two reconciles is not seen (the daemon reconciles on every
//! job webhook, a timer every few minutes).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Seconds per slot.
pub const SLOT_S: i64 = 600;
/// Slots per hour.
pub const SLOTS_PER_HOUR: i64 = 3600 / SLOT_S;
/// Slots kept: four weeks.
pub const KEEP_SLOTS: i64 = 28 * 24 * SLOTS_PER_HOUR;

/// Upper ends of the rank buckets: bucket `i` holds ranks in `(LEVELS[i-1], LEVELS[i]]`
/// (`LEVELS[-1]` = 0); a last bucket holds the ranks above the last level.
pub const LEVELS: [u32; 34] = [
    1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160,
    192, 256, 320, 400, 512, 640, 800, 1024, 1600,
];

/// One slot with demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Slot index: Unix seconds / [`SLOT_S`].
    pub at: i64,
    /// Highest demand seen in it (jobs waiting plus running).
    pub peak: u32,
    /// Arrivals per rank bucket (see [`LEVELS`]); trailing empty buckets left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranks: Vec<u32>,
}

/// The record, in state as `demand`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandRecord {
    /// Slot of the first observation still in the window (the record covers from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Demand at the last observation.
    #[serde(default)]
    pub last: u32,
    /// Slots with demand, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<Slot>,
}

/// The bucket holding rank `r` (>= 1).
pub fn bucket(r: u32) -> usize {
    LEVELS.partition_point(|&l| l < r)
}

/// Bounds `(lo, hi]` of bucket `i`.
pub fn bounds(i: usize) -> (u32, u32) {
    let lo = if i == 0 { 0 } else { LEVELS[i - 1] };
    let hi = LEVELS.get(i).copied().unwrap_or(lo * 2);
    (lo, hi)
}

/// Jobs among `ranks` that arrived above `level` (slots in the fleet), interpolating
/// within a bucket.
pub fn above(ranks: &[u32], level: u32) -> f64 {
    let mut n = 0.0;
    for (i, &c) in ranks.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let (lo, hi) = bounds(i);
        if lo >= level {
            n += f64::from(c);
        } else if hi > level {
            n += f64::from(c) * f64::from(hi - level) / f64::from(hi - lo);
        }
    }
    n
}

impl DemandRecord {
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.since.is_none()
    }

    /// Records the demand (`pending + running`, in jobs) observed at `now`: the arrivals it
    /// shows (a rise since the last observation) at their ranks, and the slot's peak. Drops
    /// what is older than four weeks. Returns whether the record changed.
    pub fn observe(&mut self, now: DateTime<Utc>, pending: u32, running: u32) -> bool {
        let at = now.timestamp().div_euclid(SLOT_S);
        let demand = pending.saturating_add(running);
        let mut changed = false;
        if self.since.is_none() {
            self.since = Some(at);
            changed = true;
        }
        let rise = demand > self.last;
        if demand > 0 {
            if self.slots.last().is_none_or(|s| s.at < at) {
                self.slots.push(Slot {
                    at,
                    peak: 0,
                    ranks: Vec::new(),
                });
            }
            // A clock that went back: record in the newest slot.
            let s = self.slots.last_mut().expect("just ensured");
            if demand > s.peak {
                s.peak = demand;
                changed = true;
            }
            if rise {
                for r in self.last + 1..=demand {
                    let b = bucket(r);
                    if s.ranks.len() <= b {
                        s.ranks.resize(b + 1, 0);
                    }
                    s.ranks[b] += 1;
                }
            }
        }
        if demand != self.last {
            self.last = demand;
            changed = true;
        }
        let oldest = at - KEEP_SLOTS;
        if self.slots.first().is_some_and(|s| s.at <= oldest) {
            self.slots.retain(|s| s.at > oldest);
            changed = true;
        }
        if self.since.is_some_and(|s| s <= oldest) {
            self.since = Some(oldest + 1);
            changed = true;
        }
        changed
    }

    /// Seconds of history the record covers at `now`.
    pub fn covers_s(&self, now: DateTime<Utc>) -> i64 {
        self.since
            .map_or(0, |s| (now.timestamp() - s * SLOT_S).max(0))
    }

    /// This record with `history` (what the CI system's job history shows, see
    /// [`crate::simulate::history_record`]) filled in before it: the history's slots from
    /// before this record's first observation are added, and whatever the fleet observed
    /// itself is kept as it is, so seeding twice with the same history changes nothing.
    /// Slots older than four weeks before `now` are dropped.
    pub fn seeded(&self, history: &DemandRecord, now: DateTime<Utc>) -> DemandRecord {
        let own_since = self.since.unwrap_or(i64::MAX);
        let mut slots: Vec<Slot> = history
            .slots
            .iter()
            .filter(|s| s.at < own_since)
            .cloned()
            .collect();
        slots.extend(self.slots.iter().cloned());
        let since = match (history.since, self.since) {
            (Some(h), Some(o)) => Some(h.min(o)),
            (h, o) => h.or(o),
        };
        let last = if self.since.is_some() {
            self.last
        } else {
            history.last
        };
        let oldest = now.timestamp().div_euclid(SLOT_S) - KEEP_SLOTS;
        slots.retain(|s| s.at > oldest);
        DemandRecord {
            since: since.map(|s| s.max(oldest + 1)),
            last,
            slots,
        }
    }

    /// The largest demand recorded (jobs at once).
    pub fn largest(&self) -> u32 {
        self.slots.iter().map(|s| s.peak).max().unwrap_or(0)
    }

    /// Jobs recorded as arriving.
    pub fn arrivals(&self) -> u64 {
        self.slots
            .iter()
            .flat_map(|s| s.ranks.iter())
            .map(|&c| u64::from(c))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_400 + s, 0).unwrap()
    }

    #[test]
    fn ranks_fall_in_their_buckets_and_above_counts_jobs_over_a_level() {
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(8), 7);
        assert_eq!(bucket(9), 8);
        assert_eq!(bucket(10), 8);
        assert_eq!(bucket(5000), LEVELS.len());
        let mut r = DemandRecord::default();
        // A pipeline of 12 jobs, then 3 more while they run.
        r.observe(t(0), 12, 0);
        r.observe(t(30), 3, 12);
        assert_eq!(r.arrivals(), 15);
        let s = &r.slots[0];
        assert_eq!(s.peak, 15);
        assert_eq!(above(&s.ranks, 0), 15.0);
        assert_eq!(above(&s.ranks, 12), 3.0);
        assert_eq!(above(&s.ranks, 16), 0.0);
        // 13 and 14 share a bucket: half of it is above 13.
        assert_eq!(above(&s.ranks, 13), 2.0);
    }

    #[test]
    fn demand_that_falls_and_rises_again_counts_the_new_arrivals_only() {
        let mut r = DemandRecord::default();
        r.observe(t(0), 5, 0);
        r.observe(t(60), 0, 2);
        r.observe(t(120), 4, 2);
        assert_eq!(r.arrivals(), 9);
        assert_eq!(r.slots.len(), 1);
        // Quiet slots are not stored.
        r.observe(t(700), 0, 0);
        r.observe(t(1400), 0, 0);
        assert_eq!(r.slots.len(), 1);
        r.observe(t(1900), 1, 0);
        assert_eq!(r.slots.len(), 2);
    }

    #[test]
    fn seeding_fills_in_before_the_fleets_own_record_and_twice_is_once() {
        // The history: a pipeline of 4 a day for ten days; the fleet saw the last two.
        let mut history = DemandRecord::default();
        for day in 0..10 {
            history.observe(t(day * 86_400), 4, 0);
            history.observe(t(day * 86_400 + 300), 0, 0);
        }
        let mut own = DemandRecord::default();
        for day in 8..10 {
            own.observe(t(day * 86_400 + 60), 0, 7);
            own.observe(t(day * 86_400 + 400), 0, 0);
        }
        let now = t(10 * 86_400);
        let seeded = own.seeded(&history, now);
        assert_eq!(seeded.since, history.since);
        // Eight days of history, then the fleet's own two days as it recorded them.
        assert_eq!(seeded.slots.len(), 10);
        assert_eq!(seeded.arrivals(), 8 * 4 + 2 * 7);
        assert_eq!(seeded.largest(), 7);
        assert_eq!(seeded.last, own.last);
        assert_eq!(seeded.seeded(&history, now), seeded);
        // An empty record takes the history as it is; four weeks on, it is gone.
        assert_eq!(DemandRecord::default().seeded(&history, now), history);
        let later = DemandRecord::default().seeded(&history, t(40 * 86_400));
        assert!(later.slots.is_empty());
    }

    #[test]
    fn the_record_keeps_four_weeks() {
        let mut r = DemandRecord::default();
        for day in 0..40 {
            r.observe(t(day * 86_400), 3, 0);
            r.observe(t(day * 86_400 + 300), 0, 0);
        }
        assert_eq!(r.slots.len(), 28);
        assert!(r.covers_s(t(39 * 86_400)) <= KEEP_SLOTS * SLOT_S);
        assert!(r.covers_s(t(39 * 86_400)) > 27 * 86_400);
    }
}
