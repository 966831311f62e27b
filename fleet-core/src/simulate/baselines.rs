//! The reference autoscalers, modelled as their sources and documentation describe them.
//!
//! docker-machine (GitLab Runner's `docker+machine` executor, `executors/docker/machine`):
//! one job per VM. With `IdleCount = 0` a VM is created on demand for each job the runner
//! takes, so the job waits the boot time. With `IdleCount > 0` the runner takes a job only
//! when a VM is idle, and VMs are created only to keep `idle + creating` at the idle target
//! (`IdleCount`, or with `IdleScaleFactor`: in-use x factor, at least `IdleCountMin`, at most
//! `IdleCount`), at most `MaxGrowthRate` creating at once and `limit` in all. An idle VM is
//! removed after `IdleTime` when the idle target is met without it, and after `MaxBuilds`
//! jobs.
//!
//! taskscaler (fleeting/taskscaler behind the `docker-autoscaler` and `instance`
//! executors): capacity is counted in job slots. Every update (`update_interval`, 1 minute,
//! or 2 seconds while jobs wait for capacity) it wants `in use + waiting + idle` slots,
//! where idle is `idle_count`, or `scale_factor` x in use capped by `scale_factor_limit`
//! when that is more, and scales to that many slots / `capacity_per_instance` instances,
//! at most `max_instances`. An instance idle for `idle_time` is removed when the idle slots
//! stay at the target without it, and after `max_use_count` jobs.

use super::world::{Act, Driver, Vm, World};
use crate::autoscale::VmState;

/// docker-machine's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DockerMachine {
    /// `IdleCount`.
    pub idle_count: u32,
    /// `IdleCountMin` (with `IdleScaleFactor`).
    pub idle_count_min: u32,
    /// `IdleScaleFactor` (0: off).
    pub idle_scale_factor: f64,
    /// `IdleTime`, seconds.
    pub idle_time_s: u32,
    /// `MaxGrowthRate` (0: no limit).
    pub max_growth_rate: u32,
    /// `MaxBuilds` (0: no limit).
    pub max_builds: u32,
    /// `limit` (0: no limit).
    pub limit: u32,
}

impl Default for DockerMachine {
    fn default() -> Self {
        DockerMachine {
            idle_count: 0,
            idle_count_min: 0,
            idle_scale_factor: 0.0,
            idle_time_s: 600,
            max_growth_rate: 0,
            max_builds: 0,
            limit: 0,
        }
    }
}

fn count(w: &World, f: impl Fn(&Vm) -> bool) -> u32 {
    w.alive.iter().filter(|&&i| f(&w.vms[i])).count() as u32
}

impl DockerMachine {
    fn idle_target(&self, in_use: u32) -> u32 {
        if self.idle_scale_factor > 0.0 {
            let by_factor = (self.idle_scale_factor * f64::from(in_use)).ceil() as u32;
            by_factor.min(self.idle_count).max(self.idle_count_min)
        } else {
            self.idle_count
        }
    }

    fn used_up(&self, v: &Vm) -> bool {
        self.max_builds > 0 && v.jobs_run >= u64::from(self.max_builds)
    }
}

impl Driver for DockerMachine {
    fn accepts(&self, v: &Vm) -> bool {
        !self.used_up(v)
    }

    fn decide(&mut self, w: &World, now: i64, _event: bool, out: &mut Vec<Act>) {
        let total = w.alive.len() as u32;
        let creating = count(w, |v| v.state == VmState::Booting);
        let idle = count(w, |v| v.state == VmState::Idle && !self.used_up(v));
        let in_use = count(w, |v| v.running > 0);
        let room = if self.limit > 0 {
            self.limit.saturating_sub(total)
        } else {
            u32::MAX
        };
        let growth = if self.max_growth_rate > 0 {
            self.max_growth_rate.saturating_sub(creating)
        } else {
            u32::MAX
        };
        let target = self.idle_target(in_use);
        let create = if self.idle_count == 0 {
            // On demand: one machine per job the runner took that no machine covers.
            (w.queue.len() as u32).saturating_sub(idle + creating)
        } else {
            (target).saturating_sub(idle + creating)
        };
        let create = create.min(room).min(growth);
        if create > 0 {
            out.push(Act::Create(create));
        }
        // Removal: used-up machines at once; idle ones past IdleTime while the idle target
        // is met without them (oldest idle first).
        let mut available = idle + creating;
        let mut idle_vms: Vec<usize> = (0..w.alive.len())
            .filter(|&k| w.vms[w.alive[k]].state == VmState::Idle)
            .collect();
        idle_vms.sort_by_key(|&k| w.vms[w.alive[k]].last_active);
        for k in idle_vms {
            let v = &w.vms[w.alive[k]];
            if self.used_up(v) {
                out.push(Act::Retire(k));
                continue;
            }
            if now - v.last_active >= i64::from(self.idle_time_s) && available > target {
                out.push(Act::Retire(k));
                available -= 1;
            }
        }
    }

