//! The engine: one read-observe-decide-plan sequence shared by every command (and by the
//! daemon), so preview and up cannot drift apart.

use chrono::{DateTime, Utc};

use crate::apply::{ApplyOptions, Executor, Progress};
use crate::ci::{Ci, Demand};
use crate::cloud::{Cloud, CloudError, Observed, Scope};
use crate::plan::{Operation, Plan};
use crate::planner::{self, refresh_facts, Desired, PlanInput};
use crate::policy::{Policy, PolicyInput};
use crate::render::{RenderError, Renderer};
use crate::spec::InstanceSpec;
use crate::stack::LoadedStack;
use crate::state::{State, StateBackend, StateError};

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
    /// A template could not be read.
    #[error("cannot read template {path}")]
    Template {
        /// The template file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The templates do not render, or what they render breaks a limit.
    #[error("cannot render the instance templates")]
    Render(#[from] RenderError),
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
        let name = &self.stack.stack.name;
        match self.backend.read().await? {
            Some(s) if &s.stack != name => Err(EngineError::WrongStack {
                location: self.backend.location(),
                stack: name.clone(),
                found: s.stack,
            }),
            Some(s) => Ok(s),
            None => Ok(State::new(name.clone(), new_lineage())),
        }
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
    pub fn template_hash(&self) -> Result<Option<String>, EngineError> {
        if self.stack.stack.templates.user_data.is_none() {
            return Ok(None);
        }
        Ok(Renderer::from_stack(self.stack)?.template_hash())
    }

    /// The instance spec the stack declares.
    pub fn instance_spec(&self) -> Result<InstanceSpec, EngineError> {
        let s = &self.stack.stack;
        Ok(InstanceSpec {
            image: s.instance.image.clone(),
            instance_types: s.instance.types.clone(),
            template_hash: self.template_hash()?,
            labels: s.instance.labels.clone(),
        })
    }

    /// The executor that applies this fleet's plans: its cloud, CI system, state backend
    /// and templates.
    pub fn executor<'e>(
        &'e self,
        state: &State,
        options: ApplyOptions,
        progress: &'e dyn Progress,
        clock: &'e (dyn Fn() -> DateTime<Utc> + Sync),
    ) -> Result<Executor<'e>, EngineError> {
        let renderer = match self.stack.stack.templates.user_data {
            Some(_) => Some(Renderer::from_stack(self.stack)?),
            None => None,
        };
        Ok(Executor {
            cloud: self.cloud,
            ci: self.ci,
            renderer,
            backend: self.backend,
            scope: self.scope(state),
            options,
            progress,
            clock,
        })
    }

    /// What the fleet should be for `operation`, given `state` with the observed facts.
    pub fn desired(
        &self,
        operation: Operation,
        state: &State,
        observed: &Observed,
        now: DateTime<Utc>,
    ) -> Result<Desired, EngineError> {
        let spec = self.instance_spec()?;
        if operation == Operation::Destroy {
            return Ok(Desired::nothing(spec));
        }
        let unknown = Demand::Unknown {
            reason: "the CI system was not asked".into(),
        };
        // A cloud that cannot stop VMs (or bills stopped ones) gets running spares only.
        let mut config = self.stack.stack.policy.clone();
        if !self.cloud.can_stop() {
            config.stopped_count = 0;
            config.stopped_max = Some(0);
            for p in &mut config.periods {
                p.stopped_count = None;
            }
        }
        let decision = self.policy.decide(&PolicyInput {
            config: &config,
            demand: observed.demand.as_ref().unwrap_or(&unknown),
            state,
            now,
        });
        Ok(Desired::from_stack(
            &self.stack.stack,
            spec.template_hash.clone(),
            &decision,
        ))
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
        refresh_facts(&mut view, observed, now);
        let label = self.cloud.label();
        // The policy decides on the fleet as it will be once settled: records of creates
        // that never reached the cloud are gone, instances the cloud has and state lacks
        // are in (the planner makes the same adopt and forget changes below).
        let mut settled = view.clone();
        let settle = planner::plan(&PlanInput {
            stack: &self.stack.stack.name,
            cloud: &label,
            operation: Operation::Refresh,
            state: &view,
            observed,
            desired: &Desired::nothing(self.instance_spec()?),
            now,
        });
        for c in &settle.changes {
            crate::apply::settle_record(c, &mut settled, now);
        }
        let desired = self.desired(operation, &settled, observed, now)?;
        let plan = planner::plan(&PlanInput {
            stack: &self.stack.stack.name,
            cloud: &label,
            operation,
            state: &view,
            observed,
            desired: &desired,
            now,
        });
        crate::render::check_plan(
            self.stack,
            &plan,
            self.cloud.user_data_limit(),
            self.cloud.name(),
        )?;
        Ok(plan)
    }
}
