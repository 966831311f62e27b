//! The HTTP layer: GitLab's REST v4 routes under `/api/v4`, with GitLab's authentication,
//! pagination, rate-limit and error answers, and the simulator's own control API under
//! `/-/sim` for tests and demos.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::model::{
    Job, JobStatus, NewJob, NewRunner, Project, Runner, RunnerType, World, WorldError,
};
use crate::{Faults, Shared};

type S = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let v4 = Router::new()
        .route("/user", get(user))
        .route("/version", get(version))
        .route("/projects", get(list_projects))
        .route("/projects/{id}", get(get_project))
        .route("/projects/{id}/jobs", get(project_jobs))
        .route("/projects/{id}/jobs/{job}", get(project_job))
        .route(
            "/projects/{id}/runners",
            get(project_runners).post(assign_runner),
        )
        .route("/groups/{id}", get(get_group))
        .route("/groups/{id}/projects", get(group_projects))
        .route("/groups/{id}/subgroups", get(subgroups))
        .route("/groups/{id}/descendant_groups", get(descendant_groups))
        .route("/user/runners", post(create_runner))
        .route("/runners", get(list_runners))
        .route("/runners/all", get(list_runners))
        .route("/runners/verify", post(verify_runner))
        .route(
            "/runners/{id}",
            get(get_runner).put(update_runner).delete(delete_runner),
        )
        .route("/runners/{id}/jobs", get(runner_jobs))
        .route("/runners/{id}/managers", get(runner_managers))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), gate));
    let control = Router::new()
        .route("/projects", post(sim_add_project))
        .route("/jobs", post(sim_enqueue).get(sim_jobs))
        .route("/stats", get(sim_stats))
        .route("/faults", axum::routing::put(sim_faults))
        .route("/runners/{id}/online", post(sim_runner_online));
    Router::new()
        .nest("/api/v4", v4)
        .nest("/-/sim", control)
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------
// Authentication, faults and rate limits, in GitLab's shapes.

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers.get("private-token").and_then(|v| v.to_str().ok()) {
        return Some(t.to_string());
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

/// Runs before every `/api/v4` request: latency, injected faults, authentication, rate limit.
async fn gate(State(s): S, req: Request, next: Next) -> Response {
    let (latency, draw) = {
        let mut f = s.faults.lock().unwrap_or_else(|e| e.into_inner());
        let (faults, rng) = &mut *f;
        let draw: f64 = rng.gen();
        (
            faults.latency_ms,
            (draw, faults.error_rate, faults.throttle_rate),
        )
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    s.world().counters.api_requests += 1;
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.to_string());
    s.requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(format!("{} /api/v4{target}", req.method()));
    if let Some(base) = &s.config.redirect_to {
        return redirect(&format!("{}/api/v4{target}", base.trim_end_matches('/')));
    }
    let (d, err, thr) = draw;
    if d < err {
        s.world().counters.injected_errors += 1;
        if s.config.html_errors {
            return proxy_error_page();
        }
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error",
        );
    }
    if d < err + thr {
        s.world().counters.injected_throttles += 1;
        return throttled(1, None);
    }
    // Runners authenticate with their own token in the body, not a user token.
    if req.uri().path().ends_with("/runners/verify") {
        return next.run(req).await;
    }
    let Some(token) = token_of(req.headers())
        .filter(|t| s.config.tokens.contains(t) || s.config.token_scopes.contains_key(t))
    else {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    };
    if let Some(scopes) = s.config.token_scopes.get(&token) {
        let needed = needed_scope(req.method(), req.uri().path());
        if !scopes.iter().any(|have| have == "api" || have == needed) {
            return insufficient_scope(needed);
        }
    }
    let Some(limit) = s.config.rate_limit else {
        return next.run(req).await;
    };
    let (observed, reset_in, reset_at) = {
        let mut r = s.rate.lock().unwrap_or_else(|e| e.into_inner());
        if r.started.elapsed() >= s.config.rate_limit_period {
            r.started = std::time::Instant::now();
            r.counts.clear();
        }
        let c = {
            let c = r.counts.entry(token).or_default();
            *c += 1;
            *c
        };
        let left = s
            .config
            .rate_limit_period
            .saturating_sub(r.started.elapsed());
        (
            c,
            left,
            Utc::now() + chrono::Duration::from_std(left).unwrap_or_default(),
        )
    };
    let headers = RateHeaders {
        limit,
        observed,
        reset_at,
    };
    if observed > limit {
        s.world().counters.rate_limited += 1;
        let secs = reset_in.as_secs_f64().ceil().max(1.0) as u64;
        return throttled(secs, Some(headers));
    }
    let mut resp = next.run(req).await;
    headers.apply(resp.headers_mut());
    resp
}

