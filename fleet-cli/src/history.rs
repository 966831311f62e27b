//! `fleet-cli history` (a GitLab's finished jobs of the stack's projects and groups, written
//! as a job trace) and `fleet-cli state seed-demand` (a trace as the demand record the
//! policy learns from, so it starts on the user's own last weeks instead of its cold start).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::json;

use fleet_core::autoscale::record::{DemandRecord, SLOT_S};
use fleet_core::simulate::{history_record, write_csv, Trace};

use crate::context::{load_stack, new_lineage, Ctx};
use crate::Global;

/// `history` flags.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How far back to read: jobs created in this window before now (e.g. 28d, 72h).
    #[arg(long, value_name = "DURATION", value_parser = parse_window, default_value = "28d")]
    pub since: Duration,
    /// Write the trace to this file (default: stdout).
    #[arg(long, short = 'o', value_name = "FILE.csv")]
    pub out: Option<PathBuf>,
}

/// `--since`: a duration, with days (`28d`) besides what the stack's durations take.
fn parse_window(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Some(days) = t.strip_suffix('d') {
        if let Ok(n) = days.parse::<u64>() {
            return Ok(Duration::from_secs(n.saturating_mul(86_400)));
        }
    }
    crate::parse_duration(t)
        .map_err(|_| format!("`{s}` is not a window; write it like 28d, 72h or 90m"))
}

/// Runs `history`: reads the finished jobs of the stack's `runner.projects` and
/// `runner.groups` created in the window, and writes them as a trace.
pub async fn history(g: &Global, a: &HistoryArgs) -> Result<u8> {
    let loaded = load_stack(g)?;
    let r = &loaded.stack.runner;
    let (Some(url), Some(var)) = (&r.gitlab_url, &r.token_env) else {
        bail!("the stack names no GitLab (runner.gitlab_url and runner.token_env): there is no job history to read");
    };
    if r.projects.is_empty() && r.groups.is_empty() {
        bail!("the stack names no runner.projects or runner.groups whose jobs to read");
    }
    let Some(token) = loaded.secret(var) else {
        bail!("the GitLab token in `{var}` was not loaded; export it before running fleet-cli");
    };
    let client = fleet_providers::gitlab::client_for(url, token.clone())?;
    let now = Utc::now();
    let since = now - chrono::Duration::from_std(a.since).unwrap_or(chrono::TimeDelta::MAX);
    let projects: Vec<String> = r.projects.iter().map(|p| p.to_string()).collect();
    let groups: Vec<String> = r.groups.iter().map(|g| g.to_string()).collect();
    let h = fleet_providers::gitlab::history::read(&client, &projects, &groups, since)
        .await
        .context("cannot read the job history from GitLab")?;
    let text = write_csv(&h.rows);
    match &a.out {
        Some(path) => std::fs::write(path, &text)
            .with_context(|| format!("cannot write the trace to {}", path.display()))?,
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("cannot write the trace to stdout")?,
    }
    let requests: u64 = client.calls().get("GET").copied().unwrap_or(0);
    let pipelines: std::collections::BTreeSet<(&str, u64)> = h
        .rows
        .iter()
        .map(|r| (r.project.as_str(), r.pipeline))
        .collect();
    if g.json && a.out.is_some() {
        println!(
            "{}",
            json!({
                "jobs": h.rows.len(),
                "pipelines": pipelines.len(),
                "projects": h.projects,
                "never_started": h.never_started,
                "since": since.to_rfc3339(),
                "requests": requests,
                "out": a.out.as_ref().map(|p| p.display().to_string()),
            })
        );
        return Ok(0);
    }
    let to = a
        .out
        .as_ref()
        .map_or("stdout".to_string(), |p| p.display().to_string());
    eprintln!(
        "Read {} finished jobs ({} pipelines) of {} project{} created since {} in {requests} requests; wrote them to {to}{}.",
        h.rows.len(),
        pipelines.len(),
        h.projects.len(),
        if h.projects.len() == 1 { "" } else { "s" },
        since.format("%Y-%m-%d %H:%M UTC"),
        if h.never_started > 0 {
            format!(" ({} canceled before a runner took them left out)", h.never_started)
        } else {
            String::new()
        }
    );
    if let Some(path) = &a.out {
        eprintln!(
            "Replay it with `fleet-cli simulate --trace {p}`; start the policy on it with `fleet-cli state seed-demand {p}`.",
            p = path.display()
        );
    }
    Ok(0)
}

/// One line on a demand record, for the seed's preview.
fn describe(r: &DemandRecord, now: DateTime<Utc>) -> String {
    let Some(since) = r.since else {
        return "none".into();
    };
    let from = DateTime::from_timestamp(since * SLOT_S, 0).unwrap_or_default();
    format!(
        "{:.1} days from {} ({} jobs, at most {} at once, {} ten-minute slots with demand)",
        r.covers_s(now) as f64 / 86_400.0,
        from.format("%Y-%m-%d %H:%M UTC"),
        r.arrivals(),
        r.largest(),
        r.slots.len()
    )
}

/// Runs `state seed-demand TRACE`: shows the demand record state has and the one it would
/// have with the trace filled in before it, asks (unless `yes`), and commits it under the
/// state lock.
pub async fn seed_demand(g: &Global, trace: &Path, yes: bool) -> Result<u8> {
    let t = Trace::read(trace).with_context(|| {
        "the trace must be CSV with the header queued_at,duration_s,project,pipeline (`fleet-cli history` writes one)"
    })?;
    let ctx = Ctx::load(g).await?;
    ctx.lock(g, "fleet-cli state seed-demand").await?;
    let result = seed_locked(g, &ctx, trace, &t, yes).await;
    ctx.unlock().await;
    result
}

async fn seed_locked(g: &Global, ctx: &Ctx, path: &Path, t: &Trace, yes: bool) -> Result<u8> {
    let mut state = ctx.fleet().read_state(new_lineage).await?;
    let now = Utc::now();
    // The same record `simulate` seeds its replay with (`run_fleet`), so both start alike.
    let history = history_record(t);
    let after = state.demand.seeded(&history, now);
    let before = std::mem::take(&mut state.demand);
    let unchanged = after == before;
    if g.json {
        println!(
            "{}",
            json!({
                "trace": path.display().to_string(),
                "before": describe(&before, now),
                "after": describe(&after, now),
                "changed": !unchanged,
            })
        );
    } else {
        println!("Demand record in state ({}):", ctx.backend.location());
        println!("  now:   {}", describe(&before, now));
        println!("  after: {}", describe(&after, now));
        if !before.is_empty() && !unchanged {
            println!(
                "  (the history fills in before what the fleet recorded itself, which is kept)"
            );
        }
    }
    if unchanged {
        if !g.json {
            println!("No changes: the record already holds this history.");
        }
        return Ok(0);
    }
    if !yes && !crate::output::confirm("seed the demand record")? {
        eprintln!("Nothing was changed.");
        return Ok(1);
    }
    state.demand = after;
    fleet_core::state::commit(ctx.backend.as_ref(), &mut state).await?;
    if !g.json {
        println!(
            "Seeded the demand record from {} (serial {}). With policy.target set, the next plan learns the pool from it.",
            path.display(),
            state.serial
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_takes_days_and_the_stacks_durations() {
        assert_eq!(parse_window("28d"), Ok(Duration::from_secs(28 * 86_400)));
        assert_eq!(parse_window("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert!(parse_window("a month").unwrap_err().contains("28d"));
    }
}
