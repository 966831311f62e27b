//! Harness for the latency from a job webhook received to a cloud create issued, on the
//! sandbox cloud, with GitLab simulated by gitlab-sim (all on 127.0.0.1).
//!
//! Each iteration queues one job in the simulator. The simulator POSTs its job webhook to a
//! receiver here, which checks it with `WebhookVerifier` and triggers a reconcile. The
//! reconcile is the engine's own path: read state, observe the sandbox, ask GitLab for
//! demand (`GitLabCi`, the API stays the source of truth), decide, plan, and apply with the
//! `Executor`. A wrapper around the sandbox cloud notes when `create_instances` is called.
//!
//! The policy is the real demand policy (`DemandPolicy`), and each new VM's GitLab runner is
//! registered (`POST /user/runners`) before its create is issued, as `up` does. The daemon
//! loop is a stand-in: a task reading triggers from a channel, one reconcile per trigger.
//!
//! Run: `cargo bench -p fleet-providers --bench webhook_to_create [-- ITERATIONS]`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tokio::sync::mpsc;

use fleet_core::apply::{ApplyOptions, NoProgress};
use fleet_core::cloud::{
    Cloud, CloudError, CreateInstance, CreateOutcome, DeleteOutcome, Observed, ObservedInstance,
    ObservedResource, Scope,
};
use fleet_core::engine::Fleet;
use fleet_core::plan::Operation;
use fleet_core::resource::ResourceSpec;
use fleet_core::secret::Secret;
use fleet_core::stack::load_str;
use fleet_providers::gitlab::webhook::{Accepted, WebhookVerifier, DEFAULT_MAX_BODY};
use gitlab_sim::{NewJob, Sim, SimConfig, WebhookTarget};

const HOOK_SECRET: &str = "bench-hook-secret";

/// The sandbox cloud, noting when each create call starts.
struct TimedCloud {
    inner: Box<dyn Cloud>,
    creates: Arc<Mutex<Vec<Instant>>>,
}

#[async_trait]
impl Cloud for TimedCloud {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn label(&self) -> String {
        self.inner.label()
    }
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }
    fn resource_kinds(&self) -> &[&str] {
        self.inner.resource_kinds()
    }
    async fn observe(&self, scope: &Scope) -> Result<Observed, CloudError> {
        self.inner.observe(scope).await
    }
    async fn create_instances(
        &self,
        scope: &Scope,
        token: &str,
        batch: &[CreateInstance],
    ) -> Result<CreateOutcome, CloudError> {
        self.creates.lock().unwrap().push(Instant::now());
        self.inner.create_instances(scope, token, batch).await
    }
    async fn delete_instances(
        &self,
        scope: &Scope,
        ids: &[String],
    ) -> Result<DeleteOutcome, CloudError> {
        self.inner.delete_instances(scope, ids).await
    }
    async fn create_resource(
        &self,
        scope: &Scope,
        spec: &ResourceSpec,
        tags: &BTreeMap<String, String>,
    ) -> Result<ObservedResource, CloudError> {
        self.inner.create_resource(scope, spec, tags).await
    }
    async fn delete_resource(
        &self,
        scope: &Scope,
        kind: &str,
        cloud_id: &str,
    ) -> Result<(), CloudError> {
        self.inner.delete_resource(scope, kind, cloud_id).await
    }
    async fn describe_instance(
        &self,
        cloud_id: &str,
    ) -> Result<Option<ObservedInstance>, CloudError> {
        self.inner.describe_instance(cloud_id).await
    }
}