struct RateHeaders {
    limit: u32,
    observed: u32,
    reset_at: DateTime<Utc>,
}

impl RateHeaders {
    fn apply(&self, h: &mut HeaderMap) {
        let mut set = |k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        set("ratelimit-name", "throttle_authenticated_api".into());
        set("ratelimit-limit", self.limit.to_string());
        set("ratelimit-observed", self.observed.to_string());
        set(
            "ratelimit-remaining",
            self.limit.saturating_sub(self.observed).to_string(),
        );
        set("ratelimit-reset", self.reset_at.timestamp().to_string());
        set(
            "ratelimit-resettime",
            self.reset_at
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        );
    }
}

/// GitLab's throttle answer: `429`, `Retry-After`, body `Retry later`.
fn throttled(retry_after: u64, headers: Option<RateHeaders>) -> Response {
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, "Retry later\n").into_response();
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from(retry_after));
    if let Some(h) = headers {
        h.apply(resp.headers_mut());
    }
    resp
}

/// The narrowest scope that allows a call: creating a runner needs `create_runner`,
/// changing one `manage_runner`, reading `read_api`; `api` allows everything.
fn needed_scope(method: &axum::http::Method, path: &str) -> &'static str {
    use axum::http::Method;
    let path = path.trim_start_matches("/api/v4");
    if method == Method::GET {
        "read_api"
    } else if path == "/user/runners" {
        "create_runner"
    } else if path.starts_with("/runners/") || path.ends_with("/runners") {
        "manage_runner"
    } else {
        "api"
    }
}

/// GitLab's answer to a token without the scope a call needs: `403`, an OAuth error body
/// naming the scopes that would do, and the same in `WWW-Authenticate`.
fn insufficient_scope(needed: &str) -> Response {
    let description = "The request requires higher privileges than provided by the access token.";
    let scope = format!("api {needed}");
    let mut resp = (
        StatusCode::FORBIDDEN,
        Json(json!({
            "error": "insufficient_scope",
            "error_description": description,
            "scope": scope,
        })),
    )
        .into_response();
    let challenge = format!(
        "Bearer realm=\"Protected by OAuth 2.0\", error=\"insufficient_scope\", error_description=\"{description}\", scope=\"{scope}\""
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert("www-authenticate", v);
    }
    resp
}

/// What omnibus nginx answers on `http://` when GitLab forces https: `301` to the https
/// URL, with nginx's small HTML page.
fn redirect(location: &str) -> Response {
    let mut resp = (
        StatusCode::MOVED_PERMANENTLY,
        [("content-type", "text/html")],
        "<html>\r\n<head><title>301 Moved Permanently</title></head>\r\n<body>\r\n<center><h1>301 Moved Permanently</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert("location", v);
    }
    resp
}

/// The error page a proxy in front of GitLab serves when GitLab does not answer: HTML on
/// many lines, not the API's JSON.
fn proxy_error_page() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        [("content-type", "text/html; charset=utf-8")],
        "<!DOCTYPE html>\n<html>\n<head>\n  <meta charset=\"utf-8\">\n  <title>GitLab is not responding (502)</title>\n  <style>body { font-family: sans-serif; }</style>\n</head>\n<body>\n  <h1>502</h1>\n  <h3>Whoops, GitLab is taking too much time to respond.</h3>\n  <p>Try refreshing the page, or going back and attempting the action again.</p>\n</body>\n</html>\n",
    )
        .into_response()
}

async fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "404 Not Found")
}

fn bad_request(m: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": m }))).into_response()
}

