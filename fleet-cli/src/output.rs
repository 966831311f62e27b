//! What the CLI prints: plans (coloured on a terminal), progress, prompts, errors.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;

use console::style;
use indicatif::{ProgressBar, ProgressStyle};

use fleet_core::apply::{ApplyReport, Progress, StepOutcome};
use fleet_core::plan::{Change, Plan};
use fleet_core::state::StateError;

use crate::LogFormat;

/// Logs go to stderr, as text or JSON lines; `-v` raises the level (from `warn`, or from
/// `info` when not `quiet`), `RUST_LOG` overrides it. Secrets never reach a log line:
/// they are `Secret`s, which print as a mask.
pub fn init_logging(verbose: u8, format: LogFormat, quiet: bool) {
    let level = match verbose + u8::from(!quiet) {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// The plan as a coloured diff on a terminal, plain otherwise.
pub fn print_plan(plan: &Plan) {
    let text = plan.display().to_string();
    let colour = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    for line in text.lines() {
        let l = if !colour {
            style(line)
        } else if line.starts_with("  +") {
            style(line).green()
        } else if line.starts_with("  -") {
            style(line).red()
        } else if line.starts_with("  ±") {
            style(line).yellow()
        } else if line.starts_with("  ~") {
            style(line).cyan()
        } else if line.starts_with("Plan:") {
            style(line).bold()
        } else {
            style(line)
        };
        let _ = writeln!(out, "{l}");
    }
}

/// One line on what an apply did.
pub fn print_report(report: &ApplyReport) {
    let d = &report.done;
    let power = if d.start + d.stop > 0 {
        format!(", {} started, {} stopped", d.start, d.stop)
    } else {
        String::new()
    };
    let deferred = if report.deferred.is_empty() {
        String::new()
    } else {
        format!(", {} deferred", report.deferred.len())
    };
    println!(
        "Applied: {} created, {} replaced, {} deleted, {} adopted, {} forgotten{power}; {} failed{deferred} (state serial {}).",
        d.create,
        d.replace,
        d.delete,
        d.adopt,
        d.forget,
        report.failed.len(),
        report.serial
    );
    for f in &report.deferred {
        println!(
            "deferred: {} {} {}: {}",
            f.action.as_str(),
            f.kind,
            f.name,
            f.reason
        );
    }
    for f in &report.failed {
        eprintln!(
            "failed: {} {} {}: {}",
            f.action.as_str(),
            f.kind,
            f.name,
            f.error
        );
    }
    if !report.failed.is_empty() {
        eprintln!("Run the same command again to retry the failed changes; finished changes are recorded.");
    }
}

/// Asks for confirmation on a terminal; refuses without one.
pub fn confirm(what: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "refusing to {what} without --yes: stdin is not a terminal, so nobody can confirm; pass --yes to apply"
        );
    }
    eprint!("Do you want to {what}? Only 'yes' will be accepted: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

/// A progress bar on a terminal, plain lines on stderr otherwise.
pub struct CliProgress {
    bar: Option<ProgressBar>,
    lines: Mutex<()>,
}

impl CliProgress {
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            if let Ok(s) = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}") {
                b.set_style(s.progress_chars("=> "));
            }
            b
        });
        CliProgress {
            bar,
            lines: Mutex::new(()),
        }
    }
}

impl Progress for CliProgress {
    fn begin(&self, total: usize) {
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
        }
    }

    fn step(&self, change: &Change, outcome: &StepOutcome) {
        let what = format!("{} {} {}", change.action.as_str(), change.kind, change.name);
        match (&self.bar, outcome) {
            (_, StepOutcome::WouldDo) => {}
            (Some(b), StepOutcome::Done) => {
                b.inc(1);
                b.set_message(what);
            }
            (Some(b), StepOutcome::Failed(e)) => {
                b.inc(1);
                b.println(format!("failed: {what}: {e}"));
            }
            (None, StepOutcome::Done) => {
                let _g = self.lines.lock();
                eprintln!("done: {what}");
            }
            (None, StepOutcome::Failed(e)) => {
                let _g = self.lines.lock();
                eprintln!("failed: {what}: {e}");
            }
            (Some(b), StepOutcome::Deferred(why)) => {
                b.inc(1);
                b.println(format!("deferred: {what}: {why}"));
            }
            (None, StepOutcome::Deferred(why)) => {
                let _g = self.lines.lock();
                eprintln!("deferred: {what}: {why}");
            }
        }
    }

    fn end(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Prints an error with its causes and one sentence on what to do next.
pub fn print_error(e: &anyhow::Error) {
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if let Some(hint) = hint(e) {
        eprintln!("hint: {hint}");
    }
}

fn hint(e: &anyhow::Error) -> Option<String> {
    for cause in e.chain() {
        if let Some(r) = cause.downcast_ref::<fleet_providers::gitlab::Refusal>() {
            return Some(r.hint.clone());
        }
        if let Some(crate::commands::CommandError::DemandUnknown { .. }) = cause.downcast_ref() {
            return Some("the plan is printed above; fix what keeps GitLab from answering (the reason says what), then plan again".into());
        }
        if let Some(h) = cause
            .downcast_ref::<fleet_providers::gitlab::GitLabError>()
            .and_then(|g| g.hint())
        {
            return Some(h);
        }
        if let Some(h) = static_hint(cause) {
            return Some(h.into());
        }
    }
    None
}

fn static_hint(cause: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    if let Some(s) = cause.downcast_ref::<StateError>() {
        return Some(match s {
                StateError::Locked { .. } => {
                    "another fleet-cli is changing this stack; wait for it, or pass --lock-timeout 5m to wait here"
                }
                StateError::Format { .. } => {
                    "inspect the state file; if it is damaged, copy the backup over it and run `fleet-cli refresh`"
                }
                StateError::Conflict { .. } => "someone else wrote the state; run the command again to plan on the new state",
                StateError::LineageMismatch { .. } => "check that state.path points at this stack's own state",
                _ => return None,
            });
    }
    if cause
        .downcast_ref::<fleet_core::stack::StackError>()
        .is_some()
    {
        return Some("fix the stack file (or the --set flag) and run the command again");
    }
    if let Some(r) = cause.downcast_ref::<fleet_core::render::RenderError>() {
        return Some(match r {
            fleet_core::render::RenderError::Template { .. } => {
                "fix the template at the named line, then run the command again"
            }
            _ => "fix the stack's templates or names, then run the command again",
        });
    }
    if let Some(a) = cause.downcast_ref::<fleet_core::apply::ApplyError>() {
        if matches!(a, fleet_core::apply::ApplyError::StalePlan { .. }) {
            return Some("run `fleet-cli plan --out FILE` again and apply the new plan");
        }
    }
    None
}
