//! `fleet-cli simulate`: replays a job trace through a scaling policy in virtual time and
//! prints wait times against cost; with `--target-p95`, the cheapest settings that meet a
//! p95 wait target; with `--svg` and `--frontier`, pictures of the fleet and of the sweep
//! (drawn in `plot/`).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use fleet_core::simulate::{
    self, grid, sweep, DockerMachine, Metrics, Model, PolicySpec, Taskscaler, Timeline, Trace,
    POLICIES,
};
use fleet_core::stack::Settings;
use fleet_core::stack::{Override, PolicyConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::plot::{self, Frontier, Point, PolicySweep};
use crate::Global;

/// The target p95 wait of `--frontier` without `--target-p95`, seconds.
const FRONTIER_TARGET_S: f64 = 60.0;

/// `simulate` flags.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The job trace (CSV: queued_at,duration_s,project,pipeline).
    #[arg(long, value_name = "FILE.csv")]
    pub trace: PathBuf,
    /// Policies to replay, comma-separated, or `all`: fleet, docker-machine, taskscaler,
    /// fixed, oracle. The baselines read the same `policy.*` keys (idle_count, idle_time,
    /// max_instances, ...) with GitLab's meaning.
    #[arg(long, value_name = "NAME", default_value = "fleet")]
    pub policy: String,
    /// Sweep each policy's grid and report the cheapest settings whose p95 wait is at most
    /// this many seconds (as `best`).
    #[arg(long, value_name = "SECONDS")]
    pub target_p95: Option<f64>,
    /// Draw the fleet over time under the first policy to this SVG file: VMs busy, idle,
    /// booting and stopped, stacked, with the jobs waiting below.
    #[arg(long, value_name = "OUT.svg")]
    pub svg: Option<PathBuf>,
    /// Sweep each policy's grid (as --target-p95 does) and draw cost against p95 wait to
    /// this SVG file: every configuration, each policy's least cost for each wait, the
    /// target, and the stack's own settings (with `fleet` in --policy). Without
    /// --target-p95 the target is 60 s.
    #[arg(long, value_name = "OUT.svg")]
    pub frontier: Option<PathBuf>,
    /// Threads for sweeps (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// Model settings (`--set sim.boot_s=120`) next to the stack overrides.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SimSettings {
    #[serde(flatten)]
    model: Model,
    /// VMs of the `fixed` policy (default: policy.max_instances).
    #[serde(default)]
    fixed: Option<u32>,
}

/// Runs `simulate`.
pub fn run(g: &Global, a: &SimulateArgs) -> Result<u8> {
    let (stack_sets, sim_sets): (Vec<&String>, Vec<&String>) = g
        .set
        .iter()
        .partition(|s| !s.trim_start().starts_with("sim."));
    let overrides = stack_sets
        .iter()
        .map(|s| Override::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let env = |k: &str| std::env::var(k).ok();
    let loaded = fleet_providers::load_stack(&g.stack, &overrides, &env)?;
    let sim = sim_settings(&sim_sets, loaded.stack.policy.capacity_per_instance)?;
    let model = sim.model;
    let trace = Trace::read(&a.trace)
        .with_context(|| "the trace must be CSV with the header queued_at,duration_s,project,pipeline (see stacks/traces/README.md)")?;
    let config = &loaded.stack.policy;
    let names = policy_names(&a.policy)?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if a.svg.is_some() && names.first() == Some(&"oracle") {
        bail!("--svg draws the fleet of the first policy in --policy, and the oracle is computed job by job with no fleet to draw: put another policy first, like --policy fleet,oracle");
    }
    let target_p95 = sweep_target(a);

    let mut reports = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let spec = spec_for(name, config, &model, sim.fixed)?;
        let mut timeline = (k == 0 && a.svg.is_some()).then(Timeline::default);
        let metrics = simulate::run(&trace, &model, &spec, timeline.as_mut());
        if let (Some(tl), Some(path)) = (&timeline, &a.svg) {
            let title = format!(
                "{name} on {}: p95 wait {:.0} s, cost {:.2}",
                a.trace.display(),
                metrics.wait_p95_s,
                metrics.cost
            );
            write_picture(path, plot::draw_fleet(tl, &title))?;
        }
        let swept = match target_p95 {
            Some(target) => {
                let candidates = grid(name, config, &model, &trace);
                let bar = progress(candidates.len(), name);
                let r = sweep(&trace, &model, &candidates, target, threads, &|| {
                    if let Some(b) = &bar {
                        b.inc(1);
                    }
                });
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                Some(r)
            }
            None => None,
        };
        reports.push(Report {
            name,
            metrics,
            best: swept.as_ref().map(|r| r.best.clone()),
            runs: swept.map_or_else(Vec::new, |r| r.runs.into_iter().map(|(_, m)| m).collect()),
        });
    }
    if let (Some(path), Some(target)) = (&a.frontier, target_p95) {
        let picture = frontier(&reports, target, &a.trace, &model);
        write_picture(path, plot::draw_frontier(&picture))?;
    }

    if g.json {
        let objs: Vec<Value> = reports.iter().map(|r| r.json()).collect();
        let out = if objs.len() == 1 {
            objs.into_iter().next().unwrap_or(Value::Null)
        } else {
            json!({
                "trace": a.trace.display().to_string(),
                "target_p95_s": target_p95,
                "policies": objs,
                "ratios": ratios(&reports),
            })
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&a.trace, &trace, target_p95, &reports);
    }
    Ok(0)
}

