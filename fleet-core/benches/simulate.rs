//! The policy benchmark behind `make bench-policy`: for each trace in `FLEET_TRACES`
//! (colon-separated paths; default the demo trace):
//!
//! 1. replays every policy once with one thread (replay speed);
//! 2. sweeps every policy's grid (`fleet_core::simulate::grid`, the same as `fleet-cli
//!    simulate --target-p95`) for the cheapest cost with p95 wait at most
//!    `FLEET_TARGET_P95` seconds (default 60): the hindsight analysis;
//! 3. replays the shipped `stacks/demand.yaml` (its `policy.target` learning the pool as
//!    `up` does) on the whole trace, and again on its second half with the first half as
//!    history (tune on the past, judged on what follows), against the hindsight bests of
//!    the same span.
//!
//! `FLEET_SWEEP=0` skips the sweeps (step 2 and the ratios), for a quick look at the
//! shipped stack's rows. Run with `cargo bench -p fleet-core --bench simulate`.

// fleet-core's clippy.toml forbids clock reads in the library; a benchmark times itself.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use fleet_core::autoscale::record::DemandRecord;
use fleet_core::simulate::{
    grid, history_record, run, run_fleet, sweep, Metrics, Model, Trace, POLICIES,
};
use fleet_core::stack::PolicyConfig;
use fleet_core::stack::Settings;

fn main() {
    let traces = std::env::var("FLEET_TRACES").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../stacks/traces/demo.csv").to_string()
    });
    let target: f64 = std::env::var("FLEET_TARGET_P95")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60.0);
    let sweeps = std::env::var("FLEET_SWEEP").map_or(true, |v| v != "0");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = Model::default();
    let shipped = shipped_policy();
    let settings = Settings::from_config(&shipped).unwrap_or_else(|p| {
        eprintln!("error: stacks/demand.yaml: {}: {}", p.path, p.message);
        std::process::exit(1);
    });
    // The hindsight grids use the shipped stack's fixed settings without its target.
    let config = PolicyConfig {
        target: None,
        ..shipped.clone()
    };
    let mut speed = Vec::new();
    let mut table = Vec::new();
    let mut shipped_rows = Vec::new();
    for path in traces.split(':').filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let trace = match Trace::read(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        };
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let (past, future) = trace.split_at(trace.middle());
        let spans = [
            (name.clone(), trace.clone(), DemandRecord::default()),
            (
                format!("{name}, 2nd half after the 1st"),
                future,
                history_record(&past),
            ),
        ];
        for (k, (span, t, history)) in spans.into_iter().enumerate() {
            let start = Instant::now();
            let ours = run_fleet(&t, &model, &settings, history, None);
            let ours_s = start.elapsed().as_secs_f64();
            if k == 0 {
                speed.push(format!(
                    "| {name} | {} | fleet (shipped, target) | {ours_s:.2} |",
                    t.jobs.len()
                ));
            }
            let mut best: Vec<(&str, Option<Metrics>)> = Vec::new();
            let mut found: Vec<(&str, Best)> = Vec::new();
            if sweeps {
                for policy in POLICIES {
                    let candidates = grid(policy, &config, &model, &t);
                    if k == 0 {
                        let start = Instant::now();
                        let _ = run(&t, &model, &candidates[0].policy, None);
                        speed.push(format!(
                            "| {name} | {} | {policy} | {:.2} |",
                            t.jobs.len(),
                            start.elapsed().as_secs_f64()
                        ));
                    }
                    let start = Instant::now();
                    let r = sweep(&t, &model, &candidates, target, threads, &|| {});
                    eprintln!(
                        "{span}: {policy}: {} configurations in {:.0}s",
                        r.evaluated,
                        start.elapsed().as_secs_f64()
                    );
                    if k == 0 {
                        found.push((policy, r.best.clone()));
                    }
                    best.push((policy, r.best.map(|b| b.1)));
                }
                for (policy, b) in found.drain(..) {
                    table.push(hindsight_row(&name, policy, b.as_ref(), &best));
                }
            }
            shipped_rows.push(shipped_row(&span, &ours, &best, target));
            eprintln!("{span}: shipped stack: {}", shipped_rows.last().unwrap());
        }
    }
    println!("Replay speed (one run, one thread):\n");
    println!("| trace | jobs | policy | seconds |\n|---|---:|---|---:|");
    for l in speed {
        println!("{l}");
    }
    println!(
        "\nThe shipped stacks/demand.yaml (only policy.target set: p95 <= {target:.0} s), against the cheapest configuration of each grid meeting the same target in hindsight:\n"
    );
    println!("| trace | p95 wait (s) | p99 wait (s) | cost | launches per job | x best docker-machine / taskscaler | x oracle | x our best fixed |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in shipped_rows {
        println!("{l}");
    }
    if !table.is_empty() {
        println!("\nCheapest configuration with p95 wait <= {target:.0} s (hindsight):\n");
        println!(
            "| trace | policy | cost | p95 wait (s) | x best baseline | x oracle | settings |"
        );
        println!("|---|---|---:|---:|---:|---:|---|");
        for l in table {
            println!("{l}");
        }
    }
}

/// The shipped stack's policy section.
fn shipped_policy() -> PolicyConfig {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../stacks/demand.yaml"
    ));
    let env = |_: &str| None;
    match fleet_core::stack::load(path, &[], &env) {
        Ok(l) => l.stack.policy,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn shipped_row(span: &str, m: &Metrics, best: &[(&str, Option<Metrics>)], target: f64) -> String {
    let cost = |p: &str| {
        best.iter()
            .find(|b| b.0 == p)
            .and_then(|b| b.1.map(|m| m.cost))
    };
    let ratio = |base: Option<f64>| match base {
        Some(b) if b > 0.0 => format!("{:.2}", m.cost / b),
        _ => "-".into(),
    };
    let baseline = [cost("docker-machine"), cost("taskscaler")]
        .into_iter()
        .flatten()
        .min_by(f64::total_cmp);
    let mark = if m.wait_p95_s <= target {
        ""
    } else {
        " (missed)"
    };
    format!(
        "| {span} | {:.0}{mark} | {:.0} | {:.1} | {:.2} | {} | {} | {} |",
        m.wait_p95_s,
        m.wait_p99_s,
        m.cost,
        m.launches as f64 / m.jobs.max(1) as f64,
        ratio(baseline),
        ratio(cost("oracle")),
        ratio(cost("fleet")),
    )
}

type Best = Option<(
    std::collections::BTreeMap<String, serde_json::Value>,
    Metrics,
)>;

fn hindsight_row(
    name: &str,
    policy: &str,
    best: Option<&(
        std::collections::BTreeMap<String, serde_json::Value>,
        Metrics,
    )>,
    all: &[(&str, Option<Metrics>)],
) -> String {
    let cost = |p: &str| {
        all.iter()
            .find(|b| b.0 == p)
            .and_then(|b| b.1.map(|m| m.cost))
    };
    let baseline = [cost("docker-machine"), cost("taskscaler")]
        .into_iter()
        .flatten()
        .min_by(f64::total_cmp);
    match best {
        Some((params, m)) => {
            let ratio = |base: Option<f64>| match base {
                Some(b) if b > 0.0 => format!("{:.2}", m.cost / b),
                _ => "-".into(),
            };
            format!(
                "| {name} | {policy} | {:.1} | {:.0} | {} | {} | `{}` |",
                m.cost,
                m.wait_p95_s,
                ratio(baseline),
                ratio(cost("oracle")),
                serde_json::to_string(params).unwrap_or_default()
            )
        }
        None => format!("| {name} | {policy} | none meets the target | - | - | - | |"),
    }
}
