//! The HTTP side of the GitLab client: authentication, pagination, and GitLab's rate limits
//! (`RateLimit-*` headers and `429` with `Retry-After`), plus the runner calls.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use fleet_core::secret::Secret;

use crate::rate_limit::{short, RateWindow};

use super::models::{
    CreatedRunner, Group, Job, Project, RunnerDetails, RunnerManager, RunnerSummary,
};
use super::GitLabError;

/// Most pages read for one list; a guard against a server that never stops paging.
const MAX_PAGES: u32 = 1000;
/// Items per page (GitLab's maximum).
const PER_PAGE: u32 = 100;

/// How long the client waits for rate limits before giving up, and how often it retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Longest single wait for `Retry-After` or `RateLimit-Reset`; a longer one is an error.
    pub max_wait: Duration,
    /// Retries of one request after `429`.
    pub max_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_wait: Duration::from_secs(30),
            max_retries: 3,
        }
    }
}

/// A GitLab REST v4 client authenticated with an access token.
pub struct GitLabClient {
    http: reqwest::Client,
    api: String,
    token: Secret,
    retry: RetryPolicy,
    /// The rate-limit window the last answer announced.
    window: RateWindow,
    /// Requests sent, by method, and failed ones under `error`.
    calls: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl std::fmt::Debug for GitLabClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLabClient")
            .field("api", &self.api)
            .field("token", &self.token)
            .finish()
    }
}

/// What an idempotent call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The change was made.
    Done,
    /// Nothing was needed (already deleted, already assigned).
    AlreadyDone,
}

/// The attributes of `POST /user/runners`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerSpec {
    /// `instance_type`, `group_type` or `project_type`.
    pub runner_type: fleet_core::stack::RunnerType,
    /// The group a group runner is created in.
    pub group_id: Option<u64>,
    /// The project a project runner is created in.
    pub project_id: Option<u64>,
    /// Free text naming the stack and instance (see [`super::runner_description`]).
    pub description: String,
    /// Runner tags.
    pub tag_list: Vec<String>,
    /// Whether it takes untagged jobs.
    pub run_untagged: bool,
    /// Whether a project runner is locked to its projects.
    pub locked: bool,
    /// Longest job it runs, in seconds.
    pub maximum_timeout: Option<u64>,
    /// Whether it starts paused.
    pub paused: bool,
}

