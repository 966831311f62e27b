//! Steps 3 and 4: runners no record names are deleted; instances whose runner is paused
//! for scale-in are deleted once no job runs on them, or given back to service after the
//! drain timeout.

use std::collections::BTreeSet;

use crate::cloud::Lifecycle;
use crate::plan::{Action, Change, Operation, INSTANCE, RUNNER};
use crate::runners::{self, DrainStep};

use super::{Live, PlanInput};

/// Step 3: runners no record names (their VM is gone, or a crash came between registering
/// the runner and recording it) are deleted, including runners of records this plan forgets.
pub(super) fn plan_runners(input: &PlanInput<'_>, changes: &mut Vec<Change>) {
    let Some(runners) = &input.observed.runners else {
        return;
    };
    let forgotten: BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.is_instance() && c.action == Action::Forget)
        .map(|c| c.name.as_str())
        .collect();
    let kept = input
        .state
        .instances
        .values()
        .filter(|r| !forgotten.contains(r.name.as_str()));
    let mut orphans = Vec::new();
    for r in runners::orphans(kept, runners) {
        let mut c = Change::new(
            Action::Delete,
            RUNNER,
            &r.instance,
            format!(
                "runner #{} names {}, which this stack no longer records (its VM is gone or was never made)",
                r.id, r.instance
            ),
        );
        c.cloud_id = Some(r.id.to_string());
        orphans.push(c);
    }
    changes.extend(orphans);
}

/// Step 4: instances whose runner is paused for scale-in. Returns the instances that serve
/// jobs (everything not draining); destroy treats draining instances like the others.
pub(super) fn plan_drains(
    input: &PlanInput<'_>,
    live: &[Live],
    changes: &mut Vec<Change>,
    notes: &mut Vec<String>,
) -> Vec<Live> {
    let mut serving = Vec::with_capacity(live.len());
    for l in live {
        let (Some(since), Some(rec)) = (l.draining_since(), &l.record) else {
            if let Some(id) = paused_by_interruption(input, l) {
                let mut c = Change::new(
                    Action::Start,
                    INSTANCE,
                    &l.name,
                    format!("runner #{id} is paused but its VM runs and is not draining (an interrupted stop): resuming it"),
                );
                c.cloud_id = l.cloud_id.clone();
                changes.push(c);
            }
            serving.push(l.clone());
            continue;
        };
        if input.operation == Operation::Destroy {
            serving.push(l.clone());
            continue;
        }
        // A runner the CI system no longer lists runs nothing.
        let running = input.observed.runners.as_ref().map(|rs| {
            rs.iter()
                .find(|r| Some(r.id) == rec.jobs.runner_id)
                .map_or(0, |r| r.running_jobs)
        });
        let rules = &input.desired.runner_rules;
        match runners::drain_step(rec, since, running, rules, input.now) {
            DrainStep::Delete(why) => {
                let mut c = Change::new(Action::Delete, INSTANCE, &l.name, why);
                c.cloud_id = l.cloud_id.clone();
                changes.push(c);
            }
            DrainStep::Wait(note) => notes.push(note),
            DrainStep::GiveUp(why) => {
                let mut c = Change::new(Action::Start, INSTANCE, &l.name, why);
                c.cloud_id = l.cloud_id.clone();
                changes.push(c);
            }
        }
    }
    serving
}

/// The runner id of a running, non-draining VM whose runner GitLab reports paused: a stop
/// was interrupted between pausing the runner and stopping the VM.
fn paused_by_interruption(input: &PlanInput<'_>, l: &Live) -> Option<u64> {
    if input.operation != Operation::Up || l.lifecycle != Lifecycle::Running {
        return None;
    }
    let id = l.record.as_ref()?.jobs.runner_id?;
    let runners = input.observed.runners.as_ref()?;
    runners.iter().any(|r| r.id == id && r.paused).then_some(id)
}
