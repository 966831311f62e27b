//! The engine: one read-observe-decide-plan sequence shared by every command (and by the
//! daemon), so preview and up cannot drift apart.

use chrono::{DateTime, Utc};

use crate::apply::{ApplyOptions, Executor, Progress};
use crate::ci::{Ci, Demand};
use crate::cloud::{Cloud, CloudError, Observed, Scope};
use crate::plan::{Operation, Plan};
use crate::planner::{self, Desired, PlanInput};
use crate::policy::{Policy, PolicyInput};
use crate::render::{RenderError, Renderer};
use crate::spec::InstanceSpec;
use crate::stack::{LoadedStack, Settings};
use crate::state::{facts, State, StateBackend, StateError};

mod checks;

pub use checks::check_plan;

/// Errors before apply starts.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// State could not be read.
    #[error("could not read state")]
    State(#[from] StateError),
    /// The cloud could not be observed.
    #[error("could not list the fleet's instances in the cloud")]
    Observe(#[source] CloudError),
    /// The state belongs to another stack.
    #[error("state at {location} belongs to stack `{found}`, not `{stack}`; point `state.path` at this stack's own file")]
    WrongStack {
        /// Where the state is.
        location: String,
        /// The stack being run.
        stack: String,
        /// The stack the state names.
        found: String,
    },
    /// The templates do not render, or what they render breaks a limit.
    #[error("cannot render the instance templates")]
    Render(#[from] RenderError),
}

/// Reads the state of stack `name` from `backend`, or starts a new one with `new_lineage`
/// when there is none; a state that belongs to another stack is an error.
pub async fn read_state(
    backend: &dyn StateBackend,
    name: &str,
    new_lineage: impl FnOnce() -> String,
) -> Result<State, EngineError> {
    match backend.read().await? {
        Some(s) if s.stack != name => Err(EngineError::WrongStack {
            location: backend.location(),
            stack: name.to_string(),
            found: s.stack,
        }),
        Some(s) => Ok(s),
        None => Ok(State::new(name.to_string(), new_lineage())),
    }
}

/// The parts one fleet is run with.
pub struct Fleet<'a> {
    /// The stack.
    pub stack: &'a LoadedStack,
    /// The cloud.
    pub cloud: &'a dyn Cloud,
    /// The state backend.
    pub backend: &'a dyn StateBackend,
    /// The scaling policy.
    pub policy: &'a dyn Policy,
    /// The CI system.
    pub ci: &'a dyn Ci,
}

impl Fleet<'_> {
    /// Reads state, or starts a new one with `new_lineage` when there is none.
    pub async fn read_state(
        &self,
        new_lineage: impl FnOnce() -> String,
    ) -> Result<State, EngineError> {
        read_state(self.backend, &self.stack.stack.name, new_lineage).await
    }

    /// The scope cloud calls are made in.
    pub fn scope(&self, state: &State) -> Scope {
        Scope {
            stack: self.stack.stack.name.clone(),
            lineage: state.lineage.clone(),
        }
    }

    /// What the cloud reports for this stack, with the CI system's demand and (when it
    /// manages a runner per instance) this stack's runners. A CI system that does not answer
    /// makes demand unknown and runner facts absent; it never fails the observation.
    pub async fn observe(&self, state: &State) -> Result<Observed, EngineError> {
        // In this order, not at once: demand first, then the runners, whose job counts the
        // CI system takes from that same demand snapshot where it can, so that a job taken
        // between two calls is never counted both as waiting and as keeping its VM busy (the
        // policy would add a VM for it) nor as running with its VM idle (it would wait).
        let mut observed = self
            .cloud
            .observe(&self.scope(state))
            .await
            .map_err(EngineError::Observe)?;
        let demand = self.ci.demand().await;
        let runners = if self.ci.manages_runners() {
            Some(self.ci.runners().await)
        } else {
            None
        };
        observed.demand = Some(demand.unwrap_or_else(|e| Demand::Unknown {
            reason: e.to_string(),
        }));
        observed.runners = match runners {
            Some(Ok(mut r)) => {
                self.date_first_contacts(state, &mut r).await;
                Some(r)
            }
            Some(Err(e)) => {
                tracing::warn!("runner facts unknown this time: {e}");
                None
            }
            None => None,
        };
        Ok(observed)
    }

    /// Asks when runners seen online for the first time (their VM still booting, as
    /// recorded) first contacted the CI system: the exact end of those boots. Best effort:
    /// without an answer the boot is timed by observation.
    async fn date_first_contacts(&self, state: &State, runners: &mut [crate::ci::ObservedRunner]) {
        let booting: std::collections::BTreeSet<u64> = state
            .instances
            .values()
            .filter(|r| {
                r.jobs.runner_online_at.is_none()
                    && r.warming
                        .is_some_and(|w| w.phase == crate::autoscale::Phase::Boot)
            })
            .filter_map(|r| r.jobs.runner_id)
            .collect();
        for r in runners
            .iter_mut()
            .filter(|r| r.online && booting.contains(&r.id))
        {
            match self.ci.first_contact(r.id).await {
                Ok(at) => r.first_contact_at = at,
                Err(e) => tracing::debug!(runner = r.id, "first contact unknown: {e}"),
            }
        }
    }

    /// Hash of the template inputs that shape a VM (template files and stack-wide
    /// variables; see [`Renderer::template_hash`]), `None` without a user data template.
    pub fn template_hash(&self) -> Option<String> {
        self.renderer().template_hash()
    }

    /// The instance spec the stack declares.
    pub fn instance_spec(&self) -> InstanceSpec {
        let s = &self.stack.stack;
        InstanceSpec {
            image: s.instance.image.clone(),
            instance_types: s.instance.types.clone(),
            template_hash: self.template_hash(),
            labels: s.instance.labels.clone(),
        }
    }

    fn renderer(&self) -> Renderer {
        Renderer::from_stack(self.stack)
    }

    /// The executor that applies this fleet's plans: its cloud, CI system, state backend
    /// and templates.
    pub fn executor<'e>(
        &'e self,
        state: &State,
        options: ApplyOptions,
        progress: &'e dyn Progress,
        clock: &'e (dyn Fn() -> DateTime<Utc> + Sync),
    ) -> Executor<'e> {
        let renderer = self.renderer();
        let renderer = renderer.has_user_data().then_some(renderer);
        Executor {
            cloud: self.cloud,
            ci: self.ci,
            renderer,
            backend: self.backend,
            scope: self.scope(state),
            options,
            progress,
            clock,
        }
    }

    /// The policy settings this cloud can follow: without a stopped pool on a cloud that
    /// cannot stop VMs (or bills stopped ones).
    fn policy_settings(&self) -> std::borrow::Cow<'_, Settings> {
        if self.cloud.can_stop() {
            std::borrow::Cow::Borrowed(&self.stack.policy)
        } else {
            std::borrow::Cow::Owned(self.stack.policy.without_stopped_pool())
        }
    }

    /// Plans `operation` from `state` and `observed`.
    pub async fn plan(
        &self,
        operation: Operation,
        state: &State,
        observed: &Observed,
        now: DateTime<Utc>,
    ) -> Result<Plan, EngineError> {
        // The policy and the planner see the recorded fleet with what was just observed
        // (lifecycles, runner job facts); apply records the same facts in its first write.
        let mut view = state.clone();
        facts::refresh(&mut view, observed, now);
        let label = self.cloud.label();
        let renderer = self.renderer();
        let spec = self.instance_spec();
        let unknown = Demand::Unknown {
            reason: "the CI system was not asked".into(),
        };
        let demand = observed.demand.as_ref().unwrap_or(&unknown);
        let settings = self.policy_settings();
        let stack_desired = match operation {
            Operation::Destroy => Desired::nothing(spec),
            _ => Desired::from_stack(&self.stack.stack, spec.template_hash.clone()),
        };
        let input = PlanInput {
            stack: &self.stack.stack.name,
            cloud: &label,
            operation,
            state: &view,
            observed,
            desired: &stack_desired,
            now,
        };
        let plan = match operation {
            Operation::Destroy | Operation::Refresh => planner::plan(&input),
            // The policy decides on the fleet as it will be once settled (see
            // `planner::plan_deciding`).
            _ => planner::plan_deciding(&input, &|settled| {
                self.policy.decide(&PolicyInput {
                    settings: &settings,
                    demand,
                    state: settled,
                    now,
                })
            }),
        };
        check_plan(
            &renderer,
            &plan,
            self.cloud.user_data_limit(),
            self.cloud.name(),
        )?;
        Ok(plan)
    }
}
