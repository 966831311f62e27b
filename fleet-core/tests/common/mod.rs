//! Builders shared by the engine's tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::{Observed, ObservedInstance, ObservedResource};
use fleet_core::naming::instance_name;
use fleet_core::plan::{Operation, Plan};
use fleet_core::planner::{plan, Desired, PlanInput};
use fleet_core::resource::ResourceSpec;
use fleet_core::spec::InstanceSpec;
use fleet_core::state::{InstanceRecord, PendingKind, PendingOp, ResourceRecord, State};
use fleet_core::testing::t0;

pub const STACK: &str = "ci";
pub const LINEAGE: &str = "lineage-a";

pub fn spec(image: &str) -> InstanceSpec {
    InstanceSpec {
        image: image.into(),
        instance_types: vec!["small".into(), "medium".into()],
        template_hash: None,
        labels: BTreeMap::new(),
    }
}

pub fn desired(n: u32, image: &str) -> Desired {
    Desired {
        instances: n,
        spec: spec(image),
        resources: Vec::new(),
        reason: format!("policy.min_instances = {n}"),
        may_scale_in: true,
        actions: None,
        runner_rules: Default::default(),
    }
}

pub fn key_pair(name: &str, key: &str) -> ResourceSpec {
    let mut properties = BTreeMap::new();
    properties.insert(
        "public_key".to_string(),
        serde_json::Value::String(key.into()),
    );
    ResourceSpec {
        kind: "key_pair".into(),
        name: name.into(),
        properties,
        depends_on: Vec::new(),
    }
}

pub fn observed(i: u64, image: &str) -> ObservedInstance {
    ObservedInstance {
        cloud_id: format!("i-{i:04}"),
        name: instance_name(STACK, i),
        lineage: LINEAGE.into(),
        image: image.into(),
        instance_type: "small".into(),
        spec_hash: spec(image).hash(),
        lifecycle: Lifecycle::Running,
        address: None,
        launched_at: t0(),
        batch: None,
    }
}

pub fn record_of(o: &ObservedInstance) -> InstanceRecord {
    let mut r = InstanceRecord::from_observed(o, None);
    r.created_at = t0();
    r
}

pub fn pending(mut r: InstanceRecord, op: PendingKind) -> InstanceRecord {
    if op == PendingKind::Create {
        r.cloud_id = None;
    }
    r.pending = Some(PendingOp {
        op,
        since: t0(),
        batch: None,
    });
    r
}

pub fn resource_record(spec: &ResourceSpec, id: &str) -> ResourceRecord {
    ResourceRecord {
        kind: spec.kind.clone(),
        name: spec.name.clone(),
        cloud_id: Some(id.into()),
        spec_hash: spec.hash(),
        depends_on: spec.depends_on.clone(),
        created_at: t0(),
        pending: None,
    }
}

pub fn observed_resource(spec: &ResourceSpec, id: &str) -> ObservedResource {
    ObservedResource {
        cloud_id: id.into(),
        kind: spec.kind.clone(),
        name: spec.name.clone(),
        spec_hash: spec.hash(),
    }
}

/// A state with the given records, at serial 7.
pub fn state_with(records: Vec<InstanceRecord>) -> State {
    let mut s = State::new(STACK, LINEAGE);
    s.serial = 7;
    s.next_index = records.len() as u64 + 1;
    for r in records {
        s.instances.insert(r.name.clone(), r);
    }
    s
}

pub fn run(op: Operation, state: &State, observed: &Observed, desired: &Desired) -> Plan {
    plan(&PlanInput {
        stack: STACK,
        cloud: "memory cloud (tests)",
        operation: op,
        state,
        observed,
        desired,
        now: t0(),
    })
}
