//! The commands. Each one is the same sequence: load, (lock,) read state, observe, plan,
//! show, (confirm,) apply through the executor, (unlock). Preview is apply with dry_run.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use chrono::Utc;
use serde_json::json;

use fleet_core::apply::{ApplyOptions, ApplyReport, NoProgress, Progress};
use fleet_core::plan::{Operation, Plan, PLAN_FORMAT_VERSION};
use fleet_core::state::{InstanceRecord, State};

use crate::context::{new_lineage, Ctx, ReadOnly};
use crate::output::{self, CliProgress};
use crate::Global;

const EXIT_CHANGES: u8 = 2;

fn clock() -> chrono::DateTime<Utc> {
    Utc::now()
}

async fn execute(
    ctx: &Ctx,
    plan: &Plan,
    state: &mut State,
    observed: Option<&fleet_core::cloud::Observed>,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    let fleet = ctx.fleet();
    let a = &ctx.loaded.stack.apply;
    let options = ApplyOptions {
        dry_run,
        concurrency: a.concurrency,
        batch_size: a.batch_size,
    };
    let executor = fleet.executor(state, options, progress, &clock);
    Ok(executor.apply(plan, state, observed).await?)
}

/// `preview` and `plan`: plan, then run apply with dry_run.
pub async fn preview(g: &Global, detailed: bool, out: Option<&Path>) -> Result<u8> {
    let ctx = Ctx::load(g).await?;
    let fleet = ctx.fleet();
    let mut state = fleet.read_state(new_lineage).await?;
    let observed = fleet.observe(&state).await?;
    let plan = fleet
        .plan(Operation::Up, &state, &observed, Utc::now())
        .await?;
    execute(&ctx, &plan, &mut state, Some(&observed), true, &NoProgress).await?;
    if let Some(path) = out {
        let body = serde_json::to_vec_pretty(&plan)?;
        std::fs::write(path, body)
            .with_context(|| format!("cannot write the plan to {}", path.display()))?;
    }
    if g.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        output::print_plan(&plan);
        if let Some(path) = out {
            println!(
                "\nSaved the plan to {}; apply it with `fleet-cli up --plan {}`.",
                path.display(),
                path.display()
            );
        }
    }
    Ok(if detailed && !plan.is_empty() {
        EXIT_CHANGES
    } else {
        0
    })
}

/// `up`: converge, or apply a saved plan. `up --yes` is [`reconcile`], the daemon's path.
pub async fn up(g: &Global, yes: bool, saved: Option<&Path>) -> Result<u8> {
    let ctx = Ctx::load(g).await?;
    if yes && saved.is_none() {
        let progress = CliProgress::new(g.json);
        let outcome = reconcile(&ctx, g, "fleet-cli up", &|p| show_plan(g, p), &progress).await?;
        return Ok(print_outcome(g, &ctx, &outcome));
    }
    ctx.lock(g, "fleet-cli up").await?;
    let result = converge(g, &ctx, Operation::Up, yes, saved).await;
    ctx.unlock().await;
    result
}

/// `destroy`: converge on nothing.
pub async fn destroy(g: &Global, yes: bool) -> Result<u8> {
    let ctx = Ctx::load(g).await?;
    ctx.lock(g, "fleet-cli destroy").await?;
    let result = converge(g, &ctx, Operation::Destroy, yes, None).await;
    ctx.unlock().await;
    result
}

/// `refresh`: settle state with the cloud; no cloud object changes.
pub async fn refresh(g: &Global) -> Result<u8> {
    let ctx = Ctx::load(g).await?;
    ctx.lock(g, "fleet-cli refresh").await?;
    let result = converge(g, &ctx, Operation::Refresh, true, None).await;
    ctx.unlock().await;
    result
}

/// What one converge did.
#[derive(Debug)]
pub struct ReconcileOutcome {
    /// The plan, with its summary.
    pub plan: Plan,
    /// What apply did; `None` when the plan was empty and nothing ran.
    pub report: Option<ApplyReport>,
    /// State as apply left it.
    pub state: State,
    /// Demand as the CI system reported it (`None` for a saved plan: nothing observed).
    pub demand: Option<fleet_core::ci::Demand>,
}

impl ReconcileOutcome {
    /// Changes that failed (none when nothing ran).
    pub fn failed(&self) -> usize {
        self.report.as_ref().map_or(0, |r| r.failed.len())
    }
}

/// Converges the fleet on the stack without asking: lock, read state, observe, plan,
/// apply, unlock. `up --yes` and the daemon both run exactly this. `show` sees the plan
/// before it is applied; `holder` names the caller in the lock.
pub async fn reconcile(
    ctx: &Ctx,
    g: &Global,
    holder: &str,
    show: &(dyn Fn(&Plan) + Sync),
    progress: &dyn Progress,
) -> Result<ReconcileOutcome> {
    reconcile_op(ctx, g, holder, Operation::Up, show, progress).await
}