/// The target a sweep runs for: `--target-p95`, or for `--frontier` alone, 60 s.
fn sweep_target(a: &SimulateArgs) -> Option<f64> {
    a.target_p95
        .or(a.frontier.as_ref().map(|_| FRONTIER_TARGET_S))
}

/// Writes a drawn picture to `path`.
fn write_picture(path: &Path, drawn: Result<String, plot::PlotError>) -> Result<()> {
    let svg = drawn.with_context(|| format!("cannot draw {}", path.display()))?;
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
}

/// The frontier picture of the sweeps in `reports`, with the stack's own `fleet` run as
/// the shipped point.
fn frontier(reports: &[Report<'_>], target_p95_s: f64, trace: &Path, model: &Model) -> Frontier {
    let point = |m: &Metrics| Point {
        wait_p95_s: m.wait_p95_s,
        cost: m.cost,
    };
    Frontier {
        title: format!(
            "cost against p95 wait on {}: every configuration swept",
            trace.display()
        ),
        cost_unit: format!("a VM running for an hour costs {}", model.price_running),
        target_p95_s,
        sweeps: reports
            .iter()
            .map(|r| PolicySweep {
                name: r.name.to_string(),
                runs: r.runs.iter().map(point).collect(),
                best: r
                    .best
                    .as_ref()
                    .and_then(|b| b.as_ref())
                    .map(|(_, m)| point(m)),
            })
            .collect(),
        shipped: reports
            .iter()
            .find(|r| r.name == "fleet")
            .map(|r| point(&r.metrics)),
    }
}

struct Report<'a> {
    name: &'a str,
    metrics: Metrics,
    best: Option<Option<(std::collections::BTreeMap<String, Value>, Metrics)>>,
    /// Every configuration the sweep ran.
    runs: Vec<Metrics>,
}

impl Report<'_> {
    fn json(&self) -> Value {
        let mut v = json!({"policy": self.name});
        merge(&mut v, &self.metrics);
        if let Some(best) = &self.best {
            v["best"] = match best {
                Some((params, m)) => {
                    let mut b = json!({"params": params});
                    merge(&mut b, m);
                    b
                }
                None => Value::Null,
            };
        }
        v
    }

    /// Cost at the target: the sweep's best, or without a sweep the run itself.
    fn cost_at_target(&self) -> Option<f64> {
        match &self.best {
            Some(Some((_, m))) => Some(m.cost),
            Some(None) => None,
            None => Some(self.metrics.cost),
        }
    }
}

fn merge(v: &mut Value, m: &Metrics) {
    if let (Value::Object(o), Ok(Value::Object(mo))) = (v, serde_json::to_value(m)) {
        o.extend(mo);
    }
}