fn world_error(e: WorldError) -> Response {
    match e {
        WorldError::NotFound { .. } => message(StatusCode::NOT_FOUND, &e.to_string()),
        WorldError::Invalid { message: m } => {
            (StatusCode::BAD_REQUEST, Json(json!({ "error": m }))).into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Query strings, bodies and pagination.

/// A parsed query string; `scope[]=a&scope[]=b` and `scope=a,b` both give `[a, b]`.
struct Query(Vec<(String, String)>);

impl Query {
    fn new(raw: Option<String>) -> Query {
        let raw = raw.unwrap_or_default();
        Query(
            form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn list(&self, key: &str) -> Vec<String> {
        let bracket = format!("{key}[]");
        self.0
            .iter()
            .filter(|(k, _)| *k == key || *k == bracket)
            .flat_map(|(_, v)| v.split(',').map(str::to_string))
            .filter(|v| !v.is_empty())
            .collect()
    }
    fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}

/// `page` and `per_page` (default 20, at most 100), as GitLab reads them.
fn page_params(q: &Query) -> (usize, usize) {
    let page = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let per_page = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(20usize)
        .min(100);
    (page, per_page)
}

/// One page of `items`, with `x-*` pagination headers and a `Link` header.
fn paginate(items: Vec<Value>, q: &Query, uri: &Uri, headers: &HeaderMap) -> Response {
    let (page, per_page) = page_params(q);
    let total = items.len();
    let total_pages = total.div_ceil(per_page).max(1);
    let body: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let link_to = |p: usize| {
        let mut qs = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &q.0 {
            if k != "page" && k != "per_page" {
                qs.append_pair(k, v);
            }
        }
        qs.append_pair("page", &p.to_string());
        qs.append_pair("per_page", &per_page.to_string());
        format!("<http://{host}{}?{}>", uri.path(), qs.finish())
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
    }
    if page < total_pages {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
    }
    links.push(format!("{}; rel=\"first\"", link_to(1)));
    links.push(format!("{}; rel=\"last\"", link_to(total_pages)));
    let mut resp = Json(Value::Array(body)).into_response();
    let h = resp.headers_mut();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set("x-page", page.to_string());
    set("x-per-page", per_page.to_string());
    set("x-total", total.to_string());
    set("x-total-pages", total_pages.to_string());
    set(
        "x-next-page",
        if page < total_pages {
            (page + 1).to_string()
        } else {
            String::new()
        },
    );
    set(
        "x-prev-page",
        if page > 1 && page <= total_pages + 1 {
            (page - 1).to_string()
        } else {
            String::new()
        },
    );
    set("link", links.join(", "));
    resp
}

/// Request attributes from a JSON or form body (GitLab accepts both), merged over the query.
struct Params(Map<String, Value>);

impl Params {
    fn new(headers: &HeaderMap, body: &Bytes, query: &Query) -> Result<Params, &'static str> {
        let mut map = Map::new();
        for (k, v) in &query.0 {
            map.insert(
                k.trim_end_matches("[]").to_string(),
                Value::String(v.clone()),
            );
        }
        let ctype = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if body.is_empty() {
            return Ok(Params(map));
        }
        if ctype.starts_with("application/json") {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(o)) => map.extend(o),
                _ => return Err("body is not a JSON object"),
            }
        } else {
            for (k, v) in form_urlencoded::parse(body) {
                let (k, v) = (k.into_owned(), v.into_owned());
                if let Some(base) = k.strip_suffix("[]") {
                    let e = map
                        .entry(base.to_string())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(a) = e {
                        a.push(Value::String(v));
                    }
                } else {
                    map.insert(k, Value::String(v));
                }
            }
        }
        Ok(Params(map))
    }
    fn str(&self, k: &str) -> Option<String> {
        match self.0.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    fn bool(&self, k: &str) -> Option<bool> {
        match self.0.get(k)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) => Some(s.eq_ignore_ascii_case("true") || s == "1"),
            Value::Number(n) => Some(n.as_u64() == Some(1)),
            _ => None,
        }
    }
    fn u64(&self, k: &str) -> Option<u64> {
        match self.0.get(k)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
    fn list(&self, k: &str) -> Option<Vec<String>> {
        match self.0.get(k)? {
            Value::Array(a) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            Value::String(s) => Some(
                s.split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect(),
            ),
            _ => None,
        }
    }
}

fn ts(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn opt_ts(t: Option<DateTime<Utc>>) -> Value {
    t.map(ts).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------------
// JSON shapes, following the examples in GitLab's API documentation.

fn project_json(p: &Project, w: &World, base: &str) -> Value {
    let ns = p.group_id.and_then(|g| w.groups.get(&g));
    json!({
        "id": p.id,
        "description": null,
        "name": p.name,
        "name_with_namespace": p.path_with_namespace.replace('/', " / "),
        "path": p.path,
        "path_with_namespace": p.path_with_namespace,
        "created_at": ts(p.created_at),
        "default_branch": "main",
        "tag_list": [],
        "topics": [],
        "archived": false,
        "visibility": "private",
        "web_url": format!("{base}/{}", p.path_with_namespace),
        "jobs_enabled": true,
        "shared_runners_enabled": true,
        "namespace": match ns {
            Some(g) => json!({"id": g.id, "name": g.name, "path": g.path, "kind": "group", "full_path": g.full_path, "parent_id": g.parent_id}),
            None => json!({"id": 0, "name": "root", "path": "root", "kind": "user", "full_path": "root", "parent_id": null}),
        },
    })
}

fn group_json(g: &crate::model::Group, base: &str) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "path": g.path,
        "description": "",
        "visibility": "private",
        "web_url": format!("{base}/groups/{}", g.full_path),
        "full_name": g.full_path.replace('/', " / "),
        "full_path": g.full_path,
        "parent_id": g.parent_id,
        "created_at": ts(g.created_at),
    })
}

fn runner_json(r: &Runner, now: DateTime<Utc>) -> Value {
    json!({
        "active": !r.paused,
        "paused": r.paused,
        "description": r.description,
        "id": r.id,
        "ip_address": "",
        "is_shared": r.runner_type == RunnerType::InstanceType,
        "runner_type": r.runner_type.as_str(),
        "name": null,
        "online": r.online(now),
        "status": r.status(now),
    })
}

fn runner_details_json(r: &Runner, w: &World, now: DateTime<Utc>, base: &str) -> Value {
    let mut v = runner_json(r, now);
    let projects: Vec<Value> = r
        .projects
        .iter()
        .filter_map(|p| w.projects.get(p))
        .map(|p| {
            json!({
                "id": p.id,
                "name": p.name,
                "name_with_namespace": p.path_with_namespace.replace('/', " / "),
                "path": p.path,
                "path_with_namespace": p.path_with_namespace,
            })
        })
        .collect();
    let groups: Vec<Value> = r
        .group_id
        .and_then(|g| w.groups.get(&g))
        .map(|g| vec![json!({"id": g.id, "web_url": format!("{base}/groups/{}", g.full_path), "name": g.name})])
        .unwrap_or_default();
    let extra = json!({
        "architecture": null,
        "platform": null,
        "revision": null,
        "version": null,
        "contacted_at": opt_ts(r.contacted_at(now)),
        "maintenance_note": r.maintenance_note,
        "projects": projects,
        "groups": groups,
        "tag_list": r.tag_list,
        "run_untagged": r.run_untagged,
        "locked": r.locked,
        "access_level": r.access_level,
        "maximum_timeout": r.maximum_timeout,
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
        a.extend(b);
    }
    v
}

fn job_json(j: &Job, w: &World, now: DateTime<Utc>, base: &str) -> Value {
    let runner = j.runner_id.and_then(|r| w.runners.get(&r));
    let manager = runner.and_then(|r| {
        r.managers
            .iter()
            .find(|m| Some(m.id) == j.runner_manager_id)
    });
    let project = w.projects.get(&j.project_id);
    let duration = match (j.started_at, j.finished_at) {
        (Some(s), Some(f)) => json!(crate::model::seconds(f - s)),
        (Some(s), None) => json!(crate::model::seconds(now - s)),
        _ => Value::Null,
    };
    json!({
        "commit": {
            "author_email": "admin@example.com",
            "author_name": "Administrator",
            "created_at": ts(j.created_at),
            "id": "2293ada6b400935a1378653304eaf6221e0fdb8f",
            "message": "simulated",
            "short_id": "2293ada6",
            "title": "simulated",
        },
        "coverage": null,
        "archived": false,
        "source": "push",
        "allow_failure": false,
        "created_at": ts(j.created_at),
        "started_at": opt_ts(j.started_at),
        "finished_at": opt_ts(j.finished_at),
        "erased_at": null,
        "duration": duration,
        "queued_duration": j.queued_seconds(now),
        "artifacts": [],
        "artifacts_expire_at": null,
        "tag_list": j.tag_list,
        "id": j.id,
        "name": j.name,
        "pipeline": {
            "id": j.pipeline_id,
            "project_id": j.project_id,
            "ref": j.git_ref,
            "sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
            "status": j.status.as_str(),
        },
        "ref": j.git_ref,
        "runner": runner.map(|r| runner_json(r, now)),
        "runner_manager": match (runner, manager) {
            (Some(r), Some(m)) => json!({
                "id": m.id, "system_id": m.system_id, "version": "17.0.0", "revision": "44feccdf",
                "platform": "linux", "architecture": "amd64", "created_at": ts(m.created_at),
                "contacted_at": ts(m.contacted_at), "ip_address": "127.0.0.1", "status": r.status(now),
            }),
            _ => Value::Null,
        },
        "stage": j.stage,
        "status": j.status.as_str(),
        "failure_reason": j.failure_reason,
        "tag": false,
        "web_url": format!("{base}/{}/-/jobs/{}", project.map(|p| p.path_with_namespace.as_str()).unwrap_or("unknown"), j.id),
        "project": {
            "id": j.project_id,
            "name": project.map(|p| p.name.clone()),
            "path_with_namespace": project.map(|p| p.path_with_namespace.clone()),
            "ci_job_token_scope_enabled": false,
        },
        "user": {
            "id": 1, "name": "Administrator", "username": "root", "state": "active",
            "avatar_url": null, "web_url": format!("{base}/root"),
            "created_at": "2015-12-21T13:14:24.077Z", "bio": null, "location": null,
            "public_email": "", "linkedin": "", "twitter": "", "website_url": "", "organization": ""
        },
    })
}

// ---------------------------------------------------------------------------------------
// /api/v4 handlers.

async fn user(State(s): S) -> Json<Value> {
    let base = &s.base_url;
    Json(json!({
        "id": 1, "username": "root", "name": "Administrator", "state": "active",
        "avatar_url": null, "web_url": format!("{base}/root"), "is_admin": true,
        "created_at": "2015-12-21T13:14:24.077Z",
    }))
}

async fn version() -> Json<Value> {
    Json(json!({"version": "17.0.0-sim", "revision": "sim", "enterprise": false}))
}

async fn list_projects(
    State(s): S,
    RawQuery(q): RawQuery,
    OriginalUri(uri): OriginalUri,
    h: HeaderMap,
) -> Response {
    let q = Query::new(q);
    let w = s.world();
    let items = w
        .projects
        .values()
        .map(|p| project_json(p, &w, &s.base_url))
        .collect();
    paginate(items, &q, &uri, &h)
}

async fn get_project(State(s): S, Path(id): Path<String>) -> Response {
    let w = s.world();
    match w.find_project(&id) {
        Ok(p) => Json(project_json(p, &w, &s.base_url)).into_response(),
        Err(e) => world_error(e),
    }
}

async fn project_jobs(
    State(s): S,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    OriginalUri(uri): OriginalUri,
    h: HeaderMap,
) -> Response {
    let q = Query::new(q);
    let scope = q.list("scope");
    let now = s.clock.now();
    let w = s.world();
    let pid = match w.find_project(&id) {
        Ok(p) => p.id,
        Err(e) => return world_error(e),
    };
    // Newest first, as GitLab orders them.
    let items = w
        .jobs
        .values()
        .rev()
        .filter(|j| j.project_id == pid)
        .filter(|j| scope.is_empty() || scope.iter().any(|s| s == j.status.as_str()))
        .map(|j| job_json(j, &w, now, &s.base_url))
        .collect();
    paginate(items, &q, &uri, &h)
}

async fn project_job(State(s): S, Path((id, job)): Path<(String, u64)>) -> Response {
    let now = s.clock.now();
    let w = s.world();
    let pid = match w.find_project(&id) {
        Ok(p) => p.id,
        Err(e) => return world_error(e),
    };
    match w.jobs.get(&job).filter(|j| j.project_id == pid) {
        Some(j) => Json(job_json(j, &w, now, &s.base_url)).into_response(),
        None => message(StatusCode::NOT_FOUND, "404 Not found"),
    }
}

async fn project_runners(
    State(s): S,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    OriginalUri(uri): OriginalUri,
    h: HeaderMap,
) -> Response {
    let q = Query::new(q);
    let now = s.clock.now();
    let w = s.world();
    let project = match w.find_project(&id) {
        Ok(p) => p.clone(),
        Err(e) => return world_error(e),
    };
    let items = w
        .runners
        .values()
        .filter(|r| w.runner_serves(r, &project))
        .map(|r| runner_json(r, now))
        .collect();
    paginate(items, &q, &uri, &h)
}

async fn assign_runner(
    State(s): S,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let q = Query::new(q);
    let p = match Params::new(&h, &body, &q) {
        Ok(p) => p,
        Err(m) => return bad_request(m),
    };
    let Some(runner_id) = p.u64("runner_id") else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "runner_id is missing"})),
        )
            .into_response();
    };
    let now = s.clock.now();
    let mut w = s.world();
    let pid = match w.find_project(&id) {
        Ok(p) => p.id,
        Err(e) => return world_error(e),
    };
    let Some(r) = w.runners.get_mut(&runner_id) else {
        return message(StatusCode::NOT_FOUND, "404 Runner Not Found");
    };
    if r.runner_type != RunnerType::ProjectType {
        return message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    if r.projects.contains(&pid) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": {"runner_projects.project_id": ["has already been taken"]}})),
        )
            .into_response();
    }
    r.projects.push(pid);
    let r = r.clone();
    (StatusCode::CREATED, Json(runner_json(&r, now))).into_response()
}

