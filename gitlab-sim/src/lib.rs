//! A stateful GitLab REST v4 simulator, for tests and demos on machines without GitLab.
//!
//! It serves, over real HTTP on 127.0.0.1, the part of GitLab's API a runner fleet uses:
//! projects and groups (with subgroups), the job queue (`pending` → `running` → `success`),
//! runners created with `POST /user/runners` and their managers, pagination and rate-limit
//! headers as GitLab sends them, job webhooks, and injected faults (a share of 500s and 429s,
//! added latency, drawn from a seed). Registered runners that are online and not paused act as
//! runner agents: they take pending jobs whose tags they match and finish them after the job's
//! duration. Time can run faster than the wall clock (`speed`), and a CSV trace can be replayed.
//!
//! Tests drive it through [`Sim`] in-process or through the control API under `/-/sim/`.

mod api;
pub mod model;
pub mod trace;
mod webhook;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::{rngs::StdRng, SeedableRng};
use tokio::sync::mpsc;

pub use model::{Counters, FinishedJob, Job, JobStatus, NewJob, Project, Runner, World};

/// Where job webhooks go.
#[derive(Clone)]
pub struct WebhookTarget {
    /// The URL GitLab POSTs to.
    pub url: String,
    /// Sent as `X-Gitlab-Token`.
    pub secret: String,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("secret", &"********")
            .finish()
    }
}

/// Faults injected into `/api/v4` answers.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Faults {
    /// Share of requests answered `500 Internal Server Error`.
    #[serde(default)]
    pub error_rate: f64,
    /// Share of requests answered `429 Too Many Requests` with `Retry-After: 1`.
    #[serde(default)]
    pub throttle_rate: f64,
    /// Added to every answer, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
}

/// How the simulator runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Tokens accepted in `PRIVATE-TOKEN` (or `Authorization: Bearer`).
    pub tokens: Vec<String>,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Seed of fault draws and runner tokens.
    pub seed: u64,
    /// Injected faults.
    pub faults: Faults,
    /// Requests per token allowed in each `rate_limit_period` (`None`: unlimited).
    pub rate_limit: Option<u32>,
    /// The rate-limit window.
    pub rate_limit_period: Duration,
    /// Job webhooks, if any.
    pub webhook: Option<WebhookTarget>,
    /// Simulated seconds until a new runner comes online by itself; `None` waits for
    /// `POST /runners/verify` (what a booted `gitlab-runner` does).
    pub runner_online_after: Option<f64>,
    /// Jobs one runner runs at once.
    pub runner_concurrency: u32,
    /// How often (wall time) the scheduler moves jobs along.
    pub tick: Duration,
    /// Tokens that carry only the listed scopes (`read_api`, `create_runner`,
    /// `manage_runner`, `api`), accepted like `tokens`; a call their scopes do not cover is
    /// refused with GitLab's `403 insufficient_scope`. Tokens in `tokens` have `api`.
    pub token_scopes: std::collections::BTreeMap<String, Vec<String>>,
    /// Answer every `/api/v4` request with `301` to this base URL plus the request's path,
    /// as omnibus nginx does when GitLab forces https and is reached over `http://`.
    pub redirect_to: Option<String>,
    /// Injected server errors come as the HTML page a proxy in front of GitLab serves
    /// (`502`), not as GitLab's JSON `500`.
    pub html_errors: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            tokens: vec!["sim-admin-token".into()],
            speed: 1.0,
            seed: 1,
            faults: Faults::default(),
            rate_limit: None,
            rate_limit_period: Duration::from_secs(60),
            webhook: None,
            runner_online_after: Some(0.0),
            runner_concurrency: 1,
            tick: Duration::from_millis(20),
            token_scopes: Default::default(),
            redirect_to: None,
            html_errors: false,
        }
    }
}

/// Simulated time: starts at the wall time of start-up and runs `speed` times faster.
#[derive(Debug, Clone)]
pub struct SimClock {
    wall_start: Instant,
    sim_start: DateTime<Utc>,
    speed: f64,
}

