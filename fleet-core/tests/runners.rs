//! The runner lifecycle through planner and executor: one runner per VM registered before
//! the VM, scale-in that pauses, drains and deletes the VM before its runner, no deletion
//! while a job runs, orphan runners deleted, never-online VMs replaced.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use common::*;
use fleet_core::apply::{ApplyOptions, ApplyReport, Executor, NoProgress};
use fleet_core::ci::{Ci, CiError, Demand, NewRunner, ObservedRunner};
use fleet_core::cloud::{Cloud, Observed, Scope};
use fleet_core::plan::{Action, Operation, Plan, INSTANCE, RUNNER};
use fleet_core::planner::{plan, Desired, PlanInput};
use fleet_core::runners::RunnerRules;
use fleet_core::secret::Secret;
use fleet_core::state::facts::refresh as refresh_facts;
use fleet_core::state::{LocalBackend, State};
use fleet_core::testing::{t0, MemoryCloud};

#[derive(Debug, Clone)]
struct FakeRunner {
    instance: String,
    paused: bool,
    running: u32,
    online: bool,
}

/// A CI system that keeps runners in memory and logs every runner call. Deleting a runner
/// whose VM is still in the cloud is logged as a violation.
struct FakeCi<'a> {
    cloud: &'a MemoryCloud,
    runners: Mutex<BTreeMap<u64, FakeRunner>>,
    log: Mutex<Vec<String>>,
}

impl<'a> FakeCi<'a> {
    fn new(cloud: &'a MemoryCloud) -> Self {
        FakeCi {
            cloud,
            runners: Mutex::new(BTreeMap::new()),
            log: Mutex::new(Vec::new()),
        }
    }

    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }

    fn log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn set(&self, id: u64, f: impl FnOnce(&mut FakeRunner)) {
        f(self.runners.lock().unwrap().get_mut(&id).expect("runner"));
    }

    fn ids(&self) -> Vec<u64> {
        self.runners.lock().unwrap().keys().copied().collect()
    }
}

#[async_trait]
impl Ci for FakeCi<'_> {
    async fn demand(&self) -> Result<Demand, CiError> {
        Ok(Demand::Known {
            pending: 0,
            running: 0,
        })
    }
    fn manages_runners(&self) -> bool {
        true
    }
    async fn runners(&self) -> Result<Vec<ObservedRunner>, CiError> {
        Ok(self
            .runners
            .lock()
            .unwrap()
            .iter()
            .map(|(id, r)| ObservedRunner {
                id: *id,
                instance: r.instance.clone(),
                online: r.online,
                paused: r.paused,
                running_jobs: r.running,
                first_contact_at: None,
            })
            .collect())
    }
    async fn create_runner(&self, instance: &str) -> Result<NewRunner, CiError> {
        let mut rs = self.runners.lock().unwrap();
        let id = rs.keys().max().map_or(1, |m| m + 1);
        rs.insert(
            id,
            FakeRunner {
                instance: instance.into(),
                paused: false,
                running: 0,
                online: true,
            },
        );
        drop(rs);
        self.note(format!("create {id} {instance}"));
        Ok(NewRunner {
            id,
            token: Secret::new(format!("glrt-test-{id}")),
        })
    }
    async fn set_paused(&self, runner: u64, paused: bool) -> Result<(), CiError> {
        self.set(runner, |r| r.paused = paused);
        self.note(format!(
            "{} {runner}",
            if paused { "pause" } else { "resume" }
        ));
        Ok(())
    }
    async fn running_jobs(&self, runner: u64) -> Result<u32, CiError> {
        let n = self.runners.lock().unwrap()[&runner].running;
        self.note(format!("jobs {runner} = {n}"));
        Ok(n)
    }
    async fn delete_runner(&self, runner: u64) -> Result<(), CiError> {
        let instance = self
            .runners
            .lock()
            .unwrap()
            .remove(&runner)
            .map(|r| r.instance);
        let vm_alive = instance
            .as_ref()
            .is_some_and(|i| self.cloud.alive(STACK).iter().any(|o| &o.name == i));
        let what = if vm_alive {
            "VM STILL ALIVE"
        } else {
            "vm gone"
        };
        self.note(format!("delete {runner} ({what})"));
        Ok(())
    }
}