/// `GET /groups/:id`: the group with its projects, as GitLab answers unless asked
/// `with_projects=false`.
async fn get_group(State(s): S, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let q = Query::new(q);
    let w = s.world();
    match w.find_group(&id) {
        Ok(g) => {
            let mut body = group_json(g, &s.base_url);
            if q.get("with_projects") != Some("false") {
                body["projects"] = w
                    .group_projects(g.id, false)
                    .iter()
                    .map(|p| project_json(p, &w, &s.base_url))
                    .collect();
                body["shared_projects"] = json!([]);
            }
            Json(body).into_response()
        }
        Err(e) => world_error(e),
    }
}

async fn group_projects(
    State(s): S,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    OriginalUri(uri): OriginalUri,
    h: HeaderMap,
) -> Response {
    let q = Query::new(q);
    let w = s.world();
    let gid = match w.find_group(&id) {
        Ok(g) => g.id,
        Err(e) => return world_error(e),
    };
    let items = w
        .group_projects(gid, q.flag("include_subgroups"))
        .iter()
        .map(|p| project_json(p, &w, &s.base_url))
        .collect();
    paginate(items, &q, &uri, &h)
}

async fn subgroups(
    State(s): S,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    OriginalUri(uri): OriginalUri,
    h: HeaderMap,
) -> Response {
    let q = Query::new(q);
    let w = s.world();
    let gid = match w.find_group(&id) {
        Ok(g) => g.id,
        Err(e) => return world_error(e),
    };
    let items = w
        .groups
        .values()
        .filter(|g| g.parent_id == Some(gid))
        .map(|g| group_json(g, &s.base_url))
        .collect();
    paginate(items, &q, &uri, &h)
}

