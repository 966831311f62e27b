//! The scaling policy interface: from demand and the fleet to a desired instance count.

use chrono::{DateTime, Utc};

use crate::ci::Demand;
use crate::stack::PolicyConfig;
use crate::state::State;

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
        }
    }
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
