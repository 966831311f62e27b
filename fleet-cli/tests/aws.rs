//! `fleet-cli` on stacks/aws.yaml against the moto EC2 emulator (started by `make test`,
//! which exports AWS_ENDPOINT_URL): a 100-instance fleet in at most three launch calls,
//! and destroy leaving nothing running.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");

fn require_moto() {
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        panic!("AWS_ENDPOINT_URL is not set: these tests need the moto server; run them with `make test` (scripts/with-moto starts it)");
    }
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--stack")
        .arg(dir.join("aws.yaml"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_hundred_instances_in_at_most_three_launch_calls_and_destroy_leaves_none() {
    require_moto();
    let dir = tempfile::tempdir().unwrap();
    copy_stack(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks/aws.yaml"),
        &dir.path().join("aws.yaml"),
    );
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
    let o = run(
        dir.path(),
        &[
            "preview",
            "--detailed-exitcode",
            "--set",
            &set_name,
            "--set",
            "policy.min_instances=100",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

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

/// Copies an example stack into a test directory, pointing its templates at instance/.
fn copy_stack(src: &Path, dst: &Path) {
    let instance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance/");
    let text = std::fs::read_to_string(src).unwrap();
    let text = text.replace("../instance/", &format!("{}/", instance.display()));
    std::fs::write(dst, text).unwrap();
}
