//! The executor: what it records around each cloud call, and the fixed point (planning
//! again after an apply changes nothing).

mod common;

use common::*;
use fleet_core::apply::{ApplyOptions, Executor, NoProgress};
use fleet_core::cloud::{Cloud, Scope};
use fleet_core::plan::{Action, Operation, Plan};
use fleet_core::planner::Desired;
use fleet_core::state::{LocalBackend, PendingKind, State, StateBackend};
use fleet_core::testing::{injected, t0, MemoryCloud};
use proptest::prelude::*;

fn clock() -> chrono::DateTime<chrono::Utc> {
    t0()
}

struct Rig {
    _dir: tempfile::TempDir,
    backend: LocalBackend,
    cloud: MemoryCloud,
}

fn rig(cloud: MemoryCloud) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("state.json"));
    Rig {
        _dir: dir,
        backend,
        cloud,
    }
}

impl Rig {
    async fn plan(&self, state: &State, d: &Desired) -> Plan {
        let scope = Scope {
            stack: STACK.into(),
            lineage: state.lineage.clone(),
        };
        let observed = self.cloud.observe(&scope).await.unwrap();
        run(Operation::Up, state, &observed, d)
    }

    async fn apply(
        &self,
        plan: &Plan,
        state: &mut State,
        dry_run: bool,
    ) -> fleet_core::apply::ApplyReport {
        let ex = Executor {
            cloud: &self.cloud,
            ci: &fleet_core::ci::NoCi,
            renderer: None,
            backend: &self.backend,
            scope: Scope {
                stack: STACK.into(),
                lineage: state.lineage.clone(),
            },
            options: ApplyOptions {
                dry_run,
                concurrency: 3,
                batch_size: 2,
            },
            progress: &NoProgress,
            clock: &clock,
        };
        ex.apply(plan, state, None).await.unwrap()
    }
}

#[tokio::test]
async fn dry_run_calls_nothing_and_writes_nothing() {
    let r = rig(MemoryCloud::new());
    let mut state = State::new(STACK, LINEAGE);
    let plan = r.plan(&state, &desired(3, "debian-12")).await;
    let report = r.apply(&plan, &mut state, true).await;
    assert_eq!(report.done.create, 3);
    assert_eq!(r.cloud.calls("create"), 0);
    assert!(
        r.backend.read().await.unwrap().is_none(),
        "a dry run must not write state"
    );
    assert_eq!(state, State::new(STACK, LINEAGE));
}

#[tokio::test]
async fn creates_are_batched_and_recorded() {
    let r = rig(MemoryCloud::new());
    let mut state = State::new(STACK, LINEAGE);
    let plan = r.plan(&state, &desired(5, "debian-12")).await;
    let report = r.apply(&plan, &mut state, false).await;
    assert_eq!(report.done.create, 5);
    assert_eq!(
        r.cloud.calls("create"),
        3,
        "5 instances in batches of 2 is 3 calls"
    );
    let stored = r.backend.read().await.unwrap().unwrap();
    assert_eq!(stored, state);
    assert_eq!(stored.instances.len(), 5);
    assert!(stored
        .instances
        .values()
        .all(|i| i.pending.is_none() && i.cloud_id.is_some()));
    assert_eq!(stored.next_index, 6);
}

