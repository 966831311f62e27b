//! The planner: a pure function from (desired, state, observed, now) to a [`Plan`].
//!
//! It runs named steps in a fixed order, so the policy reads top to bottom:
//!
//! 1. `settle_instances` / `settle_resources`: match records with what the cloud
//!    reports; adopt tagged objects state lacks, forget records whose object is gone, and
//!    settle operations an interrupted apply left pending.
//! 2. `plan_resources`: create, replace or delete supporting resources.
//! 3. `plan_runners`: delete runners whose instance is gone (when the CI system manages a
//!    runner per instance).
//! 4. `plan_drains`: delete draining instances once no job runs on them, or give the drain
//!    up after the drain timeout.
//! 5. `plan_instances`: replace out-of-date instances (including ones whose runner never
//!    came online), then follow the policy: its per-instance actions (create, start, stop,
//!    retire) when it gives them, else create or delete to reach the desired count.
//!
//! Destroy is not a special case: it is a plan against [`Desired::nothing`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::cloud::Lifecycle;
use crate::cloud::{Observed, ObservedInstance, ObservedResource};
use crate::naming;
use crate::plan::{
    instances, Action, Change, Operation, Plan, INSTANCE, PLAN_FORMAT_VERSION, RUNNER,
};
use crate::policy::{Decision, PlannedAction};
use crate::resource::{dependency_order, topo_order, ResourceSpec};
use crate::runners::{self, DrainStep, RunnerRules};
use crate::spec::InstanceSpec;
use crate::stack::Stack;
use crate::state::{facts, InstanceRecord, PendingKind, State};

/// What the fleet should look like.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Instances wanted.
    pub instances: u32,
    /// What each should be.
    pub spec: InstanceSpec,
    /// Supporting resources, in dependency order.
    pub resources: Vec<ResourceSpec>,
    /// Why that many instances.
    pub reason: String,
    /// Whether instances may be deleted to reach the count.
    pub may_scale_in: bool,
    /// The policy's per-instance actions; `None`: reach `instances` by count.
    pub actions: Option<Vec<PlannedAction>>,
    /// Drain and online timeouts of the stack's runners.
    pub runner_rules: RunnerRules,
}

impl Desired {
    /// The instances and resources a stack declares, before a policy sized them: no
    /// instances and no scale-in until [`Desired::with_decision`] (or
    /// [`plan_deciding`]) gives the count.
    pub fn from_stack(stack: &Stack, template_hash: Option<String>) -> Desired {
        let specs: Vec<ResourceSpec> = stack.resources.iter().map(ResourceSpec::from).collect();
        // The stack loader rejects cycles, so the declared order is only a fallback.
        let order = dependency_order(&specs).unwrap_or_else(|_| (0..specs.len()).collect());
        Desired {
            instances: 0,
            spec: InstanceSpec {
                image: stack.instance.image.clone(),
                instance_types: stack.instance.types.clone(),
                template_hash,
                labels: stack.instance.labels.clone(),
            },
            resources: order.into_iter().map(|i| specs[i].clone()).collect(),
            reason: "not sized by a policy yet".into(),
            may_scale_in: false,
            actions: None,
            runner_rules: RunnerRules {
                drain_timeout: stack.runner.drain_timeout,
                online_timeout: stack.runner.online_timeout,
            },
        }
    }

    /// These instances and resources, sized by `decision` instead.
    pub fn with_decision(&self, decision: &Decision) -> Desired {
        Desired {
            instances: decision.desired,
            reason: decision.reason.clone(),
            may_scale_in: decision.may_scale_in,
            actions: decision.actions.clone(),
            ..self.clone()
        }
    }

    /// Nothing at all: what `destroy` plans against.
    pub fn nothing(spec: InstanceSpec) -> Desired {
        Desired {
            instances: 0,
            spec,
            resources: Vec::new(),
            reason: "destroy: nothing is wanted".into(),
            may_scale_in: true,
            actions: None,
            runner_rules: RunnerRules::default(),
        }
    }
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// Stack name.
    pub stack: &'a str,
    /// The cloud's label, for display.
    pub cloud: &'a str,
    /// What the plan is for.
    pub operation: Operation,
    /// Recorded.
    pub state: &'a State,
    /// Reported by the cloud.
    pub observed: &'a Observed,
    /// Declared (ignored for refresh).
    pub desired: &'a Desired,
    /// The time of planning.
    pub now: DateTime<Utc>,
}

