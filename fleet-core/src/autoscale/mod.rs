//! The demand-driven scaling policy: from a demand snapshot, the fleet (each VM's state) and
//! the stack's settings to the VMs to create, start, stop and retire, each with its reason.
//!
//! It is pure: `now` is a parameter and the same [`decide`] runs under `up` (through
//! [`crate::policy::DemandPolicy`]) and in the trace simulator ([`crate::simulate`]). The
//! reasoning is written up in `docs/policy.md`.

mod decide;
pub mod forecast;
pub mod learn;
pub mod record;
#[cfg(test)]
mod tests;
pub mod tune;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use decide::{decide, Grow, Pool, Steps, Stock};
pub use forecast::Forecast;
pub use learn::{Phase, Timings};

/// A VM's state as the policy sees it (cloud lifecycle joined with the runner's job facts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Created, not ready yet.
    Booting,
    /// Running, no job.
    Idle,
    /// Running at least one job.
    Busy,
    /// Running jobs, taking no new ones (for example after `max_use_count`).
    Draining,
    /// Being stopped.
    Stopping,
    /// Stopped: disk kept, compute not billed.
    Stopped,
    /// Being started again.
    Starting,
}

/// One VM, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmView {
    /// Its state.
    pub state: VmState,
    /// When it entered that state (for `Idle`: when it last became idle).
    pub since: DateTime<Utc>,
    /// Start of the running bill (its create or its last start); `None` while stopped.
    pub billed_since: Option<DateTime<Utc>>,
    /// When it last did something useful: its last job's end, else when it became ready,
    /// else its creation.
    pub last_active: DateTime<Utc>,
    /// Jobs it has run.
    pub jobs_run: u64,
    /// Jobs it runs now.
    pub running: u32,
}

