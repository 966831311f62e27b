//! Learning the pool from the demand record: with `policy.target` set, how many VMs to keep
//! (running or stopped) at each hour, and how long to keep the VMs a burst needed, so that
//! the wait target holds at the least expected cost.
//!
//! The policy keeps a *level*: job slots in VMs that exist (busy, idle or stopped). A job of
//! rank `k` (see [`super::record`]) waits no more than a resume when the level is at least
//! `k`, else it waits a boot. The level at a moment is the largest of
//! * a floor `F`,
//! * the highest demand of the last `T` (the VMs a burst needed are kept, stopped, for `T`
//!   after their last job: bursts come in clusters),
//! * optionally a profile: the highest demand seen in this hour and the next on the same
//!   weekday of the last three weeks (`weekly`) or on each of the last seven days (`daily`).
//!
//! Every hour the policy replays its record (the four weeks before the current hour)
//! under each candidate `(F, T, profile)` with a closed-form model of this rule: jobs above
//! the level count as waiting a boot; the VMs held cost their (stopped) price per hour, and
//! every VM the level or a burst adds costs a boot. It takes the cheapest candidate whose
//! share of jobs waiting a boot is at most half of what the target allows (the model counts
//! a second burst in the same ten minutes as missing again, and what comes next is not
//! what came before; the margin covers both). The replay is causal for every candidate:
//! retention and profiles look only at slots before the one they serve. So a burst larger
//! than anything before it counts as missed unless the floor covers it, and a young record
//! yields a floor as large as its largest burst: the cold start is conservative by itself.
//!
//! Before the record covers [`LEARN_S`] the policy is in its cold start: [`COLD_POOL`]
//! stopped VMs are kept ready (CI pipelines of up to about 20 jobs are common) and every
//! VM a burst needed is kept stopped (nothing retired for lack of use) until it has
//! learned. A record seeded from the CI system's job history skips it.
//!
//! When a resume takes longer than the target wait (or the cloud cannot stop VMs), stopped
//! VMs do not meet the target: the level is then kept running and priced so. When a boot
//! meets the target, no level is needed at all and the choice is `F = 0` with the shortest
//! `T`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::record::{above, DemandRecord, LEVELS, SLOTS_PER_HOUR, SLOT_S};
use crate::stack::{Effective, Prices, Target};

/// How long the record must cover before the policy learns from it.
pub const LEARN_S: i64 = 3 * 86_400;
/// Share of the target's allowance the replay may use (see the module docs).
pub const MARGIN: f64 = 0.5;
/// The choice is made again every this many slots (six hours); the level it implies is
/// recomputed every hour.
pub const TUNE_SLOTS: i64 = 6 * SLOTS_PER_HOUR;
/// Retention candidates, in slots (10 min to 8 h).
const KEEP_SLOTS: [i64; 6] = [1, 3, 6, 12, 24, 48];

/// What the choice depends on besides the record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Problem {
    /// The target.
    pub target: Target,
    /// The prices.
    pub prices: Prices,
    /// Expected (or measured) boot time.
    pub boot: Duration,
    /// Expected (or measured) resume time.
    pub resume: Duration,
    /// Least billed per start.
    pub billing_minimum: Duration,
    /// Job slots per VM.
    pub capacity: u32,
    /// Most VMs.
    pub max_instances: u32,
    /// Whether VMs may be stopped (`stopped_max` > 0).
    pub can_stop: bool,
}

/// The profile part of the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// None.
    Flat,
    /// The same hours on each of the last seven days.
    Daily,
    /// The same hours of the week in the last three weeks.
    Weekly,
}

impl Profile {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Flat => "flat",
            Profile::Daily => "daily",
            Profile::Weekly => "weekly",
        }
    }
}

/// What the policy learned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// The floor, in job slots.
    pub floor: u32,
    /// How long a burst's VMs are kept after their last job.
    pub keep: Duration,
    /// The profile.
    pub profile: Profile,
    /// Whether the level is kept running (resumes miss the target, or no stopping).
    pub running: bool,
    /// The level now, in job slots (floor, profile; retention is the VMs themselves).
    pub level: u32,
    /// Share of the record's jobs that would have waited a boot under this choice.
    pub missed: f64,
    /// Jobs in the record.
    pub jobs: u64,
    /// Largest demand in the record.
    pub largest: u32,
    /// Days the record covers.
    pub days: f64,
}