struct Rig<'a> {
    _dir: tempfile::TempDir,
    backend: LocalBackend,
    cloud: &'a MemoryCloud,
    ci: FakeCi<'a>,
    rules: RunnerRules,
}

impl<'a> Rig<'a> {
    fn new(cloud: &'a MemoryCloud) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Rig {
            backend: LocalBackend::new(dir.path().join("state.json")),
            _dir: dir,
            cloud,
            ci: FakeCi::new(cloud),
            rules: RunnerRules {
                drain_timeout: Duration::from_secs(3600),
                online_timeout: Duration::from_secs(600),
            },
        }
    }

    async fn observed(&self) -> Observed {
        let scope = Scope {
            stack: STACK.into(),
            lineage: LINEAGE.into(),
        };
        let mut o = self.cloud.observe(&scope).await.unwrap();
        o.runners = Some(self.ci.runners().await.unwrap());
        o
    }

    /// Plans `n` instances at `now`, the way the engine does (facts refreshed first).
    async fn plan(&self, state: &State, n: u32, now: DateTime<Utc>) -> (Plan, Observed) {
        let observed = self.observed().await;
        let mut view = state.clone();
        refresh_facts(&mut view, &observed, now);
        let desired = Desired {
            runner_rules: self.rules,
            ..desired(n, "debian-12")
        };
        let p = plan(&PlanInput {
            stack: STACK,
            cloud: "memory",
            operation: Operation::Up,
            state: &view,
            observed: &observed,
            desired: &desired,
            now,
        });
        (p, observed)
    }

    async fn apply(&self, p: &Plan, state: &mut State, observed: &Observed) -> ApplyReport {
        let clock = t0;
        let ex = Executor {
            cloud: self.cloud,
            ci: &self.ci,
            renderer: None,
            backend: &self.backend,
            scope: Scope {
                stack: STACK.into(),
                lineage: LINEAGE.into(),
            },
            options: ApplyOptions {
                dry_run: false,
                concurrency: 1,
                batch_size: 10,
            },
            progress: &NoProgress,
            clock: &clock,
        };
        ex.apply(p, state, Some(observed)).await.unwrap()
    }

    /// Plans and applies `n` instances at `now`.
    async fn converge(&self, state: &mut State, n: u32, now: DateTime<Utc>) -> (Plan, ApplyReport) {
        let (p, observed) = self.plan(state, n, now).await;
        let r = self.apply(&p, state, &observed).await;
        (p, r)
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn alive(cloud: &MemoryCloud) -> Vec<String> {
    let mut v: Vec<String> = cloud.alive(STACK).into_iter().map(|o| o.name).collect();
    v.sort();
    v
}

fn kinds(p: &Plan) -> Vec<(Action, &str, &str)> {
    p.changes
        .iter()
        .map(|c| (c.action, c.kind.as_str(), c.name.as_str()))
        .collect()
}

/// Two VMs with runners, created through the rig; returns the state.
async fn two_vms(r: &Rig<'_>) -> State {
    let mut state = State::new(STACK, LINEAGE);
    let (_, report) = r.converge(&mut state, 2, at(0)).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    state
}

#[tokio::test]
async fn each_vm_gets_its_own_runner_registered_before_it_is_created() {
    let cloud = MemoryCloud::new();
    let r = Rig::new(&cloud);
    let state = two_vms(&r).await;
    let log = r.ci.log();
    assert_eq!(log, vec!["create 1 ci-0001", "create 2 ci-0002"], "{log:?}");
    let ids: Vec<Option<u64>> = state.instances.values().map(|i| i.jobs.runner_id).collect();
    assert_eq!(ids, vec![Some(1), Some(2)]);
    assert_eq!(alive(&cloud), vec!["ci-0001", "ci-0002"]);
    // The token went to the VM only: the state file never holds it.
    let text = std::fs::read_to_string(r.backend.path()).unwrap();
    assert!(
        !text.contains("glrt-"),
        "a runner token reached the state file"
    );
    // Planning again changes nothing (runners and VMs agree).
    let (p, _) = r.plan(&state, 2, at(10)).await;
    assert!(p.is_empty(), "{}", p.display());
}

#[tokio::test]
async fn scale_in_pauses_drains_then_deletes_the_vm_before_its_runner() {
    let cloud = MemoryCloud::new();
    let r = Rig::new(&cloud);
    let mut state = two_vms(&r).await;
    r.ci.log();

    let (p, report) = r.converge(&mut state, 1, at(60)).await;
    assert_eq!(kinds(&p), vec![(Action::Delete, INSTANCE, "ci-0002")]);
    assert_eq!(report.done.delete, 1);
    assert_eq!(
        r.ci.log(),
        vec!["pause 2", "jobs 2 = 0", "delete 2 (vm gone)"],
        "order: pause, check jobs, delete the VM, then the runner"
    );
    assert_eq!(alive(&cloud), vec!["ci-0001"]);
    assert!(!state.instances.contains_key("ci-0002"));
}

#[tokio::test]
async fn a_vm_with_a_running_job_is_never_deleted_by_scale_in() {
    let cloud = MemoryCloud::new();
    let r = Rig::new(&cloud);
    let mut state = two_vms(&r).await;
    r.ci.set(1, |x| x.running = 1);
    r.ci.set(2, |x| x.running = 1);
    r.ci.log();

    // Both are busy; scaling to zero pauses both and deletes neither.
    let (_, report) = r.converge(&mut state, 0, at(60)).await;
    assert_eq!(report.done.delete, 0);
    assert_eq!(report.deferred.len(), 2, "{report:?}");
    assert!(report.failed.is_empty());
    assert_eq!(alive(&cloud), vec!["ci-0001", "ci-0002"]);
    let log = r.ci.log();
    assert!(log.iter().all(|l| !l.starts_with("delete")), "{log:?}");
    assert!(state
        .instances
        .values()
        .all(|i| i.draining_since == Some(t0())));

    // While the jobs run, later plans only wait (a note, no change).
    let (p, _) = r.converge(&mut state, 0, at(600)).await;
    assert!(p.changes.is_empty(), "{}", p.display());
    assert!(
        p.notes.iter().any(|n| n.contains("waiting on ci-0001")),
        "{:?}",
        p.notes
    );

    // One job ends: that VM goes, then its runner; the other still waits.
    r.ci.set(1, |x| x.running = 0);
    let (p, _) = r.converge(&mut state, 0, at(900)).await;
    assert_eq!(kinds(&p), vec![(Action::Delete, INSTANCE, "ci-0001")]);
    assert!(p.changes[0].reason.contains("no job runs on it"));
    assert_eq!(alive(&cloud), vec!["ci-0002"]);
    assert!(r.ci.log().contains(&"delete 1 (vm gone)".to_string()));
    assert_eq!(r.ci.ids(), vec![2]);
}

#[tokio::test]
async fn a_drain_past_the_timeout_returns_the_vm_to_service() {
    let cloud = MemoryCloud::new();
    let r = Rig::new(&cloud);
    let mut state = two_vms(&r).await;
    // Both busy: scale-in picks the newest, which drains.
    r.ci.set(1, |x| x.running = 1);
    r.ci.set(2, |x| x.running = 1);
    r.converge(&mut state, 1, at(60)).await;
    assert!(state.instances["ci-0002"].draining_since.is_some());
    r.ci.log();

    let (p, report) = r.converge(&mut state, 1, at(60 + 3601)).await;
    let start: Vec<_> = p
        .changes
        .iter()
        .filter(|c| c.action == Action::Start)
        .collect();
    assert_eq!(start.len(), 1, "{}", p.display());
    assert!(
        start[0].reason.contains("drain gave up"),
        "{}",
        start[0].reason
    );
    assert_eq!(report.done.start, 1);
    assert_eq!(r.ci.log(), vec!["resume 2"]);
    assert_eq!(state.instances["ci-0002"].draining_since, None);
    assert_eq!(alive(&cloud), vec!["ci-0001", "ci-0002"]);
}

#[tokio::test]
async fn runners_whose_vm_is_gone_are_deleted_with_a_reason() {
    let cloud = MemoryCloud::new();
    let r = Rig::new(&cloud);
    let mut state = two_vms(&r).await;
    // A runner left by a crash between registering it and recording it.
    r.ci.runners.lock().unwrap().insert(
        42,
        FakeRunner {
            instance: "ci-0042".into(),
            paused: false,
            running: 0,
            online: false,
        },
    );
    r.ci.log();
    let (p, report) = r.converge(&mut state, 2, at(60)).await;
    assert_eq!(kinds(&p), vec![(Action::Delete, RUNNER, "ci-0042")]);
    assert!(
        p.changes[0].reason.contains("runner #42"),
        "{}",
        p.changes[0].reason
    );
    assert_eq!(report.done.delete, 1);
    assert_eq!(r.ci.log(), vec!["delete 42 (vm gone)"]);
    assert_eq!(r.ci.ids(), vec![1, 2]);
}

#[tokio::test]
async fn a_vm_whose_runner_never_came_online_is_replaced() {
    let cloud = MemoryCloud::new();
    let r = Rig::new(&cloud);
    let mut state = State::new(STACK, LINEAGE);
    // The fake's runners come online at once; this one never does.
    r.converge(&mut state, 1, at(0)).await;
    r.ci.set(1, |x| x.online = false);
    state
        .instances
        .get_mut("ci-0001")
        .unwrap()
        .jobs
        .runner_online_at = None;

    let (p, _) = r.plan(&state, 1, at(599)).await;
    assert!(p.is_empty(), "within the online timeout: {}", p.display());

    r.ci.log();
    let (p, report) = r.converge(&mut state, 1, at(601)).await;
    assert_eq!(kinds(&p), vec![(Action::Replace, INSTANCE, "ci-0001")]);
    assert!(p.changes[0].reason.contains("never came online"));
    assert_eq!(report.done.replace, 1);
    assert_eq!(alive(&cloud), vec!["ci-0002"]);
    assert_eq!(
        r.ci.log(),
        vec![
            "create 2 ci-0002",
            "pause 1",
            "jobs 1 = 0",
            "delete 1 (vm gone)"
        ]
    );
}

#[tokio::test]
async fn draining_waits_when_gitlab_does_not_report_runners() {
    let cloud = MemoryCloud::new();
    let r = Rig::new(&cloud);
    let mut state = two_vms(&r).await;
    // Both busy: scale-in picks the newest, which drains.
    r.ci.set(1, |x| x.running = 1);
    r.ci.set(2, |x| x.running = 1);
    r.converge(&mut state, 1, at(60)).await;
    r.ci.set(2, |x| x.running = 0);

    // The runner listing failed this time: nothing is deleted on unknown facts.
    let mut observed = r.observed().await;
    observed.runners = None;
    let desired = Desired {
        runner_rules: r.rules,
        ..desired(1, "debian-12")
    };
    let p = plan(&PlanInput {
        stack: STACK,
        cloud: "memory",
        operation: Operation::Up,
        state: &state,
        observed: &observed,
        desired: &desired,
        now: at(120),
    });
    assert!(p.changes.is_empty(), "{}", p.display());
    assert!(
        p.notes.iter().any(|n| n.contains("did not report")),
        "{:?}",
        p.notes
    );
}

#[tokio::test]
async fn a_paused_runner_on_a_running_vm_that_is_not_draining_is_resumed() {
    let cloud = MemoryCloud::new();
    let r = Rig::new(&cloud);
    let mut state = two_vms(&r).await;
    // A stop paused the runner, then the process died before the VM was stopped.
    r.ci.set(1, |x| x.paused = true);
    r.ci.log();
    let (p, report) = r.converge(&mut state, 2, at(60)).await;
    assert_eq!(kinds(&p), vec![(Action::Start, INSTANCE, "ci-0001")]);
    assert!(
        p.changes[0].reason.contains("interrupted stop"),
        "{}",
        p.changes[0].reason
    );
    assert_eq!(report.done.start, 1);
    assert_eq!(r.ci.log(), vec!["resume 1"]);
    let (p, _) = r.plan(&state, 2, at(70)).await;
    assert!(p.is_empty(), "{}", p.display());
}
