//! The apply executor: carries out a plan against the cloud and records each step.
//!
//! Every cloud call is preceded by a state write that records it as pending and followed
//! by one that settles it, so a crash at any point leaves a trail the next plan settles
//! (adopt what the cloud made, forget what it never made). Preview runs the same code with
//! `dry_run` set: the gates sit exactly where effects would happen.
//!
//! Order: state-only changes (adopt, forget), resource creates, instance creates (batched,
//! bounded concurrency; each instance's runner registered first), starts, stops, instance
//! deletes (batched; drained first on `up`), runner deletes, resource deletes. The old half
//! of an instance replace is deleted only once its replacement exists.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};

use crate::autoscale::Phase;
use crate::ci::{Ci, CiError, NewRunner};
use crate::cloud::{
    Cloud, CloudError, CreateInstance, CreateOutcome, DeleteOutcome, ObservedInstance,
    PowerOutcome, Scope,
};
use crate::naming::{self, tags};
use crate::plan::{Action, Change, Operation, Plan, Summary, RUNNER};
use crate::planner::refresh_facts;
use crate::render::{RenderError, Renderer, Secrets};
use crate::resource::ResourceSpec;
use crate::secret::Secret;
use crate::spec::InstanceSpec;
use crate::state::{
    InstanceRecord, JobFacts, Lifecycle, PendingKind, PendingOp, ResourceRecord, State,
    StateBackend, StateError, Warming,
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

/// How one step ended, for progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Done.
    Done,
    /// Dry run: would have been done.
    WouldDo,
    /// Failed, with the error chain.
    Failed(String),
    /// Not done now, for a reason that is not an error (a job still runs on the VM); a
    /// later plan picks it up.
    Deferred(String),
}

/// Receives progress; the CLI draws a bar on a terminal and plain lines otherwise.
pub trait Progress: Send + Sync {
    /// Apply starts with `total` steps.
    fn begin(&self, total: usize);
    /// One step ended.
    fn step(&self, change: &Change, outcome: &StepOutcome);
    /// Apply ended.
    fn end(&self);
}

/// Ignores progress.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: usize) {}
    fn step(&self, _: &Change, _: &StepOutcome) {}
    fn end(&self) {}
}

/// A change that failed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Failure {
    /// What was tried.
    pub action: Action,
    /// `instance` or the resource kind.
    pub kind: String,
    /// The name.
    pub name: String,
    /// The error and its causes.
    pub error: String,
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ApplyReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Changes done (or, in a dry run, that would be done).
    pub done: Summary,
    /// Changes that failed.
    pub failed: Vec<Failure>,
    /// Changes put off for a reason that is not an error (`error` says why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<Failure>,
    /// State serial after the apply.
    pub serial: u64,
}

