//! `--target-p95`: runs a policy over a grid of its main settings and keeps the cheapest
//! configuration whose p95 wait meets the target.
//!
//! The grids (docs/policy.md lists them too). Baselines get grids at least as wide and as
//! fine as ours on the settings they share:
//! * fleet: idle_count {0,1,2} x idle_time {0,30s,1m,2m} x stopped_count {0,1,2,3,5,7,
//!   10,15,20,30} x stopped_time {10m,30m,1h,2h,3h,4h,6h} x forecast {off,on}, other
//!   settings from the stack;
//! * docker-machine: IdleCount {0..6,8,10,12,15,20,25,30,35,40,45,50} x IdleTime {0,30s,1m,
//!   2m,5m,10m,15m,20m,30m,45m,1h};
//! * taskscaler: idle_count as docker-machine x idle_time as docker-machine x scale_factor
//!   {0,0.5,1} (scale_factor_limit 0: no cap);
//! * fixed: every N from 1 to the trace's peak concurrency (binary search: p95 only falls
//!   as N grows);
//! * oracle: nothing to tune.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

use super::{run, DockerMachine, Metrics, Model, PolicySpec, Taskscaler, Trace};
use crate::stack::PolicyConfig;
use crate::stack::Settings;

/// One configuration to try.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The policy with its settings.
    pub policy: PolicySpec,
    /// The settings that vary, for the report.
    pub params: BTreeMap<String, Value>,
}

/// What a sweep found.
#[derive(Debug, Clone)]
pub struct SweepResult {
    /// The cheapest configuration meeting the target, with its metrics.
    pub best: Option<(BTreeMap<String, Value>, Metrics)>,
    /// Configurations run.
    pub evaluated: usize,
    /// Every configuration run, as its index in the candidates and its metrics, in index
    /// order: the whole cost / wait trade-off, for the frontier picture. A fixed fleet's
    /// bisection runs only some of its candidates.
    pub runs: Vec<(usize, Metrics)>,
}

const IDLE_COUNTS: [u32; 18] = [
    0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 35, 40, 45, 50,
];
const IDLE_TIMES_S: [u32; 11] = [0, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600];
const STOPPED_COUNTS: [u32; 10] = [0, 1, 2, 3, 5, 7, 10, 15, 20, 30];
const STOPPED_TIMES_S: [u64; 7] = [600, 1800, 3600, 7200, 10_800, 14_400, 21_600];

/// The grid for `name`. `config` is the stack's policy (fleet's fixed settings, and
/// max_instances as every baseline's limit); `trace` bounds the fixed fleet's grid.
pub fn grid(name: &str, config: &PolicyConfig, model: &Model, trace: &Trace) -> Vec<Candidate> {
    let limit = config.max_instances;
    let mut out = Vec::new();
    match name {
        "fleet" => {
            for idle_count in [0u32, 1, 2] {
                for idle_time in [0u64, 30, 60, 120] {
                    for stopped_count in STOPPED_COUNTS {
                        for stopped_time in STOPPED_TIMES_S {
                            for forecast in [false, true] {
                                // Fixed settings: the hindsight grid has no target.
                                let mut c = config.clone();
                                c.target = None;
                                c.idle_count = idle_count;
                                c.idle_time = std::time::Duration::from_secs(idle_time);
                                c.stopped_count = stopped_count.min(c.max_instances);
                                c.stopped_time = std::time::Duration::from_secs(stopped_time);
                                c.forecast = forecast;
                                let Ok(s) = Settings::from_config(&c) else {
                                    continue;
                                };
                                out.push(Candidate {
                                    policy: PolicySpec::Fleet(Box::new(s)),
                                    params: params(json!({
                                        "idle_count": idle_count,
                                        "idle_time_s": idle_time,
                                        "stopped_count": stopped_count,
                                        "stopped_time_s": stopped_time,
                                        "forecast": forecast,
                                    })),
                                });
                            }
                        }
                    }
                }
            }
        }
        "docker-machine" => {
            for idle_count in IDLE_COUNTS {
                for idle_time_s in IDLE_TIMES_S {
                    out.push(Candidate {
                        policy: PolicySpec::DockerMachine(DockerMachine {
                            idle_count,
                            idle_time_s,
                            limit,
                            ..DockerMachine::default()
                        }),
                        params: params(json!({"IdleCount": idle_count, "IdleTime_s": idle_time_s})),
                    });
                }
            }
        }
        "taskscaler" => {
            for idle_count in IDLE_COUNTS {
                for idle_time_s in IDLE_TIMES_S {
                    for scale_factor in [0.0, 0.5, 1.0] {
                        out.push(Candidate {
                            policy: PolicySpec::Taskscaler(Taskscaler {
                                idle_count,
                                idle_time_s,
                                scale_factor,
                                capacity_per_instance: model.capacity,
                                max_instances: limit,
                                ..Taskscaler::default()
                            }),
                            params: params(json!({
                                "idle_count": idle_count,
                                "idle_time_s": idle_time_s,
                                "scale_factor": scale_factor,
                            })),
                        });
                    }
                }
            }
        }
        "fixed" => {
            let peak = peak_concurrency(trace).max(1);
            for n in 1..=peak {
                out.push(Candidate {
                    policy: PolicySpec::Fixed(n),
                    params: params(json!({"instances": n})),
                });
            }
        }
        _ => out.push(Candidate {
            policy: PolicySpec::Oracle,
            params: BTreeMap::new(),
        }),
    }
    out
}