async fn descendant_groups(
    State(s): S,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    OriginalUri(uri): OriginalUri,
    h: HeaderMap,
) -> Response {
    let q = Query::new(q);
    let w = s.world();
    let gid = match w.find_group(&id) {
        Ok(g) => g.id,
        Err(e) => return world_error(e),
    };
    let items = w
        .group_and_descendants(gid)
        .into_iter()
        .skip(1)
        .filter_map(|g| w.groups.get(&g))
        .map(|g| group_json(g, &s.base_url))
        .collect();
    paginate(items, &q, &uri, &h)
}

async fn create_runner(State(s): S, RawQuery(q): RawQuery, h: HeaderMap, body: Bytes) -> Response {
    let q = Query::new(q);
    let p = match Params::new(&h, &body, &q) {
        Ok(p) => p,
        Err(m) => return bad_request(m),
    };
    let Some(runner_type) = p.str("runner_type").as_deref().and_then(RunnerType::parse) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": "runner_type is missing, runner_type does not have a valid value"}),
            ),
        )
            .into_response();
    };
    let spec = NewRunner {
        runner_type,
        group_id: p.u64("group_id"),
        project_id: p.u64("project_id"),
        description: p.str("description").unwrap_or_default(),
        paused: p.bool("paused").unwrap_or(false),
        locked: p.bool("locked").unwrap_or(false),
        run_untagged: p.bool("run_untagged").unwrap_or(true),
        tag_list: p.list("tag_list").unwrap_or_default(),
        access_level: p
            .str("access_level")
            .unwrap_or_else(|| "not_protected".into()),
        maximum_timeout: p.u64("maximum_timeout"),
        maintenance_note: p.str("maintenance_note"),
    };
    let now = s.clock.now();
    let created = {
        let mut rng = s.faults.lock().unwrap_or_else(|e| e.into_inner());
        s.world().create_runner(spec, &mut rng.1, now)
    };
    match created {
        Ok(r) => (
            StatusCode::CREATED,
            Json(json!({
                "id": r.id,
                "token": r.token,
                "token_expires_at": opt_ts(r.token_expires_at),
            })),
        )
            .into_response(),
        Err(e) => world_error(e),
    }
}

