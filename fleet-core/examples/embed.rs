//! Embedding fleet-core in another Rust tool: load a stack, plan against a cloud, apply,
//! and plan again to see the fixed point.
//!
//! Run with `cargo run -p fleet-core --example embed --features testing` (the in-memory
//! cloud used here comes with the `testing` feature; a real tool passes its own `Cloud`).

// fleet-core's clippy.toml forbids clock reads in the library; the embedding tool, not the library, owns the clock.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

use fleet_core::apply::{ApplyOptions, NoProgress};
use fleet_core::ci::NoCi;
use fleet_core::engine::Fleet;
use fleet_core::plan::Operation;
use fleet_core::policy::StaticPolicy;
use fleet_core::stack::load_str;
use fleet_core::state::LocalBackend;
use fleet_core::testing::MemoryCloud;

const STACK: &str = "
name: embedded
provider: { kind: memory }
instance: { image: debian-12, types: [small] }
policy: { min_instances: 2, max_instances: 5 }
";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let stack_path = dir.path().join("embedded.yaml");
    let no_env = |_: &str| None;
    let loaded = load_str(Path::new(&stack_path), STACK, &[], &no_env)?;

    let cloud = MemoryCloud::new();
    let backend = LocalBackend::new(dir.path().join("state.json"));
    let fleet = Fleet {
        stack: &loaded,
        cloud: &cloud,
        backend: &backend,
        policy: &StaticPolicy,
        ci: &NoCi,
    };

    let now = chrono::Utc::now();
    let mut state = fleet.read_state(|| "example-lineage".to_string()).await?;
    let observed = fleet.observe(&state).await?;
    let plan = fleet.plan(Operation::Up, &state, &observed, now).await?;
    print!("{}", plan.display());

    let clock = chrono::Utc::now;
    let options = ApplyOptions {
        dry_run: false,
        concurrency: 2,
        batch_size: 10,
    };
    let executor = fleet.executor(&state, options, &NoProgress, &clock);
    let report = executor.apply(&plan, &mut state, Some(&observed)).await?;
    println!(
        "\napplied {} creates; state serial {}\n",
        report.done.create, report.serial
    );

    let observed = fleet.observe(&state).await?;
    let again = fleet
        .plan(Operation::Up, &state, &observed, chrono::Utc::now())
        .await?;
    print!("{}", again.display());
    if !again.is_empty() {
        return Err("planning after apply must change nothing".into());
    }
    Ok(())
}
