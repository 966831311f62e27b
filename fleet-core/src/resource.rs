//! Supporting resources (key pairs, security groups, buckets): the few objects a fleet
//! needs besides its instances. The model is general (kind, name, properties,
//! dependencies) so a provider adds kinds without touching the planner.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::spec::short_hash;

/// A resource as the stack wants it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSpec {
    /// Kind, as the provider names it.
    pub kind: String,
    /// Name inside the stack.
    pub name: String,
    /// Provider-specific properties.
    #[serde(default)]
    pub properties: BTreeMap<String, serde_json::Value>,
    /// Keys (`kind/name`) of resources that must exist first.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

impl ResourceSpec {
    /// `kind/name`, unique in a stack.
    pub fn key(&self) -> String {
        resource_key(&self.kind, &self.name)
    }

    /// Hash of everything that, when changed, requires a new resource.
    pub fn hash(&self) -> String {
        let props = serde_json::to_string(&self.properties).unwrap_or_default();
        short_hash(format!("{}\0{}\0{props}", self.kind, self.name).as_bytes())
    }
}

/// `kind/name`.
pub fn resource_key(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

/// Indexes of `specs` in an order where every resource comes after what it depends on;
/// `Err` names a cycle. Dependencies on keys not in the list are ignored here (the stack
/// loader reports them).
pub fn dependency_order(specs: &[ResourceSpec]) -> Result<Vec<usize>, String> {
    let items: Vec<(String, Vec<String>)> = specs
        .iter()
        .map(|d| (d.key(), d.depends_on.clone()))
        .collect();
    topo_order(&items)
}

/// Topological order of `(key, dependencies)` pairs, stable for independent items.
pub fn topo_order(items: &[(String, Vec<String>)]) -> Result<Vec<usize>, String> {
    let index: BTreeMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.as_str(), i))
        .collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    while out.len() < items.len() {
        let before = out.len();
        for (i, (_, deps)) in items.iter().enumerate() {
            if done.contains(&i) {
                continue;
            }
            let ready = deps
                .iter()
                .filter_map(|d| index.get(d.as_str()))
                .all(|j| done.contains(j));
            if ready {
                done.insert(i);
                out.push(i);
            }
        }
        if out.len() == before {
            let stuck: Vec<&str> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| !done.contains(i))
                .map(|(_, (k, _))| k.as_str())
                .collect();
            return Err(stuck.join(", "));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(k: &str, deps: &[&str]) -> (String, Vec<String>) {
        (k.into(), deps.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn dependencies_come_first() {
        let items = vec![
            item("a/x", &["b/y"]),
            item("b/y", &["c/z"]),
            item("c/z", &[]),
        ];
        assert_eq!(topo_order(&items).unwrap(), vec![2, 1, 0]);
    }

    #[test]
    fn cycles_are_named() {
        let items = vec![
            item("a/x", &["b/y"]),
            item("b/y", &["a/x"]),
            item("c/z", &[]),
        ];
        assert_eq!(topo_order(&items).unwrap_err(), "a/x, b/y");
    }
}
