//! The scaling policy interface: from demand and the fleet to a desired instance count,
//! and (for the demand policy) the VMs to create, start, stop and retire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::autoscale::{self, FleetAction, Settings, VmState, VmView, Why};
use crate::ci::Demand;
use crate::stack::PolicyConfig;
use crate::state::{Lifecycle, PendingKind, State};

/// What a policy sees.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    /// The stack's policy settings.
    pub config: &'a PolicyConfig,
    /// Demand from the CI system.
    pub demand: &'a Demand,
    /// The recorded fleet.
    pub state: &'a State,
    /// The time of the decision.
    pub now: DateTime<Utc>,
}

/// How many instances to keep, and why (for the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Instances wanted.
    pub desired: u32,
    /// Why, in one line.
    pub reason: String,
    /// Whether the planner may delete instances to reach `desired`. False when demand is
    /// unknown and the policy depends on it.
    pub may_scale_in: bool,
    /// What the demand policy wants done, per instance, with reasons; `None` for policies
    /// that only give a count (the planner then creates or deletes to reach `desired`).
    pub actions: Option<Vec<PlannedAction>>,
}

/// One fleet action of the demand policy, naming the instance it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PlannedAction {
    /// Create `count` new instances.
    Create {
        /// How many.
        count: u32,
        /// Why.
        why: Why,
    },
    /// Start the stopped instance.
    Start {
        /// Instance name.
        instance: String,
        /// Why.
        why: Why,
    },
    /// Stop the idle instance.
    Stop {
        /// Instance name.
        instance: String,
        /// Why.
        why: Why,
    },
    /// Terminate the idle or stopped instance.
    Retire {
        /// Instance name.
        instance: String,
        /// Why.
        why: Why,
    },
}

/// A scaling policy.
pub trait Policy: Send + Sync {
    /// Decides the desired count.
    fn decide(&self, input: &PolicyInput<'_>) -> Decision;
}

/// Keeps exactly `min_instances`, clamped to `max_instances`; ignores demand.
#[derive(Debug, Default, Clone, Copy)]
pub struct StaticPolicy;

impl Policy for StaticPolicy {
    fn decide(&self, input: &PolicyInput<'_>) -> Decision {
        let c = input.config;
        let desired = c.min_instances.min(c.max_instances);
        Decision {
            desired,
            reason: format!("policy.min_instances = {desired}"),
            may_scale_in: true,
            actions: None,
        }
    }
}

/// The demand-driven policy ([`autoscale::decide`]) over the recorded fleet: the same code
/// the simulator replays traces through.
#[derive(Debug, Default, Clone, Copy)]
pub struct DemandPolicy;

impl Policy for DemandPolicy {
    fn decide(&self, input: &PolicyInput<'_>) -> Decision {
        let settings = match Settings::from_config(input.config) {
            Ok(s) => s,
            // The loader already rejected bad settings; a hand-built config falls back to
            // the floor and never scales in.
            Err(p) => {
                return Decision {
                    desired: input.config.min_instances.min(input.config.max_instances),
                    reason: format!("{}: {}", p.path, p.message),
                    may_scale_in: false,
                    actions: None,
                }
            }
        };
        let e = settings.at(input.now);
        let (names, views) = fleet_view(input.state);
        let s = autoscale::decide(&e, input.demand, &views, input.now);
        let actions: Vec<PlannedAction> = s
            .actions
            .iter()
            .map(|a| match *a {
                FleetAction::Create { count, why } => PlannedAction::Create { count, why },
                FleetAction::Start { vm, why } => PlannedAction::Start {
                    instance: names[vm].clone(),
                    why,
                },
                FleetAction::Stop { vm, why } => PlannedAction::Stop {
                    instance: names[vm].clone(),
                    why,
                },
                FleetAction::Retire { vm, why } => PlannedAction::Retire {
                    instance: names[vm].clone(),
                    why,
                },
            })
            .collect();
        let mut reason = match (&actions.first(), input.demand) {
            (_, Demand::Unknown { reason }) => format!(
                "demand unknown ({reason}): keeping at least policy.min_instances = {}, not scaling in",
                e.min_instances
            ),
            (None, _) => "demand policy: nothing to change".to_string(),
            (Some(_), _) => format!("demand policy: {} actions", actions.len()),
        };
        for h in &s.held {
            if *h != Why::DemandUnknown {
                reason.push_str(&format!("; held: {h}"));
            }
        }
        Decision {
            desired: s.total_after,
            reason,
            may_scale_in: s.may_scale_in,
            actions: Some(actions),
        }
    }
}

/// The recorded fleet as the policy sees it: names and views, in the same order. Instances
/// being deleted are left out, and so are instances whose runner is paused for scale-in
/// (they leave once their jobs end: they are neither capacity nor candidates); an instance
/// whose state is not known yet counts as booting, so it is never stopped or retired.
pub fn fleet_view(state: &State) -> (Vec<String>, Vec<VmView>) {
    let mut names = Vec::with_capacity(state.instances.len());
    let mut views = Vec::with_capacity(state.instances.len());
    for r in state.instances.values() {
        if r.lifecycle.is_gone()
            || r.draining_since.is_some()
            || r.pending
                .as_ref()
                .is_some_and(|p| p.op == PendingKind::Delete)
        {
            continue;
        }
        let state = match r.lifecycle {
            Lifecycle::Running if r.jobs.running > 0 => VmState::Busy,
            Lifecycle::Running => VmState::Idle,
            Lifecycle::Stopping => VmState::Stopping,
            Lifecycle::Stopped => VmState::Stopped,
            Lifecycle::Starting => VmState::Starting,
            _ => VmState::Booting,
        };
        let last_active = r
            .jobs
            .last_job_end
            .unwrap_or(r.created_at)
            .max(r.created_at);
        views.push(VmView {
            state,
            since: last_active,
            billed_since: match state {
                VmState::Stopped | VmState::Stopping => None,
                _ => Some(r.started_at.unwrap_or(r.created_at)),
            },
            last_active,
            jobs_run: r.jobs.jobs_run,
            running: r.jobs.running,
        });
        names.push(r.name.clone());
    }
    (names, views)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_policy_keeps_min_within_max() {
        let config = PolicyConfig {
            min_instances: 3,
            ..PolicyConfig::default()
        };
        let state = State::new("s", "l");
        let demand = Demand::Unknown { reason: "x".into() };
        let d = StaticPolicy.decide(&PolicyInput {
            config: &config,
            demand: &demand,
            state: &state,
            now: DateTime::UNIX_EPOCH,
        });
        assert_eq!(d.desired, 3);
        assert!(d.may_scale_in);
    }
}
