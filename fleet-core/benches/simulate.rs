//! The policy benchmark behind `make bench`: for each trace in `FLEET_TRACES`
//! (colon-separated paths; default the demo trace), replays every policy once with one
//! thread (replay speed), then sweeps every policy's grid (`fleet_core::simulate::grid`,
//! the same as `fleet-cli simulate --target-p95`) and prints the cheapest cost with p95 wait
//! at most `FLEET_TARGET_P95` seconds (default 60), with ratios to the best baseline and to
//! the oracle. Run with `cargo bench -p fleet-core --bench simulate`.

// fleet-core's clippy.toml forbids clock reads in the library; a benchmark times itself.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::time::Instant;

use fleet_core::simulate::{grid, run, sweep, Model, Trace, POLICIES};
use fleet_core::stack::PolicyConfig;

fn main() {
    let traces = std::env::var("FLEET_TRACES").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../stacks/traces/demo.csv").to_string()
    });
    let target: f64 = std::env::var("FLEET_TARGET_P95")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60.0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = Model::default();
    let config = PolicyConfig {
        max_instances: 400,
        ..PolicyConfig::default()
    };
    let mut speed = Vec::new();
    let mut table = Vec::new();
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
        let mut costs = Vec::new();
        for policy in POLICIES {
            let candidates = grid(policy, &config, &model, &trace);
            // Replay speed: the grid's first configuration, once, on this thread.
            let start = Instant::now();
            let _ = run(&trace, &model, &candidates[0].policy, None);
            speed.push(format!(
                "| {name} | {} | {policy} | {:.2} |",
                trace.jobs.len(),
                start.elapsed().as_secs_f64()
            ));
            let start = Instant::now();
            let r = sweep(&trace, &model, &candidates, target, threads, &|| {});
            eprintln!(
                "{name}: {policy}: {} configurations in {:.0}s",
                r.evaluated,
                start.elapsed().as_secs_f64()
            );
            costs.push((policy, r.best));
        }
        let cost = |p: &str| {
            costs
                .iter()
                .find(|c| c.0 == p)
                .and_then(|c| c.1.as_ref().map(|b| b.1.cost))
        };
        let best_baseline = [cost("docker-machine"), cost("taskscaler")]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp);
        let oracle = cost("oracle");
        for (policy, best) in &costs {
            let (c, p95, params) = match best {
                Some((params, m)) => (
                    format!("{:.1}", m.cost),
                    format!("{:.0}", m.wait_p95_s),
                    serde_json::to_string(params).unwrap_or_default(),
                ),
                None => ("none meets the target".into(), "-".into(), String::new()),
            };
            let ratio = |base: Option<f64>| match (best, base) {
                (Some((_, m)), Some(b)) if b > 0.0 => format!("{:.2}", m.cost / b),
                _ => "-".into(),
            };
            table.push(format!(
                "| {name} | {policy} | {c} | {p95} | {} | {} | `{params}` |",
                ratio(best_baseline),
                ratio(oracle)
            ));
        }
    }
    println!("Replay speed (one run, one thread):\n");
    println!("| trace | jobs | policy | seconds |\n|---|---:|---|---:|");
    for l in speed {
        println!("{l}");
    }
    println!("\nCheapest configuration with p95 wait <= {target:.0} s:\n");
    println!("| trace | policy | cost | p95 wait (s) | x best baseline | x oracle | settings |");
    println!("|---|---|---:|---:|---:|---:|---|");
    for l in table {
        println!("{l}");
    }
}