/// The webhook endpoint: verify, then trigger a reconcile with the time of receipt.
async fn hook(
    State((verifier, tx)): State<(Arc<WebhookVerifier>, mpsc::UnboundedSender<Instant>)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let received = Instant::now();
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    match verifier.verify(h("x-gitlab-event"), h("x-gitlab-token"), &body) {
        Ok(Accepted::Job(e)) if e.wants_capacity() => {
            let _ = tx.send(received);
            StatusCode::OK
        }
        Ok(_) => StatusCode::OK,
        Err(e) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);

    // The webhook receiver.
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let verifier = Arc::new(WebhookVerifier::new(
        Secret::new(HOOK_SECRET),
        DEFAULT_MAX_BODY,
    )?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state((verifier, tx));
    tokio::spawn(async move { axum::serve(listener, app).await });

    // GitLab, simulated; no runner is registered, so every job stays pending.
    let sim = Sim::start(
        SimConfig {
            webhook: Some(WebhookTarget {
                url: hook_url,
                secret: HOOK_SECRET.into(),
            }),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    sim.add_project("bench/app");

    // The fleet: a sandbox stack whose demand comes from the simulator.
    let dir = tempfile::tempdir()?;
    let stack_path = dir.path().join("bench.yaml");
    let text = format!(
        "name: bench
provider: {{ kind: sandbox, boot_time: 0s }}
instance: {{ image: debian-12, types: [small] }}
runner:
  gitlab_url: {}
  token_env: BENCH_GITLAB_TOKEN
  projects: [bench/app]
  run_untagged: true
policy: {{ min_instances: 0, max_instances: {} }}
state: {{ backend: local, path: state.json }}
",
        sim.url(),
        iterations + 10
    );
    let env = |k: &str| (k == "BENCH_GITLAB_TOKEN").then(|| "sim-admin-token".to_string());
    let loaded = load_str(Path::new(&stack_path), &text, &[], &env)?;
    let calls = fleet_providers::aws::CallCounter::default();
    let creates = Arc::new(Mutex::new(Vec::new()));
    let cloud = TimedCloud {
        inner: fleet_providers::cloud_for(&loaded, &calls).await?,
        creates: creates.clone(),
    };
    let backend = fleet_providers::backend_for(&loaded, &calls).await?;
    let ci = fleet_providers::gitlab::ci_for(&loaded)?.ok_or("the stack names GitLab")?;
    let fleet = Fleet {
        stack: &loaded,
        cloud: &cloud,
        backend: backend.as_ref(),
        policy: &fleet_core::policy::DemandPolicy,
        ci: &ci,
    };

    let mut delivery = Vec::new();
    let mut to_create = Vec::new();
    let mut total = Vec::new();
    for i in 0..iterations {
        creates.lock().unwrap().clear();
        let queued = Instant::now();
        sim.enqueue(NewJob {
            project: "bench/app".into(),
            name: Some(format!("bench-{i}")),
            tag_list: vec![],
            run_seconds: 3600.0,
            pipeline_id: None,
        })?;
        let received = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await?
            .ok_or("the webhook receiver stopped")?;
        // The stand-in daemon: one reconcile per trigger.
        let mut state = fleet.read_state(|| "bench-lineage".to_string()).await?;
        let observed = fleet.observe(&state).await?;
        let plan = fleet
            .plan(Operation::Up, &state, &observed, chrono::Utc::now())
            .await?;
        let clock = chrono::Utc::now;
        let options = ApplyOptions {
            dry_run: false,
            concurrency: 4,
            batch_size: 100,
        };
        let executor = fleet.executor(&state, options, &NoProgress, &clock);
        executor.apply(&plan, &mut state, Some(&observed)).await?;
        let created = *creates
            .lock()
            .unwrap()
            .first()
            .ok_or_else(|| format!("iteration {i}: the reconcile issued no create"))?;
        delivery.push(received - queued);
        to_create.push(created - received);
        total.push(created - queued);
    }
    for (name, v) in [
        ("job queued -> webhook received and verified", &mut delivery),
        ("webhook received -> cloud create issued", &mut to_create),
        ("job queued -> cloud create issued", &mut total),
    ] {
        v.sort();
        println!(
            "{name}: n={} p50={} p99={} max={}",
            v.len(),
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap())
        );
    }
    Ok(())
}
