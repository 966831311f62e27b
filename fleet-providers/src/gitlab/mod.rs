//! GitLab: job demand through the REST API (the `Ci` trait), runner create / pause / drain /
//! delete calls on the `POST /user/runners` token workflow, and job webhook verification.
//!
//! * [`client`]: the HTTP client (pagination, `RateLimit-*` headers, `429` + `Retry-After`).
//! * [`demand`]: [`GitLabCi`], counting jobs the fleet's runners could take.
//! * [`history`]: the finished jobs of a window, as trace rows (`fleet-cli history`).
//! * [`models`]: GitLab's response shapes; runner tokens are [`Secret`]s.
//! * [`webhook`]: the pure check a webhook handler calls.

pub mod client;
pub mod demand;
pub mod history;
pub mod models;
pub mod webhook;

use std::time::Duration;

use fleet_core::secret::Secret;
use fleet_core::stack::{LoadedStack, StackError};

pub use client::{GitLabClient, Outcome, RetryPolicy, RunnerSpec};
pub use demand::{DemandScope, GitLabCi, Registration};

/// Errors talking to GitLab.
#[derive(Debug, thiserror::Error)]
pub enum GitLabError {
    /// The stack's runner settings do not allow the call.
    #[error("{message}")]
    Config {
        /// What is missing, naming the stack key.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for GitLab")]
    Client {
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// GitLab could not be reached or the answer could not be read.
    #[error("{method} {url} failed")]
    Request {
        /// HTTP method.
        method: String,
        /// The URL (never carries the token).
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// GitLab answered with an error status.
    #[error("{method} {url} answered {status}: {message}")]
    Status {
        /// HTTP method.
        method: String,
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// GitLab's `message`, `error_description` or `error`, on one line.
        message: String,
    },
    /// The access token lacks a scope the call needs (`403` with `insufficient_scope`).
    #[error("{method} {url} answered 403: the access token lacks the `{scope}` scope ({message})")]
    InsufficientScope {
        /// HTTP method.
        method: String,
        /// The URL.
        url: String,
        /// The scope the call needs (the narrowest GitLab names).
        scope: String,
        /// GitLab's `error_description`.
        message: String,
    },
    /// GitLab answered with a redirect, which the client never follows: a replayed request
    /// changes method and a redirect to another host would carry the access token there.
    #[error("{method} {url} answered {status}, a redirect to {location}; no redirect is followed")]
    Redirected {
        /// HTTP method.
        method: String,
        /// The URL.
        url: String,
        /// The status code (301, 302, 307, 308).
        status: u16,
        /// Where it pointed (`Location`), or `nowhere` when it named no place.
        location: String,
    },
    /// GitLab kept throttling, or asked for a longer wait than the client allows.
    #[error(
        "{url} is rate limited: GitLab asks to retry after {retry_after:?} ({})",
        plural(u64::from(*attempts), "attempt")
    )]
    RateLimited {
        /// The URL.
        url: String,
        /// The wait GitLab asked for.
        retry_after: Duration,
        /// Requests sent.
        attempts: u32,
    },
    /// The answer is not the JSON shape GitLab documents.
    #[error("cannot read the answer of {url}")]
    Decode {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl GitLabError {
    /// Whether the error is the stack's configuration being wrong (token, scopes, project
    /// or group names, the URL) rather than GitLab being unwell: retrying will not help.
    pub fn is_misconfiguration(&self) -> bool {
        match self {
            GitLabError::Status { status, .. } => matches!(status, 401 | 403 | 404),
            GitLabError::InsufficientScope { .. }
            | GitLabError::Redirected { .. }
            | GitLabError::Config { .. } => true,
            _ => false,
        }
    }

    /// What to do about the error, for the CLI's hint.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            GitLabError::Status { status: 401, .. } => "the access token in runner.token_env is wrong, expired or revoked: create one with the `create_runner`, `manage_runner` and `read_api` scopes".into(),
            GitLabError::Status { status: 403, .. } => "the token's user may not do this: it needs the Maintainer role on runner.projects (Owner on runner.groups for group runners, administrator for instance runners)".into(),
            GitLabError::Status { status: 404, .. } => "check runner.projects and runner.groups: GitLab answers 404 for a path that does not exist and for one the token's user cannot see".into(),
            GitLabError::InsufficientScope { scope, .. } => {
                format!("give the access token in runner.token_env the `{scope}` scope (the fleet needs `create_runner`, `manage_runner` and `read_api`)")
            }
            GitLabError::Redirected { location, .. } => match base_of(location) {
                Some(base) => format!("set runner.gitlab_url to {base}"),
                None => "set runner.gitlab_url to the address GitLab is served at (with https:// if it forces https)".into(),
            },
            GitLabError::RateLimited { .. } => "GitLab's rate limit is used up; the next run asks again".into(),
            _ => return None,
        })
    }
}