/// [`reconcile`] for any operation (`fleet-cli demo` also destroys its fleet this way).
pub async fn reconcile_op(
    ctx: &Ctx,
    g: &Global,
    holder: &str,
    operation: Operation,
    show: &(dyn Fn(&Plan) + Sync),
    progress: &dyn Progress,
) -> Result<ReconcileOutcome> {
    ctx.lock(g, holder).await?;
    let result = plan_and_apply(ctx, operation, None, &|_| Ok(true), show, progress).await;
    ctx.unlock().await;
    result?.context("a reconcile applies without asking, so it is never declined")
}

/// The one sequence under the lock: read state, observe (unless a saved plan is given),
/// plan, show, confirm, apply. `None` when `confirm` declined.
async fn plan_and_apply(
    ctx: &Ctx,
    operation: Operation,
    saved: Option<Plan>,
    confirm: &dyn Fn(&Plan) -> Result<bool>,
    show: &(dyn Fn(&Plan) + Sync),
    progress: &dyn Progress,
) -> Result<Option<ReconcileOutcome>> {
    let fleet = ctx.fleet();
    // A plan saved before any state existed names the lineage the new state must get.
    let lineage = saved.as_ref().map(|p| p.lineage.clone());
    let mut state = fleet
        .read_state(|| lineage.unwrap_or_else(new_lineage))
        .await?;
    let (plan, observed) = match saved {
        Some(plan) => (plan, None),
        None => {
            let observed = fleet.observe(&state).await?;
            let plan = fleet.plan(operation, &state, &observed, Utc::now()).await?;
            (plan, Some(observed))
        }
    };
    fleet_core::apply::check_plan_base(&plan, &state)?;
    let demand = observed.as_ref().and_then(|o| o.demand.clone());
    show(&plan);
    if plan.is_empty() && operation != Operation::Refresh {
        // Nothing to change, but what was observed (lifecycles, runner job facts) is
        // recorded: the policy's idle times and job ends are measured from it.
        execute(
            ctx,
            &plan,
            &mut state,
            observed.as_ref(),
            false,
            &NoProgress,
        )
        .await?;
        return Ok(Some(ReconcileOutcome {
            plan,
            report: None,
            state,
            demand,
        }));
    }
    if !plan.is_empty() && !confirm(&plan)? {
        return Ok(None);
    }
    let report = execute(ctx, &plan, &mut state, observed.as_ref(), false, progress).await?;
    Ok(Some(ReconcileOutcome {
        plan,
        report: Some(report),
        state,
        demand,
    }))
}

async fn converge(
    g: &Global,
    ctx: &Ctx,
    operation: Operation,
    yes: bool,
    saved: Option<&Path>,
) -> Result<u8> {
    let saved = saved.map(read_plan).transpose()?;
    let verb = match operation {
        Operation::Destroy => "destroy these instances and resources",
        _ => "apply these changes",
    };
    let confirm = |_: &Plan| if yes { Ok(true) } else { output::confirm(verb) };
    let progress = CliProgress::new(g.json);
    let outcome = plan_and_apply(
        ctx,
        operation,
        saved,
        &confirm,
        &|p| show_plan(g, p),
        &progress,
    )
    .await?;
    match outcome {
        None => {
            eprintln!("Nothing was changed.");
            Ok(1)
        }
        Some(outcome) => Ok(print_outcome(g, ctx, &outcome)),
    }
}

fn show_plan(g: &Global, plan: &Plan) {
    if !g.json {
        output::print_plan(plan);
    }
}

/// Prints what apply did and returns the exit code: 1 if a change failed.
fn print_outcome(g: &Global, ctx: &Ctx, outcome: &ReconcileOutcome) -> u8 {
    let plan = &outcome.plan;
    match &outcome.report {
        None => {
            if g.json {
                let report = ApplyReport {
                    serial: outcome.state.serial,
                    ..ApplyReport::default()
                };
                println!("{}", json!({ "plan": plan, "result": report }));
            }
            0
        }
        Some(report) => {
            if g.json {
                let body =
                    json!({ "plan": plan, "result": report, "cloud_calls": ctx.calls.snapshot() });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_else(|_| body.to_string())
                );
            } else {
                output::print_report(report);
            }
            if report.failed.is_empty() {
                0
            } else {
                1
            }
        }
    }
}

fn read_plan(path: &Path) -> Result<Plan> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the saved plan {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a saved plan (not JSON)", path.display()))?;
    match v.get("format_version").and_then(|v| v.as_u64()) {
        Some(n) if n == u64::from(PLAN_FORMAT_VERSION) => {}
        Some(n) => bail!(
            "{} is a plan of format {n}; this build reads format {PLAN_FORMAT_VERSION}",
            path.display()
        ),
        None => bail!("{} is not a saved plan (no format_version)", path.display()),
    }
    serde_json::from_value(v)
        .with_context(|| format!("{} is not a valid saved plan", path.display()))
}

