//! `fleet-cli simulate` end to end on the shipped demo trace and stack.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn simulate(args: &[&str]) -> Output {
    let r = root();
    Command::new(BIN)
        .current_dir(&r)
        .arg("simulate")
        .arg("--stack")
        .arg(r.join("stacks/demand.yaml"))
        .args(args)
        .output()
        .expect("fleet-cli runs")
}

#[test]
fn json_output_has_the_stable_keys_and_an_svg_is_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("out.svg");
    let o = simulate(&[
        "--trace",
        "stacks/traces/demo.csv",
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "jobs",
        "wait_p50_s",
        "wait_p95_s",
        "wait_p99_s",
        "wait_max_s",
        "cost",
        "vm_hours",
        "stopped_hours",
        "launches",
        "starts",
        "peak_instances",
    ] {
        assert!(v.get(k).is_some(), "missing {k} in {v}");
    }
    assert_eq!(v["policy"], "fleet");
    assert_eq!(v["jobs"], 1916);
    assert!(v["cost"].as_f64().unwrap() > 0.0);
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg") && drawn.contains("jobs waiting"));
}

#[test]
fn a_sweep_reports_best_with_its_settings() {
    let o = simulate(&[
        "--trace",
        "stacks/traces/demo.csv",
        "--policy",
        "oracle,fixed",
        "--target-p95",
        "60",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let fixed = &v["policies"][1];
    assert_eq!(fixed["policy"], "fixed");
    assert!(fixed["best"]["wait_p95_s"].as_f64().unwrap() <= 60.0);
    assert!(fixed["best"]["params"]["instances"].as_u64().unwrap() >= 1);
    // The oracle is the floor: no fixed fleet meeting the target is cheaper.
    assert!(v["policies"][0]["cost"].as_f64().unwrap() < fixed["best"]["cost"].as_f64().unwrap());
}

#[test]
fn a_bad_trace_row_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "queued_at,duration_s,project,pipeline\n2019-10-01T00:00:00Z,60,a/b,1\n2019-10-01T00:00:05Z,soon,a/b,1\n",
    )
    .unwrap();
    let o = simulate(&["--trace", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.csv:3: duration_s `soon`"), "{err}");
}

#[test]
fn an_unknown_policy_or_model_key_is_refused_with_the_valid_names() {
    let o = simulate(&["--trace", "stacks/traces/demo.csv", "--policy", "magic"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("docker-machine"));
    let o = simulate(&["--trace", "stacks/traces/demo.csv", "--set", "sim.boot=5"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("boot_s"));
}
