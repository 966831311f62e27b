//! What the daemon exports on `/metrics` (Prometheus/OpenMetrics text, through the
//! `prometheus-client` crate), and the health `/readyz` answers from.
//!
//! Everything is updated after a reconcile from its outcome, from the webhook handler, and
//! from the cloud call counter; nothing here calls the cloud.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use fleet_core::autoscale::Phase;
use fleet_core::ci::Demand;
use fleet_core::cloud::Lifecycle;
use fleet_core::plan::Action;
use fleet_core::state::{State, StateError};

use crate::commands::ReconcileOutcome;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const LIFECYCLES: [Lifecycle; 8] = [
    Lifecycle::Booting,
    Lifecycle::Running,
    Lifecycle::Stopping,
    Lifecycle::Stopped,
    Lifecycle::Starting,
    Lifecycle::Terminating,
    Lifecycle::Terminated,
    Lifecycle::Unknown,
];

const ACTIONS: [Action; 7] = [
    Action::Create,
    Action::Replace,
    Action::Delete,
    Action::Adopt,
    Action::Forget,
    Action::Start,
    Action::Stop,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LifecycleLabel {
    lifecycle: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

/// Job statuses GitLab's job hooks carry; anything else is counted as `other`, so a sender
/// cannot grow the label set.
const JOB_STATUSES: [&str; 11] = [
    "created",
    "waiting_for_resource",
    "preparing",
    "pending",
    "running",
    "success",
    "failed",
    "canceled",
    "skipped",
    "manual",
    "scheduled",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

/// How a webhook was answered, for `fleet_webhooks_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    /// A job event: a reconcile was requested.
    Accepted,
    /// Another event type, answered 200 and dropped.
    Ignored,
    /// Wrong or missing token (401).
    Unauthorized,
    /// Body over the limit (413).
    TooLarge,
    /// Not a job event (400).
    BadRequest,
    /// No secret configured (404).
    Disabled,
}

impl WebhookResult {
    fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Ignored => "ignored",
            WebhookResult::Unauthorized => "unauthorized",
            WebhookResult::TooLarge => "too_large",
            WebhookResult::BadRequest => "bad_request",
            WebhookResult::Disabled => "disabled",
        }
    }
}

/// What `/readyz` answers from.
#[derive(Debug, Default)]
struct Health {
    last_success: Option<Instant>,
    last_error: Option<String>,
    state_unreadable: bool,
}

/// The daemon's metrics and health.
pub struct Metrics {
    registry: Registry,
    instances: Family<LifecycleLabel, Gauge>,
    desired: Gauge,
    jobs: Family<JobStateLabel, Gauge>,
    demand_known: Gauge,
    oldest_wait: Gauge<f64, AtomicU64>,
    state_serial: Gauge,
    vm_hours: Gauge<f64, AtomicU64>,
    measurements: Family<PhaseLabel, Gauge>,
    measured: Family<PhaseLabel, Gauge>,
    reconciles: Family<ResultLabel, Counter>,
    triggers: Family<ReasonLabel, Counter>,
    in_progress: Gauge,
    duration: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    changes: Family<ActionLabel, Counter>,
    changes_failed: Family<ActionLabel, Counter>,
    cloud_calls: Family<OperationLabel, Counter>,
    gitlab_calls: Family<OperationLabel, Counter>,
    seen_gitlab_calls: Mutex<BTreeMap<String, u64>>,
    cloud_errors: Counter,
    webhooks: Family<ResultLabel, Counter>,
    job_events: Family<StatusLabel, Counter>,
    seen_calls: Mutex<BTreeMap<String, u64>>,
    health: Mutex<Health>,
    /// Ready while the last success is younger than this.
    fresh_for: Duration,
}

