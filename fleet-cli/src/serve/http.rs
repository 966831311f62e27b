//! The daemon's HTTP endpoints: the GitLab job webhook, `/metrics`, `/healthz` and
//! `/readyz`. Plain HTTP on `daemon.listen`; TLS belongs to a reverse proxy in front.
//!
//! A webhook only requests a reconcile: it never carries the work itself, so a burst of
//! them costs one reconcile, and the answer goes back before the reconcile runs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use fleet_providers::gitlab::webhook::{Accepted, Rejection, WebhookVerifier, DEFAULT_MAX_BODY};

use super::controller::Trigger;
use super::metrics::{Metrics, WebhookResult, CONTENT_TYPE};

/// The path GitLab's project or group webhook points at.
pub const WEBHOOK_PATH: &str = "/webhooks/gitlab";

/// What the handlers share.
pub struct App {
    /// `None` when the stack names no `runner.webhook_secret_env`: webhooks are refused.
    pub verifier: Option<WebhookVerifier>,
    /// Asks the loop for a reconcile.
    pub trigger: Arc<Trigger>,
    /// Metrics and health.
    pub metrics: Arc<Metrics>,
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    let limit = app
        .verifier
        .as_ref()
        .map_or(DEFAULT_MAX_BODY, WebhookVerifier::max_body);
    Router::new()
        .route(
            WEBHOOK_PATH,
            post(webhook).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(app)
}

async fn webhook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(verifier) = &app.verifier else {
        app.metrics.record_webhook(WebhookResult::Disabled);
        return (
            StatusCode::NOT_FOUND,
            "webhooks are disabled: the stack names no runner.webhook_secret_env\n",
        )
            .into_response();
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            // The body limit is enforced while reading, before the token is checked, so an
            // oversized body is never buffered whoever sends it.
            let status = e.status();
            let result = if status == StatusCode::PAYLOAD_TOO_LARGE {
                WebhookResult::TooLarge
            } else {
                WebhookResult::BadRequest
            };
            app.metrics.record_webhook(result);
            tracing::warn!(
                status = status.as_u16(),
                "webhook refused: {}",
                e.body_text()
            );
            return (status, format!("{}\n", e.body_text())).into_response();
        }
    };
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    match verifier.verify(h("x-gitlab-event"), h("x-gitlab-token"), &body) {
        Ok(Accepted::Job(event)) => {
            app.metrics.record_webhook(WebhookResult::Accepted);
            app.metrics.record_job_event(&event.status);
            tracing::info!(
                job = event.job_id,
                project = event.project_id,
                status = %event.status,
                "job webhook: reconcile requested"
            );
            app.trigger.request();
            (StatusCode::OK, "reconcile requested\n").into_response()
        }
        Ok(Accepted::Ignored { event }) => {
            app.metrics.record_webhook(WebhookResult::Ignored);
            tracing::debug!(event = %event, "webhook of another event type ignored");
            (StatusCode::OK, "ignored: not a job event\n").into_response()
        }
        Err(rejection) => {
            let result = match rejection {
                Rejection::Unauthorized => WebhookResult::Unauthorized,
                Rejection::TooLarge { .. } => WebhookResult::TooLarge,
                Rejection::BadRequest { .. } => WebhookResult::BadRequest,
            };
            app.metrics.record_webhook(result);
            // The rejection never contains the token, given or expected.
            tracing::warn!(status = rejection.status(), "webhook refused: {rejection}");
            let status =
                StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
            (status, format!("{rejection}\n")).into_response()
        }
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], app.metrics.encode()).into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.metrics.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}