/// `state list`.
pub async fn state_list(g: &Global) -> Result<u8> {
    let ctx = ReadOnly::load(g).await?;
    let Some(state) = ctx.backend.read().await? else {
        if g.json {
            println!("{}", json!({ "instances": [], "resources": [] }));
        } else {
            println!("No state yet at {}.", ctx.backend.location());
        }
        return Ok(0);
    };
    if g.json {
        let instances: Vec<&InstanceRecord> = state.instances.values().collect();
        let resources: Vec<_> = state.resources.values().collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "serial": state.serial, "lineage": state.lineage, "instances": instances, "resources": resources })
            )?
        );
        return Ok(0);
    }
    println!(
        "State {} (serial {}, lineage {})",
        ctx.backend.location(),
        state.serial,
        state.lineage
    );
    let w = state
        .instances
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<w$}  {:<12}  {:<10}  {:<10}  {:<20}  PENDING",
        "NAME", "CLOUD ID", "LIFECYCLE", "TYPE", "CREATED"
    );
    for r in state.instances.values() {
        println!(
            "{:<w$}  {:<12}  {:<10}  {:<10}  {:<20}  {}",
            r.name,
            r.cloud_id.as_deref().unwrap_or("-"),
            r.lifecycle.as_str(),
            if r.instance_type.is_empty() {
                "-"
            } else {
                &r.instance_type
            },
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.pending
                .as_ref()
                .map(|p| format!("{:?}", p.op).to_lowercase())
                .unwrap_or_default()
        );
    }
    for r in state.resources.values() {
        println!(
            "{:<w$}  {:<12}  resource",
            r.key(),
            r.cloud_id.as_deref().unwrap_or("-")
        );
    }
    Ok(0)
}

/// `state show NAME`.
pub async fn state_show(g: &Global, name: &str) -> Result<u8> {
    let ctx = ReadOnly::load(g).await?;
    let state = ctx
        .backend
        .read()
        .await?
        .unwrap_or_else(|| State::new(&ctx.loaded.stack.name, ""));
    if let Some(r) = state.instances.get(name) {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else if let Some(r) = state.resources.get(name) {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        bail!("`{name}` is not in state; `fleet-cli state list` shows what is");
    }
    Ok(0)
}

/// `state rm NAME`.
pub async fn state_rm(g: &Global, name: &str) -> Result<u8> {
    let ctx = Ctx::load(g).await?;
    ctx.lock(g, "fleet-cli state rm").await?;
    let result = async {
        let mut state = ctx.fleet().read_state(new_lineage).await?;
        let removed = state.instances.remove(name).is_some() || state.resources.remove(name).is_some();
        if !removed {
            bail!("`{name}` is not in state; `fleet-cli state list` shows what is");
        }
        fleet_core::state::commit(ctx.backend.as_ref(), &mut state).await?;
        println!("Removed `{name}` from state (serial {}). The cloud object was left alone; while it carries this stack's tags the next plan adopts it again.", state.serial);
        Ok(0)
    }
    .await;
    ctx.unlock().await;
    result
}

/// `state import NAME CLOUD_ID`.
pub async fn state_import(g: &Global, name: &str, cloud_id: &str) -> Result<u8> {
    let ctx = Ctx::load(g).await?;
    ctx.lock(g, "fleet-cli state import").await?;
    let result = async {
        let mut state = ctx.fleet().read_state(new_lineage).await?;
        if state.instances.contains_key(name) {
            bail!("`{name}` is already in state; pick another name or `fleet-cli state rm {name}` first");
        }
        if let Some(r) = state.instances.values().find(|r| r.cloud_id.as_deref() == Some(cloud_id)) {
            bail!("{cloud_id} is already recorded as `{}`", r.name);
        }
        let Some(o) = ctx.cloud.describe_instance(cloud_id).await? else {
            bail!("the {} cloud has no instance {cloud_id}", ctx.cloud.name());
        };
        if o.lifecycle.is_gone() {
            bail!("instance {cloud_id} is {}; only live instances can be imported", o.lifecycle.as_str());
        }
        let tagged = ctx.fleet().observe(&state).await?;
        if !tagged.instances.iter().any(|i| i.cloud_id == o.cloud_id) {
            bail!(
                "instance {cloud_id} is not tagged `fleet:stack={}`, so the next plan could not see it and would forget it; tag it in the cloud first",
                ctx.loaded.stack.name
            );
        }
        let spec = ctx.fleet().instance_spec();
        let template_hash = (o.spec_hash == spec.hash()).then(|| spec.template_hash.clone()).flatten();
        let mut record = InstanceRecord::from_observed(&o, template_hash);
        record.name = name.to_string();
        state.instances.insert(name.to_string(), record);
        fleet_core::state::commit(ctx.backend.as_ref(), &mut state).await?;
        println!("Imported {cloud_id} as `{name}` (serial {}).", state.serial);
        Ok(0)
    }
    .await;
    ctx.unlock().await;
    result
}
