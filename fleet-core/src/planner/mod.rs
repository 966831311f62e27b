//! The planner: a pure function from (desired, state, observed, now) to a [`Plan`].
//!
//! It runs named steps in a fixed order, so the policy reads top to bottom:
//!
//! One module per step, called in this order from [`plan_deciding`] (and [`plan`]):
//!
//! 1. `settle` (`settle_instances` / `settle_resources`): match records with what the cloud
//!    reports; adopt tagged objects state lacks, forget records whose object is gone, and
//!    settle operations an interrupted apply left pending.
//! 2. `resources` (`plan_resources`): create, replace or delete supporting resources.
//! 3. `drains` (`plan_runners`): delete runners whose instance is gone (when the CI system manages a
//!    runner per instance).
//! 4. `drains` (`plan_drains`): delete draining instances once no job runs on them, or give the drain
//!    up after the drain timeout.
//! 5. `instances` (`plan_instances`): replace out-of-date instances (including ones whose runner never
//!    came online), then follow the policy: its per-instance actions (create, start, stop,
//!    retire) when it gives them, else create or delete to reach the desired count.
//!
//! Destroy is not a special case: it is a plan against [`Desired::nothing`].

mod drains;
mod instances;
mod resources;

mod settle;

use chrono::{DateTime, Utc};

use crate::cloud::Lifecycle;
use crate::cloud::Observed;
use crate::naming;
use crate::plan::{Operation, Plan, PLAN_FORMAT_VERSION};
use crate::policy::{Decision, PlannedAction};
use crate::resource::{dependency_order, ResourceSpec};
use crate::runners::RunnerRules;
use crate::spec::InstanceSpec;
use crate::stack::Stack;
use crate::state::{facts, InstanceRecord, State};

/// What the fleet should look like.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Instances wanted.
    pub instances: u32,
    /// What each should be.
    pub spec: InstanceSpec,
    /// Supporting resources, in dependency order.
    pub resources: Vec<ResourceSpec>,
    /// Why that many instances.
    pub reason: String,
    /// Whether instances may be deleted to reach the count.
    pub may_scale_in: bool,
    /// The policy's per-instance actions; `None`: reach `instances` by count.
    pub actions: Option<Vec<PlannedAction>>,
    /// Drain and online timeouts of the stack's runners.
    pub runner_rules: RunnerRules,
}

impl Desired {
    /// The instances and resources a stack declares, before a policy sized them: no
    /// instances and no scale-in until [`Desired::with_decision`] (or
    /// [`plan_deciding`]) gives the count.
    pub fn from_stack(stack: &Stack, template_hash: Option<String>) -> Desired {
        let specs: Vec<ResourceSpec> = stack.resources.iter().map(ResourceSpec::from).collect();
        // The stack loader rejects cycles, so the declared order is only a fallback.
        let order = dependency_order(&specs).unwrap_or_else(|_| (0..specs.len()).collect());
        Desired {
            instances: 0,
            spec: InstanceSpec {
                image: stack.instance.image.clone(),
                instance_types: stack.instance.types.clone(),
                template_hash,
                labels: stack.instance.labels.clone(),
            },
            resources: order.into_iter().map(|i| specs[i].clone()).collect(),
            reason: "not sized by a policy yet".into(),
            may_scale_in: false,
            actions: None,
            runner_rules: RunnerRules {
                drain_timeout: stack.runner.drain_timeout,
                online_timeout: stack.runner.online_timeout,
            },
        }
    }

    /// These instances and resources, sized by `decision` instead.
    pub fn with_decision(&self, decision: &Decision) -> Desired {
        Desired {
            instances: decision.desired,
            reason: decision.reason.clone(),
            may_scale_in: decision.may_scale_in,
            actions: decision.actions.clone(),
            ..self.clone()
        }
    }