async fn list_runners(
    State(s): S,
    RawQuery(q): RawQuery,
    OriginalUri(uri): OriginalUri,
    h: HeaderMap,
) -> Response {
    let q = Query::new(q);
    let now = s.clock.now();
    let w = s.world();
    let kind = q.get("type").and_then(RunnerType::parse);
    let paused = q.get("paused").map(|p| p == "true");
    let tags = q.list("tag_list");
    let items = w
        .runners
        .values()
        .filter(|r| kind.is_none_or(|k| r.runner_type == k))
        .filter(|r| paused.is_none_or(|p| r.paused == p))
        .filter(|r| tags.iter().all(|t| r.tag_list.contains(t)))
        .map(|r| runner_json(r, now))
        .collect();
    paginate(items, &q, &uri, &h)
}

async fn get_runner(State(s): S, Path(id): Path<u64>) -> Response {
    let now = s.clock.now();
    let w = s.world();
    match w.runners.get(&id) {
        Some(r) => Json(runner_details_json(r, &w, now, &s.base_url)).into_response(),
        None => message(StatusCode::NOT_FOUND, "404 Runner Not Found"),
    }
}

async fn update_runner(
    State(s): S,
    Path(id): Path<u64>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let q = Query::new(q);
    let p = match Params::new(&h, &body, &q) {
        Ok(p) => p,
        Err(m) => return bad_request(m),
    };
    let now = s.clock.now();
    let mut w = s.world();
    let Some(r) = w.runners.get_mut(&id) else {
        return message(StatusCode::NOT_FOUND, "404 Runner Not Found");
    };
    if let Some(v) = p.str("description") {
        r.description = v;
    }
    if let Some(v) = p.bool("paused") {
        r.paused = v;
    }
    if let Some(v) = p.bool("active") {
        r.paused = !v;
    }
    if let Some(v) = p.list("tag_list") {
        r.tag_list = v;
    }
    if let Some(v) = p.bool("run_untagged") {
        r.run_untagged = v;
    }
    if let Some(v) = p.bool("locked") {
        r.locked = v;
    }
    if let Some(v) = p.str("access_level") {
        r.access_level = v;
    }
    if let Some(v) = p.u64("maximum_timeout") {
        r.maximum_timeout = Some(v);
    }
    if let Some(v) = p.str("maintenance_note") {
        r.maintenance_note = Some(v);
    }
    let r = r.clone();
    Json(runner_details_json(&r, &w, now, &s.base_url)).into_response()
}

