//! The planner: a pure function from (desired, state, observed, now) to a [`Plan`].
//!
//! It runs named steps in a fixed order, so the policy reads top to bottom:
//!
//! 1. `settle_instances` / `settle_resources`: match records with what the cloud
//!    reports; adopt tagged objects state lacks, forget records whose object is gone, and
//!    settle operations an interrupted apply left pending.
//! 2. `plan_resources`: create, replace or delete supporting resources.
//! 3. `plan_instances`: replace out-of-date instances and create or delete to reach the
//!    desired count.
//!
//! Destroy is not a special case: it is a plan against [`Desired::nothing`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::cloud::{Observed, ObservedInstance, ObservedResource};
use crate::naming;
use crate::plan::{instances, Action, Change, Operation, Plan, INSTANCE, PLAN_FORMAT_VERSION};
use crate::policy::Decision;
use crate::resource::{topo_order, ResourceSpec};
use crate::spec::InstanceSpec;
use crate::stack::Stack;
use crate::state::{PendingKind, State};

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
}

impl Desired {
    /// The fleet a stack declares, sized by a policy decision.
    pub fn from_stack(
        stack: &Stack,
        template_hash: Option<String>,
        decision: &Decision,
    ) -> Desired {
        let specs: Vec<ResourceSpec> = stack.resources.iter().map(ResourceSpec::from).collect();
        let items: Vec<(String, Vec<String>)> = specs
            .iter()
            .map(|r| (r.key(), r.depends_on.clone()))
            .collect();
        // The stack loader rejects cycles, so the declared order is only a fallback.
        let order = topo_order(&items).unwrap_or_else(|_| (0..specs.len()).collect());
        Desired {
            instances: decision.desired,
            spec: InstanceSpec {
                image: stack.instance.image.clone(),
                instance_types: stack.instance.types.clone(),
                template_hash,
                labels: stack.instance.labels.clone(),
            },
            resources: order.into_iter().map(|i| specs[i].clone()).collect(),
            reason: decision.reason.clone(),
            may_scale_in: decision.may_scale_in,
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
}

/// Makes the plan.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut changes = Vec::new();
    let mut notes = Vec::new();

    let mut next = first_free_index(input);
    let live = settle_instances(input, &mut next, &mut changes);
    let live_resources = settle_resources(input, &mut changes);

    let (desired, decision) = match input.operation {
        Operation::Refresh => (None, None),
        _ => {
            let d = input.desired;
            let mut resource_changes = Vec::new();
            let deletes_after = plan_resources(input, &live_resources, &mut resource_changes);
            changes.extend(resource_changes);
            plan_instances(input, &live, &mut next, &mut changes, &mut notes);
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

/// Step 3: instances. Replace what is out of date, then create or delete to reach the count.
fn plan_instances(
    input: &PlanInput<'_>,
    live: &[Live],
    next: &mut u64,
    changes: &mut Vec<Change>,
    notes: &mut Vec<String>,
) {
    let desired = input.desired;
    let want = desired.instances as usize;
    let have = live.len();

    let outdated: Vec<Option<String>> = live
        .iter()
        .map(|l| {
            desired
                .spec
                .mismatch(&l.image, &l.instance_type, l.template_hash.as_deref())
        })
        .collect();

    // Scale-in candidates: out-of-date ones first (deleting beats replacing them), then
    // the newest.
    let mut order: Vec<usize> = (0..have).collect();
    order.sort_by(|&a, &b| {
        outdated[b]
            .is_some()
            .cmp(&outdated[a].is_some())
            .then(live[b].index.cmp(&live[a].index))
            .then(live[b].name.cmp(&live[a].name))
    });

    let mut deleted = BTreeSet::new();
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
                changes.push(c);
                deleted.insert(i);
            }
        } else {
            notes.push(format!(
                "keeping {} although {want} wanted: demand is unknown, and the fleet never scales in on unknown demand",
                instances(have as u64)
            ));
        }
    }

    let mut new_name = || {
        let name = naming::instance_name(input.stack, *next);
        *next += 1;
        name
    };

    let mut replace_changes = Vec::new();
    for (i, l) in live.iter().enumerate() {
        if deleted.contains(&i) {
            continue;
        }
        if let Some(why) = &outdated[i] {
            let mut c = Change::new(Action::Replace, INSTANCE, &l.name, why.clone());
            c.cloud_id = l.cloud_id.clone();
            c.replacement = Some(new_name());
            c.instance = Some(desired.spec.clone());
            replace_changes.push(c);
        }
    }

    // Creates come before the deletes of this step in apply order (the executor phases by
    // action); list them first so the diff reads in that order too.
    let mut creates = Vec::new();
    if want > have {
        for _ in 0..(want - have) {
            let mut c = Change::new(
                Action::Create,
                INSTANCE,
                new_name(),
                format!("scale out: {have} -> {}", instances(want as u64)),
            );
            c.instance = Some(desired.spec.clone());
            creates.push(c);
        }
    }
    let deletes: Vec<Change> = changes.split_off(changes.len() - deleted.len());
    changes.extend(creates);
    changes.extend(replace_changes);
    changes.extend(deletes);
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

/// Updates records with lifecycle facts the cloud reported (not a plan change: nothing
/// is decided from it). Returns whether anything changed.
pub fn refresh_facts(state: &mut State, observed: &Observed) -> bool {
    let by_id: HashMap<&str, &ObservedInstance> = observed
        .instances
        .iter()
        .map(|o| (o.cloud_id.as_str(), o))
        .collect();
    let mut changed = false;
    for rec in state.instances.values_mut() {
        let Some(o) = rec.cloud_id.as_deref().and_then(|id| by_id.get(id)) else {
            continue;
        };
        if rec.lifecycle != o.lifecycle
            || rec.address != o.address
            || rec.instance_type != o.instance_type
        {
            rec.lifecycle = o.lifecycle;
            rec.address = o.address.clone();
            rec.instance_type = o.instance_type.clone();
            changed = true;
        }
    }
    changed
}
