//! Step 5: instances. Replace what is out of date (including VMs whose runner never came
//! online), then follow the policy: its per-instance actions when it gives them, else
//! create or delete to reach the count.

use std::collections::{BTreeSet, HashMap};

use crate::cloud::Lifecycle;
use crate::naming;
use crate::plan::{instances, Action, Change, Operation, INSTANCE};
use crate::policy::PlannedAction;
use crate::runners::{self};

use super::{Live, PlanInput};

/// Step 5: instances. Replace what is out of date, then follow the policy's actions, or
/// create or delete to reach the count.
pub(super) fn plan_instances(
    input: &PlanInput<'_>,
    live: &[Live],
    next: &mut u64,
    changes: &mut Vec<Change>,
    notes: &mut Vec<String>,
) {
    let desired = input.desired;
    let outdated: Vec<Option<String>> = live
        .iter()
        .map(|l| {
            desired
                .spec
                .mismatch(&l.image, &l.instance_type, l.template_hash.as_deref())
                .or_else(|| never_online(input, l))
        })
        .collect();

    let mut new_name = || {
        let name = naming::instance_name(input.stack, *next);
        *next += 1;
        name
    };
    let mut steps = Steps::default();
    match &desired.actions {
        Some(actions) if input.operation == Operation::Up => {
            follow_actions(actions, live, &mut new_name, &mut steps, notes);
        }
        _ => by_count(input, live, &outdated, &mut new_name, &mut steps, notes),
    }

    for (i, l) in live.iter().enumerate() {
        if steps.deleted.contains(&i) {
            continue;
        }
        if let Some(why) = &outdated[i] {
            let mut c = Change::new(Action::Replace, INSTANCE, &l.name, why.clone());
            c.cloud_id = l.cloud_id.clone();
            c.replacement = Some(new_name());
            c.instance = Some(desired.spec.clone());
            steps.replaces.push(c);
        }
    }
    for c in &mut steps.creates {
        c.instance = Some(desired.spec.clone());
    }
    // Listed in the order apply runs them (the executor phases by action).
    changes.extend(steps.creates);
    changes.extend(steps.starts);
    changes.extend(steps.replaces);
    changes.extend(steps.stops);
    changes.extend(steps.deletes);
}

/// The instance steps of one plan, by phase.
#[derive(Default)]
struct Steps {
    creates: Vec<Change>,
    starts: Vec<Change>,
    replaces: Vec<Change>,
    stops: Vec<Change>,
    deletes: Vec<Change>,
    /// Indexes into `live` of the instances deleted.
    deleted: BTreeSet<usize>,
}

/// Why `l` should be replaced because its runner never came online, if it should.
fn never_online(input: &PlanInput<'_>, l: &Live) -> Option<String> {
    if input.operation != Operation::Up {
        return None;
    }
    let runners = input.observed.runners.as_ref()?;
    let rec = l.record.as_ref()?;
    runners::never_online(rec, runners, &input.desired.runner_rules, input.now)
}

/// The count policy: delete (idle, out-of-date and newest first) or create to reach
/// `desired.instances`.
fn by_count(
    input: &PlanInput<'_>,
    live: &[Live],
    outdated: &[Option<String>],
    new_name: &mut impl FnMut() -> String,
    steps: &mut Steps,
    notes: &mut Vec<String>,
) {
    let desired = input.desired;
    let want = desired.instances as usize;
    let have = live.len();
    // Scale-in candidates: out-of-date ones first (deleting beats replacing them), then
    // ones with no job running (a busy one would only drain), then the newest.
    let mut order: Vec<usize> = (0..have).collect();
    order.sort_by(|&a, &b| {
        outdated[b]
            .is_some()
            .cmp(&outdated[a].is_some())
            .then((live[a].running_jobs() > 0).cmp(&(live[b].running_jobs() > 0)))
            .then(live[b].index.cmp(&live[a].index))
            .then(live[b].name.cmp(&live[a].name))
    });
    if have > want {
        if desired.may_scale_in {
            for &i in order.iter().take(have - want) {
                let l = &live[i];
                let mut why = match input.operation {
                    Operation::Destroy => "destroy: nothing is wanted".to_string(),
                    _ => format!("scale in: {have} -> {}", instances(want as u64)),
                };
                if let Some(d) = &outdated[i] {
                    why.push_str(&format!(" (also out of date: {d})"));
                }
                let mut c = Change::new(Action::Delete, INSTANCE, &l.name, why);
                c.cloud_id = l.cloud_id.clone();
                steps.deletes.push(c);
                steps.deleted.insert(i);
            }
        } else {
            notes.push(format!(
                "keeping {} although {want} wanted: demand is unknown, and the fleet never scales in on unknown demand",
                instances(have as u64)
            ));
        }
    }
    for _ in have..want {
        steps.creates.push(Change::new(
            Action::Create,
            INSTANCE,
            new_name(),
            format!("scale out: {have} -> {}", instances(want as u64)),
        ));
    }
}

/// The demand policy: its creates, starts, stops and retirements, each with its reason.
/// An action on an instance that is not in the state the policy assumed is skipped, with a
/// note.
fn follow_actions(
    actions: &[PlannedAction],
    live: &[Live],
    new_name: &mut impl FnMut() -> String,
    steps: &mut Steps,
    notes: &mut Vec<String>,
) {
    let index: HashMap<&str, usize> = live
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.as_str(), i))
        .collect();
    for a in actions {
        let (action, instance, why) = match a {
            PlannedAction::Create { count, why } => {
                for _ in 0..*count {
                    steps.creates.push(Change::new(
                        Action::Create,
                        INSTANCE,
                        new_name(),
                        format!("scale out: {why}"),
                    ));
                }
                continue;
            }
            PlannedAction::Start { instance, why } => (Action::Start, instance, why),
            PlannedAction::Stop { instance, why } => (Action::Stop, instance, why),
            PlannedAction::Retire { instance, why } => (Action::Delete, instance, why),
        };
        let Some(&i) = index.get(instance.as_str()) else {
            notes.push(format!(
                "the policy asked to {} {instance}, which the cloud does not report: skipped",
                action.as_str()
            ));
            continue;
        };
        let l = &live[i];
        let fits = match action {
            Action::Start => matches!(l.lifecycle, Lifecycle::Stopped),
            Action::Stop => matches!(l.lifecycle, Lifecycle::Running),
            _ => true,
        };
        if !fits {
            notes.push(format!(
                "the policy asked to {} {instance}, which is {}: skipped",
                action.as_str(),
                l.lifecycle.as_str()
            ));
            continue;
        }
        let reason = match action {
            Action::Delete => format!("retire: {why}"),
            _ => why.to_string(),
        };
        let mut c = Change::new(action, INSTANCE, &l.name, reason);
        c.cloud_id = l.cloud_id.clone();
        match action {
            Action::Start => steps.starts.push(c),
            Action::Stop => steps.stops.push(c),
            _ => {
                steps.deleted.insert(i);
                steps.deletes.push(c);
            }
        }
    }
}
