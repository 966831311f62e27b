//! `fleet-cli serve`: the daemon. It reconciles the fleet on a timer (`daemon.interval`) and
//! whenever a verified GitLab job webhook arrives, one reconcile at a time, through the same
//! [`commands::reconcile`] that `up --yes` runs; it serves `/metrics`, `/healthz` and
//! `/readyz` beside the webhook.
//!
//! On SIGTERM or SIGINT it finishes the reconcile in progress (which releases the state
//! lock) and exits. Stopping the daemon never touches the fleet's VMs.
//!
//! * [`controller`]: the loop, its [`controller::Requeue`]s and the error policy's backoff.
//! * [`http`]: the endpoints.
//! * [`metrics`]: what `/metrics` and `/readyz` report.

pub mod controller;
mod http;
mod metrics;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context as _, Result};
use chrono::Utc;
use tokio::sync::watch;

use fleet_core::apply::{Progress, StepOutcome};
use fleet_core::plan::{Change, Plan};
use fleet_providers::gitlab::webhook::{WebhookVerifier, DEFAULT_MAX_BODY};

use crate::commands;
use crate::context::Ctx;
use crate::Global;

use controller::{Backoff, Requeue, Trigger};
use metrics::Metrics;

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(g: &Global) -> Result<u8> {
    let ctx = Ctx::load(g).await?;
    let d = ctx.loaded.stack.daemon.clone();
    let addr = d
        .listen_addr()
        .with_context(|| format!("daemon.listen `{}` is not an ip:port", d.listen))?;
    let verifier = verifier(&ctx)?;
    let trigger = Arc::new(Trigger::default());
    let metrics = Arc::new(Metrics::new(d.interval));
    let app = Arc::new(http::App {
        verifier,
        trigger: trigger.clone(),
        metrics: metrics.clone(),
    });

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (daemon.listen)"))?;
    let bound = listener.local_addr()?;
    // On stdout, so a supervisor or test that asked for port 0 learns the port.
    println!("fleet-cli serve: listening on http://{bound}");
    tracing::info!(
        stack = %ctx.loaded.stack.name,
        listen = %bound,
        interval_s = d.interval.as_secs(),
        webhooks = app.verifier.is_some(),
        "daemon started"
    );

    // Listen for signals before the first reconcile, so none arrives unhandled.
    let (stop, stopped) = watch::channel(false);
    let signals = tokio::spawn(wait_for_signal(signals()?, stop));
    let mut http_stopped = stopped.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, http::router(app))
            .with_graceful_shutdown(async move {
                let _ = http_stopped.wait_for(|s| *s).await;
            })
            .await
    });

    let backoff = Backoff {
        initial: d.retry_initial,
        max: d.retry_max,
    };
    let reason = std::sync::Mutex::new("start");
    let (ctx_ref, metrics_ref, reason_ref, daemon) = (&ctx, &*metrics, &reason, &d);
    controller::run(
        &trigger,
        stopped,
        move || async move {
            let why = *reason_ref.lock().unwrap_or_else(|e| e.into_inner());
            let warming = reconcile_once(ctx_ref, g, metrics_ref, why).await?;
            Ok::<_, anyhow::Error>(Requeue::after(daemon.requeue_after(warming)))
        },
        |e: &anyhow::Error, failures| {
            let wait = backoff.delay(failures);
            tracing::warn!(
                failures,
                retry_in_s = wait.as_secs_f64(),
                "reconcile failed: {e:#}"
            );
            Requeue::after(wait)
        },
        |wake| *reason.lock().unwrap_or_else(|e| e.into_inner()) = wake.as_str(),
    )
    .await;

    signals.abort();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("the HTTP server stopped with an error: {e}"),
        Err(e) => tracing::error!("the HTTP server task failed: {e}"),
    }
    tracing::info!(
        "daemon stopped; the state lock is released and the fleet's VMs were left as they are"
    );
    Ok(0)
}

/// The webhook verifier, when the stack names the secret's variable; none otherwise, and
/// the endpoint answers 404. There is no default secret.
fn verifier(ctx: &Ctx) -> Result<Option<WebhookVerifier>> {
    let Some(var) = &ctx.loaded.stack.runner.webhook_secret_env else {
        tracing::warn!("webhooks are disabled: the stack names no runner.webhook_secret_env");
        return Ok(None);
    };
    // The loader refuses a stack whose variable is unset or empty, so this is present.
    let secret = ctx
        .loaded
        .secret(var)
        .with_context(|| format!("the webhook secret in `{var}` was not loaded"))?;
    Ok(Some(WebhookVerifier::new(
        secret.clone(),
        DEFAULT_MAX_BODY,
    )?))
}

/// One reconcile, measured. Changes that failed make it an error, so the error policy
/// retries them with backoff. Returns whether VMs are on their way to ready (the next
/// reconcile then comes after `daemon.warming_interval`).
async fn reconcile_once(
    ctx: &Ctx,
    g: &Global,
    metrics: &Metrics,
    why: &'static str,
) -> Result<bool> {
    metrics.begin(why);
    let started = Instant::now();
    let result = commands::reconcile(ctx, g, "fleet-cli serve", &log_plan, &LogProgress).await;
    let took = started.elapsed();
    metrics.record_cloud_calls(&ctx.calls.snapshot());
    metrics.record_gitlab_calls(&ctx.ci().api_calls());
    metrics.record_oldest_pending(ctx.ci().oldest_pending(), chrono::Utc::now());
    match result {
        Ok(outcome) => {
            metrics.record_outcome(&outcome, took, Utc::now());
            let s = &outcome.plan.summary;
            tracing::info!(
                trigger = why,
                took_ms = took.as_millis() as u64,
                serial = outcome.state.serial,
                create = s.create,
                replace = s.replace,
                delete = s.delete,
                adopt = s.adopt,
                forget = s.forget,
                failed = outcome.failed(),
                "reconciled"
            );
            match outcome.failed() {
                0 => Ok(outcome.state.warming()),
                n => Err(anyhow!("{n} changes failed; they are retried")),
            }
        }
        Err(e) => {
            metrics.record_error(&e, took);
            Err(e)
        }
    }
}

fn log_plan(plan: &Plan) {
    if !plan.is_empty() {
        tracing::info!(
            changes = plan.changes.len(),
            desired = plan.desired,
            decision = plan.decision.as_deref().unwrap_or(""),
            "plan"
        );
    }
}

/// Apply progress as log lines.
struct LogProgress;

impl Progress for LogProgress {
    fn begin(&self, _: usize) {}

    fn step(&self, change: &Change, outcome: &StepOutcome) {
        let (action, kind, name) = (change.action.as_str(), &change.kind, &change.name);
        match outcome {
            StepOutcome::Done => tracing::info!(action, kind = %kind, name = %name, "done"),
            StepOutcome::WouldDo => {}
            StepOutcome::Failed(e) => {
                tracing::warn!(action, kind = %kind, name = %name, error = %e, "failed")
            }
            StepOutcome::Deferred(why) => {
                tracing::info!(action, kind = %kind, name = %name, reason = %why, "deferred")
            }
        }
    }

    fn end(&self) {}
}

type Signals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

/// SIGTERM and SIGINT, caught from now on.
fn signals() -> Result<Signals> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    Ok((term, int))
}

/// Sets `stop` on the first SIGTERM or SIGINT.
async fn wait_for_signal((mut term, mut int): Signals, stop: watch::Sender<bool>) {
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "stopping: finishing the reconcile in progress, if any"
    );
    let _ = stop.send(true);
}