#[tokio::test]
async fn an_ambiguous_create_failure_leaves_a_pending_record_the_next_plan_settles() {
    let mut cloud = MemoryCloud::new();
    cloud.fail_create = Some(Box::new(|name| {
        (name == "ci-0002").then(|| injected("create"))
    }));
    let r = rig(cloud);
    let mut state = State::new(STACK, LINEAGE);
    let plan = r.plan(&state, &desired(2, "debian-12")).await;
    let report = r.apply(&plan, &mut state, false).await;
    assert_eq!(report.failed.len(), 1);
    let rec = &state.instances["ci-0002"];
    assert_eq!(
        rec.pending.as_ref().map(|p| p.op),
        Some(PendingKind::Create)
    );

    // The cloud never made it: the next plan forgets the record and creates again.
    let next = r.plan(&state, &desired(2, "debian-12")).await;
    let actions: Vec<_> = next
        .changes
        .iter()
        .map(|c| (c.action, c.name.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![(Action::Forget, "ci-0002"), (Action::Create, "ci-0003")]
    );
}

#[tokio::test]
async fn a_definite_create_failure_drops_the_record() {
    let mut cloud = MemoryCloud::new();
    cloud.fail_create = Some(Box::new(|_| {
        Some(fleet_core::cloud::CloudError::Rejected {
            provider: "memory".into(),
            operation: "create".into(),
            code: "InvalidImage".into(),
            detail: fleet_core::cloud::Detail("no such image".into()),
        })
    }));
    let r = rig(cloud);
    let mut state = State::new(STACK, LINEAGE);
    let plan = r.plan(&state, &desired(2, "debian-12")).await;
    let report = r.apply(&plan, &mut state, false).await;
    assert_eq!(report.failed.len(), 2);
    assert!(
        report.failed[0].error.contains("InvalidImage"),
        "{}",
        report.failed[0].error
    );
    assert!(state.instances.is_empty());
}

#[tokio::test]
async fn a_replace_deletes_the_old_instance_only_after_its_replacement_exists() {
    let r = rig(MemoryCloud::new());
    let mut state = State::new(STACK, LINEAGE);
    let plan = r.plan(&state, &desired(2, "debian-12")).await;
    r.apply(&plan, &mut state, false).await;

    // Replacement of ci-0001 fails: ci-0001 must survive; ci-0002's replacement works.
    let mut cloud = MemoryCloud::new();
    for o in r.cloud.alive(STACK) {
        cloud.insert(STACK, o);
    }
    cloud.fail_create = Some(Box::new(|name| {
        (name == "ci-0003").then(|| injected("create"))
    }));
    let r2 = Rig { cloud, ..r };
    let plan = r2.plan(&state, &desired(2, "debian-13")).await;
    assert_eq!(plan.summary.replace, 2);
    let report = r2.apply(&plan, &mut state, false).await;
    assert_eq!(report.done.replace, 1);
    let mut alive: Vec<_> = r2.cloud.alive(STACK).into_iter().map(|o| o.name).collect();
    alive.sort();
    assert_eq!(
        alive,
        vec!["ci-0001", "ci-0004"],
        "the failed replace keeps its old instance"
    );
}

#[tokio::test]
async fn a_saved_plan_is_refused_once_state_moved() {
    let r = rig(MemoryCloud::new());
    let mut state = State::new(STACK, LINEAGE);
    let plan = r.plan(&state, &desired(1, "debian-12")).await;
    let stale = plan.clone();
    r.apply(&plan, &mut state, false).await;
    let ex = Executor {
        cloud: &r.cloud,
        ci: &fleet_core::ci::NoCi,
        renderer: None,
        backend: &r.backend,
        scope: Scope {
            stack: STACK.into(),
            lineage: LINEAGE.into(),
        },
        options: ApplyOptions {
            dry_run: false,
            concurrency: 1,
            batch_size: 1,
        },
        progress: &NoProgress,
        clock: &clock,
    };
    let err = ex.apply(&stale, &mut state, None).await.unwrap_err();
    assert!(err.to_string().contains("made on state serial 0"), "{err}");
}

/// Regression: an instance adopted with no prior record lost its template hash, so the
/// next plan replaced it although it was built from the wanted templates.
#[tokio::test]
async fn adopted_instances_built_from_the_wanted_templates_are_kept() {
    let mut d = desired(1, "debian-12");
    d.spec.template_hash = Some("tmpl-1".into());
    let cloud = MemoryCloud::new();
    let mut o = observed(1, "debian-12");
    o.spec_hash = d.spec.hash();
    cloud.insert(STACK, o);
    let r = rig(cloud);
    let mut state = State::new(STACK, LINEAGE);
    let plan = r.plan(&state, &d).await;
    assert_eq!(plan.summary.adopt, 1);
    r.apply(&plan, &mut state, false).await;
    let again = r.plan(&state, &d).await;
    assert!(again.is_empty(), "{}", again.display());
}

/// Runs plan + apply until the plan is empty; returns the rounds it took.
async fn converge(r: &Rig, state: &mut State, d: &Desired) -> usize {
    for round in 1..=5 {
        let plan = r.plan(state, d).await;
        if plan.is_empty() {
            return round;
        }
        r.apply(&plan, state, false).await;
    }
    panic!("no fixed point after 5 rounds");
}

#[derive(Debug, Clone)]
struct World {
    /// Per index 1..=8: in the cloud (with which image), in state (and how).
    slots: Vec<(Option<bool>, u8)>,
    desired: u32,
    new_image: bool,
}

fn world() -> impl Strategy<Value = World> {
    (
        proptest::collection::vec((proptest::option::of(any::<bool>()), 0u8..4), 8),
        0u32..10,
        any::<bool>(),
    )
        .prop_map(|(slots, desired, new_image)| World {
            slots,
            desired,
            new_image,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// From any mix of cloud and state (adoptable, forgettable, pending, drifted), one
    /// apply reaches the fleet the stack declares, and planning again changes nothing.
    #[test]
    fn plan_after_apply_is_empty(w in world()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let cloud = MemoryCloud::new();
            let mut records = Vec::new();
            for (i, (in_cloud, in_state)) in w.slots.iter().enumerate() {
                let idx = i as u64 + 1;
                let o = observed(idx, if in_cloud == &Some(true) { "debian-12" } else { "debian-11" });
                if in_cloud.is_some() {
                    cloud.insert(STACK, o.clone());
                }
                match in_state {
                    1 => records.push(record_of(&o)),
                    2 => records.push(pending(record_of(&o), PendingKind::Create)),
                    3 => records.push(pending(record_of(&o), PendingKind::Delete)),
                    _ => {}
                }
            }
            let r = rig(cloud);
            let mut state = state_with(records);
            state.serial = 0;
            let image = if w.new_image { "debian-13" } else { "debian-12" };
            let d = desired(w.desired, image);
            let rounds = converge(&r, &mut state, &d).await;
            prop_assert_eq!(rounds, 2, "one apply must reach the fixed point");
            let alive = r.cloud.alive(STACK);
            prop_assert_eq!(alive.len(), w.desired as usize);
            prop_assert!(alive.iter().all(|o| o.image == image));
            let mut names: Vec<_> = alive.iter().map(|o| o.name.clone()).collect();
            names.sort();
            names.dedup();
            prop_assert_eq!(names.len(), alive.len(), "no two live instances share a name");
            let recorded: Vec<_> = state.instances.keys().cloned().collect();
            prop_assert_eq!(recorded, names, "state records exactly the live fleet");
            prop_assert!(state.instances.values().all(|r| r.pending.is_none()));
            Ok(())
        })?;
    }
}
