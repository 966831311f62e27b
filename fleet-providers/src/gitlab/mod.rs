//! GitLab: job demand through the REST API (the `Ci` trait), runner create / pause / drain /
//! delete calls on the `POST /user/runners` token workflow, and job webhook verification.
//!
//! * [`client`]: the HTTP client (pagination, `RateLimit-*` headers, `429` + `Retry-After`).
//! * [`demand`]: [`GitLabCi`], counting jobs the fleet's runners could take.
//! * [`models`]: GitLab's response shapes; runner tokens are [`Secret`]s.
//! * [`webhook`]: the pure check a webhook handler calls.

pub mod client;
pub mod demand;
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
        /// GitLab's `message` or `error`.
        message: String,
    },
    /// GitLab kept throttling, or asked for a longer wait than the client allows.
    #[error(
        "{url} is rate limited: GitLab asks to retry after {retry_after:?} ({attempts} attempts)"
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
