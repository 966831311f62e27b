//! The apply executor: carries out a plan against the cloud and records each step.
//!
//! Every cloud call is preceded by a state write that records it as pending and followed
//! by one that settles it, so a crash at any point leaves a trail the next plan settles
//! (adopt what the cloud made, forget what it never made). Preview runs the same code with
//! `dry_run` set: the gates sit exactly where effects would happen.
//!
//! One module per phase, sequenced here by [`Executor::apply`] in a fixed order:
//! `settle` (adopt, forget and observed facts, one write), `resources` (creates and
//! replaces, in dependency order), `create` (instance creates, each runner registered
//! first, batched with bounded concurrency), `power` (starts, then stops), `delete`
//! (instance deletes, drained first on `up`; then orphan runners), and `resources` again
//! (deletes, dependents first). The old half of an instance replace is deleted only once its
//! replacement exists. `batch` holds what every batched phase shares; `report` the
//! progress and report types.

mod batch;
mod create;
mod delete;
mod power;
mod report;
mod resources;
mod settle;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::ci::Ci;
use crate::cloud::{Cloud, Observed, Scope};
use crate::naming::tags;
use crate::plan::{Action, Plan};
use crate::render::Renderer;
use crate::state::{State, StateBackend};

pub use report::{
    error_chain, ApplyError, ApplyReport, Deferral, Failure, NoProgress, Progress, StepOutcome,
};

/// How to apply.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Report what would happen; call nothing, write nothing.
    pub dry_run: bool,
    /// Cloud calls in flight at once.
    pub concurrency: usize,
    /// Instances per create or delete call.
    pub batch_size: usize,
}

/// Executes plans.
pub struct Executor<'a> {
    /// The cloud.
    pub cloud: &'a dyn Cloud,
    /// The CI system: registers, pauses and deletes each instance's runner when it
    /// manages runners ([`Ci::manages_runners`]).
    pub ci: &'a dyn Ci,
    /// Renders each new instance's user data (`None`: the stack names no template).
    pub renderer: Option<Renderer>,
    /// Where state is recorded.
    pub backend: &'a dyn StateBackend,
    /// Stack and lineage.
    pub scope: Scope,
    /// Options.
    pub options: ApplyOptions,
    /// Progress sink.
    pub progress: &'a dyn Progress,
    /// Wall clock for record timestamps (effects happen here, so time may be read here).
    pub clock: &'a (dyn Fn() -> DateTime<Utc> + Sync),
}

/// Refuses a saved plan made on another state.
pub fn check_plan_base(plan: &Plan, state: &State) -> Result<(), ApplyError> {
    if plan.stack != state.stack {
        return Err(ApplyError::WrongStack {
            planned: plan.stack.clone(),
            applying: state.stack.clone(),
        });
    }
    if plan.serial != state.serial || plan.lineage != state.lineage {
        return Err(ApplyError::StalePlan {
            planned: plan.serial,
            stored: state.serial,
            planned_lineage: plan.lineage.clone(),
            stored_lineage: state.lineage.clone(),
        });
    }
    Ok(())
}

impl Executor<'_> {
    /// Applies `plan` to `state` (which must be the state it was made on). `observed`, when
    /// given, refreshes lifecycle facts in the first write.
    pub async fn apply(
        &self,
        plan: &Plan,
        state: &mut State,
        observed: Option<&Observed>,
    ) -> Result<ApplyReport, ApplyError> {
        check_plan_base(plan, state)?;
        let mut report = ApplyReport {
            dry_run: self.options.dry_run,
            ..ApplyReport::default()
        };
        self.progress.begin(plan.changes.len());
        let result = self.run(plan, state, observed, &mut report).await;
        self.progress.end();
        result?;
        report.serial = state.serial;
        Ok(report)
    }

    async fn run(
        &self,
        plan: &Plan,
        state: &mut State,
        observed: Option<&Observed>,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        self.ensure_settled(plan, state, observed, report).await?;
        for c in plan
            .changes
            .iter()
            .filter(|c| c.is_resource() && matches!(c.action, Action::Create | Action::Replace))
        {
            self.ensure_resource(c, state, report).await?;
        }
        let replaced = self.ensure_instances_created(plan, state, report).await?;
        self.ensure_instances_started(plan, state, report).await?;
        self.ensure_instances_stopped(plan, state, report).await?;
        self.ensure_instances_deleted(plan, &replaced, state, report)
            .await?;
        self.ensure_runners_deleted(plan, report).await;
        for c in plan
            .changes
            .iter()
            .filter(|c| c.is_resource() && c.action == Action::Delete)
        {
            self.ensure_resource_deleted(c, state, report).await?;
        }
        Ok(())
    }

    /// Writes state (serial + 1), or nothing in a dry run.
    async fn commit(&self, state: &mut State) -> Result<(), ApplyError> {
        if self.options.dry_run {
            return Ok(());
        }
        Ok(crate::state::commit(self.backend, state).await?)
    }
}

/// The tags every object of the stack carries.
pub fn object_tags(
    scope: &Scope,
    name: &str,
    spec_hash: &str,
    kind: Option<&str>,
) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    t.insert(tags::STACK.to_string(), scope.stack.clone());
    t.insert(tags::NAME.to_string(), name.to_string());
    t.insert(tags::LINEAGE.to_string(), scope.lineage.clone());
    t.insert(tags::SPEC.to_string(), spec_hash.to_string());
    if let Some(k) = kind {
        t.insert(tags::KIND.to_string(), k.to_string());
    }
    t
}
