//! Step 1: match records with what the cloud reports. Adopt tagged objects state lacks,
//! forget records whose object is gone, settle operations an interrupted apply left
//! pending, and delete a second live object under a taken name.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::cloud::{ObservedInstance, ObservedResource};
use crate::naming;
use crate::plan::{Action, Change, INSTANCE};
use crate::state::PendingKind;

use super::{Live, PlanInput};

/// Step 1a: match instance records with the cloud.
pub(super) fn settle_instances(
    input: &PlanInput<'_>,
    next: &mut u64,
    changes: &mut Vec<Change>,
) -> Vec<Live> {
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
pub(super) fn settle_resources(
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
