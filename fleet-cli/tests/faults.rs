//! Proof that faults lose nothing, on the sandbox cloud with the GitLab simulator: SIGKILL
//! at many points leaves no leaked or duplicate VM and no leaked runner once `up` runs
//! again; ten `up`s at once end at exactly the desired fleet; 20% failing calls on both
//! sides still converge; an unreachable GitLab never scales in; and no secret shows up in
//! output, logs, state or rendered files. Each test prints its figure.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gitlab_sim::{Faults, Sim};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");
const TOKEN: &str = "sim-faults-token";
const HOOK_SECRET: &str = "hook-secret-do-not-print";

struct Rig {
    dir: tempfile::TempDir,
    sim: Sim,
}

impl Rig {
    async fn new(extra_policy: &str) -> Rig {
        let sim = common::agent_sim(TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        let stack = format!(
            "name: flt
provider:
  kind: sandbox
  boot_time: 0s
  instance_types: [small]
  runner_agent: true
instance:
  image: debian-12
  types: [small]
runner:
  gitlab_url: {url}
  token_env: FLEET_FAULTS_GITLAB_TOKEN
  webhook_secret_env: FLEET_FAULTS_HOOK_SECRET
  projects: [team/app]
  run_untagged: true
policy:
  min_instances: 0
  max_instances: 20
  idle_time: 0s
  stopped_max: 0
  billing: {{per: second, minimum: 0s}}
{extra_policy}
state:
  backend: local
  path: state.json
{templates}",
            url = sim.url(),
            templates = common::templates_section(),
        );
        std::fs::write(dir.path().join("flt.yaml"), stack).unwrap();
        Rig { dir, sim }
    }

    fn stack(&self) -> PathBuf {
        self.dir.path().join("flt.yaml")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--stack")
            .arg(self.stack())
            .args(args)
            .env("FLEET_FAULTS_GITLAB_TOKEN", TOKEN)
            .env("FLEET_FAULTS_HOOK_SECRET", HOOK_SECRET)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.path().join("state.json")).unwrap()).unwrap()
    }

    /// Names of live sandbox instances (duplicates kept), sorted.
    fn alive(&self) -> Vec<String> {
        let p = self.dir.path().join("sandbox-cloud.json");
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let world: Value = serde_json::from_slice(&bytes).unwrap();
        let mut v: Vec<String> = world["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["terminated_at"].is_null())
            .map(|i| i["tags"]["fleet:name"].as_str().unwrap_or("").to_string())
            .collect();
        v.sort();
        v
    }

    /// Ids of the simulator's runners.
    fn runner_ids(&self) -> BTreeSet<u64> {
        self.sim
            .with_world(|w, _| w.runners.keys().copied().collect())
    }

    /// Exactly `n` live VMs, none duplicated, all recorded with nothing pending, and
    /// exactly one runner per VM: the one its record names.
    fn assert_converged(&self, n: usize, context: &str) {
        let alive = self.alive();
        let unique: BTreeSet<&String> = alive.iter().collect();
        assert_eq!(
            unique.len(),
            alive.len(),
            "{context}: duplicate VMs {alive:?}"
        );
        assert_eq!(alive.len(), n, "{context}: leaked or missing VMs {alive:?}");
        let state = self.state();
        let records = state["instances"].as_object().unwrap();
        let recorded: Vec<String> = records.keys().cloned().collect();
        assert_eq!(recorded, alive, "{context}: state is not the live fleet");
        assert!(
            records.values().all(|r| r.get("pending").is_none()),
            "{context}: pending operations left"
        );
        let named: BTreeSet<u64> = records
            .values()
            .filter_map(|r| r["jobs"]["runner_id"].as_u64())
            .collect();
        assert_eq!(named.len(), n, "{context}: a VM without a runner");
        assert_eq!(
            self.runner_ids(),
            named,
            "{context}: leaked runners in GitLab"
        );
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\n{}\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
}

fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_fifty_points_leaks_no_vm_and_no_runner() {
    let rig = Rig::new("").await;
    let slow = [
        "--set",
        "provider.latency=60ms",
        "--set",
        "apply.batch_size=1",
        "--set",
        "apply.concurrency=2",
    ];
    let mut seed = 0xfa17;
    let (mut kills, rounds) = (0, 50);
    for round in 0..rounds {
        let want = [5, 1, 4, 0, 6, 2, 3][round % 7];
        let set = format!("policy.min_instances={want}");
        let mut args = vec!["up", "--yes", "--set", &set];
        args.extend_from_slice(&slow);
        let mut child = rig.spawn(&args);
        let wait = Duration::from_millis(10 + next(&mut seed) % 250);
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let o = rig.run(&["up", "--yes", "--set", &set]);
        ok(&o);
        rig.assert_converged(
            want,
            &format!("round {round} (killed after {wait:?}): {}", text(&o.stdout)),
        );
    }
    eprintln!("sigkill: {kills} of {rounds} ups killed mid-run; every next up converged with 0 leaked VMs, 0 duplicates, 0 leaked runners");
    // Rounds whose up finished before its kill still check convergence; enough must have
    // been killed mid-run for the test to mean something (the machine's load varies).
    assert!(
        kills >= rounds / 3,
        "too few rounds killed a running up: {kills}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_ups_at_once_end_at_exactly_the_desired_fleet() {
    let rig = Rig::new("").await;
    let args = [
        "up",
        "--yes",
        "--set",
        "policy.min_instances=5",
        "--set",
        "provider.latency=50ms",
        "--set",
        "apply.batch_size=1",
    ];
    let children: Vec<Child> = (0..10)
        .map(|_| {
            rig.cmd(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let (mut applied, mut refused) = (0, 0);
    for o in &outs {
        if o.status.success() {
            applied += 1;
        } else {
            refused += 1;
            let err = text(&o.stderr);
            assert!(
                err.contains("is locked by `fleet-cli up` (pid"),
                "a refused up must name the holder: {err}"
            );
        }
    }
    eprintln!("concurrency: 10 ups at once, {applied} ran, {refused} named the lock holder");
    assert!(applied >= 1);
    rig.assert_converged(5, "after ten concurrent ups");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_of_cloud_and_gitlab_calls_failing_still_converges() {
    let rig = Rig::new("").await;
    rig.sim.set_faults(Faults {
        error_rate: 0.1,
        throttle_rate: 0.1,
        latency_ms: 0,
    });
    let args = [
        "up",
        "--yes",
        "--set",
        "policy.min_instances=6",
        "--set",
        "provider.failure_rate=0.2",
    ];
    let started = Instant::now();
    let (mut runs, mut failed_runs) = (0, 0);
    loop {
        runs += 1;
        let o = rig.run(&args);
        if !o.status.success() {
            failed_runs += 1;
        }
        let done = o.status.success()
            && rig
                .run(&[
                    "preview",
                    "--detailed-exitcode",
                    "--set",
                    "policy.min_instances=6",
                ])
                .status
                .code()
                == Some(0);
        if done {
            break;
        }
        assert!(runs < 40, "no convergence after {runs} ups");
    }
    rig.sim.set_faults(Faults::default());
    ok(&rig.run(&["up", "--yes", "--set", "policy.min_instances=6"]));
    rig.assert_converged(6, "after faults");
    eprintln!(
        "api faults: 20% of cloud calls and 20% of GitLab calls failing; converged in {runs} ups ({failed_runs} reported failures) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gitlab_never_scales_in() {
    let rig = Rig::new("").await;
    ok(&rig.run(&["up", "--yes", "--set", "policy.min_instances=3"]));
    rig.assert_converged(3, "before");
    // Every GitLab call now fails: demand is unknown.
    rig.sim.set_faults(Faults {
        error_rate: 1.0,
        throttle_rate: 0.0,
        latency_ms: 0,
    });
    let o = rig.run(&["--json", "up", "--yes", "--set", "policy.min_instances=0"]);
    ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["plan"]["summary"]["delete"], 0, "{}", v["plan"]);
    assert!(
        v["plan"]["decision"]
            .as_str()
            .is_some_and(|d| d.contains("demand unknown")),
        "{}",
        v["plan"]
    );
    assert_eq!(rig.alive().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_output_logs_state_or_masked_renders() {
    let rig = Rig::new("").await;
    let cloud_key = "AKIAFAULTSSECRETKEY0000";
    let mut outputs = Vec::new();
    let mut tokens: BTreeSet<String> = BTreeSet::new();
    for args in [
        vec!["-vvv", "up", "--yes", "--set", "policy.min_instances=2"],
        vec![
            "-vvv",
            "--json",
            "up",
            "--yes",
            "--set",
            "policy.min_instances=3",
        ],
        vec!["-vvv", "preview", "--set", "policy.min_instances=1"],
        vec!["--json", "plan", "--set", "policy.min_instances=1"],
        vec!["render"],
        vec!["render", "--instance", "flt-0001"],
        vec!["state", "list"],
        vec!["--json", "state", "show", "flt-0001"],
        vec!["-vvv", "up", "--yes", "--set", "policy.min_instances=1"],
    ] {
        let o = rig
            .cmd(&args)
            .env("AWS_SECRET_ACCESS_KEY", cloud_key)
            .output()
            .unwrap();
        ok(&o);
        outputs.push(text(&o.stdout));
        outputs.push(text(&o.stderr));
        outputs.push(std::fs::read_to_string(rig.dir.path().join("state.json")).unwrap());
        // Every runner token GitLab issued to this fleet, before scale-in deletes it.
        rig.sim
            .with_world(|w, _| tokens.extend(w.runners.values().map(|r| r.token.clone())));
    }
    assert!(tokens.len() >= 3, "{} tokens", tokens.len());
    let created = rig.sim.counters().runners_created;
    let mut secrets = vec![
        TOKEN.to_string(),
        HOOK_SECRET.to_string(),
        cloud_key.to_string(),
    ];
    secrets.extend(tokens);
    let mut checked = 0;
    for s in &secrets {
        for out in &outputs {
            checked += 1;
            assert!(!out.contains(s.as_str()), "a secret was printed or stored");
        }
    }
    assert!(
        outputs.iter().any(|o| o.contains("#cloud-config")),
        "the renders printed user data"
    );
    eprintln!(
        "secrets: {} secrets ({created} runners created) checked against {} outputs, logs and the state file: none found ({checked} checks)",
        secrets.len(),
        outputs.len()
    );
}