impl GitLabClient {
    /// A client for the GitLab at `base_url` (`https://gitlab.example.com`).
    pub fn new(base_url: &str, token: Secret, retry: RetryPolicy) -> Result<Self, GitLabError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("fleet-cli/", env!("CARGO_PKG_VERSION")))
            // Never follow a redirect: reqwest replays a redirected POST as GET, and on
            // another host it would still send PRIVATE-TOKEN (it strips only
            // Authorization and Cookie). The error says where it pointed instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| GitLabError::Client { source })?;
        Ok(GitLabClient {
            http,
            api: format!("{}/api/v4", base_url.trim_end_matches('/')),
            token,
            retry,
            window: RateWindow::default(),
            calls: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// Requests sent so far, by method, and the ones that failed or got an error status
    /// under `error`.
    pub fn calls(&self) -> std::collections::BTreeMap<String, u64> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count(&self, kind: &str) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind.to_string())
            .or_default() += 1;
    }

    /// `/api/v4` of this GitLab.
    pub fn api_url(&self) -> &str {
        &self.api
    }

    /// Sends one request, waiting out rate limits. `path` starts with `/` and may carry a
    /// query string.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, GitLabError> {
        let url = format!("{}{path}", self.api);
        let mut attempt = 0;
        loop {
            self.wait_for_window(&url).await?;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("PRIVATE-TOKEN", self.token.expose());
            if let Some(b) = body {
                req = req.json(b);
            }
            self.count(method.as_str());
            let resp = req.send().await.map_err(|source| {
                self.count("error");
                GitLabError::Request {
                    method: method.to_string(),
                    url: url.clone(),
                    source,
                }
            })?;
            if resp.status().is_client_error() || resp.status().is_server_error() {
                self.count("error");
            }
            if resp.status().is_redirection() {
                self.count("error");
                return Err(GitLabError::Redirected {
                    method: method.to_string(),
                    url,
                    status: resp.status().as_u16(),
                    location: resp
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("nowhere")
                        .to_string(),
                });
            }
            self.window.note(resp.headers());
            if resp.status() != StatusCode::TOO_MANY_REQUESTS {
                return Ok(resp);
            }
            let retry_after = retry_after(resp.headers()).unwrap_or(Duration::from_secs(1));
            if attempt >= self.retry.max_retries || retry_after > self.retry.max_wait {
                return Err(GitLabError::RateLimited {
                    url,
                    retry_after,
                    attempts: attempt + 1,
                });
            }
            tracing::debug!(%url, ?retry_after, "gitlab answered 429; waiting");
            tokio::time::sleep(retry_after).await;
            attempt += 1;
        }
    }

    /// Waits until the rate-limit window reopens, if the last answer used it up.
    async fn wait_for_window(&self, url: &str) -> Result<(), GitLabError> {
        let wait = self.window.wait(Utc::now());
        if wait.is_zero() {
            return Ok(());
        }
        if wait > self.retry.max_wait {
            return Err(GitLabError::RateLimited {
                url: url.to_string(),
                retry_after: wait,
                attempts: 0,
            });
        }
        tracing::debug!(
            ?wait,
            "gitlab rate-limit window used up; waiting for its reset"
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Sends a request and checks for a 2xx answer.
    async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, GitLabError> {
        let resp = self.send(method.clone(), path, body).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(status_error(method, &self.api, path, resp).await)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, GitLabError> {
        let resp = self.ok(method, path, body).await?;
        decode(&self.api, path, resp).await
    }

    /// `GET` of every page of a list. `path` may carry a query string.
    pub async fn get_all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, GitLabError> {
        self.get_pages(path, |_: &[T]| true).await
    }

    /// `GET` of a list page by page while `more` says the page just read calls for the
    /// next one (and the server has one). `path` may carry a query string.
    pub async fn get_pages<T: DeserializeOwned>(
        &self,
        path: &str,
        mut more: impl FnMut(&[T]) -> bool,
    ) -> Result<Vec<T>, GitLabError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut page = 1u32;
        loop {
            let p = format!("{path}{sep}per_page={PER_PAGE}&page={page}");
            let resp = self.ok(Method::GET, &p, None).await?;
            let next = next_page(resp.headers());
            let items: Vec<T> = decode(&self.api, &p, resp).await?;
            let go_on = more(&items);
            out.extend(items);
            match next {
                Some(n) if go_on && n > page && n <= MAX_PAGES => page = n,
                _ => return Ok(out),
            }
        }
    }

    /// `GET` of one object.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, GitLabError> {
        self.json(Method::GET, path, None).await
    }

    /// A project by id or full path.
    pub async fn project(&self, id_or_path: &str) -> Result<Project, GitLabError> {
        self.get(&format!("/projects/{}", encode(id_or_path))).await
    }

    /// Every project of a group, subgroups included, archived ones left out.
    pub async fn group_projects(&self, id_or_path: &str) -> Result<Vec<Project>, GitLabError> {
        self.get_all(&format!(
            "/groups/{}/projects?include_subgroups=true&archived=false&simple=true",
            encode(id_or_path)
        ))
        .await
    }

    /// A group, by id or full path, without its projects (`with_projects=false`: GitLab
    /// otherwise lists every project of the group in the answer).
    pub async fn group(&self, id_or_path: &str) -> Result<Group, GitLabError> {
        self.get(&format!(
            "/groups/{}?with_projects=false",
            encode(id_or_path)
        ))
        .await
    }

    /// The pending and running jobs of a project.
    pub async fn active_jobs(&self, project_id: u64) -> Result<Vec<Job>, GitLabError> {
        self.get_all(&format!(
            "/projects/{project_id}/jobs?scope[]=pending&scope[]=running"
        ))
        .await
    }

    /// The finished jobs of a project (succeeded, failed or canceled) created at or after
    /// `since`, newest first. GitLab lists jobs newest first (by id) and has no time
    /// filter, so pages are read until one ends with a job created before `since`.
    pub async fn finished_jobs(
        &self,
        project_id: u64,
        since: DateTime<Utc>,
    ) -> Result<Vec<Job>, GitLabError> {
        let older = |j: &Job| j.created_at.is_some_and(|c| c < since);
        let mut jobs = self
            .get_pages(
                &format!(
                    "/projects/{project_id}/jobs?scope[]=success&scope[]=failed&scope[]=canceled"
                ),
                |page: &[Job]| !page.last().is_some_and(older),
            )
            .await?;
        jobs.retain(|j| !older(j));
        Ok(jobs)
    }

    /// Creates a runner on the token workflow (`POST /user/runners`; the token needs the
    /// `create_runner` scope). The returned token is a [`Secret`].
    pub async fn create_runner(&self, spec: &RunnerSpec) -> Result<CreatedRunner, GitLabError> {
        let mut body = json!({
            "runner_type": spec.runner_type.as_str(),
            "description": spec.description,
            "tag_list": spec.tag_list,
            "run_untagged": spec.run_untagged,
            "locked": spec.locked,
            "paused": spec.paused,
        });
        if let Some(g) = spec.group_id {
            body["group_id"] = json!(g);
        }
        if let Some(p) = spec.project_id {
            body["project_id"] = json!(p);
        }
        if let Some(t) = spec.maximum_timeout {
            body["maximum_timeout"] = json!(t);
        }
        self.json(Method::POST, "/user/runners", Some(&body)).await
    }

    /// A runner's details.
    pub async fn runner(&self, id: u64) -> Result<RunnerDetails, GitLabError> {
        self.get(&format!("/runners/{id}")).await
    }

    /// Pauses (or resumes) a runner: a paused runner takes no new jobs.
    pub async fn set_paused(&self, id: u64, paused: bool) -> Result<RunnerDetails, GitLabError> {
        self.json(
            Method::PUT,
            &format!("/runners/{id}"),
            Some(&json!({ "paused": paused })),
        )
        .await
    }

    /// Jobs the runner is running now.
    pub async fn running_jobs(&self, id: u64) -> Result<Vec<Job>, GitLabError> {
        self.get_all(&format!("/runners/{id}/jobs?status=running"))
            .await
    }

    /// The runner's managers (the `gitlab-runner` processes that use its token).
    pub async fn managers(&self, id: u64) -> Result<Vec<RunnerManager>, GitLabError> {
        self.get(&format!("/runners/{id}/managers")).await
    }

    /// Runners the token's user can see (`GET /runners`), for cleanup by description.
    pub async fn runners(&self) -> Result<Vec<RunnerSummary>, GitLabError> {
        self.get_all("/runners").await
    }

    /// Every runner of the instance (`GET /runners/all`, administrators only), where
    /// instance runners are listed.
    pub async fn all_runners(&self) -> Result<Vec<RunnerSummary>, GitLabError> {
        self.get_all("/runners/all").await
    }

    /// Deletes a runner; a runner that is already gone is [`Outcome::AlreadyDone`].
    pub async fn delete_runner(&self, id: u64) -> Result<Outcome, GitLabError> {
        let path = format!("/runners/{id}");
        let resp = self.send(Method::DELETE, &path, None).await?;
        match resp.status() {
            s if s.is_success() => Ok(Outcome::Done),
            StatusCode::NOT_FOUND => Ok(Outcome::AlreadyDone),
            _ => Err(status_error(Method::DELETE, &self.api, &path, resp).await),
        }
    }

    /// Assigns a project runner to one more project (`POST /projects/:id/runners`).
    pub async fn assign_runner(
        &self,
        project: &str,
        runner_id: u64,
    ) -> Result<Outcome, GitLabError> {
        let path = format!("/projects/{}/runners", encode(project));
        let resp = self
            .send(
                Method::POST,
                &path,
                Some(&json!({ "runner_id": runner_id })),
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Outcome::Done),
            // GitLab answers 400 "has already been taken" for a runner already assigned.
            StatusCode::BAD_REQUEST => {
                let text = resp.text().await.unwrap_or_default();
                if text.contains("already been taken") {
                    Ok(Outcome::AlreadyDone)
                } else {
                    Err(GitLabError::Status {
                        method: "POST".into(),
                        url: format!("{}{path}", self.api),
                        status: 400,
                        message: ErrorBody::parse(&text).message,
                    })
                }
            }
            _ => Err(status_error(Method::POST, &self.api, &path, resp).await),
        }
    }
}