impl Metrics {
    /// Metrics for a loop that reconciles every `interval`: `/readyz` turns unready when no
    /// reconcile has succeeded for three intervals.
    pub fn new(interval: Duration) -> Metrics {
        let mut m = Metrics {
            instances: Family::default(),
            desired: Gauge::default(),
            jobs: Family::default(),
            demand_known: Gauge::default(),
            oldest_wait: Gauge::default(),
            state_serial: Gauge::default(),
            vm_hours: Gauge::default(),
            measurements: Family::default(),
            measured: Family::default(),
            reconciles: Family::default(),
            triggers: Family::default(),
            in_progress: Gauge::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            last_success: Gauge::default(),
            changes: Family::default(),
            changes_failed: Family::default(),
            cloud_calls: Family::default(),
            gitlab_calls: Family::default(),
            seen_gitlab_calls: Mutex::new(BTreeMap::new()),
            cloud_errors: Counter::default(),
            webhooks: Family::default(),
            job_events: Family::default(),
            seen_calls: Mutex::new(BTreeMap::new()),
            health: Mutex::new(Health::default()),
            fresh_for: interval.saturating_mul(3),
            registry: Registry::default(),
        };
        let r = &mut m.registry;
        r.register(
            "fleet_instances",
            "VMs recorded in state after the last reconcile, by the lifecycle the cloud last reported",
            m.instances.clone(),
        );
        r.register(
            "fleet_instances_desired",
            "VMs the policy asked for at the last reconcile",
            m.desired.clone(),
        );
        r.register(
            "fleet_jobs",
            "Jobs this fleet can run, pending or running, as GitLab reported them at the last reconcile",
            m.jobs.clone(),
        );
        r.register(
            "fleet_oldest_pending_job_wait_seconds",
            "How long the longest-waiting job this fleet can run had waited at the last reconcile (0: none waits)",
            m.oldest_wait.clone(),
        );
        r.register(
            "fleet_demand_known",
            "1 if GitLab answered for demand at the last reconcile, 0 if demand was unknown",
            m.demand_known.clone(),
        );
        r.register(
            "fleet_state_serial",
            "Serial of the state after the last reconcile",
            m.state_serial.clone(),
        );
        r.register(
            "fleet_vm_hours_estimated",
            "Hours since creation of every live VM the state records, summed (stopped time included; deleted VMs drop out)",
            m.vm_hours.clone(),
        );
        r.register(
            "fleet_warmup_measurements",
            "Boots and resumes measured closely enough to keep (the last 20 of each), by phase",
            m.measurements.clone(),
        );
        r.register(
            "fleet_warmup_measured_seconds",
            "Median measured boot or resume time, which the policy expects instead of policy.boot_time / resume_time (set once 3 are kept)",
            m.measured.clone(),
        );
        r.register(
            "fleet_reconciles",
            "Reconciles finished, by result",
            m.reconciles.clone(),
        );
        r.register(
            "fleet_reconcile_triggers",
            "Reconciles started, by what started them (start, timer, webhook, retry)",
            m.triggers.clone(),
        );
        r.register(
            "fleet_reconcile_in_progress",
            "Reconciles running now: 1 or 0, never more",
            m.in_progress.clone(),
        );
        r.register(
            "fleet_reconcile_duration_seconds",
            "How long reconciles took, successful or not",
            m.duration.clone(),
        );
        r.register(
            "fleet_last_successful_reconcile_timestamp_seconds",
            "Unix time the last successful reconcile ended",
            m.last_success.clone(),
        );
        r.register(
            "fleet_changes_applied",
            "Plan changes applied, by action",
            m.changes.clone(),
        );
        r.register(
            "fleet_changes_failed",
            "Plan changes that failed, by action",
            m.changes_failed.clone(),
        );
        r.register(
            "fleet_cloud_api_calls",
            "Cloud API calls made, by operation (AWS; the sandbox cloud makes no API calls)",
            m.cloud_calls.clone(),
        );
        r.register(
            "fleet_gitlab_api_calls",
            "GitLab API requests, by method; `error` counts requests that failed or got an error status",
            m.gitlab_calls.clone(),
        );
        r.register(
            "fleet_cloud_errors",
            "Cloud failures: failed changes and failed observations",
            m.cloud_errors.clone(),
        );
        r.register(
            "fleet_webhooks",
            "Webhooks received, by how they were answered",
            m.webhooks.clone(),
        );
        r.register(
            "fleet_job_events",
            "Verified job webhooks, by the job status they report (GitLab's API stays the source of truth for demand)",
            m.job_events.clone(),
        );
        // Series that exist from the start, so rates and alerts see zeros, not gaps.
        for l in LIFECYCLES {
            let _ = m.instances.get_or_create(&LifecycleLabel {
                lifecycle: l.as_str(),
            });
        }
        for result in ["success", "failure"] {
            let _ = m.reconciles.get_or_create(&ResultLabel { result });
        }
        for a in ACTIONS {
            let label = ActionLabel { action: a.as_str() };
            let _ = m.changes.get_or_create(&label);
            let _ = m.changes_failed.get_or_create(&label);
        }
        m
    }