/// Why the policy does something; shown in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum Why {
    /// Jobs wait and the slots ready or on their way do not cover them.
    Queue {
        /// Jobs waiting.
        pending: u32,
        /// Slots free or booting/starting already.
        covered: u32,
        /// VMs booting or starting for over twice the expected time: not counted in
        /// `covered`.
        #[serde(default, skip_serializing_if = "is_zero")]
        late: u32,
    },
    /// Fewer spare running slots than `idle_count` / `scale_factor` ask for.
    IdleTarget {
        /// Spare slots wanted.
        want: u32,
        /// Spare slots free or on their way.
        have: u32,
    },
    /// Fewer running VMs than `min_instances`.
    BelowMin {
        /// The minimum.
        min: u32,
    },
    /// Fewer stopped VMs than `stopped_count`, or than the forecast asks for.
    PoolRefill {
        /// Stopped VMs wanted.
        want: u32,
        /// Stopped VMs there or on their way.
        have: u32,
        /// When the forecast set `want`: the demand (job slots) it expects this hour or the
        /// next.
        #[serde(default, skip_serializing_if = "is_zero")]
        expected: u32,
    },
    /// Fewer VMs in the pool than the level learned from the demand record asks for now
    /// (`policy.target`).
    PoolLearned {
        /// Stopped VMs wanted (when every VM is back).
        want: u32,
        /// VMs that are or will be in the pool.
        have: u32,
        /// The learned level now, in job slots.
        level: u32,
        /// The largest demand in the record, in jobs.
        largest: u32,
        /// Days of demand the record covers.
        days: u32,
    },
    /// Idle longer than `idle_time`, and the stopped pool has room.
    IdleStop {
        /// Seconds idle.
        idle_s: u64,
    },
    /// Provisioned for the stopped pool and never used: parked at once.
    Park,
    /// Idle longer than `idle_time`, and the stopped pool is full (or stopping is off).
    IdleRetire {
        /// Seconds idle.
        idle_s: u64,
    },
    /// Ran `max_use_count` jobs.
    MaxUse {
        /// Jobs run.
        jobs: u64,
    },
    /// Stopped and unused for longer than `stopped_time`, above `stopped_count`.
    StoppedUnused {
        /// Seconds since its last job.
        unused_s: u64,
    },
    /// More stopped VMs than `stopped_max`.
    StoppedAboveMax {
        /// The maximum.
        max: u32,
    },
    /// Not done: `max_instances` reached.
    AtMax {
        /// The maximum.
        max: u32,
        /// VMs that could not be added.
        short: u32,
    },
    /// Not done: `max_growth_rate` VMs are already booting or starting.
    GrowthLimited {
        /// The limit.
        rate: u32,
    },
    /// Not done: demand is unknown, so nothing is stopped or retired.
    DemandUnknown,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Why::Queue {
                pending,
                covered,
                late,
            } => {
                let s = |n: u32| if n == 1 { "" } else { "s" };
                write!(
                    f,
                    "{pending} job{} waiting, {covered} slot{} free or on their way",
                    s(pending),
                    s(covered)
                )?;
                if late > 0 {
                    write!(
                        f,
                        " ({late} VM{} not counted: booting or starting for over twice the expected time)",
                        s(late)
                    )?;
                }
                Ok(())
            }
            Why::IdleTarget { want, have } => write!(
                f,
                "{want} spare slots wanted (idle_count / scale_factor), {have} free or on their way"
            ),
            Why::BelowMin { min } => write!(f, "fewer running VMs than min_instances = {min}"),
            Why::PoolRefill {
                want,
                have,
                expected: 0,
            } => {
                write!(
                    f,
                    "stopped pool below stopped_count = {want} ({have} there or on their way)"
                )
            }
            Why::PoolRefill {
                want,
                have,
                expected,
            } => {
                write!(
                    f,
                    "stopped pool below {want} for the {expected} jobs at once seen this hour or the next in recent weeks (forecast; {have} there or on their way)"
                )
            }
            Why::PoolLearned {
                want,
                have,
                level,
                largest,
                days,
            } => write!(
                f,
                "pool {want}: the level learned for this hour is {level} job slots (at most {largest} jobs at once in the last {days} days; {have} there or on their way)"
            ),
            Why::IdleStop { idle_s } => {
                write!(f, "idle {idle_s}s > idle_time; stopped pool has room")
            }
            Why::Park => write!(f, "provisioned for the stopped pool, never used: parked"),
            Why::IdleRetire { idle_s } => {
                write!(
                    f,
                    "idle {idle_s}s > idle_time; stopped pool full or stopping off"
                )
            }
            Why::MaxUse { jobs } => write!(f, "ran {jobs} jobs, max_use_count reached"),
            Why::StoppedUnused { unused_s } => write!(
                f,
                "stopped and unused for {unused_s}s > stopped_time, above stopped_count"
            ),
            Why::StoppedAboveMax { max } => write!(f, "more stopped VMs than stopped_max = {max}"),
            Why::AtMax { max, short } => {
                write!(f, "max_instances = {max} reached: {short} VMs not added")
            }
            Why::GrowthLimited { rate } => {
                write!(
                    f,
                    "max_growth_rate = {rate} VMs already booting or starting"
                )
            }
            Why::DemandUnknown => write!(f, "demand unknown: nothing is stopped or retired"),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One thing the policy wants done to the fleet. `vm` indexes the fleet slice given to
/// [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FleetAction {
    /// Create `count` new VMs.
    Create {
        /// How many.
        count: u32,
        /// Why.
        why: Why,
    },
    /// Start a stopped VM.
    Start {
        /// Index into the fleet.
        vm: usize,
        /// Why.
        why: Why,
    },
    /// Stop an idle VM (it joins the stopped pool).
    Stop {
        /// Index into the fleet.
        vm: usize,
        /// Why.
        why: Why,
    },
    /// Terminate an idle or stopped VM.
    Retire {
        /// Index into the fleet.
        vm: usize,
        /// Why.
        why: Why,
    },
}

/// What [`decide`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scaling {
    /// What to do, in order: starts and creates first, then stops and retires.
    pub actions: Vec<FleetAction>,
    /// Why something was not done (limits, unknown demand); not errors.
    pub held: Vec<Why>,
    /// VMs the fleet has after the actions (running, on their way or stopped).
    pub total_after: u32,
    /// Whether stops and retires were allowed (demand known).
    pub may_scale_in: bool,
    /// What each step of the decision found.
    pub steps: decide::Steps,
}

impl Scaling {
    /// VMs to create.
    pub fn created(&self) -> u32 {
        self.actions
            .iter()
            .map(|a| match a {
                FleetAction::Create { count, .. } => *count,
                _ => 0,
            })
            .sum()
    }
}

/// Whole seconds in `d`, 0 for a negative span.
pub(crate) fn secs(d: chrono::TimeDelta) -> u64 {
    d.num_seconds().max(0) as u64
}
