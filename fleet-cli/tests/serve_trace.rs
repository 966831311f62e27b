//! The daemon end to end: gitlab-sim replays the busiest 20 minutes of the demo trace at 120x
//! and sends its job webhooks to `fleet-cli serve`, which runs the fleet on the sandbox
//! (booted VMs verify their own runner tokens and take jobs) and on EC2 (the moto emulator,
//! where nothing boots, so the simulator brings each runner online when it is created).
//! Checks that every job ran, the queue waits, and the fleet size once the replay is over.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gitlab_sim::trace;
use gitlab_sim::{JobStatus, Sim, SimConfig, WebhookTarget};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");
const TOKEN: &str = "serve-trace-token";
const SECRET: &str = "serve-trace-hook";
const SPEED: f64 = 120.0;

/// VMs recorded in the daemon's state: (not stopped, stopped or stopping).
fn fleet(state: &Path) -> (usize, usize) {
    let Ok(bytes) = std::fs::read(state) else {
        return (0, 0);
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return (0, 0);
    };
    let mut out = (0, 0);
    for r in v["instances"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
    {
        match r["lifecycle"].as_str() {
            Some("stopped" | "stopping") => out.1 += 1,
            _ => out.0 += 1,
        }
    }
    out
}

/// Where the fleet runs in one replay.
struct Cloud {
    /// The stack's `provider:` line.
    provider: String,
    /// Instance image and type.
    instance: &'static str,
    /// Simulated seconds until a new runner is online by itself (`None`: a VM must verify it).
    runner_online_after: Option<f64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_a_replayed_trace_through_webhooks_to_the_end() {
    replay(Cloud {
        provider: "{ kind: sandbox, boot_time: 750ms, resume_time: 250ms, runner_agent: true }"
            .into(),
        instance: "{ image: debian-12, types: [small] }",
        runner_online_after: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_ec2_runs_a_replayed_trace_through_webhooks_to_the_end() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL is not set: this test needs the moto server; run it with `make test` (scripts/with-moto starts it)")
    });
    replay(Cloud {
        provider: format!("{{ kind: aws, region: us-east-1, endpoint_url: '{endpoint}' }}"),
        instance: "{ image: ami-1e749f67, types: [t3.medium] }",
        runner_online_after: Some(0.0),
    })
    .await;
}

async fn replay(cloud_kind: Cloud) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let jobs = trace::busiest_window(
        &trace::load(&repo.join("stacks/traces/demo.csv")).unwrap(),
        chrono::Duration::minutes(20),
    );
    let total = jobs.len();
    assert!(total >= 10, "the window has {total} jobs");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sim = Sim::start(
        SimConfig {
            tokens: vec![TOKEN.into()],
            speed: SPEED,
            runner_online_after: cloud_kind.runner_online_after,
            webhook: Some(WebhookTarget {
                url: format!("http://127.0.0.1:{port}/webhooks/gitlab"),
                secret: SECRET.into(),
            }),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    for j in &jobs {
        sim.add_project(&j.project);
    }

    // Every duration divided by SPEED (a 90 s boot takes 0.75 s).
    let dir = tempfile::tempdir().unwrap();
    let name = format!("st-{}-{}", std::process::id(), port);
    let stack = format!(
        "name: {name}
provider: {provider}
instance: {instance}
runner:
  gitlab_url: {url}
  token_env: ST_TOKEN
  webhook_secret_env: ST_SECRET
  groups: [demo]
  run_untagged: true
  online_timeout: 6s
policy:
  min_instances: 0
  max_instances: 60
  idle_time: 500ms
  stopped_count: 3
  stopped_time: 15s
  boot_time: 750ms
  resume_time: 250ms
  billing: {{ per: second, minimum: 500ms }}
state: {{ backend: local, path: state.json }}
daemon: {{ listen: '127.0.0.1:{port}', interval: 1s }}
{templates}",
        url = sim.url(),
        provider = cloud_kind.provider,
        instance = cloud_kind.instance,
        templates = common::templates_section(),
    );
    std::fs::write(dir.path().join("st.yaml"), stack).unwrap();
    let mut child = Command::new(BIN)
        .arg("--stack")
        .arg(dir.path().join("st.yaml"))
        .arg("serve")
        .env("ST_TOKEN", TOKEN)
        .env("ST_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    common::serve_url(&mut child);

    sim.replay(jobs, &[]);
    let cloud = dir.path().join("state.json");
    let started = Instant::now();
    let mut peak = 0;
    loop {
        let (future, active) = sim.with_world(|w, _| {
            let active = w
                .jobs
                .values()
                .filter(|j| matches!(j.status, JobStatus::Pending | JobStatus::Running))
                .count();
            (w.future.len(), active)
        });
        let (running, stopped) = fleet(&cloud);
        peak = peak.max(running + stopped);
        if future == 0 && active == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the replay did not finish: {future} jobs to come, {active} pending or running; fleet {:?}; sim {:?}; serve log:\n{}",
            fleet(&cloud),
            sim.with_world(|w, now| (
                w.jobs.values().filter(|j| j.status == JobStatus::Pending).count(),
                w.jobs.values().filter(|j| j.status == JobStatus::Running).count(),
                w.runners.len(),
                w.runners.values().filter(|r| r.online(now)).count(),
                w.runners.values().filter(|r| r.paused).count(),
                w.jobs.values().map(|j| j.run_seconds as u64).max(),
            )),
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = sim.now();
    let mut waits: Vec<f64> = sim.with_world(|w, _| {
        w.jobs
            .values()
            .filter(|j| j.status == JobStatus::Success)
            .map(|j| j.queued_seconds(now))
            .collect()
    });
    waits.sort_by(f64::total_cmp);
    assert_eq!(waits.len(), total, "every job of the trace ran to success");
    let p95 = waits[((waits.len() as f64 * 0.95).ceil() as usize).max(1) - 1];
    // A job waits at most a boot (90 s) plus a reconcile or two (the daemon's timer is 1 s,
    // two simulated minutes, and webhooks come first); most are served by the pool.
    assert!(p95 <= 300.0, "p95 wait {p95:.0}s (simulated)");
    assert_eq!(sim.counters().jobs_killed_by_runner_delete, 0);

    // Once the queue is empty and idle_time has passed, nothing runs; the stopped pool keeps
    // at least stopped_count and at most what the burst left.
    let settle = Instant::now();
    let (running, stopped) = loop {
        let (running, stopped) = fleet(&cloud);
        if running == 0 || settle.elapsed() > Duration::from_secs(20) {
            break (running, stopped);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(running, 0, "VMs left running after the queue emptied");
    assert!(
        (3..=peak).contains(&stopped),
        "{stopped} stopped (peak {peak})"
    );
    eprintln!(
        "serve over a trace: {total} jobs, p50 {:.0}s, p95 {p95:.0}s, max {:.0}s (simulated); peak {peak} VMs; after: {running} running, {stopped} stopped; {:.1}s wall",
        waits[waits.len() / 2],
        waits.last().copied().unwrap_or(0.0),
        started.elapsed().as_secs_f64()
    );

    // The daemon timed boots while it watched them (every reconcile while VMs warm), and
    // kept the measurements in state.
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&cloud).unwrap()).unwrap();
    assert!(
        state["timings"]["boots"]
            .as_array()
            .is_some_and(|b| !b.is_empty()),
        "no boot measured: {}",
        state["timings"]
    );

    // The daemon's metrics show GitLab's side: the API requests made and the job counts.
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{metrics}"))
    };
    assert!(value("fleet_gitlab_api_calls_total{operation=\"GET\"}") > 0.0);
    // Every POST the daemon sent registered a runner.
    assert_eq!(
        value("fleet_gitlab_api_calls_total{operation=\"POST\"}"),
        sim.counters().runners_created as f64
    );
    assert_eq!(value("fleet_demand_known"), 1.0);
    // (The daemon keeps reconciling, so the count may have moved since state was read.)
    assert!(value("fleet_warmup_measurements{phase=\"boot\"}") >= 1.0);
    assert_eq!(value("fleet_jobs{state=\"pending\"}"), 0.0);
    assert_eq!(
        value("fleet_oldest_pending_job_wait_seconds"),
        0.0,
        "no job waits"
    );

    // SAFETY: kill has no memory preconditions; the pid is our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
}
