//! The decision, in named steps run in a fixed order: grow for the queue and the spare
//! target, refill the stopped pool, then shrink (stop idle VMs, retire what is not needed).

use chrono::{DateTime, Utc};

use super::learn::late_after;
use super::settings::{BillingUnit, Effective};
use super::{FleetAction, Scaling, VmState, VmView, Why};
use crate::ci::Demand;

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
    let cap = e.capacity_per_instance.max(1);
    let mut out = Scaling {
        may_scale_in: demand.is_known(),
        ..Scaling::default()
    };
    let total = fleet.len() as u32;
    let max_use = |v: &VmView| e.max_use_count > 0 && v.jobs_run >= u64::from(e.max_use_count);

    // What the fleet has.
    let mut free_slots = 0u32;
    let mut busy_slots = 0u32;
    let mut incoming = 0u32;
    let mut on_the_way = 0u32;
    let mut late = 0u32;
    let mut running_like = 0u32;
    let (late_boot, late_resume) = (late_after(e.boot_time), late_after(e.resume_time));
    for v in fleet {
        busy_slots += v.running;
        match v.state {
            VmState::Idle | VmState::Busy => {
                running_like += 1;
                if !max_use(v) {
                    free_slots += cap.saturating_sub(v.running);
                }
            }
            VmState::Draining => running_like += 1,
            VmState::Booting | VmState::Starting => {
                running_like += 1;
                on_the_way += 1;
                let limit = match v.state {
                    VmState::Booting => late_boot,
                    _ => late_resume,
                };
                if (now - v.since).to_std().unwrap_or_default() > limit {
                    late += 1;
                } else {
                    incoming += 1;
                }
            }
            VmState::Stopping | VmState::Stopped => {}
        }
    }
    let (pending, in_use) = match *demand {
        Demand::Known { pending, running } => (pending, running.max(busy_slots)),
        Demand::Unknown { .. } => (0, busy_slots),
    };
    let incoming_slots = incoming * cap;
    let covered = free_slots + incoming_slots;
    let idle_want = e.idle_slots(in_use);

    // Step 1: grow. VMs wanted running beyond what is ready or on its way: first for the
    // queue, then for the spare target, then for min_instances.
    let queue_short = pending.saturating_sub(covered);
    let spare_have = covered.saturating_sub(pending);
    let idle_short = idle_want.saturating_sub(spare_have);
    let queue_vms = queue_short.div_ceil(cap);
    let idle_vms = (queue_short + idle_short).div_ceil(cap) - queue_vms;
    let mut min_vms = e
        .min_instances
        .saturating_sub(running_like + queue_vms + idle_vms);
    if !demand.is_known() {
        // Unknown demand: only the floor is kept.
        min_vms = e.min_instances.saturating_sub(running_like);
    }
    let mut wants: Vec<(u32, Why)> = Vec::with_capacity(3);
    if demand.is_known() {
        if queue_vms > 0 {
            wants.push((
                queue_vms,
                Why::Queue {
                    pending,
                    covered,
                    late,
                },
            ));
        }
        if idle_vms > 0 {
            wants.push((
                idle_vms,
                Why::IdleTarget {
                    want: idle_want,
                    have: spare_have,
                },
            ));
        }
    }
    if min_vms > 0 {
        wants.push((
            min_vms,
            Why::BelowMin {
                min: e.min_instances,
            },
        ));
    }

    let mut budget = if e.max_growth_rate > 0 {
        e.max_growth_rate.saturating_sub(on_the_way)
    } else {
        u32::MAX
    };
    // Stopped VMs, most recently active first: they start fastest (warm caches) and the
    // least recently active ones are left to age out of the pool.
    let mut stopped: Vec<usize> = (0..fleet.len())
        .filter(|&i| fleet[i].state == VmState::Stopped)
        .collect();
    stopped.sort_by(|&a, &b| fleet[b].last_active.cmp(&fleet[a].last_active));
    let mut started = 0usize;
    let mut created = 0u32;
    let mut room = e.max_instances.saturating_sub(total);
    for (n, why) in wants {
        let mut n = n;
        while n > 0 && budget > 0 && started < stopped.len() {
            out.actions.push(FleetAction::Start {
                vm: stopped[started],
                why,
            });
            started += 1;
            n -= 1;
            budget -= 1;
        }
        let c = n.min(budget).min(room);
        if c > 0 {
            out.actions.push(FleetAction::Create { count: c, why });
            created += c;
            budget -= c;
            room -= c;
        }
        n -= c;
        if n > 0 {
            out.held.push(if budget == 0 && room > 0 {
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

    if !demand.is_known() {
        out.held.push(Why::DemandUnknown);
        out.total_after = total + created;
        return out;
    }

    // Step 2: refill the stopped pool. The pool counts every VM that will come back to it:
    // stopped and stopping ones, and running ones (busy, idle, booting, starting) beyond
    // what stays running at rest (`idle_count`, `min_instances`); a VM started for a burst
    // returns when its job ends, so none is created to replace it (no churn).
    let stopped_left = (stopped.len() - started) as u32;
    let stopping = fleet
        .iter()
        .filter(|v| v.state == VmState::Stopping)
        .count() as u32;
    let returning = fleet
        .iter()
        .filter(|v| {
            matches!(
                v.state,
                VmState::Idle | VmState::Busy | VmState::Booting | VmState::Starting
            ) && !max_use(v)
        })
        .count() as u32
        + stopped.len() as u32
        + stopping
        + created;
    let at_rest = e.idle_count.div_ceil(cap).max(e.min_instances);
    let pool_have = returning.saturating_sub(at_rest);
    // The forecast asks for enough VMs to take the fleet to the expected demand.
    let forecast_want = e.expected_peak.div_ceil(cap).saturating_sub(at_rest);
    let pool_want = e.stopped_count.max(forecast_want).min(e.stopped_max);
    let expected = if forecast_want > e.stopped_count {
        e.expected_peak
    } else {
        0
    };
    if pool_have < pool_want && queue_short == 0 {
        let c = (pool_want - pool_have).min(budget).min(room);
        if c > 0 {
            out.actions.push(FleetAction::Create {
                count: c,
                why: Why::PoolRefill {
                    want: pool_want,
                    have: pool_have,
                    expected,
                },
            });
            created += c;
        }
    }

    // Step 3: shrink idle VMs. Keep the most recently active ones that the queue, the
    // spare target and min_instances need; stop or retire the rest once idle long enough
    // and paid for.
    let mut idle: Vec<usize> = (0..fleet.len())
        .filter(|&i| fleet[i].state == VmState::Idle && fleet[i].running == 0)
        .collect();
    idle.sort_by(|&a, &b| fleet[b].last_active.cmp(&fleet[a].last_active));
    let keep_slots = pending + idle_want;
    let mut kept_slots = 0u32;
    let mut running_after = running_like + created + started as u32;
    let mut stopped_after = stopped_left + stopping;
    let mut retired = 0u32;
    for &i in &idle {
        let v = &fleet[i];
        if max_use(v) {
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
        if paid_ahead(e, v, now) {
            continue;
        }
        let idle_s = secs(now - v.since.max(v.last_active));
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
        }
    }

    // Step 4: retire stopped VMs above the pool floor that stayed unused too long, and any
    // above stopped_max (least recently active first).
    let mut kept_stopped = 0u32;
    for &i in &stopped[started..] {
        let v = &fleet[i];
        kept_stopped += 1;
        if kept_stopped <= pool_want {
            continue;
        }
        let unused_s = secs(now - v.last_active);
        let why = if kept_stopped > e.stopped_max {
            Why::StoppedAboveMax { max: e.stopped_max }
        } else if unused_s >= e.stopped_time.as_secs() {
            Why::StoppedUnused { unused_s }
        } else {
            continue;
        };
        out.actions.push(FleetAction::Retire { vm: i, why });
        retired += 1;
    }
    out.total_after = total + created - retired;
    out
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

/// Whole seconds of `d`, 0 when negative.
pub(super) fn secs(d: chrono::TimeDelta) -> u64 {
    d.num_seconds().max(0) as u64
}