async fn delete_runner(State(s): S, Path(id): Path<u64>) -> Response {
    let now = s.clock.now();
    let deleted = s.world().delete_runner(id, now);
    match deleted {
        Ok(events) => {
            s.send_events(events);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(_) => message(StatusCode::NOT_FOUND, "404 Runner Not Found"),
    }
}

async fn runner_jobs(
    State(s): S,
    Path(id): Path<u64>,
    RawQuery(q): RawQuery,
    OriginalUri(uri): OriginalUri,
    h: HeaderMap,
) -> Response {
    let q = Query::new(q);
    let now = s.clock.now();
    let w = s.world();
    if !w.runners.contains_key(&id) {
        return message(StatusCode::NOT_FOUND, "404 Runner Not Found");
    }
    let status = q.get("status").map(str::to_string);
    if let Some(st) = &status {
        if !["running", "success", "failed", "canceled"].contains(&st.as_str()) {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "status does not have a valid value"})),
            )
                .into_response();
        }
    }
    let items = w
        .jobs
        .values()
        .rev()
        .filter(|j| j.runner_id == Some(id))
        .filter(|j| status.as_deref().is_none_or(|st| j.status.as_str() == st))
        .map(|j| job_json(j, &w, now, &s.base_url))
        .collect();
    paginate(items, &q, &uri, &h)
}

async fn runner_managers(State(s): S, Path(id): Path<u64>) -> Response {
    let now = s.clock.now();
    let w = s.world();
    let Some(r) = w.runners.get(&id) else {
        return message(StatusCode::NOT_FOUND, "404 Runner Not Found");
    };
    let items: Vec<Value> = r
        .managers
        .iter()
        .map(|m| {
            json!({
                "id": m.id, "system_id": m.system_id, "version": "17.0.0", "revision": "44feccdf",
                "platform": "linux", "architecture": "amd64", "created_at": ts(m.created_at),
                "contacted_at": ts(m.contacted_at), "ip_address": "127.0.0.1", "status": r.status(now),
            })
        })
        .collect();
    Json(Value::Array(items)).into_response()
}