/// A live instance after settling: recorded or adopted, and present in the cloud.
#[derive(Debug, Clone)]
struct Live {
    name: String,
    cloud_id: Option<String>,
    image: String,
    instance_type: String,
    template_hash: Option<String>,
    index: Option<u64>,
    /// What the cloud reports.
    lifecycle: Lifecycle,
    /// Its record (none for an instance adopted by this plan).
    record: Option<InstanceRecord>,
}

impl Live {
    fn draining_since(&self) -> Option<DateTime<Utc>> {
        self.record.as_ref().and_then(|r| r.draining_since)
    }

    fn running_jobs(&self) -> u32 {
        self.record.as_ref().map_or(0, |r| r.jobs.running)
    }
}

/// Makes the plan, for the desired fleet `input` gives.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    plan_steps(input, None)
}

/// Makes the plan, with the count and per-instance actions that `decide` chooses on the
/// fleet as it will be once settled: the adopts and forgets of step 1 applied to the state
/// (records of creates that never reached the cloud gone, instances the cloud has and state
/// lacks in). The rest of `input.desired` (spec, resources, runner rules) is the stack's.
pub fn plan_deciding(input: &PlanInput<'_>, decide: &dyn Fn(&State) -> Decision) -> Plan {
    plan_steps(input, Some(decide))
}

fn plan_steps(input: &PlanInput<'_>, decide: Option<&dyn Fn(&State) -> Decision>) -> Plan {
    let mut changes = Vec::new();
    let mut notes = Vec::new();

    let mut next = first_free_index(input);
    let live = settle_instances(input, &mut next, &mut changes);
    let live_resources = settle_resources(input, &mut changes);

    let decided;
    let input = &match decide {
        Some(decide) if input.operation != Operation::Refresh => {
            let mut settled = input.state.clone();
            for c in &changes {
                facts::settle(c, &mut settled, input.now);
            }
            decided = input.desired.with_decision(&decide(&settled));
            PlanInput {
                desired: &decided,
                ..*input
            }
        }
        _ => *input,
    };
    let (desired, decision) = match input.operation {
        Operation::Refresh => (None, None),
        _ => {
            let d = input.desired;
            let mut resource_changes = Vec::new();
            let deletes_after = plan_resources(input, &live_resources, &mut resource_changes);
            changes.extend(resource_changes);
            plan_runners(input, &mut changes);
            let serving = plan_drains(input, &live, &mut changes, &mut notes);
            plan_instances(input, &serving, &mut next, &mut changes, &mut notes);
            changes.extend(deletes_after);
            (Some(d.instances), Some(d.reason.clone()))
        }
    };

    Plan {
        format_version: PLAN_FORMAT_VERSION,
        stack: input.stack.to_string(),
        operation: input.operation,
        cloud: input.cloud.to_string(),
        lineage: input.state.lineage.clone(),
        serial: input.state.serial,
        desired,
        decision,
        notes,
        summary: Plan::summarize(&changes),
        changes,
        created_at: input.now,
    }
}