/// Percent-encodes a project or group path for a URL segment (`a/b` → `a%2Fb`).
pub fn encode(id_or_path: &str) -> String {
    id_or_path
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `Retry-After` in seconds (GitLab sends seconds, not dates).
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get("retry-after")?.to_str().ok()?.trim();
    v.parse::<u64>().ok().map(Duration::from_secs)
}

/// The next page from `x-next-page`, or from the `Link` header's `rel="next"`.
pub fn next_page(h: &HeaderMap) -> Option<u32> {
    if let Some(v) = h.get("x-next-page").and_then(|v| v.to_str().ok()) {
        return v.trim().parse().ok();
    }
    let link = h.get("link")?.to_str().ok()?;
    link.split(',')
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| {
            let url = part.split(';').next()?.trim().trim_matches(['<', '>']);
            let query = url.split_once('?')?.1;
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("page="))
                .and_then(|p| p.parse().ok())
        })
}

async fn decode<T: DeserializeOwned>(
    api: &str,
    path: &str,
    resp: reqwest::Response,
) -> Result<T, GitLabError> {
    let url = format!("{api}{path}");
    let bytes = resp.bytes().await.map_err(|source| GitLabError::Request {
        method: "GET".into(),
        url: url.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| GitLabError::Decode { url, source })
}

async fn status_error(
    method: Method,
    api: &str,
    path: &str,
    resp: reqwest::Response,
) -> GitLabError {
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.unwrap_or_default();
    let body = ErrorBody::parse(&text);
    let url = format!("{api}{path}");
    let scope = body.scope.clone().or_else(|| {
        challenge
            .as_deref()
            .filter(|c| c.contains("insufficient_scope"))
            .and_then(|c| challenge_param(c, "scope"))
    });
    if status == 403 && (body.insufficient_scope || scope.is_some()) {
        return GitLabError::InsufficientScope {
            method: method.to_string(),
            url,
            scope: narrowest_scope(scope.as_deref().unwrap_or("api")),
            message: body.message,
        };
    }
    GitLabError::Status {
        method: method.to_string(),
        url,
        status,
        message: body.message,
    }
}

/// What an error answer says, on one line: GitLab's `message` (a string, or validation
/// errors by field), OAuth's `error_description` (with `error` and `scope`), or, for a
/// page that is not GitLab's API (an HTML error page of a proxy), its title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// One line for the user.
    pub message: String,
    /// The scopes GitLab says would do (`scope`), if it named them.
    pub scope: Option<String>,
    /// Whether the answer is OAuth's `insufficient_scope`.
    pub insufficient_scope: bool,
}

