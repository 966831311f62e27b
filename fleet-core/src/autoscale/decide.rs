//! The decision, in named steps run in a fixed order, each with a small report of what it
//! found (`Scaling::steps`): take stock of the fleet, grow for the queue, the spare target
//! and `min_instances`, refill the stopped pool, shrink idle VMs, age the pool.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::learn::late_after;
use super::secs;
use super::{FleetAction, Scaling, VmState, VmView, Why};
use crate::ci::Demand;
use crate::stack::{BillingUnit, Effective};

/// What each step found, for tests and for `--json` plans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Steps {
    /// Step 1.
    pub stock: Stock,
    /// Step 2.
    pub grow: Grow,
    /// Step 3.
    pub pool: Pool,
    /// Steps 4 and 5: VMs stopped and retired.
    pub stopped: u32,
    /// VMs retired (idle, used up or aged out of the pool).
    pub retired: u32,
}

/// Step 1: what the fleet has, in job slots and VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stock {
    /// Free slots on running VMs that take jobs.
    pub free_slots: u32,
    /// Slots of VMs booting or starting, not late.
    pub incoming_slots: u32,
    /// VMs booting or starting.
    pub on_the_way: u32,
    /// VMs booting or starting for over twice the expected time.
    pub late: u32,
    /// VMs billed as running (booting, starting, idle, busy, draining).
    pub running: u32,
    /// Jobs waiting (0 when demand is unknown).
    pub pending: u32,
    /// Slots in use.
    pub in_use: u32,
}

/// Step 2: growth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Grow {
    /// Slots the queue is short of.
    pub queue_short: u32,
    /// Spare slots wanted.
    pub spare_want: u32,
    /// VMs started.
    pub started: u32,
    /// VMs created.
    pub created: u32,
}

/// Step 3: the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// Stopped VMs wanted (when every VM is back).
    pub want: u32,
    /// VMs that are or will be in the pool.
    pub have: u32,
    /// VMs created for it.
    pub created: u32,
}

/// Decides what to do with `fleet` for `demand` at `now` under settings `e` (already
/// resolved for `now`, see [`super::Settings::at`]).
///
/// Guarantees (pinned by property tests): the fleet never exceeds `max_instances`; a VM
/// running a job, booting or starting is never stopped or retired; with unknown demand
/// nothing is stopped or retired.
///
/// A VM booting for longer than [`late_after`] `boot_time` (starting: `resume_time`) is
/// late: it still counts against the limits, but no longer as a slot on its way, so jobs
/// waiting for it get another VM.
pub fn decide(e: &Effective, demand: &Demand, fleet: &[VmView], now: DateTime<Utc>) -> Scaling {
    let mut out = Scaling {
        may_scale_in: demand.is_known(),
        ..Scaling::default()
    };
    let d = Decision {
        e,
        fleet,
        now,
        cap: e.capacity_per_instance.max(1),
    };
    let stock = d.take_stock(demand);
    // Stopped VMs, most recently active first: they start fastest (warm caches) and the
    // least recently active ones are left to age out of the pool.
    let mut stopped: Vec<usize> = d.indices(VmState::Stopped);
    stopped.sort_by(|&a, &b| fleet[b].last_active.cmp(&fleet[a].last_active));
    let mut room = e.max_instances.saturating_sub(fleet.len() as u32);
    let mut budget = if e.max_growth_rate > 0 {
        e.max_growth_rate.saturating_sub(stock.on_the_way)
    } else {
        u32::MAX
    };
    let grow = d.grow(demand, &stock, &stopped, &mut budget, &mut room, &mut out);
    out.steps.stock = stock;
    out.steps.grow = grow;
    if !demand.is_known() {
        out.held.push(Why::DemandUnknown);
        out.total_after = fleet.len() as u32 + grow.created;
        return out;
    }
    let pool = d.refill_pool(&grow, &stopped, budget, room, &mut out);
    out.steps.pool = pool;
    let created = grow.created + pool.created;
    let stopped_left = &stopped[grow.started as usize..];
    let shrunk = d.shrink_idle(&stock, &grow, created, stopped_left, pool.want, &mut out);
    let aged = d.age_pool(stopped_left, pool.want, &mut out);
    out.steps.stopped = shrunk.0;
    out.steps.retired = shrunk.1 + aged;
    out.total_after = fleet.len() as u32 + created - out.steps.retired;
    out
}

/// One decision's fixed inputs.
struct Decision<'a> {
    e: &'a Effective,
    fleet: &'a [VmView],
    now: DateTime<Utc>,
    cap: u32,
}