    /// Nothing at all: what `destroy` plans against.
    pub fn nothing(spec: InstanceSpec) -> Desired {
        Desired {
            instances: 0,
            spec,
            resources: Vec::new(),
            reason: "destroy: nothing is wanted".into(),
            may_scale_in: true,
            actions: None,
            runner_rules: RunnerRules::default(),
        }
    }
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// Stack name.
    pub stack: &'a str,
    /// The cloud's label, for display.
    pub cloud: &'a str,
    /// What the plan is for.
    pub operation: Operation,
    /// Recorded.
    pub state: &'a State,
    /// Reported by the cloud.
    pub observed: &'a Observed,
    /// Declared (ignored for refresh).
    pub desired: &'a Desired,
    /// The time of planning.
    pub now: DateTime<Utc>,
}

/// A live instance after settling: recorded or adopted, and present in the cloud.
#[derive(Debug, Clone)]
struct Live {
    name: String,
    cloud_id: Option<String>,
    image: String,
    instance_type: String,
    template_hash: Option<String>,
    index: Option<u64>,
    /// What the cloud reports.
    lifecycle: Lifecycle,
    /// Its record (none for an instance adopted by this plan).
    record: Option<InstanceRecord>,
}

impl Live {
    fn draining_since(&self) -> Option<DateTime<Utc>> {
        self.record.as_ref().and_then(|r| r.draining_since)
    }

    fn running_jobs(&self) -> u32 {
        self.record.as_ref().map_or(0, |r| r.jobs.running)
    }
}

/// Makes the plan, for the desired fleet `input` gives.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    plan_steps(input, None)
}

/// Makes the plan, with the count and per-instance actions that `decide` chooses on the
/// fleet as it will be once settled: the adopts and forgets of step 1 applied to the state
/// (records of creates that never reached the cloud gone, instances the cloud has and state
/// lacks in). The rest of `input.desired` (spec, resources, runner rules) is the stack's.
pub fn plan_deciding(input: &PlanInput<'_>, decide: &dyn Fn(&State) -> Decision) -> Plan {
    plan_steps(input, Some(decide))
}

fn plan_steps(input: &PlanInput<'_>, decide: Option<&dyn Fn(&State) -> Decision>) -> Plan {
    let mut changes = Vec::new();
    let mut notes = Vec::new();

    let mut next = first_free_index(input);
    let live = settle::settle_instances(input, &mut next, &mut changes);
    let live_resources = settle::settle_resources(input, &mut changes);

    let decided;
    let input = &match decide {
        Some(decide) if input.operation != Operation::Refresh => {
            let mut settled = input.state.clone();
            for c in &changes {
                facts::settle(c, &mut settled, input.now);
            }
            decided = input.desired.with_decision(&decide(&settled));
            PlanInput {
                desired: &decided,
                ..*input
            }
        }
        _ => *input,
    };
    let (desired, decision) = match input.operation {
        Operation::Refresh => (None, None),
        _ => {
            let d = input.desired;
            let mut resource_changes = Vec::new();
            let deletes_after =
                resources::plan_resources(input, &live_resources, &mut resource_changes);
            changes.extend(resource_changes);
            drains::plan_runners(input, &mut changes);
            let serving = drains::plan_drains(input, &live, &mut changes, &mut notes);
            instances::plan_instances(input, &serving, &mut next, &mut changes, &mut notes);
            changes.extend(deletes_after);
            (Some(d.instances), Some(d.reason.clone()))
        }
    };

    Plan {
        format_version: PLAN_FORMAT_VERSION,
        stack: input.stack.to_string(),
        operation: input.operation,
        cloud: input.cloud.to_string(),
        lineage: input.state.lineage.clone(),
        serial: input.state.serial,
        desired,
        decision,
        notes,
        summary: Plan::summarize(&changes),
        changes,
        created_at: input.now,
    }
}

/// First free instance index: past every name in state and in the cloud.
fn first_free_index(input: &PlanInput<'_>) -> u64 {
    let from_state = input.state.next_index.max(1);
    let observed_max = input
        .observed
        .instances
        .iter()
        .filter_map(|o| naming::instance_index(input.stack, &o.name))
        .chain(
            input
                .state
                .instances
                .keys()
                .filter_map(|n| naming::instance_index(input.stack, n)),
        )
        .max()
        .map_or(0, |m| m + 1);
    from_state.max(observed_max)
}
