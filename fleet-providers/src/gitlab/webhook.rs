//! Job webhooks (`X-Gitlab-Event: Job Hook`), checked and parsed without panicking on any
//! input. A verified event only asks for a reconcile: webhooks get lost and carry no job
//! tags, so the API stays the source of truth for demand.
//!
//! The daemon's HTTP handler passes the headers and body here and answers with
//! [`Rejection::status`] on error.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use fleet_core::secret::Secret;

/// Largest body accepted by default. GitLab's job payloads are a few kilobytes.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;

/// The webhook secret is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookConfigError {
    /// An empty secret would accept anyone; there is no default secret.
    #[error("the webhook secret is empty; set the variable runner.webhook_secret_env names to a long random value")]
    EmptySecret,
}

/// Why a webhook was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// `X-Gitlab-Token` missing or wrong.
    #[error("webhook token is missing or wrong")]
    Unauthorized,
    /// The body is larger than the limit.
    #[error("webhook body of {size} bytes is over the {limit} byte limit")]
    TooLarge {
        /// Bytes received (or announced).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not a job event GitLab would send.
    #[error("webhook body is not a valid job event: {reason}")]
    BadRequest {
        /// What is wrong.
        reason: String,
    },
}

impl Rejection {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Unauthorized => 401,
            Rejection::TooLarge { .. } => 413,
            Rejection::BadRequest { .. } => 400,
        }
    }
}

/// A verified job status change.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// Job id (`build_id`).
    pub job_id: u64,
    /// Project id.
    pub project_id: u64,
    /// `created`, `pending`, `running`, `success`, ...
    pub status: String,
    /// When the job was created, from either timestamp format GitLab sends.
    pub created_at: Option<DateTime<Utc>>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobEvent {
    /// Whether the event may change demand (a job became pending or stopped running); a
    /// reconcile follows either way, this only lets a caller prioritise.
    pub fn wants_capacity(&self) -> bool {
        matches!(self.status.as_str(), "created" | "pending")
    }
}

/// What an accepted webhook is.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// A job event: trigger a reconcile.
    Job(JobEvent),
    /// Another event type this fleet does not use (answer 200, do nothing).
    Ignored {
        /// The `X-Gitlab-Event` value.
        event: String,
    },
}

/// Checks job webhooks against the configured secret.
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    secret: Secret,
    max_body: usize,
}

impl WebhookVerifier {
    /// A verifier for `secret`; an empty secret is refused.
    pub fn new(secret: Secret, max_body: usize) -> Result<WebhookVerifier, WebhookConfigError> {
        if secret.expose().is_empty() {
            return Err(WebhookConfigError::EmptySecret);
        }
        Ok(WebhookVerifier { secret, max_body })
    }

    /// The body limit, for the HTTP layer to stop reading early.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Checks one request: the token (constant-time), then the size, then the payload.
    /// `event` is `X-Gitlab-Event`, `token` is `X-Gitlab-Token`.
    pub fn verify(
        &self,
        event: Option<&str>,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<Accepted, Rejection> {
        let given = token.unwrap_or("").as_bytes();
        let want = self.secret.expose().as_bytes();
        // `ct_eq` on slices of different lengths is false without comparing contents; the
        // length of the secret is not what it protects.
        if token.is_none() || !bool::from(given.ct_eq(want)) {
            return Err(Rejection::Unauthorized);
        }
        if body.len() > self.max_body {
            return Err(Rejection::TooLarge {
                size: body.len(),
                limit: self.max_body,
            });
        }
        let event = event.unwrap_or("").trim();
        if event != "Job Hook" {
            return Ok(Accepted::Ignored {
                event: event.chars().take(64).collect(),
            });
        }
        parse_job_event(body).map(Accepted::Job)
    }
}

#[derive(Deserialize)]
struct RawJobEvent {
    object_kind: String,
    build_id: u64,
    build_status: String,
    project_id: u64,
    #[serde(default)]
    build_created_at: Option<String>,
    #[serde(default)]
    build_started_at: Option<String>,
    #[serde(default)]
    build_finished_at: Option<String>,
    #[serde(default)]
    build_created_at_iso: Option<String>,
    #[serde(default)]
    build_started_at_iso: Option<String>,
    #[serde(default)]
    build_finished_at_iso: Option<String>,
}

/// Parses a `Job Hook` body.
pub fn parse_job_event(body: &[u8]) -> Result<JobEvent, Rejection> {
    let raw: RawJobEvent = serde_json::from_slice(body).map_err(|e| Rejection::BadRequest {
        reason: e.to_string(),
    })?;
    if raw.object_kind != "build" {
        return Err(Rejection::BadRequest {
            reason: format!(
                "object_kind is `{}`, a job event has `build`",
                raw.object_kind.chars().take(32).collect::<String>()
            ),
        });
    }
    let at = |iso: &Option<String>, plain: &Option<String>, field: &str| match iso
        .as_deref()
        .or(plain.as_deref())
    {
        None => Ok(None),
        Some(t) => parse_timestamp(t)
            .map(Some)
            .ok_or_else(|| Rejection::BadRequest {
                reason: format!("{field} is not a timestamp GitLab sends"),
            }),
    };
    Ok(JobEvent {
        job_id: raw.build_id,
        project_id: raw.project_id,
        created_at: at(
            &raw.build_created_at_iso,
            &raw.build_created_at,
            "build_created_at",
        )?,
        started_at: at(
            &raw.build_started_at_iso,
            &raw.build_started_at,
            "build_started_at",
        )?,
        finished_at: at(
            &raw.build_finished_at_iso,
            &raw.build_finished_at,
            "build_finished_at",
        )?,
        status: raw.build_status,
    })
}

/// Both formats GitLab sends: `2023-01-10 13:50:02 UTC` and ISO 8601
/// (`2021-02-23T02:41:37.886Z`, `2021-02-23T02:41:37+01:00`).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    if let Some(naive) = t.strip_suffix(" UTC") {
        return NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(|n| n.and_utc());
    }
    // `2021-04-28 21:50:00 +0200`, as some GitLab events write it.
    DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S %z")
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_timestamp_formats_parse_to_the_same_instant() {
        let a = parse_timestamp("2023-01-10 13:50:02 UTC").unwrap();
        let b = parse_timestamp("2023-01-10T13:50:02Z").unwrap();
        let c = parse_timestamp("2023-01-10T14:50:02.000+01:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert!(parse_timestamp("yesterday").is_none());
        assert!(parse_timestamp("2023-01-10 13:50:02").is_none());
    }
}