/// The base URL a redirect's `Location` implies for `runner.gitlab_url`: what comes
/// before `/api/v4`, or the scheme and host.
fn base_of(location: &str) -> Option<String> {
    if let Some((base, _)) = location.split_once("/api/v4") {
        return Some(base.to_string()).filter(|b| b.contains("://"));
    }
    let (scheme, rest) = location.split_once("://")?;
    let host = rest.split('/').next()?;
    Some(format!("{scheme}://{host}"))
}

/// `1 attempt`, `3 attempts`.
pub(crate) fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A GitLab error the stack's configuration caused, as the CLI reports it: the calls of
/// a plan cannot be trusted, so a command fails instead of planning on unknown demand.
#[derive(Debug, Clone, thiserror::Error)]
#[error("gitlab refused the stack's settings: {message}")]
pub struct Refusal {
    /// The error, on one line.
    pub message: String,
    /// What to do.
    pub hint: String,
}

/// The description the fleet gives a runner: it names the stack and the instance, so cleanup
/// can find runners whose VM is gone.
pub fn runner_description(stack: &str, instance: &str) -> String {
    format!("fleet:{stack}/{instance}")
}

/// The stack and instance a runner description names, if the fleet wrote it.
pub fn parse_runner_description(description: &str) -> Option<(&str, &str)> {
    let rest = description.strip_prefix("fleet:")?;
    let (stack, instance) = rest.split_once('/')?;
    (!stack.is_empty() && !instance.is_empty()).then_some((stack, instance))
}

/// The GitLab [`GitLabCi`] for a stack, if it names GitLab (`runner.gitlab_url`) and a token
/// (`runner.token_env`).
pub fn ci_for(loaded: &LoadedStack) -> Result<Option<GitLabCi>, StackError> {
    let r = &loaded.stack.runner;
    let (Some(url), Some(var)) = (&r.gitlab_url, &r.token_env) else {
        return Ok(None);
    };
    let Some(token) = loaded.secret(var) else {
        return Err(loaded.error_at(
            "runner.token_env",
            format!("the GitLab token in `{var}` was not loaded"),
            "export it before running fleet-cli",
        ));
    };
    let client = client_for(url, token.clone())
        .map_err(|e| loaded.error_at("runner.gitlab_url", e.to_string(), "check the URL"))?;
    let scope = DemandScope {
        projects: r.projects.iter().map(|p| p.to_string()).collect(),
        groups: r.groups.iter().map(|g| g.to_string()).collect(),
        tags: r.tags.iter().cloned().collect(),
        run_untagged: r.run_untagged,
    };
    let ci = GitLabCi::new(client, scope);
    // A shared runner token means the runner exists already; otherwise the fleet registers
    // one runner per VM with the access token (it needs the `create_runner` scope).
    Ok(Some(match r.runner_token_env {
        Some(_) => ci,
        None => ci.with_registration(Registration {
            stack: loaded.stack.name.clone(),
            runner_type: r.runner_type,
            locked: r.locked,
            maximum_timeout: r.maximum_timeout.map(|d| d.as_secs()),
        }),
    }))
}

/// A client with the default retry policy.
pub fn client_for(url: &str, token: Secret) -> Result<GitLabClient, GitLabError> {
    GitLabClient::new(url, token, RetryPolicy::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_round_trip() {
        let d = runner_description("ci", "ci-0007");
        assert_eq!(parse_runner_description(&d), Some(("ci", "ci-0007")));
        assert_eq!(parse_runner_description("shared runner"), None);
        assert_eq!(parse_runner_description("fleet:/x"), None);
    }
}