/// Step 1a: match instance records with the cloud.
fn settle_instances(input: &PlanInput<'_>, next: &mut u64, changes: &mut Vec<Change>) -> Vec<Live> {
    let state = input.state;
    let alive: Vec<&ObservedInstance> = input
        .observed
        .instances
        .iter()
        .filter(|o| !o.lifecycle.is_gone())
        .collect();
    let by_id: HashMap<&str, &ObservedInstance> =
        alive.iter().map(|o| (o.cloud_id.as_str(), *o)).collect();
    let mut by_name: HashMap<&str, Vec<&ObservedInstance>> = HashMap::new();
    for o in &alive {
        by_name.entry(o.name.as_str()).or_default().push(o);
    }

    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let mut live = Vec::new();
    for rec in state.instances.values() {
        let found = match &rec.cloud_id {
            Some(id) => by_id.get(id.as_str()).copied(),
            None => by_name
                .get(rec.name.as_str())
                .and_then(|v| {
                    v.iter()
                        .find(|o| !claimed.contains(o.cloud_id.as_str()))
                        .copied()
                })
                .or_else(|| {
                    // Made by a batch the cloud could not name: match by the batch token.
                    let batch = rec.pending.as_ref()?.batch.as_deref()?;
                    alive
                        .iter()
                        .find(|o| {
                            o.name.is_empty()
                                && o.batch.as_deref() == Some(batch)
                                && !claimed.contains(o.cloud_id.as_str())
                        })
                        .copied()
                }),
        };
        match found {
            Some(o) => {
                claimed.insert(o.cloud_id.as_str());
                if let Some(p) = &rec.pending {
                    let why = match p.op {
                        PendingKind::Create => {
                            "an interrupted create reached the cloud; recording it"
                        }
                        PendingKind::Delete => {
                            "an interrupted delete left it running; recording it again"
                        }
                    };
                    let mut named = o.clone();
                    named.name = rec.name.clone();
                    changes.push(adopt_instance(&named, why.to_string()));
                }
                live.push(Live {
                    name: rec.name.clone(),
                    cloud_id: Some(o.cloud_id.clone()),
                    image: o.image.clone(),
                    instance_type: o.instance_type.clone(),
                    template_hash: rec.template_hash.clone(),
                    index: naming::instance_index(input.stack, &rec.name),
                    lifecycle: o.lifecycle,
                    record: Some(rec.clone()),
                });
            }
            None => {
                let why = match rec.pending.as_ref().map(|p| p.op) {
                    Some(PendingKind::Create) => "an interrupted create never reached the cloud",
                    Some(PendingKind::Delete) => "an interrupted delete finished in the cloud",
                    None => "the cloud no longer has it (deleted outside fleet-cli?)",
                };
                let mut c = Change::new(Action::Forget, INSTANCE, &rec.name, why);
                c.cloud_id = rec.cloud_id.clone();
                changes.push(c);
            }
        }
    }

    let recorded: BTreeSet<&str> = state.instances.keys().map(String::as_str).collect();
    let mut adopted_names: BTreeSet<String> = BTreeSet::new();
    let mut unclaimed: Vec<&ObservedInstance> = alive
        .iter()
        .filter(|o| !claimed.contains(o.cloud_id.as_str()))
        .copied()
        .collect();
    unclaimed.sort_by(|a, b| (&a.name, &a.cloud_id).cmp(&(&b.name, &b.cloud_id)));
    for o in unclaimed {
        let mut o = o.clone();
        let mut why = "tagged for this stack but missing from state".to_string();
        if o.name.is_empty() {
            // A batch member the cloud could not name and no pending record claims.
            o.name = naming::instance_name(input.stack, *next);
            *next += 1;
            why.push_str(" (it had no name tag, so it gets a new name)");
        } else if recorded.contains(o.name.as_str()) || !adopted_names.insert(o.name.clone()) {
            // A second cloud object under a name that is taken: a duplicate, never adopted.
            let mut c = Change::new(
                Action::Delete,
                INSTANCE,
                &o.name,
                "duplicate: another cloud instance already carries this name",
            );
            c.cloud_id = Some(o.cloud_id.clone());
            changes.push(c);
            continue;
        }
        if !o.lineage.is_empty() && o.lineage != state.lineage {
            why.push_str(&format!(" (created under lineage {})", o.lineage));
        }
        let matches_spec = o.spec_hash == input.desired.spec.hash();
        let mut c = adopt_instance(&o, why);
        if matches_spec {
            // Built from the spec we want: record it as such, or the next plan would
            // see unknown templates and replace it.
            c.instance = Some(input.desired.spec.clone());
        }
        changes.push(c);
        live.push(Live {
            index: naming::instance_index(input.stack, &o.name),
            lifecycle: o.lifecycle,
            record: None,
            name: o.name,
            cloud_id: Some(o.cloud_id),
            image: o.image,
            instance_type: o.instance_type,
            // Only the spec hash tag is known; treat a matching hash as matching templates.
            template_hash: if matches_spec {
                input.desired.spec.template_hash.clone()
            } else {
                Some(format!("unknown (spec {})", o.spec_hash))
            },
        });
    }
    live
}

fn adopt_instance(o: &ObservedInstance, why: String) -> Change {
    let mut c = Change::new(Action::Adopt, INSTANCE, &o.name, why);
    c.cloud_id = Some(o.cloud_id.clone());
    c.observed = Some(o.clone());
    c
}

