//! A 10,000-instance fleet for the planning benchmarks.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::{Observed, ObservedInstance};
use fleet_core::naming::instance_name;
use fleet_core::plan::{Operation, Plan};
use fleet_core::planner::{plan, Desired, PlanInput};
use fleet_core::spec::InstanceSpec;
use fleet_core::state::{InstanceRecord, State};

pub const STACK: &str = "bench";

pub struct Fleet {
    pub state: State,
    pub observed: Observed,
    pub desired: Desired,
}

fn spec(image: &str) -> InstanceSpec {
    InstanceSpec {
        image: image.into(),
        instance_types: vec!["c7i.large".into(), "m7i.large".into()],
        template_hash: None,
        labels: BTreeMap::new(),
    }
}

fn instance(i: u64, image: &str) -> ObservedInstance {
    ObservedInstance {
        cloud_id: format!("i-{i:017x}"),
        name: instance_name(STACK, i),
        lineage: "bench-lineage".into(),
        image: image.into(),
        instance_type: "c7i.large".into(),
        spec_hash: spec(image).hash(),
        lifecycle: Lifecycle::Running,
        address: Some(format!("127.1.{}.{}", i / 256 % 256, i % 256)),
        launched_at: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
        batch: None,
    }
}

/// `n` instances recorded and observed. With `churn`: 1% out of date (replaced), 50
/// untracked (adopted), 50 gone (forgotten), and 5% more wanted (created).
pub fn fleet(n: u64, churn: bool) -> Fleet {
    let mut state = State::new(STACK, "bench-lineage");
    state.serial = 42;
    state.next_index = n + 1;
    let mut observed = Observed::default();
    for i in 1..=n {
        let image = if churn && i % 100 == 0 {
            "debian-11"
        } else {
            "debian-12"
        };
        let o = instance(i, image);
        let gone = churn && i % 200 == 1;
        let untracked = churn && i % 200 == 2;
        if !untracked {
            state
                .instances
                .insert(o.name.clone(), InstanceRecord::from_observed(&o, None));
        }
        if !gone {
            observed.instances.push(o);
        }
    }
    let want = if churn { n + n / 20 } else { n };
    let desired = Desired {
        instances: want as u32,
        spec: spec("debian-12"),
        resources: Vec::new(),
        reason: "bench".into(),
        may_scale_in: true,
        actions: None,
        runner_rules: Default::default(),
    };
    Fleet {
        state,
        observed,
        desired,
    }
}

pub fn run(f: &Fleet) -> Plan {
    plan(&PlanInput {
        stack: STACK,
        cloud: "bench",
        operation: Operation::Up,
        state: &f.state,
        observed: &f.observed,
        desired: &f.desired,
        now: Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap(),
    })
}
