//! A test double of the Hetzner Cloud API on 127.0.0.1: servers, actions, label
//! selectors, pagination, rate-limit headers, and queued faults. Every answer is built from
//! the documented examples in `tests/fixtures/hetzner/`, so the provider reads the shapes
//! the real API sends. fleet-cli's tests include this module too, each using part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// The token the double accepts.
pub const TOKEN: &str = "test-token-5f1c";

/// A documented example body.
pub fn fixture(name: &str) -> Value {
    // Through the workspace, so the fleet-cli tests that include this module find them too.
    let path = format!(
        "{}/../fleet-providers/tests/fixtures/hetzner/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An answer queued for the next request that matches `method` and `path`.
pub struct Fault {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub body: Value,
    /// `RateLimit-Reset`, seconds from now, sent with `RateLimit-Remaining: 0`.
    pub reset_in: Option<i64>,
}

/// One request the double received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub body: Option<Value>,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Default)]
pub struct World {
    next_id: u64,
    pub servers: BTreeMap<u64, Value>,
    /// Action id to (action, polls left before it ends).
    actions: BTreeMap<u64, (Value, u32)>,
    /// Server types with no capacity (`resource_unavailable`).
    pub unavailable: BTreeSet<String>,
    /// Images that exist; others are `invalid_input`.
    pub images: BTreeSet<String>,
    /// Create actions end in `error`.
    pub fail_actions: bool,
    pub faults: VecDeque<Fault>,
    pub seen: Vec<Seen>,
    /// Requests left in the rate-limit window (`RateLimit-Remaining`).
    remaining: u32,
}

/// The double: its URL (`http://127.0.0.1:port/v1`) and world.
pub struct Double {
    pub url: String,
    pub world: Arc<Mutex<World>>,
}

impl Double {
    pub async fn start() -> Double {
        let world = Arc::new(Mutex::new(World {
            next_id: 1000,
            images: ["ubuntu-24.04", "debian-12"].map(String::from).into(),
            remaining: 3600,
            ..World::default()
        }));
        let w = world.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let w = w.clone();
                async move { handle(&w, method, uri, headers, body) }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Double {
            url: format!("http://{addr}/v1"),
            world,
        }
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    /// Puts a server straight into the world (not through the API).
    pub fn seed(&self, name: &str, labels: Value) -> u64 {
        let mut w = self.world();
        let id = w.new_id();
        let mut s = fixture("get_server")["server"].clone();
        s["id"] = json!(id);
        s["name"] = json!(name);
        s["labels"] = labels;
        w.servers.insert(id, s);
        id
    }

    /// Requests seen, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.world()
            .seen
            .iter()
            .map(|s| format!("{} {}", s.method, s.uri))
            .collect()
    }
}

impl World {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn new_action(&mut self, command: &str, fails: bool) -> Value {
        let id = self.new_id();
        let mut a = fixture("action_running")["action"].clone();
        a["id"] = json!(id);
        a["command"] = json!(command);
        self.actions
            .insert(id, (a.clone(), if fails { 0 } else { 1 }));
        if fails {
            let mut e = fixture("action_error")["action"].clone();
            e["id"] = json!(id);
            e["command"] = json!(command);
            self.actions.insert(id, (e, 0));
        }
        a
    }
}

fn error(status: StatusCode, name: &str) -> (StatusCode, Value) {
    (status, fixture(name))
}

fn handle(
    world: &Mutex<World>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = world.lock().unwrap();
    let now = chrono::Utc::now();
    w.seen.push(Seen {
        method: method.clone(),
        uri: uri.to_string(),
        body: serde_json::from_slice(&body).ok(),
        at: now,
    });
    w.remaining = w.remaining.saturating_sub(1);
    let path = uri.path().to_string();
    let mut reset_in = None;
    let fault = w
        .faults
        .iter()
        .position(|f| f.method == method && f.path == path);
    let (status, value) = if let Some(i) = fault {
        let f = w.faults.remove(i).unwrap();
        reset_in = f.reset_in;
        (f.status, f.body)
    } else if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        error(StatusCode::UNAUTHORIZED, "error_unauthorized")
    } else {
        route(&mut w, &method, &path, uri.query().unwrap_or(""), &body)
    };
    let mut resp = (status, axum::Json(value)).into_response();
    let h = resp.headers_mut();
    let (remaining, reset) = match reset_in {
        Some(s) => (0, now.timestamp() + s),
        None => (w.remaining, now.timestamp() + 3600),
    };
    h.insert("ratelimit-limit", HeaderValue::from_static("3600"));
    h.insert("ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("ratelimit-reset", HeaderValue::from(reset));
    resp
}

fn query(q: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// `k=v,k2=v2` or `k` (the label exists).
fn matches(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => labels.get(k).and_then(Value::as_str) == Some(v),
            None => labels.get(term).is_some(),
        })
}

fn route(w: &mut World, method: &Method, path: &str, q: &str, body: &[u8]) -> (StatusCode, Value) {
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["servers"]) => create(w, body),
        ("GET", ["servers"]) => list(w, &query(q)),
        ("GET", ["servers", id]) => match id.parse().ok().and_then(|id| w.servers.get(&id)) {
            Some(s) => (StatusCode::OK, json!({ "server": s })),
            None => error(StatusCode::NOT_FOUND, "error_not_found"),
        },
        ("DELETE", ["servers", id]) => match id.parse().ok().and_then(|id| w.servers.remove(&id)) {
            Some(_) => {
                let mut d = fixture("delete_server");
                d["action"] = w.new_action("delete_server", false);
                (StatusCode::OK, d)
            }
            None => error(StatusCode::NOT_FOUND, "error_not_found"),
        },
        ("GET", ["actions", id]) => {
            let Some((a, polls)) = id.parse().ok().and_then(|id: u64| w.actions.get_mut(&id))
            else {
                return error(StatusCode::NOT_FOUND, "error_not_found");
            };
            if *polls == 0 && a["status"] == "running" {
                let mut done = fixture("action_success")["action"].clone();
                done["id"] = a["id"].clone();
                done["command"] = a["command"].clone();
                *a = done;
            }
            *polls = polls.saturating_sub(1);
            (StatusCode::OK, json!({ "action": a.clone() }))
        }
        _ => error(StatusCode::NOT_FOUND, "error_not_found"),
    }
}