/// Step 1b: match resource records with the cloud. Returns live resources by key.
fn settle_resources(
    input: &PlanInput<'_>,
    changes: &mut Vec<Change>,
) -> BTreeMap<String, (String, String)> {
    let by_key: HashMap<String, &ObservedResource> = input
        .observed
        .resources
        .iter()
        .map(|r| (crate::resource::resource_key(&r.kind, &r.name), r))
        .collect();
    let mut live = BTreeMap::new();
    for (key, rec) in &input.state.resources {
        match by_key.get(key) {
            Some(o) => {
                if rec.pending.is_some() {
                    changes.push(adopt_resource(
                        o,
                        "an interrupted apply left it pending; recording it",
                    ));
                }
                live.insert(key.clone(), (o.cloud_id.clone(), rec.spec_hash.clone()));
            }
            None => {
                let mut c = Change::new(
                    Action::Forget,
                    &rec.kind,
                    &rec.name,
                    "the cloud no longer has it",
                );
                c.cloud_id = rec.cloud_id.clone();
                changes.push(c);
            }
        }
    }
    for (key, o) in &by_key {
        if !input.state.resources.contains_key(key) {
            changes.push(adopt_resource(
                o,
                "tagged for this stack but missing from state",
            ));
            live.insert(key.clone(), (o.cloud_id.clone(), o.spec_hash.clone()));
        }
    }
    live
}

fn adopt_resource(o: &ObservedResource, why: &str) -> Change {
    let mut c = Change::new(Action::Adopt, &o.kind, &o.name, why);
    c.cloud_id = Some(o.cloud_id.clone());
    c.observed_resource = Some(o.clone());
    c
}

/// Step 2: supporting resources. Creates and replaces go into `changes` (before
/// instances); deletes are returned to run after instances, dependents first.
fn plan_resources(
    input: &PlanInput<'_>,
    live: &BTreeMap<String, (String, String)>,
    changes: &mut Vec<Change>,
) -> Vec<Change> {
    let wanted: BTreeSet<String> = input
        .desired
        .resources
        .iter()
        .map(ResourceSpec::key)
        .collect();
    for spec in &input.desired.resources {
        let mut c = match live.get(&spec.key()) {
            None => Change::new(
                Action::Create,
                &spec.kind,
                &spec.name,
                "declared in the stack",
            ),
            Some((id, hash)) if *hash != spec.hash() => {
                let mut c = Change::new(
                    Action::Replace,
                    &spec.kind,
                    &spec.name,
                    "properties changed",
                );
                c.cloud_id = Some(id.clone());
                c
            }
            Some(_) => continue,
        };
        c.resource = Some(spec.clone());
        changes.push(c);
    }
    // Records (and adopted objects) no longer declared, deleted dependents first.
    let mut gone: Vec<(String, Vec<String>, String, String, String)> = Vec::new();
    for (key, (id, _)) in live {
        if wanted.contains(key) {
            continue;
        }
        let (kind, name) = key.split_once('/').unwrap_or((key.as_str(), ""));
        let deps = input
            .state
            .resources
            .get(key)
            .map(|r| r.depends_on.clone())
            .unwrap_or_default();
        gone.push((
            key.clone(),
            deps,
            kind.to_string(),
            name.to_string(),
            id.clone(),
        ));
    }
    let items: Vec<(String, Vec<String>)> =
        gone.iter().map(|g| (g.0.clone(), g.1.clone())).collect();
    let mut order = topo_order(&items).unwrap_or_else(|_| (0..items.len()).collect());
    order.reverse();
    order
        .into_iter()
        .map(|i| {
            let (_, _, kind, name, id) = &gone[i];
            let mut c = Change::new(
                Action::Delete,
                kind,
                name,
                "no longer declared in the stack",
            );
            c.cloud_id = Some(id.clone());
            c
        })
        .collect()
}

/// Step 3: runners no record names (their VM is gone, or a crash came between registering
/// the runner and recording it) are deleted, including runners of records this plan forgets.
fn plan_runners(input: &PlanInput<'_>, changes: &mut Vec<Change>) {
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
fn plan_drains(
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

/// Step 5: instances. Replace what is out of date, then follow the policy's actions, or
/// create or delete to reach the count.
fn plan_instances(
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

/// First free instance index: past every name in state and in the cloud.
fn first_free_index(input: &PlanInput<'_>) -> u64 {
    let from_state = input.state.next_index.max(1);
    let observed_max = input
        .observed
        .instances
        .iter()
        .filter_map(|o| naming::instance_index(input.stack, &o.name))
        .chain(
            input
                .state
                .instances
                .keys()
                .filter_map(|n| naming::instance_index(input.stack, n)),
        )
        .max()
        .map_or(0, |m| m + 1);
    from_state.max(observed_max)
}
