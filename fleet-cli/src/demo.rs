//! `fleet-cli demo`: the whole loop on one machine. It starts the GitLab simulator, replays
//! the busiest window of a job trace at high speed, and runs the fleet against the sandbox
//! cloud (whose VMs act as runner agents) until every job ran, printing queue and fleet as
//! it goes and a report at the end: jobs, wait percentiles, VM-hours.
//!
//! Time: the simulator runs `--speed` simulated seconds per wall second, and the demo stack
//! (stacks/demo.yaml) states every duration divided by the same factor, so boot times,
//! idle times and job durations keep their real proportions.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use fleet_core::cloud::Lifecycle;
use fleet_core::plan::Operation;
use fleet_core::state::State;
use gitlab_sim::trace::{self, TraceJob};
use gitlab_sim::{JobStatus, Sim, SimConfig};

use fleet_core::apply::NoProgress;

use crate::commands::reconcile_op;
use crate::context::Ctx;
use crate::Global;

/// What `demo` replays.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The job trace (`queued_at,duration_s,project,pipeline`).
    #[arg(long, default_value = "stacks/traces/demo.csv")]
    trace: PathBuf,
    /// Simulated seconds per wall second (the stack's durations must be divided by it).
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Hours of trace to replay: its busiest window of this length.
    #[arg(long, default_value_t = 1.5)]
    hours: f64,
    /// Wall time between reconciles.
    #[arg(long, value_parser = crate::parse_duration, default_value = "50ms")]
    interval: Duration,
}

/// Model prices, as in `fleet-cli simulate`: per running VM-hour and per stopped VM-hour.
const PRICE_RUNNING: f64 = 1.0;
const PRICE_STOPPED: f64 = 0.035;

