//! The engine's read-observe-decide-plan sequence with the demand policy.

use async_trait::async_trait;

use fleet_core::ci::{Ci, CiError, Demand};
use fleet_core::engine::Fleet;
use fleet_core::plan::{Action, Operation};
use fleet_core::policy::DemandPolicy;
use fleet_core::stack::load_str;
use fleet_core::state::LocalBackend;
use fleet_core::testing::MemoryCloud;

const STACK: &str = "
name: pool
provider: { kind: memory }
instance: { image: debian-12, types: [small] }
policy: { min_instances: 0, max_instances: 5, stopped_count: 3 }
";

/// GitLab with nothing queued.
struct Quiet;

#[async_trait]
impl Ci for Quiet {
    async fn demand(&self) -> Result<Demand, CiError> {
        Ok(Demand::Known {
            pending: 0,
            running: 0,
        })
    }
}

#[tokio::test]
async fn a_cloud_that_cannot_stop_vms_gets_no_stopped_pool() {
    let dir = tempfile::tempdir().unwrap();
    let no_env = |_: &str| None;
    let loaded = load_str(&dir.path().join("pool.yaml"), STACK, &[], &no_env).unwrap();
    let cloud = MemoryCloud::new();
    assert!(!fleet_core::cloud::Cloud::can_stop(&cloud));
    let backend = LocalBackend::new(dir.path().join("state.json"));
    let fleet = Fleet {
        stack: &loaded,
        cloud: &cloud,
        backend: &backend,
        policy: &DemandPolicy,
        ci: &Quiet,
    };
    let state = fleet.read_state(|| "l".into()).await.unwrap();
    let observed = fleet.observe(&state).await.unwrap();
    assert!(observed.demand.as_ref().is_some_and(Demand::is_known));
    let plan = fleet
        .plan(Operation::Up, &state, &observed, fleet_core::testing::t0())
        .await
        .unwrap();
    // On a cloud that can stop VMs, stopped_count 3 would provision three now.
    assert!(
        plan.changes.iter().all(|c| c.action != Action::Create),
        "{}",
        plan.display()
    );
}
