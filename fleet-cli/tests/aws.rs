//! `fleet-cli` on stacks/aws.yaml against the moto EC2 emulator (started by `make test`,
//! which exports AWS_ENDPOINT_URL): a 100-instance fleet in at most three launch calls,
//! and destroy leaving nothing running.

mod common;

use common::copy_stack;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use fleet_providers::testing::{FaultProxy, Rule};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");

fn require_moto() {
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        panic!("AWS_ENDPOINT_URL is not set: these tests need the moto server; run them with `make test` (scripts/with-moto starts it)");
    }
}

fn command(dir: &Path, endpoint: Option<&str>, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--stack")
        .arg(dir.join("aws.yaml"))
        .args(args)
        .stdin(Stdio::null());
    if let Some(url) = endpoint {
        c.env("AWS_ENDPOINT_URL", url);
    }
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    command(dir, None, args).output().unwrap()
}

/// A preview with `min` instances wanted finds nothing to change.
fn assert_no_changes(dir: &Path, set_name: &str, min: u32) {
    let wanted = format!("policy.min_instances={min}");
    let o = run(
        dir,
        &[
            "preview",
            "--detailed-exitcode",
            "--set",
            set_name,
            "--set",
            &wanted,
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// A copy of stacks/aws.yaml in a fresh directory, with `edit` applied to its text.
fn stack_dir(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aws.yaml");
    copy_stack(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks/aws.yaml"),
        &path,
    );
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    dir
}

fn moto() -> String {
    require_moto();
    std::env::var("AWS_ENDPOINT_URL").unwrap()
}

async fn sdk() -> aws_config::SdkConfig {
    fleet_providers::aws::sdk_config(Some("us-east-1"), Some(&moto()), 3).await
}

/// Instances tagged with `stack` in any of `states` (all states when empty), read from moto
/// directly.
async fn instances(stack: &str, states: &[&str]) -> Vec<aws_sdk_ec2::types::Instance> {
    let ec2 = aws_sdk_ec2::Client::new(&sdk().await);
    let mut req = ec2.describe_instances().filters(
        aws_sdk_ec2::types::Filter::builder()
            .name("tag:fleet:stack")
            .values(stack)
            .build(),
    );
    if !states.is_empty() {
        let mut f = aws_sdk_ec2::types::Filter::builder().name("instance-state-name");
        for s in states {
            f = f.values(*s);
        }
        req = req.filters(f.build());
    }
    let out = req.send().await.unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect()
}

/// Live (pending or running) instances tagged with `stack`.
async fn live(stack: &str) -> Vec<aws_sdk_ec2::types::Instance> {
    instances(stack, &["pending", "running"]).await
}

/// EC2 state names of every instance tagged with `stack`.
async fn state_names(stack: &str) -> Vec<String> {
    instances(stack, &[])
        .await
        .iter()
        .filter_map(|i| {
            i.state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
        })
        .collect()
}

/// Ids of the live instances of `stack`, sorted.
async fn live_instances(stack: &str) -> Vec<String> {
    let mut ids: Vec<String> = live(stack)
        .await
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

fn json(o: &Output) -> Value {
    common::assert_ok(o);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_hundred_instances_in_at_most_three_launch_calls_and_destroy_leaves_none() {
    require_moto();
    // Without templates every instance boots the same: one launch call can carry the batch.
    // (With per-instance user data each instance is its own call; see the provider tests.)
    let dir = stack_dir(without_templates);
    let name = format!("aws-cli-{}", std::process::id());
    let set_name = format!("name={name}");

    let started = std::time::Instant::now();
    let up = json(&run(
        dir.path(),
        &[
            "up",
            "--yes",
            "--json",
            "--set",
            &set_name,
            "--set",
            "policy.min_instances=100",
        ],
    ));
    let up_time = started.elapsed();
    assert_eq!(up["result"]["done"]["create"], 100, "{}", up["result"]);
    let calls = &up["cloud_calls"];
    let launches =
        calls["RunInstances"].as_u64().unwrap_or(0) + calls["CreateFleet"].as_u64().unwrap_or(0);
    assert!(
        (1..=3).contains(&launches),
        "100 instances must take at most 3 launch calls: {calls}"
    );
    eprintln!(
        "up 100: {launches} launch calls, {:.2}s, calls {calls}",
        up_time.as_secs_f64()
    );

    let list = json(&run(
        dir.path(),
        &["state", "list", "--json", "--set", &set_name],
    ));
    assert_eq!(list["instances"].as_array().unwrap().len(), 100);

    // A second preview finds the fleet as declared.
    assert_no_changes(dir.path(), &set_name, 100);

    let started = std::time::Instant::now();
    let down = json(&run(
        dir.path(),
        &["destroy", "--yes", "--json", "--set", &set_name],
    ));
    assert_eq!(down["result"]["done"]["delete"], 100);
    eprintln!(
        "destroy 100: {:.2}s, calls {}",
        started.elapsed().as_secs_f64(),
        down["cloud_calls"]
    );
    assert!(
        down["cloud_calls"]["TerminateInstances"].as_u64().unwrap() <= 1,
        "{}",
        down["cloud_calls"]
    );

    // Nothing of the stack is left running: a fresh state would adopt anything tagged.
    std::fs::remove_dir_all(dir.path().join(".fleet")).unwrap();
    let plan = json(&run(
        dir.path(),
        &[
            "plan",
            "--json",
            "--set",
            &set_name,
            "--set",
            "policy.min_instances=0",
        ],
    ));
    assert_eq!(
        plan["summary"]["adopt"], 0,
        "instances left running: {}",
        plan["changes"]
    );
}

#[test]
fn cloud_errors_are_reported_with_the_aws_code_and_what_to_do() {
    require_moto();
    let dir = tempfile::tempdir().unwrap();
    copy_stack(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks/aws.yaml"),
        &dir.path().join("aws.yaml"),
    );
    let o = run(
        dir.path(),
        &[
            "up",
            "--yes",
            "--set",
            "name=aws-badsubnet",
            "--set",
            "provider.subnets=[subnet-deadbeef]",
            "--set",
            "policy.min_instances=1",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("aws refused RunInstances (InvalidSubnetID.NotFound)"),
        "{err}"
    );
    assert!(err.contains("check provider.subnets"), "{err}");
    // A definite refusal leaves no pending record behind.
    let list = json(&run(
        dir.path(),
        &["state", "list", "--json", "--set", "name=aws-badsubnet"],
    ));
    assert!(list["instances"].as_array().unwrap().is_empty(), "{list}");
}

#[test]
fn sigkill_after_the_launch_took_effect_then_up_adopts_without_duplicates() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(&moto())).unwrap();
    // RunInstances reaches moto (the instances exist), but its answer never comes back:
    // the process dies before it can record cloud ids or tag names.
    proxy.add(Rule::hold(&["Action=RunInstances"]));
    // One launch call for the batch (no per-instance user data), so the instances come back
    // unnamed and only the batch token ties them to their records.
    let dir = stack_dir(without_templates);
    let name = format!("aws-kill-{}", std::process::id());
    let set_name = format!("name={name}");
    let args = [
        "up",
        "--yes",
        "--set",
        &set_name,
        "--set",
        "policy.min_instances=5",
    ];
    let mut child = command(dir.path(), Some(proxy.url()), &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(60), proxy.wait_held())
            .await
            .expect("the launch never reached moto")
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let launched = rt.block_on(live_instances(&name));
    assert_eq!(launched.len(), 5, "the launch took effect before the kill");

    let list = json(&run(
        dir.path(),
        &["state", "list", "--json", "--set", &set_name],
    ));
    let pending = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["pending"]["op"] == "create")
        .count();
    assert_eq!(pending, 5, "the trail of the interrupted create: {list}");

    // The next run matches the unnamed instances to their pending records by batch token.
    let mut again = args.to_vec();
    again.push("--json");
    let up = json(&run(dir.path(), &again));
    assert_eq!(up["plan"]["summary"]["adopt"], 5, "{}", up["plan"]);
    assert_eq!(up["plan"]["summary"]["create"], 0, "{}", up["plan"]);
    assert_eq!(
        up["plan"]["summary"]["forget"], 0,
        "the records keep their names: {}",
        up["plan"]
    );
    assert_eq!(rt.block_on(live_instances(&name)), launched, "no duplicate");

    assert_no_changes(dir.path(), &set_name, 5);
    json(&run(
        dir.path(),
        &["destroy", "--yes", "--json", "--set", &set_name],
    ));
    assert!(
        rt.block_on(live_instances(&name)).is_empty(),
        "nothing leaked"
    );
}

#[test]
fn ten_ups_on_s3_state_one_proceeds_and_the_others_name_the_holder() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = moto();
    let proxy = rt.block_on(FaultProxy::start(&moto)).unwrap();
    let id = std::process::id();
    let (bucket, table) = (format!("fleet-state-{id}"), format!("fleet-locks-{id}"));
    rt.block_on(async {
        fleet_providers::testing::create_state_store(&sdk().await, &bucket, &table)
            .await
            .unwrap()
    });
    // State and lock go to moto directly; EC2 goes through the proxy, which holds the
    // first launch so that the first run is mid-apply, holding the lock, when the second
    // one starts.
    let dir = stack_dir(|t| {
        t.replace(
            "state:\n  backend: local\n  path: .fleet/aws.state.json",
            &format!(
                "state:\n  backend: s3\n  bucket: {bucket}\n  key: fleet/aws.json\n  lock_table: {table}\n  endpoint_url: {moto}"
            ),
        )
    });
    proxy.add(Rule::hold(&["Action=RunInstances"]));
    let name = format!("aws-s3lock-{id}");
    let set_name = format!("name={name}");
    let args = [
        "up",
        "--yes",
        "--json",
        "--set",
        &set_name,
        "--set",
        "policy.min_instances=2",
    ];
    let first = command(dir.path(), Some(proxy.url()), &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(60), proxy.wait_held())
            .await
            .expect("the first up never launched")
    });
    // Nine more at once, while the first holds the DynamoDB lock.
    let others: Vec<_> = (0..9)
        .map(|_| {
            command(dir.path(), Some(proxy.url()), &args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for other in others {
        let o = other.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!(
                "s3://{bucket}/fleet/aws.json is locked by `fleet-cli up` (pid {}",
                first.id()
            )),
            "{err}"
        );
        assert!(err.contains("lease until"), "{err}");
    }

    proxy.release();
    let first = first.wait_with_output().unwrap();
    let up = json(&first);
    assert_eq!(up["result"]["done"]["create"], 2, "{}", up["result"]);
    assert_eq!(rt.block_on(live_instances(&name)).len(), 2);

    // The lock was released on exit: the next command takes it at once.
    json(&run(
        dir.path(),
        &["destroy", "--yes", "--json", "--set", &set_name],
    ));
    assert!(rt.block_on(live_instances(&name)).is_empty());
}

#[test]
fn bad_cache_bucket_properties_are_located_in_the_stack_file() {
    require_moto();
    let dir = stack_dir(|t| {
        format!("{t}\nresources:\n  - kind: cache_bucket\n    name: cache\n    properties:\n      expire_days: 0\n")
    });
    let o = run(dir.path(), &["preview", "--set", "name=aws-badbucket"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("expire_days is 0; it must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("aws.yaml:"),
        "the error names the file and line: {err}"
    );

    let dir = stack_dir(|t| {
        format!("{t}\nresources:\n  - kind: cache_bucket\n    name: cache\n    properties:\n      bucket_name: someone-elses-bucket\n")
    });
    let o = run(dir.path(), &["preview", "--set", "name=aws-badbucket"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("must start with `aws-badbucket-`"), "{err}");
}

/// stacks/aws.yaml without its `templates:` section: every instance boots the same, so one
/// launch call carries a whole batch.
fn without_templates(text: String) -> String {
    let end = text
        .find("\ntemplates:")
        .expect("aws.yaml has a templates section");
    text[..end + 1].to_string()
}

/// The changes of an `up --json` answer, as (action, reason).
fn actions_of(v: &Value) -> Vec<(String, String)> {
    v["plan"]["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["action"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_ec2_parks_a_pool_vm_and_starts_it_for_a_job() {
    use gitlab_sim::{NewJob, Sim, SimConfig};
    let endpoint = moto();
    let sim = Sim::start(
        SimConfig {
            tokens: vec!["sim-aws-token".into()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    sim.add_project("team/app");
    let url = sim.url();
    let dir = stack_dir(|text| {
        text.replace(
            "gitlab_url: https://gitlab.example.com   # VMs reach GitLab here: never a loopback address",
            &format!("gitlab_url: {url}\n  token_env: FLEET_TEST_GITLAB_TOKEN\n  projects: [team/app]"),
        )
        .replace(
            "policy:\n  min_instances: 2\n  max_instances: 200",
            "policy:\n  min_instances: 0\n  max_instances: 3\n  idle_count: 0\n  idle_time: 1s\n  stopped_count: 1\n  boot_time: 1s\n  resume_time: 1s\n  billing: {per: second, minimum: 0s}",
        )
    });
    let name = format!("aws-pool-{}", std::process::id());
    let set_name = format!("name={name}");
    let up = || {
        json(
            &command(
                dir.path(),
                Some(&endpoint),
                &["up", "--yes", "--json", "--set", &set_name],
            )
            .env("FLEET_TEST_GITLAB_TOKEN", "sim-aws-token")
            .output()
            .unwrap(),
        )
    };
    // Runs `up` until a change of `action` appears; returns its reason.
    let up_until = |action: &str| -> String {
        for _ in 0..30 {
            let v = up();
            if let Some((_, why)) = actions_of(&v).into_iter().find(|(a, _)| a == action) {
                return why;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        panic!("no `{action}` after 30 runs of up");
    };

    let why = up_until("create");
    assert!(why.contains("stopped pool"), "{why}");
    let why = up_until("stop");
    assert!(!why.is_empty());
    let states = state_names(&name).await;
    assert!(
        states.iter().all(|s| s == "stopping" || s == "stopped"),
        "{states:?}"
    );

    sim.enqueue(NewJob {
        project: "team/app".into(),
        name: Some("build".into()),
        tag_list: vec!["docker".into(), "aws".into()],
        run_seconds: 600.0,
        pipeline_id: None,
    })
    .unwrap();
    let why = up_until("start");
    assert!(why.contains("1 job waiting"), "{why}");
    let states = state_names(&name).await;
    assert!(
        states.iter().any(|s| s == "pending" || s == "running"),
        "{states:?}"
    );

    let down = json(
        &command(
            dir.path(),
            Some(&endpoint),
            &["destroy", "--yes", "--json", "--set", &set_name],
        )
        .env("FLEET_TEST_GITLAB_TOKEN", "sim-aws-token")
        .output()
        .unwrap(),
    );
    assert!(
        down["result"]["failed"]
            .as_array()
            .is_some_and(|f| f.is_empty()),
        "{down}"
    );
    assert_eq!(
        sim.counters().runners_created,
        sim.counters().runners_deleted
    );
}

/// `fleet:name` tags of the live instances of `stack` in moto, sorted (duplicates kept;
/// an instance a crash left unnamed shows as "").
async fn live_names(stack: &str) -> Vec<String> {
    let mut names: Vec<String> = live(stack)
        .await
        .iter()
        .map(|i| {
            i.tags()
                .iter()
                .find(|t| t.key() == Some("fleet:name"))
                .and_then(|t| t.value())
                .unwrap_or("")
                .to_string()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn sigkill_at_fifty_points_on_ec2_leaks_and_duplicates_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = stack_dir(|t| t);
    let name = format!("aws-kills-{}", std::process::id());
    let set_name = format!("name={name}");
    let mut seed: u64 = 0xec2;
    let (mut kills, rounds) = (0, 50);
    for round in 0..rounds {
        let want = [4, 1, 3, 0, 5, 2][round % 6];
        let set = format!("policy.min_instances={want}");
        let args = [
            "up",
            "--yes",
            "--set",
            &set_name,
            "--set",
            &set,
            "--set",
            "apply.batch_size=1",
            "--set",
            "apply.concurrency=1",
        ];
        let mut child = command(dir.path(), None, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = std::time::Duration::from_millis(20 + (seed >> 33) % 120);
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let o = run(
            dir.path(),
            &["up", "--yes", "--set", &set_name, "--set", &set],
        );
        common::assert_ok(&o);
        let live = rt.block_on(live_names(&name));
        let context = format!("round {round} (killed after {wait:?})");
        let unique: std::collections::BTreeSet<&String> = live.iter().collect();
        assert_eq!(unique.len(), live.len(), "{context}: duplicates {live:?}");
        assert_eq!(live.len(), want, "{context}: leaked or missing {live:?}");
        let list = json(&run(
            dir.path(),
            &["state", "list", "--json", "--set", &set_name],
        ));
        let recorded: Vec<String> = list["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect();
        let mut recorded_sorted = recorded.clone();
        recorded_sorted.sort();
        assert_eq!(
            recorded_sorted, live,
            "{context}: state is not the live fleet"
        );
        assert!(
            list["instances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i.get("pending").is_none_or(|p| p.is_null())),
            "{context}: pending operations left: {list}"
        );
    }
    eprintln!("sigkill on ec2: {kills} of {rounds} ups killed mid-run; every next up converged with 0 leaked and 0 duplicate instances");
    assert!(
        kills >= rounds / 3,
        "too few rounds killed a running up: {kills}"
    );
    json(&run(
        dir.path(),
        &["destroy", "--yes", "--json", "--set", &set_name],
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_ec2_keeps_the_pool_learned_from_a_seeded_history_stopped_and_says_why() {
    use gitlab_sim::{Sim, SimConfig};
    let endpoint = moto();
    // Runners come online 3 s after they are created: boots (so measured) miss the 2 s
    // target, resumes (expected 1 s) meet it, so the learned level is kept stopped.
    let sim = Sim::start(
        SimConfig {
            tokens: vec!["sim-aws-token".into()],
            runner_online_after: Some(3.0),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    sim.add_project("team/app");
    let url = sim.url();
    let dir = stack_dir(|text| {
        without_templates(text)
            .replace(
                "gitlab_url: https://gitlab.example.com   # VMs reach GitLab here: never a loopback address",
                &format!("gitlab_url: {url}\n  token_env: FLEET_TEST_GITLAB_TOKEN\n  projects: [team/app]"),
            )
            .replace(
                "policy:\n  min_instances: 2\n  max_instances: 200",
                "policy:\n  min_instances: 0\n  max_instances: 30\n  idle_count: 0\n  stopped_count: 0\n  boot_time: 90s\n  resume_time: 1s\n  billing: {per: second, minimum: 0s}\n  target: {wait: 2s, percentile: 95}",
            )
    });
    // Bursts of 11 jobs at this hour on each of the last 14 days.
    let now = chrono::Utc::now();
    let mut trace = String::from("queued_at,duration_s,project,pipeline\n");
    for day in (1..=14).rev() {
        let at =
            (now - chrono::Duration::days(day)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for _ in 0..11 {
            trace.push_str(&format!("{at},300,team/app,{day}\n"));
        }
    }
    let trace_path = dir.path().join("history.csv");
    std::fs::write(&trace_path, trace).unwrap();

    let name = format!("aws-learned-{}", std::process::id());
    let set_name = format!("name={name}");
    let fleet = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--set", &set_name]);
        command(dir.path(), Some(&endpoint), &all)
            .env("FLEET_TEST_GITLAB_TOKEN", "sim-aws-token")
            .output()
            .unwrap()
    };
    common::assert_ok(&fleet(&[
        "state",
        "seed-demand",
        trace_path.to_str().unwrap(),
        "--yes",
    ]));

    let learned = |v: &Value| -> Vec<String> {
        actions_of(v)
            .into_iter()
            .filter(|(a, why)| a == "create" && why.contains("the level learned"))
            .map(|(_, why)| why)
            .collect()
    };
    let says_pool_12 = |reasons: &[String]| {
        assert!(!reasons.is_empty(), "no learned-pool reason");
        for r in reasons {
            let days = r
                .split_once("pool 12: the level learned for this hour is 12 job slots (at most 11 jobs at once in the last ")
                .and_then(|(_, rest)| rest.split(' ').next())
                .unwrap_or_else(|| panic!("unexpected reason: {r}"));
            assert!(days == "13" || days == "14", "{r}");
        }
    };
    let plan = json(&fleet(&["plan", "--json"]));
    let plan = serde_json::json!({ "plan": plan });
    says_pool_12(&learned(&plan));
    let up = json(&fleet(&["up", "--yes", "--json"]));
    says_pool_12(&learned(&up));
    assert_eq!(
        actions_of(&up)
            .iter()
            .filter(|(a, _)| a == "create")
            .count(),
        12,
        "{up}"
    );
    // Once their runners are online the pool VMs are parked: 12 stopped in EC2.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let states = state_names(&name).await;
        if states.len() == 12 && states.iter().all(|s| s == "stopped") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the learned pool was not parked in 90 s: {states:?}"
        );
        let v = json(&fleet(&["up", "--yes", "--json"]));
        let churn: Vec<_> = actions_of(&v)
            .into_iter()
            .filter(|(a, _)| a == "create" || a == "delete")
            .collect();
        assert!(churn.is_empty(), "the pool churned: {churn:?}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    let down = json(&fleet(&["destroy", "--yes", "--json"]));
    assert!(
        down["result"]["failed"]
            .as_array()
            .is_some_and(|f| f.is_empty()),
        "{down}"
    );
}
