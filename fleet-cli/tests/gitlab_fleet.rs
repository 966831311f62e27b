//! `up` against the GitLab simulator and the sandbox cloud, end to end: demand from queued
//! jobs, one runner per VM (its token reaches the VM, which brings the runner online), jobs
//! run, and scale-in that drains and deletes the VM before its runner. Also the stopped pool:
//! `up` stops and starts VMs as the demand policy says, and the plan says why.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gitlab_sim::{JobStatus, NewJob, Sim};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");
const TOKEN: &str = "sim-test-token";

struct Rig {
    dir: tempfile::TempDir,
    sim: Sim,
}

impl Rig {
    /// A simulator whose runners come online only when a VM verifies their token, and a
    /// stack on the sandbox whose VMs do that once booted.
    async fn new(policy: &str) -> Rig {
        let sim = common::agent_sim(TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        let stack = format!(
            "name: gl
provider:
  kind: sandbox
  boot_time: 0s
  resume_time: 0s
  instance_types: [small]
  runner_agent: true
instance:
  image: debian-12
  types: [small]
runner:
  gitlab_url: {url}
  token_env: FLEET_TEST_GITLAB_TOKEN
  projects: [team/app]
  tags: [docker]
  run_untagged: true
policy:
{policy}
state:
  backend: local
  path: state.json
{templates}",
            url = sim.url(),
            templates = common::templates_section(),
        );
        std::fs::write(dir.path().join("gl.yaml"), stack).unwrap();
        Rig { dir, sim }
    }

    fn stack(&self) -> PathBuf {
        self.dir.path().join("gl.yaml")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_token(TOKEN, args)
    }

    fn run_with_token(&self, token: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--stack")
            .arg(self.stack())
            .args(args)
            .env("FLEET_TEST_GITLAB_TOKEN", token)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `up --yes --json`; returns the plan and the report, and checks no runner token
    /// appears in anything it printed.
    fn up(&self) -> Value {
        let out = self.run(&["--json", "up", "--yes"]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "up failed:\n{stdout}\n{stderr}");
        assert!(
            !stdout.contains("glrt-") && !stderr.contains("glrt-"),
            "a runner token was printed"
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.path().join("state.json")).unwrap();
        assert!(
            !text.contains("glrt-"),
            "a runner token reached the state file"
        );
        serde_json::from_str(&text).unwrap()
    }

    /// Descriptions of the simulator's runners, sorted.
    fn runners(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .sim
            .with_world(|w, _| w.runners.values().map(|r| r.description.clone()).collect());
        v.sort();
        v
    }

    fn online_runners(&self) -> usize {
        self.sim
            .with_world(|w, now| w.runners.values().filter(|r| r.online(now)).count())
    }

    fn jobs(&self, status: JobStatus) -> usize {
        self.sim
            .with_world(|w, _| w.jobs.values().filter(|j| j.status == status).count())
    }

    fn enqueue(&self, n: usize, seconds: f64) {
        for i in 0..n {
            self.sim
                .enqueue(NewJob {
                    project: "team/app".into(),
                    name: Some(format!("job-{i}")),
                    tag_list: vec!["docker".into()],
                    run_seconds: seconds,
                    pipeline_id: None,
                })
                .unwrap();
        }
    }
}

fn changes(v: &Value) -> Vec<(String, String, String)> {
    v["plan"]["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["action"].as_str().unwrap_or_default().to_string(),
                        c["kind"].as_str().unwrap_or_default().to_string(),
                        c["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_get_vms_with_their_own_runners_and_idle_vms_go_runner_last() {
    let rig = Rig::new(
        "  min_instances: 0
  max_instances: 4
  idle_count: 0
  idle_time: 1s
  stopped_count: 0
  stopped_max: 0
  boot_time: 1s
  billing: {per: second, minimum: 0s}",
    )
    .await;
    rig.enqueue(2, 1.0);

    // Two jobs wait: two VMs, each with its runner registered first.
    let v = rig.up();
    let c = changes(&v);
    assert_eq!(
        c.iter().filter(|c| c.0 == "create").count(),
        2,
        "{}",
        v["plan"]
    );
    assert!(c[0].2.contains("2 jobs waiting"), "{c:?}");
    assert_eq!(rig.runners(), vec!["fleet:gl/gl-0001", "fleet:gl/gl-0002"]);
    let state = rig.state();
    for name in ["gl-0001", "gl-0002"] {
        assert!(
            state["instances"][name]["jobs"]["runner_id"]
                .as_u64()
                .is_some(),
            "{name} has no runner id in state"
        );
    }
    assert_eq!(rig.online_runners(), 0, "nothing verified a token yet");

    // The next cycle observes the booted VMs; each verifies its own token (so the token
    // reached its user data) and its runner takes a job.
    rig.up();
    assert_eq!(rig.online_runners(), 2);
    // Each boot ended when its runner first contacted GitLab, as GitLab dates it (the
    // manager created at the first contact), not when `up` happened to look; both boots
    // were measured from it.
    let client =
        fleet_providers::gitlab::client_for(&rig.sim.url(), fleet_core::secret::Secret::new(TOKEN))
            .unwrap();
    let state = rig.state();
    for name in ["gl-0001", "gl-0002"] {
        let jobs = &state["instances"][name]["jobs"];
        let id = jobs["runner_id"].as_u64().unwrap();
        let first = client.managers(id).await.unwrap()[0].created_at.unwrap();
        let online: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(jobs["runner_online_at"].clone()).unwrap();
        assert_eq!(online, first, "{name}");
        assert!(state["instances"][name].get("warming").is_none(), "{state}");
    }
    assert_eq!(
        state["timings"]["boots"].as_array().map(Vec::len),
        Some(2),
        "{state}"
    );
    wait_until("both jobs to finish", Duration::from_secs(20), || {
        rig.jobs(JobStatus::Success) == 2
    });

    // Idle past idle_time and no stopped pool: both retire, each drained and deleted
    // before its runner; no job was ever killed.
    let mut retired = Vec::new();
    let mut plans = Vec::new();
    wait_until("both VMs to retire", Duration::from_secs(20), || {
        let v = rig.up();
        plans.push(format!("{}\n{}", v["plan"], v["result"]));
        retired.extend(
            changes(&v)
                .into_iter()
                .filter(|c| c.0 == "delete" && c.1 == "instance"),
        );
        std::thread::sleep(Duration::from_millis(300));
        rig.state()["instances"]
            .as_object()
            .is_some_and(|o| o.is_empty())
    });
    assert_eq!(retired.len(), 2, "{retired:?}\n{}", plans.join("\n"));
    assert!(
        retired.iter().all(|c| c.2.contains("retire: idle")),
        "{retired:?}"
    );
    assert!(
        rig.runners().is_empty(),
        "runners left: {:?}",
        rig.runners()
    );
    assert_eq!(rig.sim.counters().jobs_killed_by_runner_delete, 0);

    // A runner of this stack that no record names (left by a crash) is deleted.
    client
        .create_runner(&fleet_providers::gitlab::client::RunnerSpec {
            runner_type: fleet_core::stack::RunnerType::InstanceType,
            group_id: None,
            project_id: None,
            description: "fleet:gl/gl-0099".into(),
            tag_list: vec!["docker".into()],
            run_untagged: true,
            locked: false,
            maximum_timeout: None,
            paused: false,
        })
        .await
        .unwrap();
    let v = rig.up();
    let c = changes(&v);
    assert!(
        c.iter()
            .any(|c| c.0 == "delete" && c.1 == "runner" && c.2.contains("gl-0099")),
        "{c:?}"
    );
    assert!(rig.runners().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_stops_idle_vms_into_the_pool_and_starts_them_for_jobs() {
    let rig = Rig::new(
        "  min_instances: 0
  max_instances: 4
  idle_count: 0
  idle_time: 1s
  stopped_count: 1
  stopped_time: 1h
  boot_time: 1s
  resume_time: 1s
  billing: {per: second, minimum: 0s}",
    )
    .await;

    // No jobs: the pool is filled with one VM, provisioned and then parked.
    let v = rig.up();
    let c = changes(&v);
    assert!(
        c.iter()
            .any(|c| c.0 == "create" && c.2.contains("stopped pool")),
        "{c:?}"
    );
    let v = rig.up();
    let c = changes(&v);
    let stops: Vec<_> = c.iter().filter(|c| c.0 == "stop").collect();
    assert_eq!(stops.len(), 1, "{}", v["plan"]);
    assert!(!stops[0].2.is_empty());
    let state = rig.state();
    assert_eq!(state["instances"]["gl-0001"]["lifecycle"], "stopping");

    // A job arrives: the stopped VM is started rather than a new one created.
    rig.enqueue(1, 1.0);
    let v = rig.up();
    let c = changes(&v);
    let starts: Vec<_> = c.iter().filter(|c| c.0 == "start").collect();
    assert_eq!(starts.len(), 1, "{c:?}");
    assert!(starts[0].2.contains("1 job waiting"), "{c:?}");
    wait_until("the job to finish", Duration::from_secs(20), || {
        rig.up();
        rig.jobs(JobStatus::Success) == 1
    });
}

#[test]
fn the_demo_replays_a_trace_and_reports_waits_and_vm_hours() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(BIN)
        .current_dir(&repo)
        .args([
            "--stack",
            "stacks/demo.yaml",
            "demo",
            "--trace",
            "stacks/traces/demo.csv",
            "--hours",
            "0.2",
            // Faster than the stack's 60x proportions: this checks the mechanics only.
            "--speed",
            "120",
        ])
        .env("FLEET_DEMO_TOKEN", "demo-test-token")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| queue"), "no live lines: {stdout}");
    let report = stdout
        .lines()
        .find(|l| l.starts_with("Report ("))
        .unwrap_or_else(|| panic!("no report: {stdout}"));
    // Every replayed job ran: "Report (N jobs finished of N)".
    let nums: Vec<&str> = report
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(nums.len(), 2, "{report}");
    assert_eq!(nums[0], nums[1], "{report}");
    assert!(stdout.contains("wait for a runner: p50"), "{stdout}");
    assert!(stdout.contains("VM-hours:"), "{stdout}");
    assert!(
        stdout.contains("jobs killed by a runner delete: 0;"),
        "{stdout}"
    );
    assert!(!stdout.contains("glrt-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_or_unknown_project_fails_preview_plan_and_up_with_exit_1_and_a_hint() {
    let rig = Rig::new("  min_instances: 1\n  max_instances: 4").await;
    for args in [
        vec!["preview"],
        vec!["plan", "--detailed-exitcode"],
        vec!["up", "--yes"],
    ] {
        let o = rig.run_with_token("not-the-token", &args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("answered 401"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("hint: the access token in runner.token_env is wrong"),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        rig.runners().is_empty(),
        "nothing was created on a refused token"
    );
    let o = rig.run(&["preview", "--set", "runner.projects=[team/missing]"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("hint: check runner.projects"), "{stderr}");
    // The right token: a plan with changes, exit 2 as before.
    assert_eq!(
        rig.run(&["plan", "--detailed-exitcode"]).status.code(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_detailed_exitcode_exits_1_when_gitlab_is_down() {
    let rig = Rig::new("  min_instances: 0\n  max_instances: 4").await;
    common::assert_ok(&rig.run(&["up", "--yes"]));
    assert_eq!(
        rig.run(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0),
        "converged, GitLab answering: no changes"
    );
    rig.sim.set_faults(gitlab_sim::Faults {
        error_rate: 1.0,
        ..gitlab_sim::Faults::default()
    });
    let o = rig.run(&["plan", "--detailed-exitcode"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("demand is unknown"), "{stderr}");
    // Without the flag the plan is still shown and `up` still never scales in on it.
    common::assert_ok(&rig.run(&["plan"]));
}
