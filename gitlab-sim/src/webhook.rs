//! Job webhooks: every job status change is POSTed to the configured URL as GitLab does it
//! (`X-Gitlab-Event: Job Hook`, `X-Gitlab-Token`, an `object_kind: build` payload).

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::model::JobEvent;
use crate::{Shared, WebhookTarget};

/// `2023-01-10 13:50:02 UTC`, the older format GitLab still sends in `build_*_at`.
fn utc_text(t: Option<DateTime<Utc>>) -> Value {
    match t {
        Some(t) => Value::String(t.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        None => Value::Null,
    }
}

fn iso(t: Option<DateTime<Utc>>) -> Value {
    match t {
        Some(t) => Value::String(t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        None => Value::Null,
    }
}

/// The `Job Hook` payload for one status change.
pub(crate) fn payload(e: &JobEvent, now: DateTime<Utc>) -> Value {
    let j = &e.job;
    let duration = match (j.started_at, j.finished_at) {
        (Some(s), Some(f)) => json!(crate::model::seconds(f - s)),
        _ => Value::Null,
    };
    json!({
        "object_kind": "build",
        "ref": j.git_ref,
        "tag": false,
        "before_sha": "0000000000000000000000000000000000000000",
        "sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
        "retries_count": 0,
        "build_id": j.id,
        "build_name": j.name,
        "build_stage": j.stage,
        "build_status": j.status.as_str(),
        "build_created_at": utc_text(Some(j.created_at)),
        "build_started_at": utc_text(j.started_at),
        "build_finished_at": utc_text(j.finished_at),
        "build_created_at_iso": iso(Some(j.created_at)),
        "build_started_at_iso": iso(j.started_at),
        "build_finished_at_iso": iso(j.finished_at),
        "build_duration": duration,
        "build_queued_duration": j.queued_seconds(now),
        "build_allow_failure": false,
        "build_failure_reason": j.failure_reason.clone().unwrap_or_else(|| "unknown_failure".into()),
        "pipeline_id": j.pipeline_id,
        "runner": e.runner.as_ref().map(|r| json!({
            "id": r.id,
            "description": r.description,
            "runner_type": r.runner_type.as_str(),
            "active": !r.paused,
            "is_shared": r.runner_type == crate::model::RunnerType::InstanceType,
            "tags": r.tag_list,
        })),
        "project_id": e.project.id,
        "project_name": e.project.path_with_namespace,
        "user": {"id": 1, "name": "Administrator", "username": "root", "email": "[REDACTED]"},
        "commit": {
            "id": j.pipeline_id,
            "name": null,
            "sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
            "message": "simulated\n",
            "status": j.status.as_str(),
        },
        "project": {
            "id": e.project.id,
            "name": e.project.name,
            "path_with_namespace": e.project.path_with_namespace,
        },
        "environment": null,
    })
}

/// Sends queued events one by one; failures are counted, not retried (GitLab also gives up
/// on a failing hook after a few tries, and the fleet must cope with lost webhooks).
pub(crate) async fn deliver(
    mut rx: mpsc::UnboundedReceiver<JobEvent>,
    target: WebhookTarget,
    shared: Arc<Shared>,
) {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    while let Some(event) = rx.recv().await {
        let body = payload(&event, shared.clock.now());
        let sent = http
            .post(&target.url)
            .header("X-Gitlab-Event", "Job Hook")
            .header("X-Gitlab-Token", &target.secret)
            .header("X-Gitlab-Event-UUID", uuid_like(event.job.id, &event))
            .header("User-Agent", "GitLab/17.0.0")
            .json(&body)
            .send()
            .await;
        let ok = matches!(&sent, Ok(r) if r.status().is_success());
        let mut w = shared.world();
        if ok {
            w.counters.webhooks_sent += 1;
        } else {
            w.counters.webhooks_failed += 1;
        }
    }
}

fn uuid_like(id: u64, e: &JobEvent) -> String {
    format!(
        "00000000-0000-4000-8000-{:06x}{:06x}",
        id & 0xffffff,
        e.job.status as u64
    )
}
