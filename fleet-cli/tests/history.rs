//! `fleet-cli history` and `fleet-cli state seed-demand` end to end: a GitLab simulator
//! serving a finished-job history, the trace the command writes and `simulate` replays, and
//! `up` on the sandbox following the pool learned from a seeded record, with the plan
//! saying what was learned.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use gitlab_sim::trace::{ending_at, TraceJob};
use gitlab_sim::Sim;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");
const TOKEN: &str = "sim-history-token";

struct Rig {
    dir: tempfile::TempDir,
    sim: Sim,
}

impl Rig {
    /// A simulator whose runners come online when a VM verifies their token, and a sandbox
    /// stack (VMs boot in `boot`) reading `scope` (e.g. `projects: [team/app]`).
    async fn new(scope: &str, boot: &str, policy: &str) -> Rig {
        let sim = common::agent_sim(TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        let stack = format!(
            "name: hist
provider:
  kind: sandbox
  boot_time: {boot}
  resume_time: 0s
  instance_types: [small]
  runner_agent: true
  cloud_file: {cloud}
instance:
  image: debian-12
  types: [small]
runner:
  gitlab_url: {url}
  token_env: FLEET_TEST_GITLAB_TOKEN
  {scope}
  tags: [docker]
  run_untagged: true
policy:
{policy}
state:
  backend: local
  path: state.json
{templates}",
            url = sim.url(),
            cloud = dir.path().join("cloud.json").display(),
            templates = common::templates_section(),
        );
        std::fs::write(dir.path().join("hist.yaml"), stack).unwrap();
        Rig { dir, sim }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--stack")
            .arg(self.path("hist.yaml"))
            .args(args)
            .env("FLEET_TEST_GITLAB_TOKEN", TOKEN)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let o = self.run(args);
        common::assert_ok(&o);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(!out.contains(TOKEN), "the GitLab token was printed");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Sandbox instances alive, and how many of them are stopped (or stopping).
    fn cloud(&self) -> (usize, usize) {
        let world: Value =
            serde_json::from_slice(&std::fs::read(self.path("cloud.json")).unwrap()).unwrap();
        let alive: Vec<&Value> = world["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["terminated_at"].is_null())
            .collect();
        let stopped = alive.iter().filter(|i| !i["stopped_at"].is_null()).count();
        (alive.len(), stopped)
    }
}

/// A trace of `rows` in the shared format.
fn write_trace(path: &Path, rows: &[(DateTime<Utc>, u32, u64)]) {
    let mut text = String::from("queued_at,duration_s,project,pipeline\n");
    for (at, d, p) in rows {
        text.push_str(&format!(
            "{},{d},team/app,{p}\n",
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// Bursts of 11 jobs (five minutes each) at this hour on each of the last 14 days.
fn eleven_at_this_hour_for_two_weeks(now: DateTime<Utc>) -> Vec<(DateTime<Utc>, u32, u64)> {
    let mut rows = Vec::new();
    for day in (1..=14).rev() {
        let at = now - chrono::Duration::days(day);
        rows.extend((0..11).map(|_| (at, 300, day as u64)));
    }
    rows
}

/// `(queued_at - first queued_at, duration_s)` of each row of a trace file, sorted.
fn shape(text: &str) -> Vec<(i64, u64)> {
    let rows: Vec<(i64, u64)> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let t = DateTime::parse_from_rfc3339(f[0]).unwrap().timestamp();
            (t, f[1].parse().unwrap())
        })
        .collect();
    let first = rows.iter().map(|r| r.0).min().unwrap();
    let mut v: Vec<(i64, u64)> = rows.into_iter().map(|(t, d)| (t - first, d)).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_from_gitlab_writes_a_trace_that_simulate_replays_job_for_job() {
    let rig = Rig::new("groups: [demo]", "0s", "  max_instances: 40").await;
    // The demo trace (12 projects of the group `demo`, 13 days) as the finished jobs of
    // the weeks that ended a minute ago, each having waited 5 s for a runner.
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks/traces/demo.csv");
    let jobs: Vec<TraceJob> = gitlab_sim::trace::load(&demo).unwrap();
    let end = rig.sim.now() - chrono::Duration::minutes(1);
    // A job older than the window, which is not read.
    rig.sim
        .add_history(
            &[TraceJob {
                queued_at: end - chrono::Duration::days(40),
                duration_s: 60,
                project: "demo/project-0".into(),
                pipeline: 1,
            }],
            0.0,
        )
        .unwrap();
    let served = rig.sim.add_history(&ending_at(&jobs, end), 5.0).unwrap();
    assert_eq!(served, 1916);

    let out = rig.path("history.csv");
    let o = rig.run(&["history", "--since", "28d", "--out", out.to_str().unwrap()]);
    common::assert_ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("Read 1916 finished jobs") && stderr.contains("12 projects"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(TOKEN) && !String::from_utf8_lossy(&o.stdout).contains(TOKEN),
        "the GitLab token was printed"
    );
    let written = std::fs::read_to_string(&out).unwrap();
    // Job for job the demo trace, moved in time: each arrives when the sim queued it and
    // runs as long as it ran.
    let original = std::fs::read_to_string(&demo).unwrap();
    assert_eq!(shape(&written), shape(&original));

    let v = rig.json(&["simulate", "--trace", out.to_str().unwrap(), "--json"]);
    assert_eq!(v["jobs"], served as u64, "{v}");
    assert!(v["wait_p95_s"].as_f64().is_some(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_shows_the_record_before_and_after_asks_and_a_second_seed_changes_nothing() {
    let rig = Rig::new(
        "projects: [team/app]",
        "0s",
        "  max_instances: 30\n  target: {wait: 2s, percentile: 95}",
    )
    .await;
    let trace = rig.path("history.csv");
    write_trace(&trace, &eleven_at_this_hour_for_two_weeks(Utc::now()));
    let t = trace.to_str().unwrap();
    // Nobody can confirm on a pipe: refused, state untouched.
    let o = rig.run(&["state", "seed-demand", t]);
    assert_eq!(o.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("now:   none"), "{stdout}");
    assert!(stdout.contains("154 jobs, at most 11 at once"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--yes"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!rig.path("state.json").exists());

    let o = rig.run(&["state", "seed-demand", t, "--yes"]);
    common::assert_ok(&o);
    let state: Value =
        serde_json::from_slice(&std::fs::read(rig.path("state.json")).unwrap()).unwrap();
    assert_eq!(state["demand"]["slots"].as_array().map(Vec::len), Some(14));
    let serial = state["serial"].clone();
    let v = rig.json(&["--json", "state", "seed-demand", t, "--yes"]);
    assert_eq!(v["changed"], false, "{v}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(rig.path("state.json")).unwrap()).unwrap();
    assert_eq!(state["serial"], serial);

    // A file that is no trace says where and what.
    std::fs::write(rig.path("bad.csv"), "when,how\n").unwrap();
    let o = rig.run(&[
        "state",
        "seed-demand",
        rig.path("bad.csv").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("bad.csv:1: header"), "{stderr}");
}

/// The learned-pool reasons among a plan's changes (`--json` output of plan or up).
fn learned_reasons(v: &Value) -> Vec<String> {
    let changes = v["changes"]
        .as_array()
        .or_else(|| v["plan"]["changes"].as_array())
        .cloned()
        .unwrap_or_default();
    changes
        .iter()
        .filter(|c| c["action"] == "create")
        .filter_map(|c| c["reason"].as_str().map(str::to_string))
        .filter(|r| r.contains("the level learned"))
        .collect()
}

/// Checks a learned-pool reason says: pool 12, level 12, 11 jobs at once, two weeks.
fn assert_says_what_was_learned(reasons: &[String]) {
    assert!(!reasons.is_empty(), "no learned-pool reason");
    for r in reasons {
        let days = r
            .split_once(
                "pool 12: the level learned for this hour is 12 job slots (at most 11 jobs at once in the last ",
            )
            .and_then(|(_, rest)| rest.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected reason: {r}"));
        // The record covers 14 days to the start of the current six-hour block.
        assert!(days == "13" || days == "14", "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_the_sandbox_keeps_the_pool_learned_from_a_seeded_history_and_says_why() {
    // Boots (3 s, and measured so) miss the 2 s target, resumes (expected 1 s) meet it: the
    // learned level is kept as stopped VMs. Without the seed the cold start would keep 20.
    let rig = Rig::new(
        "projects: [team/app]",
        "3s",
        "  min_instances: 0
  max_instances: 30
  idle_count: 0
  stopped_count: 0
  boot_time: 90s
  resume_time: 1s
  billing: {per: second, minimum: 0s}
  target: {wait: 2s, percentile: 95}",
    )
    .await;
    let trace = rig.path("history.csv");
    write_trace(&trace, &eleven_at_this_hour_for_two_weeks(Utc::now()));
    common::assert_ok(&rig.run(&["state", "seed-demand", trace.to_str().unwrap(), "--yes"]));

    let plan = rig.json(&["--json", "plan"]);
    assert_says_what_was_learned(&learned_reasons(&plan));
    let creates = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "create")
        .count();
    assert_eq!(creates, 12, "{plan}");
    let decision = plan["decision"].as_str().unwrap_or_default();
    assert!(
        decision.contains("pool learned from 1")
            && decision.contains("(154 jobs, at most 11 at once): floor 12"),
        "{decision}"
    );

    let up = rig.json(&["--json", "up", "--yes"]);
    assert_says_what_was_learned(&learned_reasons(&up));
    assert_eq!(rig.cloud(), (12, 0));
    // Once booted and online, the pool VMs are parked: 12 stopped, none created again.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.cloud() != (12, 12) {
        assert!(
            Instant::now() < deadline,
            "the pool was not parked within 60 s: {:?}",
            rig.cloud()
        );
        let v = rig.json(&["--json", "up", "--yes"]);
        let made: Vec<&Value> = v["plan"]["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["action"] == "create" || c["action"] == "delete")
            .collect();
        assert!(made.is_empty(), "the pool churned: {made:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let state: Value =
        serde_json::from_slice(&std::fs::read(rig.path("state.json")).unwrap()).unwrap();
    let boots = state["timings"].to_string();
    assert!(boots.contains("boot"), "boots were measured: {boots}");
    // Measured boots (3 s) still miss the target: the plan keeps the pool as it is.
    let plan = rig.json(&["--json", "plan"]);
    let changes = plan["changes"].as_array().cloned().unwrap_or_default();
    assert!(
        changes
            .iter()
            .all(|c| c["action"] != "create" && c["action"] != "delete"),
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_of_a_project_gitlab_does_not_know_fails_with_the_path_and_a_hint() {
    let rig = Rig::new("projects: [team/nope]", "0s", "  max_instances: 4").await;
    let o = rig.run(&["history", "--out", rig.path("h.csv").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("cannot read the job history from GitLab")
            && stderr.contains("team%2Fnope")
            && stderr.contains("404")
            && stderr.contains("hint: check runner.projects"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "the GitLab token was printed");
    assert!(!rig.path("h.csv").exists(), "a trace was written on error");
}
