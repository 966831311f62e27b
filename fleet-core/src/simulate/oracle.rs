//! The clairvoyant reference: every job starts the second it is queued, on a VM made ready
//! for it at the least cost the model allows. No causal policy can do better on waits, and
//! none we know of does better on cost.
//!
//! How it is computed: jobs are taken in arrival order. A job goes to the VM that became
//! free most recently (the shortest gap), if one is free; across that gap the VM either
//! keeps running, or is stopped and resumed just in time (when the gap is long enough), or
//! is retired and a fresh VM boots just in time for the job, whichever costs least for the
//! gap. With no free VM, a fresh VM boots just in time. Gap costs grow with the gap, so the
//! most recently freed VM is the cheapest choice for each job; VMs whose gap already costs
//! more than a fresh boot are dropped. Each running stretch is billed at least
//! `billing_min_s`. Greedy in arrival order, so a floor in practice rather than a proven
//! optimum.

use std::collections::BTreeSet;

use super::{Metrics, Model, Trace};

#[derive(Clone, Copy)]
struct Run {
    /// Start of the current running stretch (its boot or resume start).
    since: i64,
}

/// Runs the oracle over `trace`.
pub fn oracle(trace: &Trace, model: &Model) -> Metrics {
    let boot = i64::from(model.boot_s);
    let resume = i64::from(model.resume_s);
    let stop = i64::from(model.stop_s);
    let min = i64::from(model.billing_min_s);
    let pr = model.price_running / 3600.0;
    let ps = model.price_stopped / 3600.0;
    // Cost of a fresh boot, and the gap beyond which anything costs more than it.
    let boot_cost = boot as f64 * pr;
    let stop_cost = |g: i64| -> Option<f64> {
        (g >= stop + resume).then(|| resume as f64 * pr + (g - resume) as f64 * ps)
    };
    let horizon = {
        // Longest gap still worth bridging: running idle up to boot_s; stopped up to where
        // resume + stopped time equals a boot.
        let by_stop = if ps > 0.0 {
            ((boot_cost - resume as f64 * pr) / ps) as i64 + resume
        } else {
            i64::MAX / 4
        };
        boot.max(by_stop)
    };

    let mut runs: Vec<Run> = Vec::new();
    // Free VMs by (free since, run index).
    let mut free: BTreeSet<(i64, usize)> = BTreeSet::new();
    let mut ends: std::collections::BinaryHeap<std::cmp::Reverse<(i64, usize)>> =
        std::collections::BinaryHeap::new();
    let (mut billed, mut run_s, mut stopped_s) = (0i64, 0i64, 0i64);
    let (mut launches, mut starts) = (0u64, 0u64);
    let close = |since: i64, until: i64, billed: &mut i64, run_s: &mut i64| {
        *run_s += until - since;
        *billed += (until - since).max(min);
    };
    // Peak running VMs: +1 at each stretch start, -1 at each end; counted afterwards.
    let mut deltas: Vec<(i64, i32)> = Vec::new();
    for job in &trace.jobs {
        let a = job.queued_at;
        while let Some(&std::cmp::Reverse((t, i))) = ends.peek() {
            if t > a {
                break;
            }
            ends.pop();
            free.insert((t, i));
        }
        // Drop VMs free for longer than any gap worth bridging: retired when freed.
        while let Some(&(t, i)) = free.iter().next() {
            if a - t <= horizon {
                break;
            }
            free.remove(&(t, i));
            close(runs[i].since, t, &mut billed, &mut run_s);
            deltas.push((t, -1));
        }
        let pick = free.iter().next_back().copied();
        let mut chosen = None;
        if let Some((t, i)) = pick {
            let g = a - t;
            let idle = g as f64 * pr;
            let stopped = stop_cost(g);
            let best_keep = stopped.map_or(idle, |s| s.min(idle));
            if best_keep <= boot_cost {
                free.remove(&(t, i));
                if stopped.is_some_and(|s| s < idle) {
                    // Stop at t, resume at a - resume.
                    close(runs[i].since, t, &mut billed, &mut run_s);
                    deltas.push((t, -1));
                    stopped_s += g - resume;
                    runs[i].since = a - resume;
                    deltas.push((a - resume, 1));
                    starts += 1;
                }
                chosen = Some(i);
            } else {
                free.remove(&(t, i));
                close(runs[i].since, t, &mut billed, &mut run_s);
                deltas.push((t, -1));
            }
        }
        let i = match chosen {
            Some(i) => i,
            None => {
                runs.push(Run { since: a - boot });
                launches += 1;
                deltas.push((a - boot, 1));
                runs.len() - 1
            }
        };
        ends.push(std::cmp::Reverse((a + i64::from(job.duration_s), i)));
    }
    while let Some(std::cmp::Reverse((t, i))) = ends.pop() {
        free.insert((t, i));
    }
    for (t, i) in free {
        close(runs[i].since, t, &mut billed, &mut run_s);
        deltas.push((t, -1));
    }
    deltas.sort_unstable();
    let (mut cur, mut peak) = (0i64, 0i64);
    for (_, d) in deltas {
        cur += i64::from(d);
        peak = peak.max(cur);
    }
    let hours = |s: i64| s as f64 / 3600.0;
    Metrics {
        jobs: trace.jobs.len() as u64,
        wait_p50_s: 0.0,
        wait_p95_s: 0.0,
        wait_p99_s: 0.0,
        wait_max_s: 0.0,
        cost: hours(billed) * model.price_running + hours(stopped_s) * model.price_stopped,
        vm_hours: hours(run_s),
        stopped_hours: hours(stopped_s),
        launches,
        starts,
        peak_instances: peak as u64,
    }
}
