//! Phases 5 and 6: instance deletes (deletes, duplicates, the old half of each replace
//! whose replacement exists), drained first on `up`, batched; then the runners whose
//! instance is gone.

use std::collections::HashSet;

use futures_util::stream::{self, StreamExt};

use crate::ci::CiError;
use crate::plan::{Action, Change, Operation, Plan, RUNNER};
use crate::state::{PendingKind, PendingOp, State};

use super::batch::chunk;
use super::{ApplyError, ApplyReport, Executor};

impl Executor<'_> {
    /// Deletes instances (deletes, duplicates, and the old half of successful replaces).
    ///
    /// On `up`, an instance with a runner is drained first: its runner is paused (and the
    /// pause recorded), and the VM is deleted only if no job runs on it; otherwise the step
    /// is deferred and a later plan deletes it once its jobs end. The runner is deleted
    /// after its VM. `destroy` deletes without waiting.
    pub(super) async fn ensure_instances_deleted(
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

        let size = self.batch_size();
        let batches = chunk(targets, size);
        let mut calls = stream::iter(batches.into_iter().map(|batch| async move {
            let ids: Vec<String> = batch.iter().map(|(id, _, _)| id.clone()).collect();
            let result = self.cloud.delete_instances(&self.scope, &ids).await;
            (batch, result)
        }))
        .buffer_unordered(self.options.concurrency.max(1));

        while let Some((batch, result)) = calls.next().await {
            let ids: Vec<&str> = batch.iter().map(|(id, _, _)| id.as_str()).collect();
            let answer =
                result.map(|o| (o.deleted.into_iter().map(|id| (id, ())).collect(), o.failed));
            let results = self.per_object("delete", &ids, answer);
            for ((id, c, runner), result) in batch.iter().zip(results) {
                if result.is_ok() {
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
                } else if let Err(err) = result {
                    self.failed(c, &err, report);
                }
            }
            self.commit(state).await?;
        }
        Ok(())
    }

    /// Deletes runners whose instance is gone. State records nothing about them.
    pub(super) async fn ensure_runners_deleted(&self, plan: &Plan, report: &mut ApplyReport) {
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

    /// Deletes a runner whose instance will not exist. Best effort: a runner left behind
    /// is an orphan the next plan deletes.
    pub(super) async fn discard_runner(&self, runner: Option<u64>) {
        let Some(id) = runner else { return };
        if let Err(e) = self.ci.delete_runner(id).await {
            tracing::warn!(
                runner = id,
                "could not delete an unused runner (the next plan will): {e}"
            );
        }
    }
}
