//! The HTTP side of the Hetzner provider: the bearer token, retries of `429` and `5xx`
//! answers, the `RateLimit-*` window, error bodies, pagination and action polling.

use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use fleet_core::cloud::CloudError;
use fleet_core::secret::Secret;

use crate::rate_limit::{reset_at, short, RateWindow};

use super::errors::{self, TRANSIENT_CODES};
use super::models::{Action, ActionResponse, ErrorResponse, ListServersResponse, Server};

/// Servers per page of a list (the API's maximum).
const PER_PAGE: u32 = 50;
/// Most pages read for one list; a guard against an API that never stops paging.
const MAX_PAGES: u32 = 1000;

/// How the client retries and waits.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Attempts per request, counting the first, for `429`, `5xx` and network failures.
    pub max_attempts: u32,
    /// First wait between attempts; it doubles with each attempt.
    pub backoff: Duration,
    /// Longest wait for a rate-limit window to reopen.
    pub max_wait: Duration,
    /// How often a running action is polled.
    pub poll_interval: Duration,
    /// How long an action may run before the call gives up on it.
    pub action_timeout: Duration,
}

/// Why one attempt failed, and how long the rate limit asks to wait before the next.
struct Failure {
    error: CloudError,
    wait: Option<Duration>,
}

/// A Hetzner Cloud API client authenticated with a project's API token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Secret,
    retry: Retry,
    window: RateWindow,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("hetzner::Client")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish()
    }
}

impl Client {
    /// A client for the API at `base` (`https://api.hetzner.cloud/v1`).
    pub fn new(base: &str, token: Secret, retry: Retry) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("fleet-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            retry,
            window: RateWindow::default(),
        })
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url, CloudError> {
        let mut url = Url::parse(&format!("{}{path}", self.base)).map_err(|e| {
            errors::from_code(
                "request",
                "invalid_endpoint",
                &format!("`{}{path}` is not a URL ({e})", self.base),
            )
        })?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Sends one request and decodes its answer, retrying what may pass. `body` is JSON
    /// that may hold secrets (user data): it is sent and never logged.
    pub async fn call<T: DeserializeOwned>(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<T, CloudError> {
        let url = self.url(path, query)?;
        let mut attempt = 1;
        loop {
            let failure = match self.send_once(operation, &method, &url, body.as_ref()).await {
                Ok(bytes) => {
                    return serde_json::from_slice(&bytes).map_err(|e| {
                        errors::from_code(
                            operation,
                            "unreadable_response",
                            &format!("the answer to {method} {path} is not shaped as the API documents ({e})"),
                        )
                    })
                }
                Err(f) => f,
            };
            let retryable = failure
                .error
                .code()
                .is_some_and(|c| TRANSIENT_CODES.contains(&c));
            if !retryable || attempt >= self.retry.max_attempts {
                return Err(failure.error);
            }
            let backoff = self.retry.backoff * 2u32.saturating_pow(attempt - 1);
            let wait = failure
                .wait
                .unwrap_or(backoff)
                .max(backoff)
                .min(self.retry.max_wait);
            tracing::debug!(
                operation,
                attempt,
                ?wait,
                "hetzner: {}; retrying",
                failure.error
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt: the body of a 2xx answer, or why not.
    async fn send_once(
        &self,
        operation: &str,
        method: &Method,
        url: &Url,
        body: Option<&Vec<u8>>,
    ) -> Result<Vec<u8>, Failure> {
        let wait = self.window.wait(Utc::now());
        if !wait.is_zero() {
            let wait = wait.min(self.retry.max_wait);
            tracing::info!(
                ?wait,
                "Hetzner's rate-limit window is used up; waiting for it to reset"
            );
            tokio::time::sleep(wait).await;
        }
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(self.token.expose());
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.clone());
        }
        let no_answer = |what: &str, e: reqwest::Error| Failure {
            error: errors::from_code(
                operation,
                "request_failed",
                &format!("{method} {} {what} ({})", url.path(), e.without_url()),
            ),
            wait: None,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| no_answer("got no answer", e))?;
        self.window.note(resp.headers());
        let status = resp.status();
        let wait = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| reset_at(resp.headers()))
            .flatten()
            .map(|at| (at - Utc::now()).to_std().unwrap_or_default());
        let bytes = resp.bytes().await.map_err(|e| no_answer("broke off", e))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let error = match serde_json::from_slice::<ErrorResponse>(&bytes) {
            Ok(e) => errors::from_code(operation, &e.error.code, &e.error.message),
            Err(_) => {
                let code = match status.as_u16() {
                    429 => "rate_limit_exceeded",
                    s if s >= 500 => "server_error",
                    _ => "unexpected_status",
                };
                errors::from_code(
                    operation,
                    code,
                    &format!(
                        "{method} {} answered {status}: {}",
                        url.path(),
                        short(&String::from_utf8_lossy(&bytes))
                    ),
                )
            }
        };
        Err(Failure { error, wait })
    }

    /// Every server matching `label_selector`, page by page.
    pub async fn list_servers(&self, label_selector: &str) -> Result<Vec<Server>, CloudError> {
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let resp: ListServersResponse = self
                .call(
                    "list_servers",
                    Method::GET,
                    "/servers",
                    &[
                        ("label_selector", label_selector.to_string()),
                        ("page", page.to_string()),
                        ("per_page", PER_PAGE.to_string()),
                    ],
                    None,
                )
                .await?;
            out.extend(resp.servers);
            match resp.meta.and_then(|m| m.pagination.next_page) {
                Some(next) if next > page && next <= MAX_PAGES => page = next,
                _ => return Ok(out),
            }
        }
    }

    /// Polls an action until it is no longer `running`; an action that ends in `error`
    /// becomes the error it names.
    pub async fn wait_action(&self, operation: &str, action: Action) -> Result<(), CloudError> {
        let deadline = tokio::time::Instant::now() + self.retry.action_timeout;
        let mut action = action;
        loop {
            match action.status.as_str() {
                "success" => return Ok(()),
                "error" => {
                    let (code, message) = match &action.error {
                        Some(e) => (e.code.as_str(), e.message.as_str()),
                        None => ("action_failed", "the action failed"),
                    };
                    return Err(errors::from_code(
                        operation,
                        code,
                        &format!("action {} ({}): {message}", action.id, action.command),
                    ));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(errors::from_code(
                    operation,
                    "action_timeout",
                    &format!(
                        "action {} ({}) still runs after {:?}",
                        action.id, action.command, self.retry.action_timeout
                    ),
                ));
            }
            tokio::time::sleep(self.retry.poll_interval).await;
            let resp: ActionResponse = self
                .call(
                    operation,
                    Method::GET,
                    &format!("/actions/{}", action.id),
                    &[],
                    None,
                )
                .await?;
            action = resp.action;
        }
    }
}