fn create(w: &mut World, body: &[u8]) -> (StatusCode, Value) {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "error_invalid_input");
    };
    let name = req["name"].as_str().unwrap_or_default().to_string();
    let server_type = req["server_type"].as_str().unwrap_or_default().to_string();
    let image = req["image"].as_str().unwrap_or_default().to_string();
    if !w.images.contains(&image) {
        return error(StatusCode::BAD_REQUEST, "error_invalid_input");
    }
    if w.servers.values().any(|s| s["name"] == name.as_str()) {
        return error(StatusCode::CONFLICT, "error_uniqueness");
    }
    if w.unavailable.contains(&server_type) {
        return error(
            StatusCode::PRECONDITION_FAILED,
            "error_resource_unavailable",
        );
    }
    let id = w.new_id();
    let mut resp = fixture("create_server");
    let s = &mut resp["server"];
    s["id"] = json!(id);
    s["name"] = json!(name);
    s["server_type"]["name"] = json!(server_type);
    s["image"]["name"] = json!(image);
    s["labels"] = req["labels"].clone();
    s["created"] = json!(chrono::Utc::now().to_rfc3339());
    let mut stored = s.clone();
    stored["status"] = json!("running");
    w.servers.insert(id, stored);
    let fails = w.fail_actions;
    resp["action"] = w.new_action("create_server", fails);
    (StatusCode::CREATED, resp)
}

fn list(w: &World, q: &BTreeMap<String, String>) -> (StatusCode, Value) {
    let selector = q.get("label_selector").map(String::as_str).unwrap_or("");
    let all: Vec<&Value> = w
        .servers
        .values()
        .filter(|s| matches(selector, &s["labels"]))
        .filter(|s| q.get("name").is_none_or(|n| s["name"] == n.as_str()))
        .collect();
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(25)
        .clamp(1, 50);
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let last = all.len().div_ceil(per_page).max(1);
    let items: Vec<&Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .copied()
        .collect();
    let mut resp = fixture("list_servers");
    resp["servers"] = json!(items);
    resp["meta"]["pagination"] = json!({
        "page": page,
        "per_page": per_page,
        "previous_page": if page > 1 { json!(page - 1) } else { Value::Null },
        "next_page": if page < last { json!(page + 1) } else { Value::Null },
        "last_page": last,
        "total_entries": all.len(),
    });
    (StatusCode::OK, resp)
}
