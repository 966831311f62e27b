//! The engine: one read-observe-decide-plan sequence shared by every command (and by the
//! daemon), so preview and up cannot drift apart.

use chrono::{DateTime, Utc};

use crate::ci::{Ci, Demand};
use crate::cloud::{Cloud, CloudError, Observed, Scope};
use crate::plan::{Operation, Plan};
use crate::planner::{self, Desired, PlanInput};
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

    /// What the cloud reports for this stack.
    pub async fn observe(&self, state: &State) -> Result<Observed, EngineError> {
        self.cloud
            .observe(&self.scope(state))
            .await
            .map_err(EngineError::Observe)
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

    /// What the fleet should be for `operation`.
    pub async fn desired(
        &self,
        operation: Operation,
        state: &State,
        now: DateTime<Utc>,
    ) -> Result<Desired, EngineError> {
        let spec = self.instance_spec()?;
        if operation == Operation::Destroy {
            return Ok(Desired::nothing(spec));
        }
        let demand = match self.ci.demand().await {
            Ok(d) => d,
            Err(e) => Demand::Unknown {
                reason: e.to_string(),
            },
        };
        let decision = self.policy.decide(&PolicyInput {
            config: &self.stack.stack.policy,
            demand: &demand,
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
        let desired = self.desired(operation, state, now).await?;
        let label = self.cloud.label();
        let plan = planner::plan(&PlanInput {
            stack: &self.stack.stack.name,
            cloud: &label,
            operation,
            state,
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