impl ErrorBody {
    /// Reads an error answer's body.
    pub fn parse(text: &str) -> ErrorBody {
        let mut out = ErrorBody {
            message: String::new(),
            scope: None,
            insufficient_scope: false,
        };
        match serde_json::from_str::<Value>(text) {
            Ok(v) => {
                let field = |k: &str| v.get(k).map(flatten).filter(|m| !m.is_empty());
                out.insufficient_scope =
                    v.get("error").and_then(Value::as_str) == Some("insufficient_scope");
                out.scope = v.get("scope").and_then(Value::as_str).map(str::to_string);
                out.message = field("message")
                    .or_else(|| field("error_description"))
                    .or_else(|| field("error"))
                    .unwrap_or_else(|| v.to_string());
            }
            Err(_) if looks_like_html(text) => {
                out.message = match html_title(text) {
                    Some(t) => format!("an HTML page titled `{t}`, not GitLab's API"),
                    None => "an HTML page, not GitLab's API".into(),
                };
            }
            Err(_) => out.message = text.to_string(),
        }
        out.message = short(&one_line(&out.message));
        if out.message.is_empty() {
            out.message = "no message".into();
        }
        out
    }
}

/// A JSON value as text: strings as they are, validation errors by field as
/// `field: problem, problem; field: problem`.
fn flatten(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(flatten).collect::<Vec<_>>().join(", "),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", flatten(v)))
            .collect::<Vec<_>>()
            .join("; "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn looks_like_html(text: &str) -> bool {
    let start = text
        .trim_start()
        .get(..15)
        .unwrap_or("")
        .to_ascii_lowercase();
    start.starts_with("<!doctype") || start.starts_with("<html") || start.starts_with("<head")
}

fn html_title(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    Some(one_line(&text[start..end])).filter(|t| !t.is_empty())
}

/// A parameter of a `WWW-Authenticate: Bearer k="v", ...` challenge.
fn challenge_param(challenge: &str, key: &str) -> Option<String> {
    let at = challenge.find(&format!("{key}=\""))? + key.len() + 2;
    let end = at + challenge[at..].find('"')?;
    Some(challenge[at..end].to_string())
}

/// Of the scopes GitLab says would do (`api create_runner`), the narrowest: `api` grants
/// everything, so name the other one when there is one.
fn narrowest_scope(scopes: &str) -> String {
    scopes
        .split_whitespace()
        .find(|s| *s != "api")
        .or_else(|| scopes.split_whitespace().next())
        .unwrap_or("api")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn paths_are_encoded_as_one_segment() {
        assert_eq!(encode("group/sub/my.app"), "group%2Fsub%2Fmy.app");
        assert_eq!(encode("42"), "42");
    }

    #[test]
    fn next_page_comes_from_headers_or_link() {
        let mut h = HeaderMap::new();
        h.insert("x-next-page", HeaderValue::from_static("3"));
        assert_eq!(next_page(&h), Some(3));
        h.insert("x-next-page", HeaderValue::from_static(""));
        assert_eq!(next_page(&h), None);
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static(
                "<https://gitlab.example.com/api/v4/projects/8/jobs?id=8&page=2&per_page=3>; rel=\"next\", <https://gitlab.example.com/api/v4/projects/8/jobs?id=8&page=1&per_page=3>; rel=\"first\"",
            ),
        );
        assert_eq!(next_page(&h), Some(2));
    }
}
