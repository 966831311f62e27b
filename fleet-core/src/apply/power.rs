//! Phase 4: starts (a stopped VM resumes, or a draining one goes back to service; then its
//! runner is resumed) and stops (the runner is paused and checked idle first; a busy VM is
//! resumed and its stop deferred).

use crate::autoscale::Phase;
use crate::ci::CiError;
use crate::cloud::{CloudError, Lifecycle};
use crate::plan::{Action, Change, Plan};
use crate::state::{State, Warming};

use super::batch::chunk;
use super::{ApplyError, ApplyReport, Executor};

impl Executor<'_> {
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
    pub(super) async fn ensure_instances_started(
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
    pub(super) async fn ensure_instances_stopped(
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
        let size = self.batch_size();
        for batch in chunk(with_ids, size) {
            let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
            let result = if start {
                self.cloud.start_instances(&self.scope, &ids).await
            } else {
                self.cloud.stop_instances(&self.scope, &ids).await
            };
            let op = if start { "start" } else { "stop" };
            let keys: Vec<&str> = ids.iter().map(String::as_str).collect();
            let answer =
                result.map(|o| (o.changed.into_iter().map(|id| (id, ())).collect(), o.failed));
            for ((_, c), result) in batch.iter().zip(self.per_object(op, &keys, answer)) {
                match result {
                    Ok(()) => done.push(*c),
                    Err(e) => failed.push((*c, e)),
                }
            }
        }
        (done, failed)
    }

    /// Pauses `runner` and asks how many jobs it still runs.
    pub(super) async fn pause_and_count(&self, runner: u64) -> Result<u32, CiError> {
        self.ci.set_paused(runner, true).await?;
        self.ci.running_jobs(runner).await
    }
}
