//! The sandbox cloud: the shared cloud conformance suite, persistence across instances
//! of the provider (separate commands), boot time, and convergence under injected faults.

use std::time::Duration;

use fleet_core::apply::{ApplyOptions, Executor, NoProgress};
use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::{Cloud, CreateInstance, Scope};
use fleet_core::plan::Operation;
use fleet_core::planner::{plan, Desired, PlanInput};
use fleet_core::spec::InstanceSpec;
use fleet_core::state::{LocalBackend, State};
use fleet_core::testing::{cloud_conformance, cloud_refusal_conformance};
use fleet_providers::sandbox::{SandboxCloud, SandboxSettings};

fn settings() -> SandboxSettings {
    SandboxSettings {
        boot_time: Duration::ZERO,
        resume_time: Duration::ZERO,
        latency: Duration::ZERO,
        failure_rate: 0.0,
        seed: 1,
        max_batch: 100,
        instance_types: vec!["small".into()],
        cloud_file: None,
        crash_after: None,
        runner_agent: false,
    }
}

fn spec(types: &[&str]) -> InstanceSpec {
    InstanceSpec {
        image: "debian-12".into(),
        instance_types: types.iter().map(|t| t.to_string()).collect(),
        template_hash: None,
        labels: Default::default(),
    }
}

fn request(scope: &Scope, types: &[&str]) -> CreateInstance {
    CreateInstance {
        name: "s-0001".into(),
        spec: spec(types),
        tags: fleet_core::apply::object_tags(scope, "s-0001", "h", None),
        user_data: None,
    }
}

#[tokio::test]
async fn sandbox_passes_the_cloud_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = SandboxCloud::new(settings(), dir.path().join("cloud.json"));
    cloud_conformance(&cloud, "conformance", "debian-12", "small").await;
    cloud_refusal_conformance(&cloud, "refused", spec(&["huge"])).await;
}

#[tokio::test]
async fn separate_provider_instances_see_the_same_cloud() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloud.json");
    let scope = Scope {
        stack: "s".into(),
        lineage: "l".into(),
    };
    let a = SandboxCloud::new(settings(), file.clone());
    let req = request(&scope, &["small"]);
    a.create_instances(&scope, "fb-test", &[req]).await.unwrap();
    let b = SandboxCloud::new(settings(), file);
    assert_eq!(b.observe(&scope).await.unwrap().instances.len(), 1);
}

#[tokio::test]
async fn instances_boot_for_the_configured_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.boot_time = Duration::from_secs(3600);
    let cloud = SandboxCloud::new(s, dir.path().join("cloud.json"));
    let scope = Scope {
        stack: "s".into(),
        lineage: "l".into(),
    };
    let req = request(&scope, &["small"]);
    let out = cloud
        .create_instances(&scope, "fb-test", &[req])
        .await
        .unwrap();
    assert_eq!(out.created[0].lifecycle, Lifecycle::Booting);
}

#[tokio::test]
async fn unknown_instance_types_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = SandboxCloud::new(settings(), dir.path().join("cloud.json"));
    let scope = Scope {
        stack: "s".into(),
        lineage: "l".into(),
    };
    let req = request(&scope, &["huge"]);
    let out = cloud
        .create_instances(&scope, "fb-test", &[req])
        .await
        .unwrap();
    let text = fleet_core::apply::error_chain(&out.failed[0].1);
    assert_eq!(
        text,
        "sandbox refused create (InvalidInstanceType): none of [huge] is offered (the sandbox offers [small]); change instance.types"
    );
}