/// The policy's state of learning at a moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Learned {
    /// The record is younger than [`LEARN_S`]: keep every VM a burst needed.
    Cold {
        /// Seconds the record covers.
        covers_s: i64,
    },
    /// Chosen from the record.
    Tuned(Choice),
}

/// The record laid out densely over the window it is replayed on.
struct Window<'a> {
    /// Peak demand per slot.
    peak: Vec<u32>,
    /// Arrivals per rank bucket per slot (empty when none).
    ranks: Vec<&'a [u32]>,
    /// Peak demand per hour.
    hour_peak: Vec<u32>,
}

impl<'a> Window<'a> {
    fn new(r: &'a DemandRecord, start: i64, end: i64) -> Window<'a> {
        let n = (end - start).max(0) as usize;
        let mut peak = vec![0; n];
        let mut ranks: Vec<&[u32]> = vec![&[]; n];
        let hours = n.div_ceil(SLOTS_PER_HOUR as usize) + 1;
        let mut hour_peak = vec![0; hours];
        for s in &r.slots {
            if s.at < start || s.at >= end {
                continue;
            }
            let i = (s.at - start) as usize;
            peak[i] = s.peak;
            ranks[i] = &s.ranks;
            let h = ((s.at - hour_of(start)) / SLOTS_PER_HOUR) as usize;
            hour_peak[h] = hour_peak[h].max(s.peak);
        }
        Window {
            peak,
            ranks,
            hour_peak,
        }
    }

    /// The profile's level for hour `h` (index into `hour_peak`, may be one past the end).
    fn profile_at(&self, profile: Profile, h: i64) -> u32 {
        let (step, back) = match profile {
            Profile::Flat => return 0,
            Profile::Daily => (24, 7),
            Profile::Weekly => (168, 3),
        };
        let mut best = 0;
        for k in 1..=back {
            for ahead in [0, 1] {
                let i = h + ahead - k * step;
                if i >= 0 {
                    best = best.max(self.hour_peak.get(i as usize).copied().unwrap_or(0));
                }
            }
        }
        best
    }
}

/// For each `i`, the largest of `v[i-k..i]` (0 for none).
fn sliding_max_before(v: &[u32], k: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(v.len());
    let mut q: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    for i in 0..v.len() {
        while q.front().is_some_and(|&j| j + k < i) {
            q.pop_front();
        }
        out.push(q.front().map_or(0, |&j| v[j]));
        while q.back().is_some_and(|&j| v[j] <= v[i]) {
            q.pop_back();
        }
        q.push_back(i);
    }
    out
}

/// First slot of the hour of slot `s`.
fn hour_of(s: i64) -> i64 {
    s.div_euclid(SLOTS_PER_HOUR) * SLOTS_PER_HOUR
}

/// What a candidate would have done over the window.
struct Outcome {
    missed: f64,
    cost: f64,
}

/// Chooses at `now` from `record` (only the slots before the current hour count, so the
/// choice is the same at every moment of an hour). `floor_min` (job slots) is the least
/// floor the stack asks for.
pub fn learn(record: &DemandRecord, p: &Problem, floor_min: u32, now: DateTime<Utc>) -> Learned {
    let now_slot = now.timestamp().div_euclid(SLOT_S);
    let end = now_slot.div_euclid(TUNE_SLOTS) * TUNE_SLOTS;
    let Some(since) = record.since else {
        return Learned::Cold { covers_s: 0 };
    };
    // Counted to the start of the tuning block, as everything else here.
    let covers_s = ((end - since) * SLOT_S).max(0);
    if covers_s < LEARN_S {
        return Learned::Cold { covers_s };
    }
    let start = hour_of(since);
    let w = Window::new(record, start, end);
    let cap = p.capacity.max(1);
    let max_slots = p.max_instances.saturating_mul(cap);
    let running = !p.can_stop || p.resume > p.target.wait;
    let misses_possible = p.boot > p.target.wait;
    let hold_price = if running {
        p.prices.running
    } else {
        p.prices.stopped
    };
    let boot_cost = p.prices.running * p.boot.max(p.billing_minimum).as_secs_f64() / 3600.0;
    let slot_h = SLOT_S as f64 / 3600.0;
    let jobs: f64 = w
        .ranks
        .iter()
        .flat_map(|r| r.iter())
        .map(|&c| f64::from(c))
        .sum();
    let largest = w.peak.iter().copied().max().unwrap_or(0);
    // One more burst as large as the largest seen is assumed to come unforeseen in the
    // weeks the record keeps; the percentile is over those weeks' jobs, which a young
    // record holds only part of, so the burst is weighed against the jobs they will hold at
    // the rate seen so far. With few jobs (a quiet org) that alone uses the allowance, and
    // the floor covers the largest.
    let weeks_seen = (w.peak.len() as f64 / super::record::KEEP_SLOTS as f64).min(1.0);
    let unforeseen = if jobs > 0.0 {
        0.75 * f64::from(largest) * weeks_seen / jobs
    } else {
        0.0
    };
    let allowed = (1.0 - p.target.percentile / 100.0) * MARGIN - unforeseen;

    // Highest demand over the `k` slots before each slot (a sliding maximum).
    let kept: Vec<Vec<u32>> = KEEP_SLOTS
        .iter()
        .map(|&k| sliding_max_before(&w.peak, k as usize))
        .collect();
    let profiles = [Profile::Flat, Profile::Daily, Profile::Weekly];
    let shaped: Vec<Vec<u32>> = profiles
        .iter()
        .map(|&pr| {
            (0..w.peak.len())
                .map(|i| w.profile_at(pr, i as i64 / SLOTS_PER_HOUR))
                .collect()
        })
        .collect();
    // A profile is judged only from when it has history to look at; misses and cost are
    // then rates over the slots it is judged on.
    let warm = |si: usize| match profiles[si] {
        Profile::Flat => 0,
        Profile::Daily => (24 * SLOTS_PER_HOUR) as usize,
        Profile::Weekly => (168 * SLOTS_PER_HOUR) as usize,
    };
    let simulate = |floor: u32, keep: &[u32], shape: &[u32], from: usize| -> Outcome {
        let (mut missed, mut held, mut boots, mut prev) = (0.0, 0.0, 0.0, 0u32);
        let mut jobs = 0.0;
        for i in from..w.peak.len() {
            jobs += w.ranks[i].iter().map(|&c| f64::from(c)).sum::<f64>();
            let level = floor.max(keep[i]).max(shape[i]).min(max_slots);
            if misses_possible && !w.ranks[i].is_empty() {
                missed += above(w.ranks[i], level);
            }
            let exist = level.max(w.peak[i]);
            boots += f64::from(exist.saturating_sub(prev));
            held += f64::from(exist);
            prev = exist;
        }
        let vms = f64::from(cap);
        let slots = (w.peak.len() - from).max(1) as f64;
        Outcome {
            missed: if jobs > 0.0 { missed / jobs } else { 0.0 },
            cost: (held / vms * slot_h * hold_price + boots / vms * boot_cost) / slots,
        }
    };
    let mut floors: Vec<u32> = std::iter::once(0)
        .chain(LEVELS.iter().copied())
        .map(|f| f.max(floor_min))
        .filter(|&f| f <= max_slots.max(floor_min))
        .collect();
    // No floor above the largest demand seen (the level beyond it would serve nothing).
    let top = floors
        .iter()
        .position(|&f| f >= largest)
        .map_or(floors.len(), |i| i + 1);
    floors.truncate(top.max(1));
    floors.dedup();
    let mut best: Option<(Outcome, u32, usize, usize)> = None;
    let mut fewest: Option<(Outcome, u32, usize, usize)> = None;
    for (ki, keep) in kept.iter().enumerate() {
        for (si, shape) in shaped.iter().enumerate() {
            let from = warm(si);
            if si > 0 && from >= w.peak.len() {
                continue;
            }
            // Misses fall as the floor rises: the least floor meeting the allowance.
            let (mut lo, mut hi) = (0usize, floors.len());
            let mut found = None;
            while lo < hi {
                let mid = (lo + hi) / 2;
                let o = simulate(floors[mid], keep, shape, from);
                if o.missed <= allowed {
                    found = Some((o, floors[mid]));
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            match found {
                Some((o, f)) => {
                    if best.as_ref().is_none_or(|b| o.cost < b.0.cost) {
                        best = Some((o, f, ki, si));
                    }
                }
                None => {
                    let f = *floors.last().unwrap_or(&floor_min);
                    let o = simulate(f, keep, shape, from);
                    if fewest.as_ref().is_none_or(|b| o.missed < b.0.missed) {
                        fewest = Some((o, f, ki, si));
                    }
                }
            }
        }
    }
    let Some((o, floor, ki, si)) = best.or(fewest) else {
        return Learned::Cold { covers_s };
    };
    let profile = profiles[si];
    let level = floor
        .max(profile_level(record, profile, now))
        .min(max_slots);
    Learned::Tuned(Choice {
        floor,
        keep: Duration::from_secs((KEEP_SLOTS[ki] * SLOT_S) as u64),
        profile,
        running,
        level,
        missed: o.missed,
        jobs: jobs as u64,
        largest,
        days: covers_s as f64 / 86_400.0,
    })
}

/// The profile's level at `now`: the highest demand of the record in this hour and the
/// next, one day (daily) or one week (weekly) back and further.
pub fn profile_level(record: &DemandRecord, profile: Profile, now: DateTime<Utc>) -> u32 {
    let (step, back) = match profile {
        Profile::Flat => return 0,
        Profile::Daily => (24, 7),
        Profile::Weekly => (168, 3),
    };
    let hour = now.timestamp().div_euclid(3600);
    let mut best = 0;
    for k in 1..=back {
        let from = (hour - k * step) * SLOTS_PER_HOUR;
        let to = from + 2 * SLOTS_PER_HOUR;
        let i = record.slots.partition_point(|s| s.at < from);
        for s in record.slots[i..].iter().take_while(|s| s.at < to) {
            best = best.max(s.peak);
        }
    }
    best
}

/// Stopped VMs the cold start keeps ready (at most `stopped_max`).
pub const COLD_POOL: u32 = 20;

/// How long the cold start keeps a burst's VMs: until the record has been learned from.
pub const COLD_KEEP: Duration = Duration::from_secs((super::record::KEEP_SLOTS * SLOT_S) as u64);

impl Problem {
    /// The problem the settings `e` pose, with its target.
    pub fn of(e: &Effective, target: Target) -> Problem {
        Problem {
            target,
            prices: e.prices,
            boot: e.boot_time,
            resume: e.resume_time,
            billing_minimum: e.billing.minimum,
            capacity: e.capacity_per_instance,
            max_instances: e.max_instances,
            can_stop: e.stopped_max > 0,
        }
    }
}

/// Caches [`learn`] per hour: its answer depends only on the record before the current
/// hour, so the cached answer is the one `learn` would give (this is what makes the
/// simulator's replay the same as `up`'s, which learns on every reconcile).
#[derive(Debug, Clone, Default)]
pub struct Cache {
    key: Option<(i64, u32, Problem)>,
    learned: Option<Learned>,
}

impl Cache {
    /// What was learned at `now` under `e` (tuned again only when the six-hour block or
    /// the problem changes; the level follows the hour). `record` must be the one the
    /// previous calls saw, with later observations only.
    pub fn learned(
        &mut self,
        e: &Effective,
        record: &DemandRecord,
        now: DateTime<Utc>,
    ) -> Option<Learned> {
        let target = e.target?;
        let key = (
            now.timestamp().div_euclid(SLOT_S * TUNE_SLOTS),
            e.stopped_count,
            Problem::of(e, target),
        );
        if self.key != Some(key) {
            self.learned = Some(learned(e, target, record, now));
            self.key = Some(key);
        } else if let Some(Learned::Tuned(c)) = &mut self.learned {
            let max_slots = e
                .max_instances
                .saturating_mul(e.capacity_per_instance.max(1));
            c.level = c
                .floor
                .max(profile_level(record, c.profile, now))
                .min(max_slots);
        }
        self.learned
    }
}

fn learned(e: &Effective, target: Target, record: &DemandRecord, now: DateTime<Utc>) -> Learned {
    let floor_min = e
        .stopped_count
        .saturating_mul(e.capacity_per_instance.max(1));
    learn(record, &Problem::of(e, target), floor_min, now)
}

/// `e` with `policy.target`'s learning applied at `now`: [`learn`] on `record`, then
/// [`apply`]; and what was learned. Without a target, `e` unchanged.
pub fn effective(
    e: Effective,
    record: &DemandRecord,
    now: DateTime<Utc>,
) -> (Effective, Option<Learned>) {
    match e.target {
        Some(target) => {
            let l = learned(&e, target, record, now);
            (apply(e, &l), Some(l))
        }
        None => (e, None),
    }
}

impl std::fmt::Display for Learned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Learned::Cold { covers_s } => write!(
                f,
                "learning the pool: {:.1} h of demand recorded, {COLD_POOL} stopped VMs and every burst's VMs kept until {} days",
                *covers_s as f64 / 3600.0,
                LEARN_S / 86_400
            ),
            Learned::Tuned(c) => write!(
                f,
                "pool learned from {:.0} days ({} jobs, at most {} at once): floor {}, {} profile, a burst's VMs kept {} min, level {} job slots now {}; {:.1}% of those jobs would have waited a boot",
                c.days,
                c.jobs,
                c.largest,
                c.floor,
                c.profile.as_str(),
                c.keep.as_secs() / 60,
                c.level,
                if c.running { "(kept running)" } else { "(stopped)" },
                c.missed * 100.0
            ),
        }
    }
}

