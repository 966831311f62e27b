//! End-to-end tests of the fleet-cli binary against the sandbox cloud, in a temporary
//! copy of stacks/sandbox.yaml: the flows the README promises, crash safety under SIGKILL,
//! and the state lock between two processes.

mod common;

use common::{alive_in, copy_stack};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks/sandbox.yaml");
        copy_stack(&src, &dir.path().join("sandbox.yaml"));
        Sandbox { dir }
    }

    fn stack(&self) -> PathBuf {
        self.dir.path().join("sandbox.yaml")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--stack").arg(self.stack()).args(args);
        c.stdin(Stdio::null())
            .env_remove("FLEET_STACK")
            .env_remove("RUST_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn state(&self) -> Value {
        let p = self.dir.path().join(".fleet/sandbox.state.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    fn lock_file(&self) -> PathBuf {
        self.dir.path().join(".fleet/sandbox.state.json.lock")
    }

    /// Names of the instances alive in the sandbox cloud, sorted (duplicates kept).
    fn alive(&self) -> Vec<String> {
        alive_in(&self.dir.path().join(".fleet/sandbox-cloud.json"))
    }

    fn resources_in_cloud(&self) -> usize {
        let p = self.dir.path().join(".fleet/sandbox-cloud.json");
        let world: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        world["resources"].as_array().unwrap().len()
    }

    /// The fleet is exactly `n` live instances, none duplicated, all recorded, nothing
    /// pending.
    fn assert_converged(&self, n: usize, context: &str) {
        let alive = self.alive();
        let mut unique = alive.clone();
        unique.dedup();
        assert_eq!(
            unique.len(),
            alive.len(),
            "{context}: duplicate instances {alive:?}"
        );
        assert_eq!(
            alive.len(),
            n,
            "{context}: leaked or missing instances {alive:?}"
        );
        let state = self.state();
        let recorded: Vec<String> = state["instances"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            recorded, alive,
            "{context}: state does not record exactly the live fleet"
        );
        assert!(
            state["instances"]
                .as_object()
                .unwrap()
                .values()
                .all(|r| r.get("pending").is_none()),
            "{context}: pending operations left in state"
        );
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn up_preview_scale_and_destroy() {
    let s = Sandbox::new();
    let o = s.run(&["up", "--yes"]);
    common::assert_ok(&o);
    assert!(
        text(&o.stdout).contains("Applied: 4 created"),
        "{}",
        text(&o.stdout)
    );
    s.assert_converged(3, "after up");
    assert_eq!(s.resources_in_cloud(), 1, "the key pair exists");

    let o = s.run(&["preview", "--detailed-exitcode"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "no changes after up:\n{}",
        text(&o.stdout)
    );
    assert!(text(&o.stdout).contains("No changes."));

    let o = s.run(&[
        "preview",
        "--detailed-exitcode",
        "--set",
        "policy.min_instances=5",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let out = text(&o.stdout);
    let creates: Vec<&str> = out.lines().filter(|l| l.starts_with("  + ")).collect();
    assert_eq!(creates.len(), 2, "exactly two creates:\n{out}");
    assert!(creates.iter().all(|l| l.contains("instance")));
    assert!(
        out.contains("Plan: 2 to create, 0 to replace, 0 to delete"),
        "{out}"
    );

    let o = s.run(&["plan", "--json", "--set", "policy.min_instances=5"]);
    common::assert_ok(&o);
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["summary"]["create"], 2);
    assert_eq!(plan["changes"][0]["action"], "create");
    s.assert_converged(3, "preview changes nothing");

    let o = s.run(&["destroy", "--yes"]);
    common::assert_ok(&o);
    assert!(s.alive().is_empty(), "destroy leaves no instance");
    assert_eq!(s.resources_in_cloud(), 0, "destroy leaves no resource");
    assert!(s.state()["instances"].as_object().unwrap().is_empty());
    // The stack still declares the fleet, so the next preview plans it all again.
    let o = s.run(&["preview", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stdout));
    assert!(
        text(&o.stdout).contains("Plan: 4 to create"),
        "{}",
        text(&o.stdout)
    );
}

/// SIGKILL at fixed points (right after the Nth create or delete call took effect, before
/// state recorded it), then `up` again: no duplicate, no leak.
#[test]
fn sigkill_after_a_cloud_call_then_up_converges() {
    for point in ["create:1", "create:3", "create:5"] {
        let s = Sandbox::new();
        let crash = format!("provider.crash_after={point}");
        let o = s.run(&[
            "up",
            "--yes",
            "--set",
            "apply.batch_size=1",
            "--set",
            "policy.min_instances=5",
            "--set",
            &crash,
        ]);
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{point}: the process must have been killed: {}",
            text(&o.stderr)
        );
        common::assert_ok(&s.run(&["up", "--yes", "--set", "policy.min_instances=5"]));
        s.assert_converged(5, point);
    }
    for point in ["delete:1", "delete:2"] {
        let s = Sandbox::new();
        common::assert_ok(&s.run(&["up", "--yes", "--set", "policy.min_instances=5"]));
        let crash = format!("provider.crash_after={point}");
        let o = s.run(&[
            "up",
            "--yes",
            "--set",
            "apply.batch_size=1",
            "--set",
            "policy.min_instances=2",
            "--set",
            &crash,
        ]);
        assert_eq!(o.status.signal(), Some(9), "{point}");
        common::assert_ok(&s.run(&["up", "--yes", "--set", "policy.min_instances=2"]));
        s.assert_converged(2, point);
    }
}

/// SIGKILL at arbitrary moments of a slow apply, scaling up and down, 12 times in a row
/// on one stack.
#[test]
fn sigkill_at_random_moments_then_up_converges() {
    let s = Sandbox::new();
    let slow = [
        "--set",
        "provider.latency=100ms",
        "--set",
        "apply.batch_size=1",
        "--set",
        "apply.concurrency=2",
    ];
    let mut seed: u64 = 0x5eed;
    let mut kills = 0;
    for round in 0..12 {
        let want = [6, 1, 4, 0, 5, 2][round % 6];
        let set = format!("policy.min_instances={want}");
        let mut args = vec!["up", "--yes", "--set", &set];
        args.extend_from_slice(&slow);
        let mut child = s.spawn(&args);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = Duration::from_millis(20 + (seed >> 33) % 300);
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let o = s.run(&["up", "--yes", "--set", &set]);
        common::assert_ok(&o);
        s.assert_converged(want, &format!("round {round} (killed after {wait:?})"));
    }
    assert!(
        kills >= 6,
        "most rounds must really kill a running apply, got {kills}"
    );
}

#[test]
fn two_ups_at_once_one_waits_or_reports_the_holder() {
    let s = Sandbox::new();
    let mut first = s.spawn(&[
        "up",
        "--yes",
        "--set",
        "provider.latency=300ms",
        "--set",
        "apply.batch_size=1",
        "--set",
        "apply.concurrency=1",
    ]);
    let started = Instant::now();
    while std::fs::metadata(s.lock_file())
        .map(|m| m.len())
        .unwrap_or(0)
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the first up never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = s.run(&["up", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("is locked by `fleet-cli up` (pid {}", first.id())),
        "{err}"
    );
    assert!(
        err.contains("hint: another fleet-cli is changing this stack"),
        "{err}"
    );

    // With --lock-timeout the second one waits, then finds nothing left to do.
    let o = s.run(&["up", "--yes", "--lock-timeout", "60s"]);
    common::assert_ok(&o);
    assert!(
        text(&o.stderr).contains("waiting up to"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).contains("No changes."),
        "{}",
        text(&o.stdout)
    );
    assert!(first.wait().unwrap().success());
    s.assert_converged(3, "after two concurrent ups");
}

#[test]
fn saved_plans_apply_exactly_and_only_on_their_serial() {
    let s = Sandbox::new();
    let plan = s.dir.path().join("plan.json");
    let p = plan.to_str().unwrap();
    common::assert_ok(&s.run(&["plan", "--out", p, "--set", "policy.min_instances=4"]));
    // Applying the saved plan does what it says, whatever the stack says now.
    common::assert_ok(&s.run(&["up", "--yes", "--plan", p]));
    s.assert_converged(4, "saved plan");
    // The same plan again: the state moved since it was made.
    let o = s.run(&["up", "--yes", "--plan", p]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("the saved plan was made on state serial 0"),
        "{err}"
    );
    assert!(err.contains("make a new plan"), "{err}");
    s.assert_converged(4, "a refused plan changes nothing");
}

#[test]
fn up_without_yes_and_without_a_terminal_refuses() {
    let s = Sandbox::new();
    let o = s.run(&["up"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("refusing to apply these changes without --yes"),
        "{}",
        text(&o.stderr)
    );
    assert!(!s.dir.path().join(".fleet/sandbox-cloud.json").exists() || s.alive().is_empty());
}

#[test]
fn stack_errors_name_file_line_column() {
    let s = Sandbox::new();
    let body = std::fs::read_to_string(s.stack())
        .unwrap()
        .replace("max_instances: 10", "max_instance: 10");
    std::fs::write(s.stack(), body).unwrap();
    let o = s.run(&["preview"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    let expected = format!(
        "error: unknown key `max_instance` at {}:",
        s.stack().display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("; did you mean `max_instances`?"), "{err}");
    assert!(err.contains("hint: fix the stack file"), "{err}");
}

#[test]
fn unknown_providers_and_bad_settings_are_located() {
    let s = Sandbox::new();
    let o = s.run(&["preview", "--set", "provider.kind=sandbx"]);
    let err = text(&o.stderr);
    assert!(
        err.contains(
            "unknown provider `sandbx` at --set provider.kind=sandbx; did you mean `sandbox`?"
        ),
        "{err}"
    );
    let o = s.run(&["preview", "--set", "provider.boot_tim=3s"]);
    let err = text(&o.stderr);
    assert!(
        err.contains(
            "unknown key `boot_tim` at --set provider.boot_tim=3s; did you mean `boot_time`?"
        ),
        "{err}"
    );
}

#[test]
fn unsupported_resource_kinds_and_reserved_labels_are_refused_at_load() {
    let s = Sandbox::new();
    let o = s.run(&["preview", "--set", "resources.0.kind=bucket"]);
    let err = text(&o.stderr);
    assert!(err.contains("the sandbox provider has no resource kind `bucket` at --set resources.0.kind=bucket; it has: key_pair"), "{err}");
    let o = s.run(&["preview", "--set", "instance.labels={\"fleet:stack\": x}"]);
    let err = text(&o.stderr);
    assert!(
        err.contains("label `fleet:stack` uses the `fleet:` prefix"),
        "{err}"
    );
}

#[test]
fn json_output_stays_parseable_when_apply_is_declined() {
    let s = Sandbox::new();
    let o = s.run(&["up", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        o.stdout.is_empty(),
        "nothing but JSON may reach stdout: {}",
        text(&o.stdout)
    );
}

#[test]
fn state_commands_list_show_rm_and_import() {
    let s = Sandbox::new();
    common::assert_ok(&s.run(&["up", "--yes", "--set", "policy.min_instances=2"]));
    let o = s.run(&["state", "list", "--json"]);
    common::assert_ok(&o);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["instances"].as_array().unwrap().len(), 2);
    let id = list["instances"][0]["cloud_id"]
        .as_str()
        .unwrap()
        .to_string();

    let o = s.run(&["state", "show", "sandbox-0001"]);
    common::assert_ok(&o);
    assert!(text(&o.stdout).contains(&id));

    // rm forgets the record; the instance still carries our tags, so the next plan adopts it.
    common::assert_ok(&s.run(&["state", "rm", "sandbox-0001"]));
    let o = s.run(&["preview", "--set", "policy.min_instances=2"]);
    assert!(
        text(&o.stdout).contains("~ instance  sandbox-0001"),
        "{}",
        text(&o.stdout)
    );

    // import records it again under a name of our choosing.
    common::assert_ok(&s.run(&["state", "import", "sandbox-0001", &id]));
    let o = s.run(&[
        "preview",
        "--detailed-exitcode",
        "--set",
        "policy.min_instances=2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let o = s.run(&["state", "import", "other", "sbx-999999"]);
    assert!(
        text(&o.stderr).contains("has no instance sbx-999999"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn refresh_forgets_instances_deleted_behind_our_back() {
    let s = Sandbox::new();
    common::assert_ok(&s.run(&["up", "--yes", "--set", "policy.min_instances=2"]));
    // Someone deletes an instance in the cloud console.
    let p = s.dir.path().join(".fleet/sandbox-cloud.json");
    let mut world: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    world["instances"][0]["terminated_at"] = Value::String("2026-11-01T00:00:00Z".into());
    std::fs::write(&p, serde_json::to_vec(&world).unwrap()).unwrap();
    let o = s.run(&["refresh"]);
    common::assert_ok(&o);
    assert!(text(&o.stdout).contains("forget"), "{}", text(&o.stdout));
    assert_eq!(s.state()["instances"].as_object().unwrap().len(), 1);
    common::assert_ok(&s.run(&["up", "--yes", "--set", "policy.min_instances=2"]));
    s.assert_converged(2, "after refresh and up");
}