impl Decision<'_> {
    /// Whether `v` ran `max_use_count` jobs.
    fn used_up(&self, v: &VmView) -> bool {
        self.e.max_use_count > 0 && v.jobs_run >= u64::from(self.e.max_use_count)
    }

    fn indices(&self, state: VmState) -> Vec<usize> {
        (0..self.fleet.len())
            .filter(|&i| self.fleet[i].state == state)
            .collect()
    }

    /// Step 1: free slots, slots on their way (not late), VMs running, demand.
    fn take_stock(&self, demand: &Demand) -> Stock {
        let e = self.e;
        let mut s = Stock::default();
        let mut busy_slots = 0u32;
        let (late_boot, late_resume) = (late_after(e.boot_time), late_after(e.resume_time));
        for v in self.fleet {
            busy_slots += v.running;
            match v.state {
                VmState::Idle | VmState::Busy => {
                    s.running += 1;
                    if !self.used_up(v) {
                        s.free_slots += self.cap.saturating_sub(v.running);
                    }
                }
                VmState::Draining => s.running += 1,
                VmState::Booting | VmState::Starting => {
                    s.running += 1;
                    s.on_the_way += 1;
                    let limit = match v.state {
                        VmState::Booting => late_boot,
                        _ => late_resume,
                    };
                    if (self.now - v.since).to_std().unwrap_or_default() > limit {
                        s.late += 1;
                    } else {
                        s.incoming_slots += self.cap;
                    }
                }
                VmState::Stopping | VmState::Stopped => {}
            }
        }
        (s.pending, s.in_use) = match *demand {
            Demand::Known { pending, running } => (pending, running.max(busy_slots)),
            Demand::Unknown { .. } => (0, busy_slots),
        };
        s
    }

    /// Step 2: VMs wanted running beyond what is ready or on its way, first for the queue,
    /// then for the spare target, then for `min_instances`; stopped VMs are started first,
    /// then VMs created, within `max_growth_rate` and `max_instances` (what is held back is
    /// reported).
    fn grow(
        &self,
        demand: &Demand,
        s: &Stock,
        stopped: &[usize],
        budget: &mut u32,
        room: &mut u32,
        out: &mut Scaling,
    ) -> Grow {
        let (e, cap) = (self.e, self.cap);
        let covered = s.free_slots + s.incoming_slots;
        let spare_want = e.idle_slots(s.in_use);
        let queue_short = s.pending.saturating_sub(covered);
        let spare_have = covered.saturating_sub(s.pending);
        let idle_short = spare_want.saturating_sub(spare_have);
        let queue_vms = queue_short.div_ceil(cap);
        let idle_vms = (queue_short + idle_short).div_ceil(cap) - queue_vms;
        let mut min_vms = e
            .min_instances
            .saturating_sub(s.running + queue_vms + idle_vms);
        let mut wants: Vec<(u32, Why)> = Vec::with_capacity(3);
        if demand.is_known() {
            if queue_vms > 0 {
                wants.push((
                    queue_vms,
                    Why::Queue {
                        pending: s.pending,
                        covered,
                        late: s.late,
                    },
                ));
            }
            if idle_vms > 0 {
                wants.push((
                    idle_vms,
                    Why::IdleTarget {
                        want: spare_want,
                        have: spare_have,
                    },
                ));
            }
        } else {
            // Unknown demand: only the floor is kept.
            min_vms = e.min_instances.saturating_sub(s.running);
        }
        if min_vms > 0 {
            wants.push((
                min_vms,
                Why::BelowMin {
                    min: e.min_instances,
                },
            ));
        }
        let mut g = Grow {
            queue_short,
            spare_want,
            ..Grow::default()
        };
        for (mut n, why) in wants {
            while n > 0 && *budget > 0 && (g.started as usize) < stopped.len() {
                out.actions.push(FleetAction::Start {
                    vm: stopped[g.started as usize],
                    why,
                });
                g.started += 1;
                n -= 1;
                *budget -= 1;
            }
            let c = n.min(*budget).min(*room);
            if c > 0 {
                out.actions.push(FleetAction::Create { count: c, why });
                g.created += c;
                *budget -= c;
                *room -= c;
            }
            n -= c;
            if n > 0 {
                out.held.push(if *budget == 0 && *room > 0 {
                    Why::GrowthLimited {
                        rate: e.max_growth_rate,
                    }
                } else {
                    Why::AtMax {
                        max: e.max_instances,
                        short: n,
                    }
                });
            }
        }
        g
    }

    /// Step 3: refill the stopped pool to `stopped_count`, or to what the expected demand
    /// (forecast or learned level) asks for when that is more, once no job is short of a
    /// slot. The pool counts every VM that will come back to it: stopped and stopping ones,
    /// and running ones (busy, idle, booting, starting) beyond what stays running at rest
    /// (`idle_count`, `min_instances`); a VM started for a burst returns when its job ends,
    /// so none is created to replace it (no churn).
    fn refill_pool(
        &self,
        g: &Grow,
        stopped: &[usize],
        budget: u32,
        room: u32,
        out: &mut Scaling,
    ) -> Pool {
        let (e, cap) = (self.e, self.cap);
        let stopping = self.indices(VmState::Stopping).len() as u32;
        let returning = self
            .fleet
            .iter()
            .filter(|v| {
                matches!(
                    v.state,
                    VmState::Idle | VmState::Busy | VmState::Booting | VmState::Starting
                ) && !self.used_up(v)
            })
            .count() as u32
            + stopped.len() as u32
            + stopping
            + g.created;
        let at_rest = e.idle_count.div_ceil(cap).max(e.min_instances);
        let have = returning.saturating_sub(at_rest);
        let expected_want = e.expected_peak.div_ceil(cap).saturating_sub(at_rest);
        let want = e.stopped_count.max(expected_want).min(e.stopped_max);
        let expected = if expected_want > e.stopped_count {
            e.expected_peak
        } else {
            0
        };
        let mut p = Pool {
            want,
            have,
            created: 0,
        };
        if have < want && g.queue_short == 0 {
            let c = (want - have).min(budget).min(room);
            if c > 0 {
                let why = match e.learned {
                    Some(l) if expected > 0 => Why::PoolLearned {
                        want,
                        have,
                        level: l.level,
                        largest: l.largest,
                        days: l.days,
                    },
                    _ => Why::PoolRefill {
                        want,
                        have,
                        expected,
                    },
                };
                out.actions.push(FleetAction::Create { count: c, why });
                p.created = c;
            }
        }
        p
    }

    /// Step 4: keep the most recently active idle VMs that the queue, the spare target and
    /// `min_instances` need; stop or retire the rest once idle for `idle_time` and paid
    /// for; retire VMs past `max_use_count`. Returns (stopped, retired).
    fn shrink_idle(
        &self,
        s: &Stock,
        g: &Grow,
        created: u32,
        stopped_left: &[usize],
        pool_want: u32,
        out: &mut Scaling,
    ) -> (u32, u32) {
        let (e, cap, fleet) = (self.e, self.cap, self.fleet);
        let mut idle: Vec<usize> = (0..fleet.len())
            .filter(|&i| fleet[i].state == VmState::Idle && fleet[i].running == 0)
            .collect();
        idle.sort_by(|&a, &b| fleet[b].last_active.cmp(&fleet[a].last_active));
        let keep_slots = s.pending + g.spare_want;
        let mut kept_slots = 0u32;
        let mut running_after = s.running + created + g.started;
        let mut stopped_after =
            stopped_left.len() as u32 + self.indices(VmState::Stopping).len() as u32;
        let (mut stops, mut retired) = (0u32, 0u32);
        for &i in &idle {
            let v = &fleet[i];
            if self.used_up(v) {
                out.actions.push(FleetAction::Retire {
                    vm: i,
                    why: Why::MaxUse { jobs: v.jobs_run },
                });
                running_after -= 1;
                retired += 1;
                continue;
            }
            if kept_slots < keep_slots || running_after <= e.min_instances {
                kept_slots += cap;
                continue;
            }
            if paid_ahead(e, v, self.now) {
                continue;
            }
            let idle_s = secs(self.now - v.since.max(v.last_active));
            let fresh = v.jobs_run == 0;
            let can_stop = stopped_after < e.stopped_max;
            let why = if fresh && can_stop && pool_want > 0 {
                Why::Park
            } else if idle_s >= e.idle_time.as_secs() {
                if can_stop {
                    Why::IdleStop { idle_s }
                } else {
                    Why::IdleRetire { idle_s }
                }
            } else {
                continue;
            };
            running_after -= 1;
            if matches!(why, Why::IdleRetire { .. }) {
                out.actions.push(FleetAction::Retire { vm: i, why });
                retired += 1;
            } else {
                out.actions.push(FleetAction::Stop { vm: i, why });
                stopped_after += 1;
                stops += 1;
            }
        }
        (stops, retired)
    }

    /// Step 5: retire stopped VMs beyond the `pool_want` most recently active once unused
    /// for `stopped_time`, and any above `stopped_max`. Returns how many.
    fn age_pool(&self, stopped_left: &[usize], pool_want: u32, out: &mut Scaling) -> u32 {
        let e = self.e;
        let mut kept = 0u32;
        let mut retired = 0u32;
        for &i in stopped_left {
            let v = &self.fleet[i];
            kept += 1;
            if kept <= pool_want {
                continue;
            }
            let unused_s = secs(self.now - v.last_active);
            let why = if kept > e.stopped_max {
                Why::StoppedAboveMax { max: e.stopped_max }
            } else if unused_s >= e.stopped_time.as_secs() {
                Why::StoppedUnused { unused_s }
            } else {
                continue;
            };
            out.actions.push(FleetAction::Retire { vm: i, why });
            retired += 1;
        }
        retired
    }
}

/// Whether stopping `v` now would throw away time already paid for: per-second billing
/// bills at least `minimum` per start; hourly billing is kept until `margin` before the next
/// paid hour.
fn paid_ahead(e: &Effective, v: &VmView, now: DateTime<Utc>) -> bool {
    let Some(start) = v.billed_since else {
        return false;
    };
    let ran = secs(now - start);
    match e.billing.per {
        BillingUnit::Second => ran < e.billing.minimum.as_secs(),
        BillingUnit::Hour => {
            let into_hour = ran % 3600;
            3600 - into_hour > e.billing.margin.as_secs()
        }
    }
}
