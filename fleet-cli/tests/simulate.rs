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
    let texts = texts(&drawn);
    for want in ["VMs", "jobs waiting", "busy VMs"] {
        assert!(texts.iter().any(|t| t == want), "no `{want}` in {texts:?}");
    }
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("fleet on stacks/traces/demo.csv: p95 wait")),
        "{texts:?}"
    );
}

/// The text of every `<text>` of an SVG, which must be well-formed XML.
fn texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or_default().trim().to_string())
        .collect()
}

// A sweep of `fleet` or a baseline over the two-week demo trace takes minutes in a debug
// build: the frontier is drawn for the cheap sweeps over the whole trace, and the shipped
// stack's point over its first hours.

#[test]
fn a_frontier_without_a_target_is_drawn_for_60_s_with_a_line_per_policy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frontier.svg");
    let o = simulate(&[
        "--trace",
        "stacks/traces/demo.csv",
        "--policy",
        "oracle,fixed",
        "--json",
        "--frontier",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["target_p95_s"], 60.0);
    assert!(
        v["policies"][1]["best"]["params"]["instances"].is_u64(),
        "{v}"
    );
    let texts = texts(&std::fs::read_to_string(&out).unwrap());
    for want in ["oracle frontier", "fixed frontier", "target p95 60 s"] {
        assert!(texts.iter().any(|t| t == want), "no `{want}` in {texts:?}");
    }
    // Without `fleet` replayed there is no stack's point to mark.
    assert!(!texts.iter().any(|t| t.starts_with("shipped")), "{texts:?}");
}

#[test]
fn the_frontier_marks_the_shipped_stack_where_simulate_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let demo = std::fs::read_to_string(root().join("stacks/traces/demo.csv")).unwrap();
    // The demo trace's first hours: the header and the jobs queued before 06:00 (the rows
    // are in time order, and timestamps in this form sort as text).
    let head: Vec<&str> = demo
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || *l < "2024-03-04T06")
        .map(|(_, l)| l)
        .collect();
    assert!(head.len() > 2, "{head:?}");
    let trace = dir.path().join("head.csv");
    std::fs::write(&trace, head.join("\n") + "\n").unwrap();
    let out = dir.path().join("frontier.svg");
    let o = simulate(&[
        "--trace",
        trace.to_str().unwrap(),
        "--policy",
        "fleet",
        "--threads",
        "2",
        "--json",
        "--target-p95",
        "120",
        "--frontier",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let texts = texts(&std::fs::read_to_string(&out).unwrap());
    assert!(texts.iter().any(|t| t == "target p95 120 s"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "fleet frontier"), "{texts:?}");
    let cost = format!(", cost {:.2}", v["cost"].as_f64().unwrap());
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("shipped stack: p95 ") && t.ends_with(&cost)),
        "no shipped stack with `{cost}` in {texts:?}"
    );
}

#[test]
fn the_oracle_first_has_no_fleet_to_draw_and_says_what_to_do() {
    let o = simulate(&[
        "--trace",
        "stacks/traces/demo.csv",
        "--policy",
        "oracle",
        "--svg",
        "/dev/null",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("put another policy first"), "{err}");
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