/// Errors that stop an apply.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// State could not be written, so no further cloud call may be made.
    #[error("could not record progress in state; stopped before the next cloud call")]
    State(#[from] StateError),
    /// A saved plan was made on another state.
    #[error("the saved plan was made on state serial {planned} (lineage {planned_lineage}), but the stored state is at serial {stored} (lineage {stored_lineage}); make a new plan")]
    StalePlan {
        /// Serial in the plan.
        planned: u64,
        /// Serial stored now.
        stored: u64,
        /// Lineage in the plan.
        planned_lineage: String,
        /// Lineage stored now.
        stored_lineage: String,
    },
    /// The plan is for another stack.
    #[error("the saved plan is for stack `{planned}`, not `{applying}`")]
    WrongStack {
        /// Stack in the plan.
        planned: String,
        /// Stack being applied.
        applying: String,
    },
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
        observed: Option<&crate::cloud::Observed>,
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
        observed: Option<&crate::cloud::Observed>,
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
        state.serial += 1;
        if let Err(e) = self.backend.write(state).await {
            state.serial -= 1;
            return Err(e.into());
        }
        Ok(())
    }

    fn done(&self, c: &Change, report: &mut ApplyReport) {
        report.done.count(c.action);
        let outcome = if self.options.dry_run {
            StepOutcome::WouldDo
        } else {
            StepOutcome::Done
        };
        self.progress.step(c, &outcome);
    }

    fn deferred(&self, c: &Change, why: String, report: &mut ApplyReport) {
        tracing::info!(action = c.action.as_str(), kind = %c.kind, name = %c.name, "deferred: {why}");
        report.deferred.push(Failure {
            action: c.action,
            kind: c.kind.clone(),
            name: c.name.clone(),
            error: why.clone(),
        });
        self.progress.step(c, &StepOutcome::Deferred(why));
    }

    fn failed(&self, c: &Change, error: &dyn std::error::Error, report: &mut ApplyReport) {
        let text = error_chain(error);
        tracing::warn!(action = c.action.as_str(), kind = %c.kind, name = %c.name, "{text}");
        report.failed.push(Failure {
            action: c.action,
            kind: c.kind.clone(),
            name: c.name.clone(),
            error: text.clone(),
        });
        self.progress.step(c, &StepOutcome::Failed(text));
    }

    /// Adopt and forget: state-only, one write.
    async fn ensure_settled(
        &self,
        plan: &Plan,
        state: &mut State,
        observed: Option<&crate::cloud::Observed>,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let now = (self.clock)();
        let mut any = false;
        for c in plan
            .changes
            .iter()
            .filter(|c| matches!(c.action, Action::Adopt | Action::Forget))
        {
            any = true;
            if !self.options.dry_run {
                settle_record(c, state, now);
            }
            self.done(c, report);
        }
        if let Some(obs) = observed {
            if !self.options.dry_run && refresh_facts(state, obs, now) {
                any = true;
            }
        }
        if any {
            self.commit(state).await?;
        }
        Ok(())
    }

    async fn ensure_resource(
        &self,
        c: &Change,
        state: &mut State,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        if self.options.dry_run {
            self.done(c, report);
            return Ok(());
        }
        let Some(spec) = &c.resource else {
            return Ok(());
        };
        let key = spec.key();
        if c.action == Action::Replace {
            if let Some(id) = &c.cloud_id {
                mark(
                    state.resources.get_mut(&key).map(|r| &mut r.pending),
                    PendingKind::Delete,
                    (self.clock)(),
                );
                self.commit(state).await?;
                if let Err(e) = self
                    .cloud
                    .delete_resource(&self.scope, &spec.kind, id)
                    .await
                {
                    self.failed(c, &e, report);
                    return Ok(());
                }
                state.resources.remove(&key);
                self.commit(state).await?;
            }
        }
        state.resources.insert(
            key.clone(),
            resource_record(spec, None, (self.clock)(), true),
        );
        self.commit(state).await?;
        let tags = object_tags(&self.scope, &spec.name, &spec.hash(), Some(&spec.kind));
        match self.cloud.create_resource(&self.scope, spec, &tags).await {
            Ok(o) => {
                state.resources.insert(
                    key,
                    resource_record(spec, Some(o.cloud_id), (self.clock)(), false),
                );
                self.commit(state).await?;
                self.done(c, report);
            }
            Err(e) => {
                if !e.is_ambiguous() {
                    state.resources.remove(&key);
                    self.commit(state).await?;
                }
                self.failed(c, &e, report);
            }
        }
        Ok(())
    }

    async fn ensure_resource_deleted(
        &self,
        c: &Change,
        state: &mut State,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        if self.options.dry_run {
            self.done(c, report);
            return Ok(());
        }
        let key = crate::resource::resource_key(&c.kind, &c.name);
        let Some(id) = &c.cloud_id else { return Ok(()) };
        mark(
            state.resources.get_mut(&key).map(|r| &mut r.pending),
            PendingKind::Delete,
            (self.clock)(),
        );
        self.commit(state).await?;
        match self.cloud.delete_resource(&self.scope, &c.kind, id).await {
            Ok(()) => {
                state.resources.remove(&key);
                self.commit(state).await?;
                self.done(c, report);
            }
            Err(e) => self.failed(c, &e, report),
        }
        Ok(())
    }

    /// Creates every new instance (creates and the new half of replaces). Returns the old
    /// names of replaces whose replacement now exists.
    ///
    /// When the CI system manages runners, each instance's runner is registered first and
    /// its token rendered into the user data; a crash after that leaves runners that no
    /// record names, which the next plan deletes.
    async fn ensure_instances_created(
        &self,
        plan: &Plan,
        state: &mut State,
        report: &mut ApplyReport,
    ) -> Result<HashSet<String>, ApplyError> {
        let todo: Vec<&Change> = plan
            .changes
            .iter()
            .filter(|c| c.is_instance() && matches!(c.action, Action::Create | Action::Replace))
            .collect();
        let mut replaced = HashSet::new();
        if todo.is_empty() {
            return Ok(replaced);
        }
        if self.options.dry_run {
            for c in &todo {
                self.done(c, report);
                if c.action == Action::Replace {
                    replaced.insert(c.name.clone());
                }
            }
            return Ok(replaced);
        }
        let new_name = |c: &Change| c.replacement.clone().unwrap_or_else(|| c.name.clone());
        let mut runners = self.ensure_runners_registered(&todo, report).await;
        let mut ready: Vec<(&Change, String, Option<Secret>, Option<u64>)> = Vec::new();
        for c in &todo {
            let name = new_name(c);
            if self.ci.manages_runners() && !runners.contains_key(&name) {
                continue; // its registration failed and was reported
            }
            let runner = runners.remove(&name);
            match self.user_data(&name, runner.as_ref().map(|r| &r.token)) {
                Ok(user_data) => ready.push((c, name, user_data, runner.map(|r| r.id))),
                Err(e) => {
                    self.failed(c, &e, report);
                    self.discard_runner(runner.map(|r| r.id)).await;
                }
            }
        }

        // Split into batches first: each batch's token is recorded with its pending
        // records, so the next plan can match instances a cloud made without names.
        let now = (self.clock)();
        let size = self.options.batch_size.min(self.cloud.max_batch()).max(1);
        let mut batches: Vec<(String, Vec<Launch<'_>>)> = Vec::new();
        for group in chunk(ready, size) {
            let names: Vec<&str> = group.iter().map(|(_, n, _, _)| n.as_str()).collect();
            let token = naming::batch_token(&names);
            let mut requests = Vec::with_capacity(group.len());
            for (c, name, user_data, runner) in group {
                let spec = c.instance.clone().unwrap_or_else(|| InstanceSpec {
                    image: String::new(),
                    instance_types: Vec::new(),
                    template_hash: None,
                    labels: BTreeMap::new(),
                });
                let mut record = pending_record(&name, &spec, now, &token);
                record.jobs.runner_id = runner;
                state.instances.insert(name.clone(), record);
                if let Some(i) = naming::instance_index(&self.scope.stack, &name) {
                    state.next_index = state.next_index.max(i + 1);
                }
                let mut t = object_tags(&self.scope, &name, &spec.hash(), None);
                t.extend(spec.labels.clone());
                requests.push((
                    CreateInstance {
                        name,
                        spec,
                        tags: t,
                        user_data,
                    },
                    c,
                    runner,
                ));
            }
            batches.push((token, requests));
        }
        if batches.is_empty() {
            return Ok(replaced);
        }
        // Record every create (and its runner) as pending in one write before the first call.
        self.commit(state).await?;

        let mut calls = stream::iter(batches.into_iter().map(|(token, batch)| async move {
            let reqs: Vec<CreateInstance> = batch.iter().map(|(r, _, _)| r.clone()).collect();
            let result = self
                .cloud
                .create_instances(&self.scope, &token, &reqs)
                .await;
            (batch, result)
        }))
        .buffer_unordered(self.options.concurrency.max(1));

        while let Some((batch, result)) = calls.next().await {
            let outcome = match result {
                Ok(o) => o,
                Err(e) => CreateOutcome {
                    created: Vec::new(),
                    failed: batch
                        .iter()
                        .map(|(r, _, _)| (r.name.clone(), e.clone()))
                        .collect(),
                },
            };
            let created: HashMap<&str, &ObservedInstance> = outcome
                .created
                .iter()
                .map(|o| (o.name.as_str(), o))
                .collect();
            let failed: HashMap<&str, &CloudError> = outcome
                .failed
                .iter()
                .map(|(n, e)| (n.as_str(), e))
                .collect();
            let started = (self.clock)();
            for (req, c, runner) in &batch {
                if let Some(o) = created.get(req.name.as_str()) {
                    if let Some(rec) = state.instances.get_mut(&req.name) {
                        rec.cloud_id = Some(o.cloud_id.clone());
                        rec.instance_type = o.instance_type.clone();
                        rec.lifecycle = o.lifecycle;
                        rec.address = o.address.clone();
                        rec.pending = None;
                        rec.started_at = Some(started);
                    }
                    if c.action == Action::Replace {
                        replaced.insert(c.name.clone());
                    }
                    self.done(c, report);
                } else {
                    let err = failed
                        .get(req.name.as_str())
                        .map(|e| (*e).clone())
                        .unwrap_or_else(|| self.no_result("create", &req.name));
                    // A definite refusal made nothing: drop the pending record and the
                    // runner. An ambiguous failure may have made it: keep both for the next
                    // plan to settle.
                    if !err.is_ambiguous() {
                        state.instances.remove(&req.name);
                        self.discard_runner(*runner).await;
                    }
                    self.failed(c, &err, report);
                }
            }
            self.commit(state).await?;
        }
        Ok(replaced)
    }

    /// Registers one runner per new instance, when the CI system manages runners. A failed
    /// registration fails its instance's create.
    async fn ensure_runners_registered(
        &self,
        todo: &[&Change],
        report: &mut ApplyReport,
    ) -> HashMap<String, NewRunner> {
        let mut out = HashMap::new();
        if !self.ci.manages_runners() {
            return out;
        }
        let mut calls = stream::iter(todo.iter().map(|c| async move {
            let name = c.replacement.clone().unwrap_or_else(|| c.name.clone());
            let result = self.ci.create_runner(&name).await;
            (*c, name, result)
        }))
        .buffer_unordered(self.options.concurrency.max(1));
        while let Some((c, name, result)) = calls.next().await {
            match result {
                Ok(r) => {
                    out.insert(name, r);
                }
                Err(e) => self.failed(c, &e, report),
            }
        }
        out
    }

    /// The user data `name` boots with: the stack's templates, with the instance's own
    /// runner token when it has one.
    fn user_data(&self, name: &str, token: Option<&Secret>) -> Result<Option<Secret>, RenderError> {
        let Some(r) = &self.renderer else {
            return Ok(None);
        };
        let text = match token {
            Some(t) => r
                .clone()
                .with_token(t.clone())
                .user_data(name, Secrets::Shown)?,
            None => r.user_data(name, Secrets::Shown)?,
        };
        Ok(text.map(Secret::new))
    }

    /// Deletes a runner whose instance will not exist. Best effort: a runner left behind
    /// is an orphan the next plan deletes.
    async fn discard_runner(&self, runner: Option<u64>) {
        let Some(id) = runner else { return };
        if let Err(e) = self.ci.delete_runner(id).await {
            tracing::warn!(
                runner = id,
                "could not delete an unused runner (the next plan will): {e}"
            );
        }
    }

    fn no_result(&self, operation: &str, what: &str) -> CloudError {
        CloudError::Transient {
            provider: self.cloud.name().to_string(),
            operation: operation.into(),
            code: "NoResult".into(),
            detail: crate::cloud::Detail(format!("the cloud did not report instance {what}")),
        }
    }

    /// Pauses `runner` and asks how many jobs it still runs.
    async fn pause_and_count(&self, runner: u64) -> Result<u32, CiError> {
        self.ci.set_paused(runner, true).await?;
        self.ci.running_jobs(runner).await
    }

    /// Deletes instances (deletes, duplicates, and the old half of successful replaces).
    ///
    /// On `up`, an instance with a runner is drained first: its runner is paused (and the
    /// pause recorded), and the VM is deleted only if no job runs on it; otherwise the step
    /// is deferred and a later plan deletes it once its jobs end. The runner is deleted
    /// after its VM. `destroy` deletes without waiting.
    async fn ensure_instances_deleted(
        &self,
        plan: &Plan,
        replaced: &HashSet<String>,
        state: &mut State,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let todo: Vec<&Change> = plan
            .changes
            .iter()
            .filter(|c| {
                c.is_instance()
                    && (c.action == Action::Delete
                        || (c.action == Action::Replace && replaced.contains(&c.name)))
            })
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        if self.options.dry_run {
            for c in todo.iter().filter(|c| c.action == Action::Delete) {
                self.done(c, report);
            }
            return Ok(());
        }
        let now = (self.clock)();
        let drain = plan.operation != Operation::Destroy && self.ci.manages_runners();
        let mut targets: Vec<(String, &Change, Option<u64>)> = Vec::new();
        for c in &todo {
            let Some(id) = &c.cloud_id else { continue };
            let rec = state
                .instances
                .get_mut(&c.name)
                .filter(|r| r.cloud_id.as_deref() == Some(id.as_str()));
            let runner = rec.as_ref().and_then(|r| r.jobs.runner_id);
            if let Some(rec) = rec {
                if drain && runner.is_some() && rec.draining_since.is_none() {
                    rec.draining_since = Some(now);
                }
            }
            targets.push((id.clone(), *c, runner));
        }

        if drain {
            // The pause is recorded before it is made, so a crash leaves a draining record
            // that the next plan finishes or gives up.
            self.commit(state).await?;
            let checks: Vec<(usize, Result<u32, CiError>)> =
                stream::iter(targets.iter().enumerate().filter_map(|(i, (_, _, r))| {
                    r.map(|id| async move { (i, self.pause_and_count(id).await) })
                }))
                .buffer_unordered(self.options.concurrency.max(1))
                .collect()
                .await;
            let mut keep = vec![true; targets.len()];
            for (i, result) in checks {
                let (_, c, runner) = &targets[i];
                match result {
                    Ok(0) => {}
                    Ok(n) => {
                        keep[i] = false;
                        self.deferred(
                            c,
                            format!(
                                "runner #{} is paused; {n} jobs still run on it, so the VM is deleted once they end",
                                runner.unwrap_or_default()
                            ),
                            report,
                        );
                    }
                    Err(e) => {
                        keep[i] = false;
                        self.failed(c, &e, report);
                    }
                }
            }
            let mut k = keep.into_iter();
            targets.retain(|_| k.next().unwrap_or(false));
        }
        if targets.is_empty() {
            return Ok(());
        }

        for (id, c, _) in &targets {
            if let Some(rec) = state.instances.get_mut(&c.name) {
                if rec.cloud_id.as_deref() == Some(id.as_str()) {
                    rec.pending = Some(PendingOp {
                        op: PendingKind::Delete,
                        since: now,
                        batch: None,
                    });
                }
            }
        }
        self.commit(state).await?;

        let size = self.options.batch_size.min(self.cloud.max_batch()).max(1);
        let batches = chunk(targets, size);
        let mut calls = stream::iter(batches.into_iter().map(|batch| async move {
            let ids: Vec<String> = batch.iter().map(|(id, _, _)| id.clone()).collect();
            let result = self.cloud.delete_instances(&self.scope, &ids).await;
            (batch, result)
        }))
        .buffer_unordered(self.options.concurrency.max(1));

        while let Some((batch, result)) = calls.next().await {
            let outcome = match result {
                Ok(o) => o,
                Err(e) => DeleteOutcome {
                    deleted: Vec::new(),
                    failed: batch
                        .iter()
                        .map(|(id, _, _)| (id.clone(), e.clone()))
                        .collect(),
                },
            };
            let deleted: HashSet<&str> = outcome.deleted.iter().map(String::as_str).collect();
            let failed: HashMap<&str, &CloudError> = outcome
                .failed
                .iter()
                .map(|(n, e)| (n.as_str(), e))
                .collect();
            for (id, c, runner) in &batch {
                if deleted.contains(id.as_str()) {
                    let ours = state
                        .instances
                        .get(&c.name)
                        .is_some_and(|r| r.cloud_id.as_deref() == Some(id.as_str()));
                    if ours {
                        state.instances.remove(&c.name);
                    }
                    // The VM is gone: now its runner goes.
                    self.discard_runner(*runner).await;
                    // The old half of a replace was counted when its replacement was made.
                    if c.action == Action::Delete {
                        self.done(c, report);
                    }
                } else {
                    let err = failed
                        .get(id.as_str())
                        .map(|e| (*e).clone())
                        .unwrap_or_else(|| self.no_result("delete", id));
                    self.failed(c, &err, report);
                }
            }
            self.commit(state).await?;
        }
        Ok(())
    }

    /// Deletes runners whose instance is gone. State records nothing about them.
    async fn ensure_runners_deleted(&self, plan: &Plan, report: &mut ApplyReport) {
        for c in plan
            .changes
            .iter()
            .filter(|c| c.kind == RUNNER && c.action == Action::Delete)
        {
            if self.options.dry_run {
                self.done(c, report);
                continue;
            }
            let Some(id) = c.cloud_id.as_deref().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            match self.ci.delete_runner(id).await {
                Ok(()) => self.done(c, report),
                Err(e) => self.failed(c, &e, report),
            }
        }
    }

    /// The plan's instance changes of `action`; `None` when there are none, or in a dry run
    /// (where each counts as done).
    fn instance_steps<'p>(
        &self,
        plan: &'p Plan,
        action: Action,
        report: &mut ApplyReport,
    ) -> Option<Vec<&'p Change>> {
        let todo: Vec<&Change> = plan
            .changes
            .iter()
            .filter(|c| c.is_instance() && c.action == action)
            .collect();
        if self.options.dry_run {
            for c in &todo {
                self.done(c, report);
            }
            return None;
        }
        (!todo.is_empty()).then_some(todo)
    }

    /// Starts stopped instances, and returns draining ones to service; then resumes their
    /// runners.
    async fn ensure_instances_started(
        &self,
        plan: &Plan,
        state: &mut State,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let Some(todo) = self.instance_steps(plan, Action::Start, report) else {
            return Ok(());
        };
        let stopped = |c: &Change| {
            state
                .instances
                .get(&c.name)
                .is_some_and(|r| matches!(r.lifecycle, Lifecycle::Stopped | Lifecycle::Stopping))
        };
        let (power, resume): (Vec<&Change>, Vec<&Change>) = todo.iter().partition(|c| stopped(c));
        let mut ok: Vec<&Change> = resume;
        if !power.is_empty() {
            let (started, failed) = self.power(&power, true).await;
            ok.extend(started);
            for (c, e) in failed {
                self.failed(c, &e, report);
            }
        }
        let now = (self.clock)();
        for c in ok {
            let runner = state.instances.get(&c.name).and_then(|r| r.jobs.runner_id);
            if let Some(rec) = state.instances.get_mut(&c.name) {
                if matches!(rec.lifecycle, Lifecycle::Stopped | Lifecycle::Stopping) {
                    rec.lifecycle = Lifecycle::Starting;
                    rec.started_at = Some(now);
                    rec.warming = Some(Warming::new(Phase::Resume, now));
                }
                rec.draining_since = None;
            }
            match runner {
                Some(id) if self.ci.manages_runners() => {
                    match self.ci.set_paused(id, false).await {
                        Ok(()) => self.done(c, report),
                        Err(e) => self.failed(c, &e, report),
                    }
                }
                _ => self.done(c, report),
            }
        }
        self.commit(state).await
    }

    /// Stops idle instances. Each runner is paused first; an instance that turns out to run
    /// a job is resumed and left running (the step is deferred, not failed).
    async fn ensure_instances_stopped(
        &self,
        plan: &Plan,
        state: &mut State,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let Some(todo) = self.instance_steps(plan, Action::Stop, report) else {
            return Ok(());
        };
        let mut idle: Vec<&Change> = Vec::new();
        for c in &todo {
            let runner = state
                .instances
                .get(&c.name)
                .and_then(|r| r.jobs.runner_id)
                .filter(|_| self.ci.manages_runners());
            let Some(id) = runner else {
                idle.push(c);
                continue;
            };
            match self.pause_and_count(id).await {
                Ok(0) => idle.push(c),
                Ok(n) => {
                    let _ = self.ci.set_paused(id, false).await;
                    self.deferred(
                        c,
                        format!("{n} jobs run on it: not stopped, runner #{id} resumed"),
                        report,
                    );
                }
                Err(e) => self.failed(c, &e, report),
            }
        }
        let (stopped, failed) = self.power(&idle, false).await;
        for (c, e) in failed {
            // It keeps running: let its runner take jobs again.
            if let Some(id) = state.instances.get(&c.name).and_then(|r| r.jobs.runner_id) {
                let _ = self.ci.set_paused(id, false).await;
            }
            self.failed(c, &e, report);
        }
        for c in stopped {
            if let Some(rec) = state.instances.get_mut(&c.name) {
                rec.lifecycle = Lifecycle::Stopping;
            }
            self.done(c, report);
        }
        self.commit(state).await
    }

    /// Stops (`start` false) or starts a set of instances, in batches.
    async fn power<'c>(
        &self,
        changes: &[&'c Change],
        start: bool,
    ) -> (Vec<&'c Change>, Vec<(&'c Change, CloudError)>) {
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let with_ids: Vec<(String, &'c Change)> = changes
            .iter()
            .filter_map(|c| c.cloud_id.clone().map(|id| (id, *c)))
            .collect();
        let size = self.options.batch_size.min(self.cloud.max_batch()).max(1);
        for batch in chunk(with_ids, size) {
            let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
            let result = if start {
                self.cloud.start_instances(&self.scope, &ids).await
            } else {
                self.cloud.stop_instances(&self.scope, &ids).await
            };
            let outcome = match result {
                Ok(o) => o,
                Err(e) => PowerOutcome {
                    changed: Vec::new(),
                    failed: ids.iter().map(|id| (id.clone(), e.clone())).collect(),
                },
            };
            let changed: HashSet<&str> = outcome.changed.iter().map(String::as_str).collect();
            let errors: HashMap<&str, &CloudError> = outcome
                .failed
                .iter()
                .map(|(n, e)| (n.as_str(), e))
                .collect();
            for (id, c) in batch {
                if changed.contains(id.as_str()) {
                    done.push(c);
                } else {
                    let op = if start { "start" } else { "stop" };
                    let e = errors
                        .get(id.as_str())
                        .map(|e| (*e).clone())
                        .unwrap_or_else(|| self.no_result(op, &id));
                    failed.push((c, e));
                }
            }
        }
        (done, failed)
    }
}