fn ratios(reports: &[Report<'_>]) -> Value {
    let cost = |n: &str| {
        reports
            .iter()
            .find(|r| r.name == n)
            .and_then(Report::cost_at_target)
    };
    let best_baseline = [cost("docker-machine"), cost("taskscaler")]
        .into_iter()
        .flatten()
        .min_by(f64::total_cmp);
    let fleet = cost("fleet");
    json!({
        "fleet_vs_best_baseline": fleet.zip(best_baseline).map(|(f, b)| f / b),
        "fleet_vs_oracle": fleet.zip(cost("oracle")).map(|(f, o)| f / o),
    })
}

fn print_table(path: &Path, trace: &Trace, target: Option<f64>, reports: &[Report<'_>]) {
    println!("trace: {} ({} jobs)", path.display(), trace.jobs.len());
    let row = |label: &str, m: &Metrics| {
        println!(
            "  {label:<16} p50 {:>6.0}s  p95 {:>6.0}s  p99 {:>6.0}s  max {:>7.0}s  cost {:>9.2}  vm_h {:>9.1}  stopped_h {:>8.1}  launches {:>6}  starts {:>6}  peak {:>4}",
            m.wait_p50_s, m.wait_p95_s, m.wait_p99_s, m.wait_max_s, m.cost, m.vm_hours,
            m.stopped_hours, m.launches, m.starts, m.peak_instances
        );
    };
    for r in reports {
        row(r.name, &r.metrics);
        if let Some(best) = &r.best {
            match best {
                Some((params, m)) => {
                    row("  best", m);
                    println!(
                        "    with {}",
                        Value::Object(params.clone().into_iter().collect())
                    );
                }
                None => println!(
                    "    no configuration in the grid meets p95 <= {}s",
                    target.unwrap_or_default()
                ),
            }
        }
    }
    if reports.len() > 1 {
        let r = ratios(reports);
        let show = |v: &Value| v.as_f64().map_or("n/a".into(), |x| format!("{x:.2}x"));
        println!(
            "fleet cost: {} of the best baseline, {} of the oracle",
            show(&r["fleet_vs_best_baseline"]),
            show(&r["fleet_vs_oracle"])
        );
    }
}

fn progress(len: usize, name: &str) -> Option<ProgressBar> {
    (len > 1 && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(len as u64);
        if let Ok(style) = ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} {eta}") {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message(name.to_string());
        b
    })
}

fn policy_names(text: &str) -> Result<Vec<&'static str>> {
    if text.trim() == "all" {
        return Ok(POLICIES.to_vec());
    }
    text.split(',')
        .map(|n| {
            let n = n.trim();
            POLICIES
                .iter()
                .copied()
                .find(|p| *p == n)
                .ok_or_else(|| simulate::SimError::UnknownPolicy { name: n.into() }.into())
        })
        .collect()
}

fn sim_settings(sets: &[&String], capacity: u32) -> Result<SimSettings> {
    let mut map = serde_yaml_ng::Mapping::new();
    map.insert("capacity".into(), capacity.into());
    for s in sets {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--set {s}: write it as sim.<key>=<value>, like sim.boot_s=120");
        };
        let key = k.trim().trim_start_matches("sim.").to_string();
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(v.trim())
            .with_context(|| format!("--set {s}: the value does not parse"))?;
        map.insert(key.into(), value);
    }
    serde_yaml_ng::from_value(serde_yaml_ng::Value::Mapping(map)).with_context(|| {
        "--set sim.*: the simulator's keys are boot_s, resume_s, stop_s, capacity, billing_min_s, price_running, price_stopped, fleet_tick_s and fixed".to_string()
    })
}

/// The policy `name` with the stack's settings (the baselines read the keys they share
/// with GitLab's autoscalers).
fn spec_for(name: &str, c: &PolicyConfig, model: &Model, fixed: Option<u32>) -> Result<PolicySpec> {
    Ok(match name {
        "fleet" => PolicySpec::Fleet(Box::new(
            Settings::from_config(c).map_err(|p| anyhow::anyhow!("{}: {}", p.path, p.message))?,
        )),
        "docker-machine" => PolicySpec::DockerMachine(DockerMachine {
            idle_count: c.idle_count,
            idle_count_min: c.min_instances,
            idle_scale_factor: c.scale_factor,
            idle_time_s: c.idle_time.as_secs() as u32,
            max_growth_rate: c.max_growth_rate,
            max_builds: c.max_use_count,
            limit: c.max_instances,
        }),
        "taskscaler" => PolicySpec::Taskscaler(Taskscaler {
            idle_count: c.idle_count,
            idle_time_s: c.idle_time.as_secs() as u32,
            scale_factor: c.scale_factor,
            scale_factor_limit: c.scale_factor_limit,
            capacity_per_instance: model.capacity,
            max_use_count: c.max_use_count,
            max_instances: c.max_instances,
            ..Taskscaler::default()
        }),
        "fixed" => PolicySpec::Fixed(fixed.unwrap_or(c.max_instances)),
        _ => PolicySpec::Oracle,
    })
}