fn params(v: Value) -> BTreeMap<String, Value> {
    match v {
        Value::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// Jobs running at once at the busiest moment if each started when queued.
pub(crate) fn peak_concurrency(trace: &Trace) -> u32 {
    let mut ev: Vec<(i64, i32)> = Vec::with_capacity(trace.jobs.len() * 2);
    for j in &trace.jobs {
        ev.push((j.queued_at, 1));
        ev.push((j.queued_at + i64::from(j.duration_s), -1));
    }
    ev.sort_unstable_by_key(|&(t, d)| (t, d));
    let (mut cur, mut peak) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        peak = peak.max(cur);
    }
    peak as u32
}

/// Runs `candidates` on `threads` threads and keeps the cheapest with p95 wait at most
/// `target_p95_s`. A fixed fleet is searched by bisection. `progress` is called after each run.
pub fn sweep(
    trace: &Trace,
    model: &Model,
    candidates: &[Candidate],
    target_p95_s: f64,
    threads: usize,
    progress: &(dyn Fn() + Sync),
) -> SweepResult {
    if candidates
        .first()
        .is_some_and(|c| matches!(c.policy, PolicySpec::Fixed(_)))
    {
        return bisect(trace, model, candidates, target_p95_s, progress);
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Metrics)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = candidates.get(i) else { break };
                let m = run(trace, model, &c.policy, None);
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, m));
                progress();
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_unstable_by_key(|(i, _)| *i);
    let best = results
        .iter()
        .filter(|(_, m)| m.wait_p95_s <= target_p95_s)
        .min_by(|a, b| a.1.cost.total_cmp(&b.1.cost).then(a.0.cmp(&b.0)))
        .map(|(i, m)| (candidates[*i].params.clone(), *m));
    SweepResult {
        best,
        evaluated: results.len(),
        runs: results,
    }
}

fn bisect(
    trace: &Trace,
    model: &Model,
    candidates: &[Candidate],
    target: f64,
    progress: &(dyn Fn() + Sync),
) -> SweepResult {
    // Fixed fleets grow with N in cost and shrink in wait: find the smallest N that meets
    // the target.
    let (mut lo, mut hi) = (0usize, candidates.len());
    let mut best = None;
    let mut runs = Vec::new();
    while lo < hi {
        let mid = (lo + hi) / 2;
        let m = run(trace, model, &candidates[mid].policy, None);
        runs.push((mid, m));
        progress();
        if m.wait_p95_s <= target {
            best = Some((candidates[mid].params.clone(), m));
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    runs.sort_unstable_by_key(|(i, _)| *i);
    SweepResult {
        best,
        evaluated: runs.len(),
        runs,
    }
}
