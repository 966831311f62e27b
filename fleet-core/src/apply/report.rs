//! What an apply tells: progress while it runs, and the report at the end (steps done,
//! failed, deferred). A deferred step is not a failure: it waits for something that is not
//! an error (a job still running on the VM) and a later plan picks it up.

use crate::plan::{Action, Change, Summary};
use crate::state::StateError;

use super::Executor;

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

/// A change put off for a reason that is not an error; a later plan picks it up.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Deferral {
    /// What was put off.
    pub action: Action,
    /// `instance` or the resource kind.
    pub kind: String,
    /// The name.
    pub name: String,
    /// Why it waits.
    pub reason: String,
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
    /// Changes put off for a reason that is not an error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<Deferral>,
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

impl Executor<'_> {
    pub(super) fn done(&self, c: &Change, report: &mut ApplyReport) {
        report.done.count(c.action);
        let outcome = if self.options.dry_run {
            StepOutcome::WouldDo
        } else {
            StepOutcome::Done
        };
        self.progress.step(c, &outcome);
    }

    pub(super) fn deferred(&self, c: &Change, why: String, report: &mut ApplyReport) {
        tracing::info!(action = c.action.as_str(), kind = %c.kind, name = %c.name, "deferred: {why}");
        report.deferred.push(Deferral {
            action: c.action,
            kind: c.kind.clone(),
            name: c.name.clone(),
            reason: why.clone(),
        });
        self.progress.step(c, &StepOutcome::Deferred(why));
    }

    pub(super) fn failed(
        &self,
        c: &Change,
        error: &dyn std::error::Error,
        report: &mut ApplyReport,
    ) {
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