/// With a fifth of all calls failing (half of them after the effect, like a timeout), the
/// plan/apply loop still converges with no duplicate and no leaked instance.
#[tokio::test]
async fn converges_while_a_fifth_of_calls_fail() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.failure_rate = 0.2;
    s.seed = 7;
    s.max_batch = 3;
    let cloud = SandboxCloud::new(s, dir.path().join("cloud.json"));
    let backend = LocalBackend::new(dir.path().join("state.json"));
    let mut state = State::new("faulty", "lin");
    let spec = spec(&["small"]);
    let scope = Scope {
        stack: "faulty".into(),
        lineage: "lin".into(),
    };
    let clock = chrono::Utc::now;
    let mut failures = 0;
    let mut rounds = 0;
    // Scale 0 -> 12 -> 4 -> 9, converging at each step.
    for want in [12u32, 4, 9] {
        let desired = Desired {
            instances: want,
            spec: spec.clone(),
            resources: vec![],
            reason: "test".into(),
            may_scale_in: true,
            actions: None,
            runner_rules: Default::default(),
        };
        loop {
            rounds += 1;
            assert!(rounds < 60, "no convergence after {rounds} rounds");
            let Ok(observed) = cloud.observe(&scope).await else {
                failures += 1;
                continue;
            };
            let p = plan(&PlanInput {
                stack: "faulty",
                cloud: "sandbox",
                operation: Operation::Up,
                state: &state,
                observed: &observed,
                desired: &desired,
                now: clock(),
            });
            if p.is_empty() {
                break;
            }
            let ex = Executor {
                ci: &fleet_core::ci::NoCi,
                renderer: None,
                cloud: &cloud,
                backend: &backend,
                scope: scope.clone(),
                options: ApplyOptions {
                    dry_run: false,
                    concurrency: 2,
                    batch_size: 3,
                },
                progress: &NoProgress,
                clock: &clock,
            };
            let report = ex.apply(&p, &mut state, Some(&observed)).await.unwrap();
            failures += report.failed.len();
        }
        let world = cloud.world().unwrap();
        let alive: Vec<_> = world
            .instances
            .iter()
            .filter(|i| i.terminated_at.is_none())
            .collect();
        assert_eq!(
            alive.len(),
            want as usize,
            "exactly the desired count is alive"
        );
        let mut names: Vec<_> = alive.iter().map(|i| i.tags["fleet:name"].clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), alive.len(), "no duplicate names");
        assert_eq!(
            state.instances.len(),
            alive.len(),
            "state records every live instance"
        );
    }
    assert!(
        failures > 0,
        "the run must actually have seen injected failures"
    );
    eprintln!("converged through 3 scale steps in {rounds} rounds with {failures} failed calls");
}

#[tokio::test]
async fn instances_stop_and_start_again_keeping_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.resume_time = Duration::from_secs(3600);
    let cloud = SandboxCloud::new(s, dir.path().join("cloud.json"));
    assert!(cloud.can_stop());
    let scope = Scope {
        stack: "s".into(),
        lineage: "l".into(),
    };
    let made = cloud
        .create_instances(&scope, "fb-test", &[request(&scope, &["small"])])
        .await
        .unwrap();
    let id = made.created[0].cloud_id.clone();
    let ids = vec![id.clone()];
    let lifecycle = |o: fleet_core::cloud::Observed| o.instances[0].lifecycle;

    let out = cloud.stop_instances(&scope, &ids).await.unwrap();
    assert_eq!(out.changed, ids);
    assert_eq!(
        lifecycle(cloud.observe(&scope).await.unwrap()),
        Lifecycle::Stopped
    );
    // Stopping again changes nothing and is not an error.
    let again = cloud.stop_instances(&scope, &ids).await.unwrap();
    assert_eq!(again.changed, ids);

    cloud.start_instances(&scope, &ids).await.unwrap();
    let seen = cloud.observe(&scope).await.unwrap();
    assert_eq!(seen.instances[0].cloud_id, id, "a start keeps the instance");
    assert_eq!(
        seen.instances[0].lifecycle,
        Lifecycle::Starting,
        "it is starting for resume_time"
    );

    // Another stack's instance, and a terminated one, are refused by id.
    let other = Scope {
        stack: "other".into(),
        lineage: "l".into(),
    };
    let out = cloud.stop_instances(&other, &ids).await.unwrap();
    assert_eq!(out.failed.len(), 1, "{:?}", out.failed);
    cloud.delete_instances(&scope, &ids).await.unwrap();
    let out = cloud.start_instances(&scope, &ids).await.unwrap();
    assert!(
        out.failed[0]
            .1
            .to_string()
            .contains("IncorrectInstanceState"),
        "{:?}",
        out.failed
    );
}
