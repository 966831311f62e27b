//! Latency from a job queued in GitLab to the cloud create it causes, through the real
//! daemon: gitlab-sim (in this process) queues a job and POSTs its job webhook to
//! `fleet-cli serve` (the binary cargo built), which verifies it and reconciles on the
//! sandbox stack with the demand policy, registering the new VM's runner before the create.
//! The create time is the instance's `launched_at` in the sandbox's file (same wall clock).
//! Booted VMs act as runner agents, so every job keeps its VM busy and the next job needs a
//! new one. The timer is set to an hour: only webhooks trigger reconciles.
//!
//! Run: `cargo bench -p fleet-cli --bench queue_to_create -- [ITERATIONS]` (default 100).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use gitlab_sim::{NewJob, Sim, SimConfig, WebhookTarget};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");
const TOKEN: &str = "bench-gitlab-token";
const SECRET: &str = "bench-hook-secret";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// `launched_at` of every instance in the sandbox file.
fn launches(file: &Path) -> Vec<DateTime<Utc>> {
    let Ok(bytes) = std::fs::read(file) else {
        return Vec::new();
    };
    let Ok(world) = serde_json::from_slice::<Value>(&bytes) else {
        return Vec::new();
    };
    world["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["launched_at"].as_str()?.parse().ok())
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);

    // The daemon's port, chosen first so the simulator can send its webhooks there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let sim = Sim::start(
        SimConfig {
            tokens: vec![TOKEN.into()],
            runner_online_after: None,
            webhook: Some(WebhookTarget {
                url: format!("http://127.0.0.1:{port}/webhooks/gitlab"),
                secret: SECRET.into(),
            }),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    sim.add_project("bench/app");

    let dir = tempfile::tempdir()?;
    let stack = format!(
        "name: bench
provider: {{ kind: sandbox, boot_time: 0s, runner_agent: true }}
instance: {{ image: debian-12, types: [small] }}
runner:
  gitlab_url: {}
  token_env: BENCH_GITLAB_TOKEN
  webhook_secret_env: BENCH_HOOK_SECRET
  projects: [bench/app]
  run_untagged: true
policy: {{ min_instances: 0, max_instances: {}, stopped_max: 0 }}
state: {{ backend: local, path: state.json }}
daemon: {{ listen: '127.0.0.1:{port}', interval: 1h }}
",
        sim.url(),
        iterations + 10
    );
    std::fs::write(dir.path().join("bench.yaml"), stack)?;
    let mut child = Command::new(BIN)
        .arg("--stack")
        .arg(dir.path().join("bench.yaml"))
        .arg("serve")
        .env("BENCH_GITLAB_TOKEN", TOKEN)
        .env("BENCH_HOOK_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    common::serve_url(&mut child);
    let cloud = dir.path().join("sandbox-cloud.json");

    let mut latencies = Vec::with_capacity(iterations);
    let result: Result<(), Error> = async {
        for i in 0..iterations {
            let before = launches(&cloud).len();
            let queued = Utc::now();
            sim.enqueue(NewJob {
                project: "bench/app".into(),
                name: Some(format!("bench-{i}")),
                tag_list: vec![],
                run_seconds: 3600.0,
                pipeline_id: None,
            })?;
            let start = Instant::now();
            let created = loop {
                let all = launches(&cloud);
                if all.len() > before {
                    break all.into_iter().max().ok_or("no launch")?;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    return Err(format!("iteration {i}: no create within 10 s").into());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            latencies.push((created - queued).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
        Ok(())
    }
    .await;
    // SAFETY: kill has no memory preconditions; the pid is our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    result?;
    latencies.sort_by(f64::total_cmp);
    println!(
        "job queued -> webhook -> serve reconcile -> cloud create issued: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        latencies.len(),
        common::percentile(&latencies, 0.5),
        common::percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
