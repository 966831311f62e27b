//! Step 2: supporting resources: create what is declared and not live, replace what
//! changed, and delete what is no longer declared (after the instances, dependents first).

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::{Action, Change};
use crate::resource::{topo_order, ResourceSpec};

use super::PlanInput;

/// Step 2: supporting resources. Creates and replaces go into `changes` (before
/// instances); deletes are returned to run after instances, dependents first.
pub(super) fn plan_resources(
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
