//! fleet-cli: the command-line front end of the fleet engine. A thin layer: parse flags,
//! build the engine's parts from the stack, print what comes back.

mod commands;
mod context;
mod demo;
mod history;
mod output;
mod plot;
mod render;
mod serve;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Keeps a fleet of GitLab runner VMs sized to demand.
#[derive(Debug, Parser)]
#[command(name = "fleet-cli", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: Global,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The stack file.
    #[arg(
        long,
        global = true,
        env = "FLEET_STACK",
        default_value = "stacks/sandbox.yaml"
    )]
    pub stack: PathBuf,
    /// Override a stack value, like `terraform -var` (repeatable): --set policy.min_instances=3
    #[arg(long = "set", global = true, value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Wait this long for the state lock instead of failing at once (e.g. 30s, 5m).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub lock_timeout: Duration,
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log lines as plain text or as one JSON object per line (for log collectors).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// How log lines are written (on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what `up` would change, changing nothing.
    Preview(PreviewArgs),
    /// Same as preview, for CI pipelines; `--out` saves the plan for `up --plan`.
    Plan(PlanArgs),
    /// Converge the fleet on the stack.
    Up(UpArgs),
    /// Delete every instance and resource of the stack.
    Destroy(ConfirmArgs),
    /// Settle state with what the cloud reports (adopt and forget), changing no cloud object.
    Refresh,
    /// Inspect or edit state.
    #[command(subcommand)]
    State(StateCommand),
    /// Print the user data an instance would boot with (secrets masked).
    Render(RenderArgs),
    /// Print the Ansible inventory of the live fleet, from state.
    Inventory,
    /// Replay a job trace through a scaling policy in virtual time: wait times against cost.
    Simulate(simulate::SimulateArgs),
    /// Read the finished jobs of the stack's GitLab projects and groups (runner.projects,
    /// runner.groups) of the last weeks and write them as a job trace, which `simulate`
    /// replays and `state seed-demand` starts the policy on.
    ///
    /// Jobs that succeeded, failed or were canceled are listed newest first, page by page
    /// within GitLab's rate limits, until a page reaches the window's start. Each becomes a
    /// row queued at `started_at - queued_duration` and running `duration` seconds; a job
    /// canceled before a runner took it is left out. The access token (runner.token_env)
    /// needs `read_api` and is never printed.
    History(history::HistoryArgs),
    /// Run the fleet against a simulated GitLab replaying a trace at high speed (`make demo`).
    Demo(demo::DemoArgs),
    /// Run as a daemon: reconcile on a timer and on GitLab job webhooks; serve /metrics,
    /// /healthz and /readyz (see the stack's `daemon:` section).
    Serve,
}

#[derive(Debug, Args)]
struct RenderArgs {
    /// Instance name (default: the next instance the stack would create).
    #[arg(long, value_name = "NAME")]
    instance: Option<String>,
    /// Print secrets (the runner token) instead of masking them.
    #[arg(long)]
    show_secrets: bool,
}

#[derive(Debug, Args)]
struct PreviewArgs {
    /// Exit 0 with no changes, 2 with changes, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// Exit 0 with no changes, 2 with changes, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
    /// Save the plan to this file for `up --plan FILE`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Apply without asking.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Apply exactly this saved plan (refused if state moved since it was made).
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ConfirmArgs {
    /// Apply without asking.
    #[arg(long, short = 'y')]
    yes: bool,
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// List recorded instances and resources.
    List,
    /// Show one record.
    Show {
        /// Instance name, or `kind/name` of a resource.
        name: String,
    },
    /// Remove a record from state (the cloud object is left alone).
    Rm {
        /// Instance name, or `kind/name` of a resource.
        name: String,
    },
    /// Record an existing cloud instance under a name.
    Import {
        /// Name to record it under.
        name: String,
        /// The cloud's id of the instance.
        cloud_id: String,
    },
    /// Fill the demand record that `policy.target` learns from with a job trace (from
    /// `fleet-cli history`), before what the fleet recorded itself: shows the record
    /// before and after, asks, and writes it under the state lock.
    SeedDemand {
        /// The trace (CSV: queued_at,duration_s,project,pipeline).
        trace: PathBuf,
        /// Write without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    fleet_core::stack::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration; write it like 30s, 5m or 1h"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs what it does by default; one-shot commands only warnings.
    let quiet = !matches!(cli.command, Command::Serve);
    output::init_logging(cli.global.verbose, cli.global.log_format, quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let g = &cli.global;
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Preview(a) => commands::preview(g, a.detailed_exitcode, None).await,
            Command::Plan(a) => commands::preview(g, a.detailed_exitcode, a.out.as_deref()).await,
            Command::Up(a) => commands::up(g, a.yes, a.plan.as_deref()).await,
            Command::Destroy(a) => commands::destroy(g, a.yes).await,
            Command::Refresh => commands::refresh(g).await,
            Command::State(StateCommand::List) => commands::state_list(g).await,
            Command::State(StateCommand::Show { name }) => commands::state_show(g, name).await,
            Command::State(StateCommand::Rm { name }) => commands::state_rm(g, name).await,
            Command::State(StateCommand::Import { name, cloud_id }) => {
                commands::state_import(g, name, cloud_id).await
            }
            Command::Render(a) => render::render(g, a.instance.as_deref(), a.show_secrets).await,
            Command::Inventory => render::inventory(g).await,
            Command::State(StateCommand::SeedDemand { trace, yes }) => {
                history::seed_demand(g, trace, *yes).await
            }
            Command::Simulate(a) => simulate::run(g, a),
            Command::History(a) => history::history(g, a).await,
            Command::Demo(a) => demo::run(g, a).await,
            Command::Serve => serve::serve(g).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            output::print_error(&e);
            ExitCode::from(1)
        }
    }
}