    fn next_tick(&self, w: &World, now: i64) -> i64 {
        // The runner re-checks its machines every few seconds; idle expiry is what needs a
        // tick, so wake when the oldest idle machine passes IdleTime.
        let oldest = w
            .alive
            .iter()
            .filter(|&&i| w.vms[i].state == VmState::Idle)
            .map(|&i| w.vms[i].last_active)
            .min();
        match oldest {
            Some(t) => (t + i64::from(self.idle_time_s)).max(now + 1),
            None => i64::MAX,
        }
    }
}

/// taskscaler's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Taskscaler {
    /// `idle_count`, in job slots.
    pub idle_count: u32,
    /// `idle_time`, seconds.
    pub idle_time_s: u32,
    /// `scale_factor` (0: off).
    pub scale_factor: f64,
    /// `scale_factor_limit` (0: no cap).
    pub scale_factor_limit: u32,
    /// `capacity_per_instance`.
    pub capacity_per_instance: u32,
    /// `max_use_count` (0: no limit).
    pub max_use_count: u32,
    /// `max_instances` (0: no limit).
    pub max_instances: u32,
    /// `update_interval`, seconds.
    pub update_interval_s: u32,
    /// `update_interval_when_expecting`, seconds.
    pub update_interval_when_expecting_s: u32,
}

impl Default for Taskscaler {
    fn default() -> Self {
        Taskscaler {
            idle_count: 0,
            idle_time_s: 600,
            scale_factor: 0.0,
            scale_factor_limit: 0,
            capacity_per_instance: 1,
            max_use_count: 0,
            max_instances: 0,
            update_interval_s: 60,
            update_interval_when_expecting_s: 2,
        }
    }
}

impl Taskscaler {
    fn idle_slots(&self, in_use: u32) -> u32 {
        let mut by_factor = (self.scale_factor * f64::from(in_use)).ceil() as u32;
        if self.scale_factor_limit > 0 {
            by_factor = by_factor.min(self.scale_factor_limit);
        }
        self.idle_count.max(by_factor)
    }

    fn used_up(&self, v: &Vm) -> bool {
        self.max_use_count > 0 && v.jobs_run >= u64::from(self.max_use_count)
    }
}

impl Driver for Taskscaler {
    fn accepts(&self, v: &Vm) -> bool {
        !self.used_up(v)
    }

    fn decide(&mut self, w: &World, now: i64, event: bool, out: &mut Vec<Act>) {
        // taskscaler acts on its own update loop, not on job events.
        let _ = event;
        let cap = self.capacity_per_instance.max(1);
        let in_use = w.busy_slots();
        let waiting = w.queue.len() as u32;
        let idle_want = self.idle_slots(in_use);
        let want_slots = in_use + waiting + idle_want;
        let want = want_slots.div_ceil(cap);
        let usable = count(w, |v| !self.used_up(v) || v.running > 0);
        let limit = if self.max_instances > 0 {
            self.max_instances
        } else {
            u32::MAX
        };
        let total = w.alive.len() as u32;
        let create = want.saturating_sub(usable).min(limit.saturating_sub(total));
        if create > 0 {
            out.push(Act::Create(create));
        }
        // Idle slots that exist or are coming, beyond what waiting jobs take.
        let free_slots: u32 = w
            .alive
            .iter()
            .map(|&i| &w.vms[i])
            .filter(|v| !self.used_up(v))
            .map(|v| match v.state {
                VmState::Idle | VmState::Busy | VmState::Booting => cap - v.running,
                _ => 0,
            })
            .sum();
        let mut spare = free_slots.saturating_sub(waiting);
        let mut idle_vms: Vec<usize> = (0..w.alive.len())
            .filter(|&k| w.vms[w.alive[k]].state == VmState::Idle)
            .collect();
        idle_vms.sort_by_key(|&k| w.vms[w.alive[k]].last_active);
        for k in idle_vms {
            let v = &w.vms[w.alive[k]];
            if self.used_up(v) {
                out.push(Act::Retire(k));
                continue;
            }
            if now - v.last_active >= i64::from(self.idle_time_s) && spare >= idle_want + cap {
                out.push(Act::Retire(k));
                spare -= cap;
            }
        }
    }

    fn reacts_to_events(&self) -> bool {
        false
    }

    fn next_tick(&self, w: &World, now: i64) -> i64 {
        if w.queue.is_empty() {
            now + i64::from(self.update_interval_s.max(1))
        } else {
            now + i64::from(self.update_interval_when_expecting_s.max(1))
        }
    }
}