impl SimClock {
    fn new(speed: f64) -> SimClock {
        SimClock {
            wall_start: Instant::now(),
            sim_start: Utc::now(),
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }

    /// Simulated now.
    pub fn now(&self) -> DateTime<Utc> {
        let wall = self.wall_start.elapsed().as_secs_f64() * self.speed;
        self.sim_start + chrono::Duration::microseconds((wall * 1e6) as i64)
    }

    /// Simulated seconds per wall second.
    pub fn speed(&self) -> f64 {
        self.speed
    }
}

pub(crate) struct RateWindow {
    started: Instant,
    counts: std::collections::HashMap<String, u32>,
}

/// State shared by the HTTP handlers and the scheduler.
pub(crate) struct Shared {
    pub world: Mutex<World>,
    pub clock: SimClock,
    pub config: SimConfig,
    /// `http://127.0.0.1:PORT`, for `web_url` fields.
    pub base_url: String,
    pub faults: Mutex<(Faults, StdRng)>,
    pub rate: Mutex<RateWindow>,
    pub hooks: Option<mpsc::UnboundedSender<model::JobEvent>>,
    /// Every `/api/v4` request as `METHOD /path?query`, in arrival order.
    pub requests: Mutex<Vec<String>>,
}

impl Shared {
    pub(crate) fn world(&self) -> std::sync::MutexGuard<'_, World> {
        // A panic while holding the lock would be a simulator bug; keep serving regardless.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn send_events(&self, events: Vec<model::JobEvent>) {
        if let Some(tx) = &self.hooks {
            for e in events {
                let _ = tx.send(e);
            }
        }
    }
}

/// A running simulator.
pub struct Sim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sim {
    /// Starts serving on `listen` (use `127.0.0.1:0` for a free port).
    pub async fn start(config: SimConfig, listen: SocketAddr) -> std::io::Result<Sim> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let mut world = World::new();
        world.runner_online_after = config.runner_online_after;
        world.runner_concurrency = config.runner_concurrency.max(1);
        let (tx, rx) = match &config.webhook {
            Some(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            clock: SimClock::new(config.speed),
            faults: Mutex::new((config.faults.clone(), StdRng::seed_from_u64(config.seed))),
            rate: Mutex::new(RateWindow {
                started: Instant::now(),
                counts: Default::default(),
            }),
            config,
            base_url: format!("http://{addr}"),
            hooks: tx,
            requests: Mutex::new(Vec::new()),
        });
        let mut tasks = Vec::new();
        let app = api::router(shared.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("gitlab-sim stopped serving: {e}");
            }
        }));
        let sched = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(sched.config.tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                let now = sched.clock.now();
                let events = sched.world().advance(now);
                sched.send_events(events);
            }
        }));
        if let (Some(rx), Some(target)) = (rx, shared.config.webhook.clone()) {
            tasks.push(tokio::spawn(webhook::deliver(rx, target, shared.clone())));
        }
        Ok(Sim {
            addr,
            shared,
            tasks,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, GitLab's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Simulated now.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// Runs `f` on the simulated world, then lets the scheduler react at once.
    pub fn with_world<T>(&self, f: impl FnOnce(&mut World, DateTime<Utc>) -> T) -> T {
        let now = self.now();
        let (out, events) = {
            let mut w = self.shared.world();
            let out = f(&mut w, now);
            (out, w.advance(now))
        };
        self.shared.send_events(events);
        out
    }

    /// Adds a project by full path (`group/sub/name`), creating the groups on the way.
    pub fn add_project(&self, full_path: &str) -> Project {
        self.with_world(|w, now| w.ensure_project(full_path, now))
    }

    /// Queues a pending job; it sends its webhook at once.
    pub fn enqueue(&self, job: NewJob) -> Result<Job, model::WorldError> {
        let now = self.now();
        let (job, event) = {
            let mut w = self.shared.world();
            let job = w.enqueue(job, now)?;
            let project = w.projects[&job.project_id].clone();
            (
                job.clone(),
                model::JobEvent {
                    job,
                    project,
                    runner: None,
                },
            )
        };
        self.shared.send_events(vec![event]);
        Ok(job)
    }

    /// Every `/api/v4` request so far, as `METHOD /api/v4/path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counters (webhooks sent, runners created, jobs killed by a runner delete...).
    pub fn counters(&self) -> Counters {
        self.shared.world().counters.clone()
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0 = faults;
    }

    /// Adds a trace's jobs as finished ones, at the trace's own times (which must end by
    /// now; [`trace::ending_at`] moves a trace there), each taken by a runner `queued_s`
    /// after it was queued. `GET /projects/:id/jobs?scope[]=success&scope[]=failed` lists
    /// them with `created_at`, `started_at`, `finished_at`, `queued_duration` and
    /// `duration` that agree. Returns how many were added.
    pub fn add_history(
        &self,
        jobs: &[trace::TraceJob],
        queued_s: f64,
    ) -> Result<usize, model::WorldError> {
        self.with_world(|w, now| trace::add_history(w, jobs, queued_s, now))
    }

    /// Schedules a trace's jobs: the first job arrives now, the rest keep their spacing in
    /// simulated time.
    pub fn replay(&self, jobs: Vec<trace::TraceJob>, tags: &[String]) {
        let now = self.now();
        let mut w = self.shared.world();
        trace::schedule(&mut w, jobs, tags, now);
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
