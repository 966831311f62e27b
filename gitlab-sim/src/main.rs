//! `gitlab-sim`: serves the GitLab simulator until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;

use gitlab_sim::{trace, Faults, Sim, SimConfig, WebhookTarget};

/// A stateful GitLab REST v4 simulator for tests and demos (127.0.0.1 only).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8929")]
    listen: SocketAddr,
    /// Environment variable holding the accepted `PRIVATE-TOKEN` (default token
    /// `sim-admin-token` when unset).
    #[arg(long, default_value = "GITLAB_SIM_TOKEN")]
    token_env: String,
    /// Simulated seconds per wall second.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Seed of fault draws and runner tokens.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of API requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share of API requests answered 429 with Retry-After: 1.
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// Milliseconds added to every API answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Requests per token and minute before 429 (unlimited when unset).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Where job webhooks are POSTed.
    #[arg(long)]
    webhook_url: Option<String>,
    /// Environment variable holding the webhook secret (sent as X-Gitlab-Token).
    #[arg(long, default_value = "GITLAB_SIM_WEBHOOK_SECRET")]
    webhook_secret_env: String,
    /// Simulated seconds until a new runner is online by itself; negative: wait for
    /// POST /runners/verify.
    #[arg(long, default_value_t = 0.0)]
    runner_online_after: f64,
    /// Jobs one runner runs at once.
    #[arg(long, default_value_t = 1)]
    runner_concurrency: u32,
    /// Projects to create at start (full paths, groups are created on the way).
    #[arg(long = "project")]
    projects: Vec<String>,
    /// A CSV trace to replay (queued_at,duration_s,project,pipeline).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Tags the replayed jobs carry (comma-separated).
    #[arg(long, value_delimiter = ',')]
    trace_tags: Vec<String>,
    /// A CSV trace to serve as finished jobs, moved in time so its last job ended a minute
    /// before start (`fleet-cli history` reads it back).
    #[arg(long)]
    history: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    if !a.listen.ip().is_loopback() {
        bail!("gitlab-sim listens on loopback addresses only; use 127.0.0.1:PORT");
    }
    let token = std::env::var(&a.token_env).unwrap_or_else(|_| "sim-admin-token".into());
    let webhook = match a.webhook_url {
        Some(url) => {
            let secret = std::env::var(&a.webhook_secret_env).with_context(|| {
                format!(
                    "--webhook-url needs a secret in the environment variable {}",
                    a.webhook_secret_env
                )
            })?;
            if secret.is_empty() {
                bail!("the webhook secret in {} is empty", a.webhook_secret_env);
            }
            Some(WebhookTarget { url, secret })
        }
        None => None,
    };
    let config = SimConfig {
        tokens: vec![token],
        speed: a.speed,
        seed: a.seed,
        faults: Faults {
            error_rate: a.error_rate,
            throttle_rate: a.throttle_rate,
            latency_ms: a.latency_ms,
        },
        rate_limit: a.rate_limit,
        webhook,
        runner_online_after: (a.runner_online_after >= 0.0).then_some(a.runner_online_after),
        runner_concurrency: a.runner_concurrency,
        ..SimConfig::default()
    };
    let sim = Sim::start(config, a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    for p in &a.projects {
        sim.add_project(p);
    }
    if let Some(path) = &a.history {
        let jobs = trace::load(path)?;
        let end = sim.now() - chrono::Duration::minutes(1);
        let n = sim.add_history(&trace::ending_at(&jobs, end), 5.0)?;
        eprintln!("serving {n} finished jobs from {}", path.display());
    }
    if let Some(path) = &a.trace {
        let jobs = trace::load(path)?;
        eprintln!("replaying {} jobs from {}", jobs.len(), path.display());
        sim.replay(jobs, &a.trace_tags);
    }
    println!("gitlab-sim listening on {}", sim.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