/// One instance of a create batch: the request, its plan change, and its runner id.
type Launch<'c> = (CreateInstance, &'c Change, Option<u64>);

fn chunk<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(size).collect());
    }
    out
}

fn mark(pending: Option<&mut Option<PendingOp>>, op: PendingKind, since: DateTime<Utc>) {
    if let Some(p) = pending {
        *p = Some(PendingOp {
            op,
            since,
            batch: None,
        });
    }
}

/// Applies an adopt or forget to state.
pub(crate) fn settle_record(c: &Change, state: &mut State, now: DateTime<Utc>) {
    match (c.action, c.is_instance()) {
        (Action::Forget, true) => {
            let ours = state
                .instances
                .get(&c.name)
                .is_some_and(|r| r.cloud_id.is_none() || r.cloud_id == c.cloud_id);
            if ours {
                state.instances.remove(&c.name);
            }
        }
        (Action::Forget, false) => {
            state
                .resources
                .remove(&crate::resource::resource_key(&c.kind, &c.name));
        }
        (Action::Adopt, true) => {
            let Some(o) = &c.observed else { return };
            let previous = state.instances.remove(&o.name);
            let template_hash = match &previous {
                Some(r) => r.template_hash.clone(),
                None => c.instance.as_ref().and_then(|s| s.template_hash.clone()),
            };
            let mut record = InstanceRecord::from_observed(o, template_hash);
            if let Some(p) = previous {
                record.created_at = p.created_at;
                record.jobs = p.jobs;
                record.draining_since = p.draining_since;
                record.started_at = p.started_at.or(record.started_at);
            }
            state.instances.insert(o.name.clone(), record);
        }
        (Action::Adopt, false) => {
            let Some(o) = &c.observed_resource else {
                return;
            };
            let key = crate::resource::resource_key(&o.kind, &o.name);
            let depends_on = state
                .resources
                .get(&key)
                .map(|r| r.depends_on.clone())
                .unwrap_or_default();
            state.resources.insert(
                key,
                ResourceRecord {
                    kind: o.kind.clone(),
                    name: o.name.clone(),
                    cloud_id: Some(o.cloud_id.clone()),
                    spec_hash: o.spec_hash.clone(),
                    depends_on,
                    created_at: now,
                    pending: None,
                },
            );
        }
        _ => {}
    }
}