/// `e` with what was learned: in the cold start, every VM a burst needed is kept stopped;
/// once tuned, the pool follows the learned level (`expected_peak`) and keeps a burst's
/// VMs for the learned time, or, when the level must run, `min_instances` holds it.
pub fn apply(mut e: Effective, l: &Learned) -> Effective {
    match *l {
        Learned::Cold { .. } => {
            e.stopped_time = e.stopped_time.max(COLD_KEEP);
            e.stopped_count = e.stopped_count.max(COLD_POOL.min(e.stopped_max));
        }
        Learned::Tuned(c) => {
            let cap = e.capacity_per_instance.max(1);
            if c.running {
                e.min_instances = e
                    .min_instances
                    .max(c.level.div_ceil(cap))
                    .min(e.max_instances);
                e.idle_time = e.idle_time.max(c.keep);
            } else {
                e.expected_peak = e.expected_peak.max(c.level);
                e.stopped_time = c.keep;
            }
            e.learned = Some(crate::stack::LearnedPool {
                level: c.level,
                largest: c.largest,
                days: c.days.floor() as u32,
            });
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem() -> Problem {
        Problem {
            target: Target {
                wait: Duration::from_secs(60),
                percentile: 95.0,
            },
            prices: Prices {
                running: 1.0,
                stopped: 0.035,
            },
            boot: Duration::from_secs(90),
            resume: Duration::from_secs(30),
            billing_minimum: Duration::from_secs(60),
            capacity: 1,
            max_instances: 400,
            can_stop: true,
        }
    }

    /// Monday 2026-11-02 00:00 UTC plus `h` hours.
    fn at(h: f64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_793_577_600 + (h * 3600.0) as i64, 0).unwrap()
    }

    /// A pipeline of `n` jobs at hour `h`, ending ten minutes later.
    fn pipeline(r: &mut DemandRecord, h: f64, n: u32) {
        r.observe(at(h), n, 0);
        r.observe(at(h + 0.01), 0, n);
        r.observe(at(h + 0.17), 0, 0);
    }

    fn tuned(l: Learned) -> Choice {
        match l {
            Learned::Tuned(c) => c,
            Learned::Cold { covers_s } => panic!("still cold after {covers_s} s"),
        }
    }

    #[test]
    fn a_young_record_is_a_cold_start() {
        let mut r = DemandRecord::default();
        assert!(matches!(
            learn(&r, &problem(), 0, at(0.0)),
            Learned::Cold { covers_s: 0 }
        ));
        pipeline(&mut r, 1.0, 10);
        assert!(matches!(
            learn(&r, &problem(), 0, at(70.0)),
            Learned::Cold { .. }
        ));
    }

    #[test]
    fn a_floor_covers_bursts_that_come_at_any_hour() {
        // Pipelines of 10 jobs every three hours at changing minutes, for three days.
        let mut r = DemandRecord::default();
        r.observe(at(0.0), 0, 0);
        for k in 0..40 {
            pipeline(&mut r, 0.5 + f64::from(k) * 3.1, 10);
        }
        let c = tuned(learn(&r, &problem(), 0, at(125.0)));
        // Either a floor of ten, or the VMs of one pipeline kept until the next.
        assert!(
            c.level >= 10 || c.keep >= Duration::from_secs(3 * 3600 + 360),
            "{c:?}"
        );
        assert!(c.missed <= 0.025, "{c:?}");
        assert!(c.jobs > 300, "{c:?}");
    }

    #[test]
    fn a_young_record_weighs_the_unforeseen_burst_against_the_weeks_it_keeps() {
        // Four days of an org with 200 jobs a day: pipelines of four jobs every half hour,
        // and twice a day, at changing hours, one of 40. Against the 800 jobs recorded, one
        // more 40-job burst would be 3.75% of the jobs, over the 2.5% allowance, and the
        // floor would have to cover 40 all day; against the four weeks' jobs at this rate
        // (5,600) it is 0.5%, and the pipelines of 40 are met by keeping their VMs or not.
        let mut r = DemandRecord::default();
        r.observe(at(0.0), 0, 0);
        for day in 0..4 {
            let base = f64::from(day) * 24.0;
            for half in 0..48 {
                pipeline(&mut r, base + f64::from(half) * 0.5 + 0.02, 4);
            }
            for k in 0..2 {
                pipeline(&mut r, base + 3.3 + f64::from(k * 11 + day * 2), 40);
            }
        }
        let c = tuned(learn(&r, &problem(), 0, at(4.0 * 24.0 + 0.5)));
        assert!(c.jobs > 700, "{c:?}");
        assert!(c.largest >= 40, "{c:?}");
        assert!(c.floor < 40, "no floor of the largest burst all day: {c:?}");
        assert!(c.missed <= 0.025, "{c:?}");
    }

    #[test]
    fn a_weekly_surge_is_met_by_the_weekly_profile_not_a_floor_all_week() {
        // Every Monday at 9:00, 40 jobs; pipelines of three jobs twice an hour.
        let mut r = DemandRecord::default();
        r.observe(at(0.0), 0, 0);
        for week in 0..3 {
            let base = f64::from(week) * 168.0;
            for h in 0..168 {
                if h == 9 {
                    pipeline(&mut r, base + 9.0, 40);
                }
                for m in [0.3, 0.8] {
                    pipeline(&mut r, base + f64::from(h) + m, 3);
                }
            }
        }
        // Monday of week 4 at 8:10: the surge is ahead, the level is up for it.
        let c = tuned(learn(&r, &problem(), 0, at(3.0 * 168.0 + 8.2)));
        assert!(c.level >= 40, "{c:?}");
        assert!(c.floor < 40, "{c:?}");
        assert_ne!(c.profile, Profile::Flat, "{c:?}");
        // Wednesday: low.
        let c = tuned(learn(&r, &problem(), 0, at(3.0 * 168.0 + 50.0)));
        assert!(c.level < 10, "{c:?}");
    }

    #[test]
    fn a_boot_within_the_target_needs_no_level_and_a_slow_resume_keeps_it_running() {
        let mut r = DemandRecord::default();
        r.observe(at(0.0), 0, 0);
        for k in 0..40 {
            pipeline(&mut r, 0.5 + f64::from(k) * 2.0, 8);
        }
        let fast = Problem {
            boot: Duration::from_secs(45),
            ..problem()
        };
        let c = tuned(learn(&r, &fast, 0, at(85.0)));
        assert_eq!((c.floor, c.level, c.missed), (0, 0, 0.0), "{c:?}");
        let slow_resume = Problem {
            resume: Duration::from_secs(120),
            boot: Duration::from_secs(180),
            ..problem()
        };
        let c = tuned(learn(&r, &slow_resume, 0, at(85.0)));
        assert!(c.running, "{c:?}");
        // The stack's stopped_count is a floor under the learned one.
        let c = tuned(learn(&r, &problem(), 30, at(85.0)));
        assert!(c.floor >= 30 && c.level >= 30, "{c:?}");
    }
}