pub async fn run(g: &Global, a: &DemoArgs) -> Result<u8> {
    let speed_ok = a.speed.is_finite() && a.speed >= 1.0;
    let hours_ok = a.hours.is_finite() && a.hours > 0.0;
    if !speed_ok || !hours_ok {
        bail!("--speed must be at least 1 and --hours above 0");
    }
    let jobs = trace::load(&a.trace)?;
    let window = trace::busiest_window(&jobs, chrono::Duration::seconds((a.hours * 3600.0) as i64));
    if window.is_empty() {
        bail!("{} has no jobs", a.trace.display());
    }

    // The stack names the token's variable; the simulator accepts that token.
    let first = Ctx::load(g).await?;
    let r = &first.loaded.stack.runner;
    if first.loaded.stack.provider.kind != "sandbox" {
        bail!("the demo runs on the sandbox cloud; use --stack stacks/demo.yaml");
    }
    let token = r
        .token_env
        .as_deref()
        .and_then(|v| first.loaded.secret(v))
        .map(|s| s.expose().to_string())
        .context("the demo stack must name runner.token_env (make demo sets FLEET_DEMO_TOKEN)")?;
    let tags = r.tags.clone();
    drop(first);

    let sim = Sim::start(
        SimConfig {
            tokens: vec![token],
            speed: a.speed,
            runner_online_after: None,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await
    .context("cannot start the GitLab simulator")?;
    let projects: BTreeSet<String> = window.iter().map(|j| j.project.clone()).collect();
    for p in &projects {
        sim.add_project(p);
    }
    let total = window.len();
    let span_h = span_hours(&window);
    sim.replay(window, &tags);

    let dir = tempfile::tempdir()?;
    let mut g = g.clone();
    g.set.push(format!("runner.gitlab_url={}", sim.url()));
    g.set.push(format!(
        "state.path={}",
        dir.path().join("demo.state.json").display()
    ));
    let ctx = Ctx::load(&g).await?;
    println!(
        "Replaying {total} jobs ({span_h:.1} h of {}, {} projects) at {}x on the sandbox; GitLab simulator at {}",
        a.trace.display(),
        projects.len(),
        a.speed,
        sim.url()
    );

    let started = Instant::now();
    // Wall budget: the window at speed, plus the longest job and time to drain.
    let budget = Duration::from_secs_f64(a.hours * 3600.0 / a.speed * 2.0 + 60.0);
    let mut last_print = Instant::now() - Duration::from_secs(1);
    let mut last_tick = Instant::now();
    let (mut running_s, mut stopped_s, mut peak, mut errors) = (0.0, 0.0, 0usize, 0u32);
    let mut durations: Vec<f64> = Vec::new();
    loop {
        let t = Instant::now();
        let result = reconcile_op(
            &ctx,
            &g,
            "fleet-cli demo",
            Operation::Up,
            &|_| {},
            &NoProgress,
        )
        .await
        .map(|o| Some(o.state));
        durations.push(t.elapsed().as_secs_f64());
        let state = match result {
            Ok(s) => s,
            Err(e) => {
                errors += 1;
                tracing::warn!("reconcile failed (retrying): {e:#}");
                None
            }
        };
        let sim_dt = last_tick.elapsed().as_secs_f64() * a.speed;
        last_tick = Instant::now();
        let q = queue(&sim);
        if let Some(state) = &state {
            let f = FleetCount::of(state);
            running_s += f.billed as f64 * sim_dt;
            stopped_s += f.stopped as f64 * sim_dt;
            peak = peak.max(f.billed + f.stopped);
            if last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                println!(
                    "sim {:>6.2} h | queue {:>3} waiting, {:>3} running | fleet {:>3} running ({} booting/starting), {:>3} stopped | {:>5}/{total} done",
                    started.elapsed().as_secs_f64() * a.speed / 3600.0,
                    q.pending,
                    q.running,
                    f.billed,
                    f.coming,
                    f.stopped,
                    q.done
                );
            }
        }
        if q.future == 0 && q.pending == 0 && q.running == 0 {
            break;
        }
        if started.elapsed() > budget {
            println!("Stopping: the replay ran past its wall-time budget of {budget:?}.");
            break;
        }
        tokio::time::sleep(a.interval).await;
    }

    let destroyed = reconcile_op(
        &ctx,
        &g,
        "fleet-cli demo",
        Operation::Destroy,
        &|_| {},
        &NoProgress,
    )
    .await;
    let waits = waits(&sim);
    let counters = sim.counters();
    println!();
    println!("Report ({} jobs finished of {total})", waits.len());
    if !waits.is_empty() {
        let within = waits.iter().filter(|w| **w <= 60.0).count() as f64 / waits.len() as f64;
        println!(
            "  wait for a runner: p50 {:.0}s, p95 {:.0}s, p99 {:.0}s, max {:.0}s; {:.1}% started within 60s",
            pct(&waits, 0.50),
            pct(&waits, 0.95),
            pct(&waits, 0.99),
            waits.last().copied().unwrap_or(0.0),
            within * 100.0
        );
    }
    let (rh, sh) = (running_s / 3600.0, stopped_s / 3600.0);
    println!(
        "  VM-hours: {rh:.1} running, {sh:.1} stopped; cost {:.1} (running 1.0/h, stopped 0.035/h); peak {peak} VMs",
        rh * PRICE_RUNNING + sh * PRICE_STOPPED
    );
    println!(
        "  runners: {} created, {} deleted; jobs killed by a runner delete: {}; reconcile errors: {errors}",
        counters.runners_created, counters.runners_deleted, counters.jobs_killed_by_runner_delete
    );
    durations.sort_by(f64::total_cmp);
    let p50 = if durations.is_empty() {
        0.0
    } else {
        pct(&durations, 0.5)
    };
    println!(
        "  wall time {:.1}s at {}x; {} reconciles, p50 {:.0} ms each ({:.0} s simulated)",
        started.elapsed().as_secs_f64(),
        a.speed,
        durations.len(),
        p50 * 1000.0,
        p50 * a.speed
    );
    destroyed.context("could not destroy the demo fleet")?;
    Ok(0)
}

fn span_hours(jobs: &[TraceJob]) -> f64 {
    match (jobs.first(), jobs.last()) {
        (Some(a), Some(b)) => (b.queued_at - a.queued_at).num_seconds() as f64 / 3600.0,
        _ => 0.0,
    }
}

#[derive(Default)]
struct Queue {
    future: usize,
    pending: usize,
    running: usize,
    done: usize,
}

fn queue(sim: &Sim) -> Queue {
    sim.with_world(|w, _| {
        let mut q = Queue {
            future: w.future.len(),
            ..Queue::default()
        };
        for j in w.jobs.values() {
            match j.status {
                JobStatus::Pending => q.pending += 1,
                JobStatus::Running => q.running += 1,
                _ => q.done += 1,
            }
        }
        q
    })
}

/// Seconds each finished job waited for a runner, sorted.
fn waits(sim: &Sim) -> Vec<f64> {
    let now = sim.now();
    let mut v: Vec<f64> = sim.with_world(|w, _| {
        w.jobs
            .values()
            .filter(|j| j.started_at.is_some())
            .map(|j| j.queued_seconds(now))
            .collect()
    });
    v.sort_by(f64::total_cmp);
    v
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The recorded fleet by what it costs.
struct FleetCount {
    /// Billed as running (booting, running, starting, stopping).
    billed: usize,
    /// Booting or starting.
    coming: usize,
    /// Stopped.
    stopped: usize,
}

impl FleetCount {
    fn of(state: &State) -> FleetCount {
        let mut f = FleetCount {
            billed: 0,
            coming: 0,
            stopped: 0,
        };
        for r in state.instances.values() {
            match r.lifecycle {
                Lifecycle::Stopped => f.stopped += 1,
                Lifecycle::Terminated | Lifecycle::Terminating => {}
                Lifecycle::Booting | Lifecycle::Starting | Lifecycle::Unknown => {
                    f.billed += 1;
                    f.coming += 1;
                }
                Lifecycle::Running | Lifecycle::Stopping => f.billed += 1,
            }
        }
        f
    }
}