async fn verify_runner(State(s): S, RawQuery(q): RawQuery, h: HeaderMap, body: Bytes) -> Response {
    let q = Query::new(q);
    let p = match Params::new(&h, &body, &q) {
        Ok(p) => p,
        Err(m) => return bad_request(m),
    };
    let Some(token) = p.str("token") else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "token is missing"})),
        )
            .into_response();
    };
    let now = s.clock.now();
    let verified = s
        .world()
        .verify_runner(&token, p.str("system_id").as_deref(), now);
    match verified {
        Some(r) => Json(json!({
            "id": r.id,
            "token": r.token,
            "token_expires_at": opt_ts(r.token_expires_at),
        }))
        .into_response(),
        None => message(StatusCode::FORBIDDEN, "403 Forbidden"),
    }
}

// ---------------------------------------------------------------------------------------
// /-/sim control API (no authentication: tests and demos on 127.0.0.1 only).

async fn sim_add_project(State(s): S, Json(body): Json<Value>) -> Response {
    let Some(path) = body.get("path_with_namespace").and_then(Value::as_str) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "path_with_namespace is missing"})),
        )
            .into_response();
    };
    let now = s.clock.now();
    let mut w = s.world();
    let p = w.ensure_project(path, now);
    (StatusCode::CREATED, Json(project_json(&p, &w, &s.base_url))).into_response()
}

async fn sim_enqueue(State(s): S, Json(body): Json<Value>) -> Response {
    let count = body.get("count").and_then(Value::as_u64).unwrap_or(1);
    let spec: NewJob = match serde_json::from_value(body) {
        Ok(j) => j,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string()})),
            )
                .into_response()
        }
    };
    let now = s.clock.now();
    let mut created = Vec::new();
    let mut events = Vec::new();
    {
        let mut w = s.world();
        for _ in 0..count {
            match w.enqueue(spec.clone(), now) {
                Ok(j) => {
                    let project = w.projects[&j.project_id].clone();
                    created.push(json!({"id": j.id, "project_id": j.project_id}));
                    events.push(crate::model::JobEvent {
                        job: j,
                        project,
                        runner: None,
                    });
                }
                Err(e) => return world_error(e),
            }
        }
    }
    s.send_events(events);
    (StatusCode::CREATED, Json(Value::Array(created))).into_response()
}

async fn sim_jobs(State(s): S) -> Response {
    let now = s.clock.now();
    let w = s.world();
    let jobs: Vec<Value> = w
        .jobs
        .values()
        .map(|j| {
            json!({
                "id": j.id, "project_id": j.project_id, "status": j.status.as_str(),
                "tag_list": j.tag_list, "created_at": ts(j.created_at),
                "started_at": opt_ts(j.started_at), "finished_at": opt_ts(j.finished_at),
                "queued_seconds": j.queued_seconds(now), "runner_id": j.runner_id,
                "failure_reason": j.failure_reason,
            })
        })
        .collect();
    Json(Value::Array(jobs)).into_response()
}

async fn sim_stats(State(s): S) -> Response {
    let now = s.clock.now();
    let w = s.world();
    let count = |st: JobStatus| w.jobs.values().filter(|j| j.status == st).count();
    Json(json!({
        "now": ts(now),
        "speed": s.clock.speed(),
        "jobs": {
            "pending": count(JobStatus::Pending),
            "running": count(JobStatus::Running),
            "success": count(JobStatus::Success),
            "failed": count(JobStatus::Failed),
            "future": w.future.len(),
        },
        "runners": {
            "total": w.runners.len(),
            "online": w.runners.values().filter(|r| r.online(now)).count(),
            "paused": w.runners.values().filter(|r| r.paused).count(),
        },
        "counters": w.counters,
    }))
    .into_response()
}

async fn sim_faults(State(s): S, Json(f): Json<Faults>) -> Response {
    s.faults.lock().unwrap_or_else(|e| e.into_inner()).0 = f.clone();
    Json(serde_json::to_value(f).unwrap_or_default()).into_response()
}

async fn sim_runner_online(State(s): S, Path(id): Path<u64>) -> Response {
    let now = s.clock.now();
    let mut w = s.world();
    let Some(token) = w.runners.get(&id).map(|r| r.token.clone()) else {
        return message(StatusCode::NOT_FOUND, "404 Runner Not Found");
    };
    w.verify_runner(&token, Some(&format!("s_sim{id}")), now);
    StatusCode::NO_CONTENT.into_response()
}
