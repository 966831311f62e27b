//! The trace-driven simulator: replays a job trace in virtual time through a modelled cloud
//! and a modelled GitLab queue, under our policy ([`crate::autoscale::decide`], the code `up`
//! runs) or a baseline (docker-machine, taskscaler, a fixed fleet, a clairvoyant oracle),
//! and reports wait times and cost. Pure: no clock, no I/O except [`Trace::read`].

mod baselines;
mod oracle;
mod sweep;
#[cfg(test)]
mod tests;
mod trace;
mod world;

use serde::{Deserialize, Serialize};

use crate::autoscale::record::DemandRecord;
use crate::stack::Settings;

pub use baselines::{DockerMachine, Taskscaler};
pub use oracle::oracle;
pub use sweep::{grid, sweep, Candidate, SweepResult};
pub use trace::{write_csv, Job, Row, Trace};
pub use world::{Sample, Timeline};

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The trace file could not be read.
    #[error("cannot read trace {path}")]
    ReadTrace {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A row of the trace is not in the trace format.
    #[error("{at}: {message}")]
    BadRow {
        /// `file:line`.
        at: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A policy name the simulator does not know.
    #[error(
        "unknown policy `{name}`; use one of fleet, docker-machine, taskscaler, fixed, oracle"
    )]
    UnknownPolicy {
        /// The name given.
        name: String,
    },
}

/// The modelled cloud. Every field can be set with `--set sim.<field>=...`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Model {
    /// Seconds from create to ready.
    pub boot_s: u32,
    /// Seconds from start to ready.
    pub resume_s: u32,
    /// Job slots per VM.
    pub capacity: u32,
    /// Seconds from stop to stopped (billed as stopped, as EC2 does).
    pub stop_s: u32,
    /// Seconds billed at least per create or start.
    pub billing_min_s: u32,
    /// Price of a running VM per hour.
    pub price_running: f64,
    /// Price of a stopped VM per hour (its disk).
    pub price_stopped: f64,
    /// Seconds between our policy's periodic decisions (it also decides on every event:
    /// job queued, job ended, VM ready, as the daemon does on GitLab's webhooks).
    pub fleet_tick_s: u32,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            boot_s: 90,
            resume_s: 30,
            capacity: 1,
            stop_s: 15,
            billing_min_s: 60,
            price_running: 1.0,
            price_stopped: 0.035,
            fleet_tick_s: 10,
        }
    }
}

/// What a run reports. The JSON keys are stable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Jobs replayed.
    pub jobs: u64,
    /// Median wait from queued to running, seconds.
    pub wait_p50_s: f64,
    /// 95th percentile wait.
    pub wait_p95_s: f64,
    /// 99th percentile wait.
    pub wait_p99_s: f64,
    /// Longest wait.
    pub wait_max_s: f64,
    /// Running hours (with each start's billing minimum) x running price, plus stopped
    /// hours x stopped price.
    pub cost: f64,
    /// Hours VMs ran (booting, starting, idle or busy).
    pub vm_hours: f64,
    /// Hours VMs spent stopping or stopped.
    pub stopped_hours: f64,
    /// VMs created.
    pub launches: u64,
    /// Stopped VMs started again.
    pub starts: u64,
    /// Most VMs billed at the running price at once.
    pub peak_instances: u64,
}

/// A policy to replay.
#[derive(Debug, Clone)]
pub enum PolicySpec {
    /// Ours, from the stack's `policy:` settings.
    Fleet(Box<Settings>),
    /// GitLab's docker+machine autoscaler.
    DockerMachine(DockerMachine),
    /// GitLab's fleeting/taskscaler.
    Taskscaler(Taskscaler),
    /// `n` VMs always running.
    Fixed(u32),
    /// The clairvoyant reference.
    Oracle,
}

impl PolicySpec {
    /// The policy's name, as `--policy` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            PolicySpec::Fleet(_) => "fleet",
            PolicySpec::DockerMachine(_) => "docker-machine",
            PolicySpec::Taskscaler(_) => "taskscaler",
            PolicySpec::Fixed(_) => "fixed",
            PolicySpec::Oracle => "oracle",
        }
    }
}

/// The policy names `--policy` takes.
pub const POLICIES: [&str; 5] = ["fleet", "docker-machine", "taskscaler", "fixed", "oracle"];

/// Replays `trace` under `policy` in `model`; `timeline` collects samples of the fleet
/// (`fleet-cli simulate --svg` draws them). The oracle records none.
pub fn run(
    trace: &Trace,
    model: &Model,
    policy: &PolicySpec,
    timeline: Option<&mut Timeline>,
) -> Metrics {
    match policy {
        PolicySpec::Oracle => oracle(trace, model),
        PolicySpec::Fleet(s) => world::run(trace, model, world::FleetDriver::new(s), timeline),
        PolicySpec::DockerMachine(d) => world::run(trace, model, *d, timeline),
        PolicySpec::Taskscaler(t) => world::run(trace, model, *t, timeline),
        PolicySpec::Fixed(n) => world::run(trace, model, world::Fixed(*n), timeline),
    }
}

/// Replays `trace` under our policy with `settings`, its demand record seeded with
/// `history` (see [`history_record`]) as if the fleet had seen it before.
pub fn run_fleet(
    trace: &Trace,
    model: &Model,
    settings: &Settings,
    history: DemandRecord,
    timeline: Option<&mut Timeline>,
) -> Metrics {
    let driver = world::FleetDriver::new(settings).with_record(history);
    world::run(trace, model, driver, timeline)
}

/// The demand record a fleet would have written over `trace` had every job started when
/// queued: what a GitLab's finished-job history shows, to seed the policy with.
pub fn history_record(trace: &Trace) -> DemandRecord {
    let mut ev: Vec<(i64, i32)> = Vec::with_capacity(trace.jobs.len() * 2);
    for j in &trace.jobs {
        ev.push((j.queued_at, 1));
        ev.push((j.queued_at + i64::from(j.duration_s), -1));
    }
    // Ends before arrivals at the same second: a VM freed takes the next job.
    ev.sort_unstable();
    let mut r = DemandRecord::default();
    let mut running = 0i64;
    let mut i = 0;
    while i < ev.len() {
        let t = ev[i].0;
        while i < ev.len() && ev[i].0 == t {
            running += i64::from(ev[i].1);
            i += 1;
        }
        let at = chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
        r.observe(at, 0, running.max(0) as u32);
    }
    r
}

/// Nearest-rank percentile of sorted `v`.
pub(crate) fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1])
}