fn pending_record(
    name: &str,
    spec: &InstanceSpec,
    now: DateTime<Utc>,
    batch: &str,
) -> InstanceRecord {
    InstanceRecord {
        name: name.to_string(),
        cloud_id: None,
        spec_hash: spec.hash(),
        image: spec.image.clone(),
        instance_type: String::new(),
        template_hash: spec.template_hash.clone(),
        created_at: now,
        lifecycle: Lifecycle::Unknown,
        address: None,
        jobs: JobFacts::default(),
        pending: Some(PendingOp {
            op: PendingKind::Create,
            since: now,
            batch: Some(batch.to_string()),
        }),
        started_at: None,
        draining_since: None,
        warming: Some(Warming::new(Phase::Boot, now)),
    }
}

fn resource_record(
    spec: &ResourceSpec,
    cloud_id: Option<String>,
    now: DateTime<Utc>,
    pending: bool,
) -> ResourceRecord {
    ResourceRecord {
        kind: spec.kind.clone(),
        name: spec.name.clone(),
        cloud_id,
        spec_hash: spec.hash(),
        depends_on: spec.depends_on.clone(),
        created_at: now,
        pending: pending.then_some(PendingOp {
            op: PendingKind::Create,
            since: now,
            batch: None,
        }),
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

/// `error: cause: cause`, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