    /// The text `/metrics` serves.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        out
    }

    /// A reconcile starts, for `reason`.
    pub fn begin(&self, reason: &'static str) {
        self.triggers.get_or_create(&ReasonLabel { reason }).inc();
        // Counted, not set, so that an overlap (which the loop rules out) would show as 2.
        self.in_progress.inc();
    }

    /// A reconcile ended with `outcome` after `took`.
    pub fn record_outcome(&self, outcome: &ReconcileOutcome, took: Duration, now: DateTime<Utc>) {
        self.in_progress.dec();
        self.duration.observe(took.as_secs_f64());
        self.record_state(&outcome.state, now);
        if let Some(d) = outcome.plan.desired {
            self.desired.set(i64::from(d));
        }
        if let Some(Demand::Known { pending, running }) = &outcome.demand {
            self.demand_known.set(1);
            for (state, n) in [("pending", pending), ("running", running)] {
                self.jobs
                    .get_or_create(&JobStateLabel { state })
                    .set(i64::from(*n));
            }
        } else {
            self.demand_known.set(0);
        }
        let failed = outcome.failed();
        if let Some(report) = &outcome.report {
            let d = &report.done;
            for (action, n) in [
                (Action::Create, d.create),
                (Action::Replace, d.replace),
                (Action::Delete, d.delete),
                (Action::Adopt, d.adopt),
                (Action::Forget, d.forget),
                (Action::Start, d.start),
                (Action::Stop, d.stop),
            ] {
                let label = ActionLabel {
                    action: action.as_str(),
                };
                self.changes.get_or_create(&label).inc_by(n as u64);
            }
            for f in &report.failed {
                let label = ActionLabel {
                    action: f.action.as_str(),
                };
                self.changes_failed.get_or_create(&label).inc();
                if f.action.touches_cloud() {
                    self.cloud_errors.inc();
                }
            }
        }
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.state_unreadable = false;
        if failed == 0 {
            self.reconciles
                .get_or_create(&ResultLabel { result: "success" })
                .inc();
            self.last_success
                .set(now.timestamp_millis() as f64 / 1000.0);
            h.last_success = Some(Instant::now());
            h.last_error = None;
        } else {
            self.reconciles
                .get_or_create(&ResultLabel { result: "failure" })
                .inc();
            h.last_error = Some(format!("{failed} changes failed"));
        }
    }

    /// A reconcile failed before or during apply with `error` after `took`.
    pub fn record_error(&self, error: &anyhow::Error, took: Duration) {
        self.in_progress.dec();
        self.duration.observe(took.as_secs_f64());
        self.reconciles
            .get_or_create(&ResultLabel { result: "failure" })
            .inc();
        let chain = || error.chain();
        if chain().any(|c| {
            c.downcast_ref::<fleet_core::engine::EngineError>()
                .is_some_and(|e| matches!(e, fleet_core::engine::EngineError::Observe(_)))
        }) {
            self.cloud_errors.inc();
        }
        let unreadable = chain().any(|c| {
            c.downcast_ref::<StateError>()
                .is_some_and(|e| matches!(e, StateError::Format { .. } | StateError::Io { .. }))
        });
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.state_unreadable = unreadable;
        h.last_error = Some(format!("{error:#}"));
    }

    /// Gauges that describe the recorded fleet.
    fn record_state(&self, state: &State, now: DateTime<Utc>) {
        let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
        let mut hours = 0.0;
        for r in state.instances.values() {
            *counts.entry(r.lifecycle.as_str()).or_default() += 1;
            if !r.lifecycle.is_gone() {
                hours += (now - r.created_at).num_seconds().max(0) as f64 / 3600.0;
            }
        }
        for l in LIFECYCLES {
            let n = counts.get(l.as_str()).copied().unwrap_or(0);
            self.instances
                .get_or_create(&LifecycleLabel {
                    lifecycle: l.as_str(),
                })
                .set(n);
        }
        self.vm_hours.set(hours);
        for phase in [Phase::Boot, Phase::Resume] {
            let label = PhaseLabel {
                phase: phase.as_str(),
            };
            let kept = match phase {
                Phase::Boot => state.timings.boots.len(),
                Phase::Resume => state.timings.resumes.len(),
            };
            self.measurements
                .get_or_create(&label)
                .set(i64::try_from(kept).unwrap_or(i64::MAX));
            if let Some(l) = state.timings.learned(phase) {
                self.measured
                    .get_or_create(&label)
                    .set(i64::try_from(l.time.as_secs()).unwrap_or(i64::MAX));
            }
        }
        self.state_serial
            .set(i64::try_from(state.serial).unwrap_or(i64::MAX));
    }

    /// Brings the cloud call counters up to the provider's running totals.
    pub fn record_cloud_calls(&self, totals: &BTreeMap<String, u64>) {
        add_since(&self.seen_calls, &self.cloud_calls, totals);
    }

    /// The longest current wait, from when the oldest waiting job was queued.
    pub fn record_oldest_pending(&self, queued: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        let secs = queued.map_or(0.0, |t| {
            ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0)
        });
        self.oldest_wait.set(secs);
    }

    /// Adds the GitLab requests made since the last call (`totals` are running totals).
    pub fn record_gitlab_calls(&self, totals: &BTreeMap<String, u64>) {
        add_since(&self.seen_gitlab_calls, &self.gitlab_calls, totals);
    }

    /// A webhook was answered.
    pub fn record_webhook(&self, result: WebhookResult) {
        self.webhooks
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
    }

    /// A verified job webhook reported `status`.
    pub fn record_job_event(&self, status: &str) {
        let status = JOB_STATUSES
            .iter()
            .find(|s| **s == status)
            .copied()
            .unwrap_or("other");
        self.job_events.get_or_create(&StatusLabel { status }).inc();
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if h.state_unreadable {
            return Err(format!(
                "state is unreadable: {}",
                h.last_error.as_deref().unwrap_or("unknown error")
            ));
        }
        match h.last_success {
            None => Err(match &h.last_error {
                Some(e) => format!("no reconcile has succeeded yet; the last one failed: {e}"),
                None => "the first reconcile has not finished yet".into(),
            }),
            Some(t) if t.elapsed() > self.fresh_for => Err(format!(
                "the last successful reconcile was {}s ago; the last error: {}",
                t.elapsed().as_secs(),
                h.last_error.as_deref().unwrap_or("none")
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Adds to `counters` what each running total in `totals` gained since `seen` last saw it.
fn add_since(
    seen: &Mutex<BTreeMap<String, u64>>,
    counters: &Family<OperationLabel, Counter>,
    totals: &BTreeMap<String, u64>,
) {
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    for (op, &total) in totals {
        let before = seen.insert(op.clone(), total).unwrap_or(0);
        counters
            .get_or_create(&OperationLabel {
                operation: op.clone(),
            })
            .inc_by(total.saturating_sub(before));
    }
}
