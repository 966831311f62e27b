//! The sandbox cloud: an embedded cloud whose instances persist in a JSON file beside the
//! state, so separate commands see the same cloud. Clearly a sandbox: nothing is booted.
//!
//! It behaves like a real cloud where the engine cares: instances take `boot_time` to
//! become running, creates are idempotent per name (like EC2 client tokens), objects carry
//! the tags they were created with, and a seeded share of calls fails. Half of the
//! injected failures happen after the effect (like a timeout after the cloud acted), so
//! the engine's handling of ambiguous failures is exercised too. `crash_after` kills the
//! process right after the Nth create or delete took effect, for crash tests.
//!
//! With `runner_agent: true`, each instance also plays the `gitlab-runner` its user data
//! would start: once it is observed running, it verifies the runner token found in its user
//! data with the GitLab at `runner.gitlab_url` (`POST /api/v4/runners/verify`), which is
//! what brings a runner online. Pointed at the GitLab simulator, whose online runners take
//! and finish jobs, this closes the loop for demos and end-to-end tests. Like a real cloud's
//! user data, the token is kept in the sandbox's own file, never in the fleet's state.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::{
    Cloud, CloudError, CreateInstance, CreateOutcome, DeleteOutcome, Observed, ObservedInstance,
    ObservedResource, PowerOutcome, Scope,
};
use fleet_core::naming::{self, tags};
use fleet_core::resource::ResourceSpec;
use fleet_core::stack::{duration_serde, LoadedStack, StackError};

/// `provider:` settings of the sandbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    /// Time from create until an instance reports `running`.
    #[serde(default = "default_boot", with = "duration_serde")]
    pub boot_time: Duration,
    /// Time from start (of a stopped instance) until it reports `running` again.
    #[serde(default = "default_resume", with = "duration_serde")]
    pub resume_time: Duration,
    /// Delay added to every call.
    #[serde(default, with = "duration_serde")]
    pub latency: Duration,
    /// Share of calls that fail (0 to 1).
    #[serde(default)]
    pub failure_rate: f64,
    /// Seed of the failure draw.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Largest batch per call.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Instance types the sandbox offers; empty accepts any.
    #[serde(default)]
    pub instance_types: Vec<String>,
    /// The file the sandbox cloud lives in (default: beside the state file).
    #[serde(default)]
    pub cloud_file: Option<PathBuf>,
    /// Test instrumentation: `create:N` or `delete:N` kills this process with SIGKILL right
    /// after its Nth create or delete call took effect.
    #[serde(default)]
    pub crash_after: Option<String>,
    /// Booted instances verify the runner token in their user data with
    /// `runner.gitlab_url`, as the `gitlab-runner` on a real VM does.
    #[serde(default)]
    pub runner_agent: bool,
}

fn default_boot() -> Duration {
    Duration::from_secs(5)
}
fn default_resume() -> Duration {
    Duration::from_secs(2)
}
fn default_seed() -> u64 {
    1
}
fn default_max_batch() -> usize {
    100
}

/// The sandbox's world, as stored in its file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct World {
    /// Next id number.
    pub next_id: u64,
    /// Every instance, terminated ones kept for an hour.
    pub instances: Vec<SandboxInstance>,
    /// Supporting resources.
    pub resources: Vec<SandboxResource>,
}

/// An instance in the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxInstance {
    /// Cloud id (`sbx-000001`).
    pub id: String,
    /// Tags given at creation.
    pub tags: BTreeMap<String, String>,
    /// Image.
    pub image: String,
    /// Instance type.
    pub instance_type: String,
    /// When it was created.
    pub launched_at: DateTime<Utc>,
    /// When it was terminated.
    #[serde(default)]
    pub terminated_at: Option<DateTime<Utc>>,
    /// When it was stopped, while it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
    /// When it was last started again after a stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// The runner token its user data carries, while its runner agent has not verified it
    /// (the cloud's copy of the user data; cleared once verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_token: Option<String>,
}

/// A supporting resource in the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxResource {
    /// Cloud id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Cloud-side name.
    pub cloud_name: String,
    /// Tags given at creation.
    pub tags: BTreeMap<String, String>,
}

/// The sandbox cloud.
pub struct SandboxCloud {
    settings: SandboxSettings,
    file: PathBuf,
    rng: Mutex<StdRng>,
    crash: Option<(String, u64)>,
    calls: Mutex<BTreeMap<String, u64>>,
    /// `runner.gitlab_url` and a client, when instances act as runner agents.
    agent: Option<(String, reqwest::Client)>,
}

const PROVIDER: &str = "sandbox";

impl SandboxCloud {
    /// A sandbox with these settings, stored in `file`.
    pub fn new(settings: SandboxSettings, file: PathBuf) -> Self {
        let crash = settings.crash_after.as_deref().and_then(parse_crash);
        SandboxCloud {
            rng: Mutex::new(StdRng::seed_from_u64(settings.seed)),
            settings,
            file,
            crash,
            calls: Mutex::new(BTreeMap::new()),
            agent: None,
        }
    }

    /// The sandbox a stack describes; its file defaults to `default_dir/sandbox-cloud.json`.
    pub fn from_stack(loaded: &LoadedStack, default_dir: &Path) -> Result<Self, StackError> {
        let settings: SandboxSettings =
            loaded.section("provider", &loaded.stack.provider.settings)?;
        if !(0.0..=1.0).contains(&settings.failure_rate) {
            return Err(loaded.error_at(
                "provider.failure_rate",
                format!(
                    "failure_rate {} is not between 0 and 1",
                    settings.failure_rate
                ),
                "use 0.2 for one call in five",
            ));
        }
        if settings.max_batch == 0 {
            return Err(loaded.error_at("provider.max_batch", "max_batch is 0", "use at least 1"));
        }
        if let Some(c) = &settings.crash_after {
            if parse_crash(c).is_none() {
                return Err(loaded.error_at(
                    "provider.crash_after",
                    format!("`{c}` is not `create:N` or `delete:N`"),
                    "for example `create:2`",
                ));
            }
        }
        let file = match &settings.cloud_file {
            Some(f) => loaded.resolve(f),
            None => default_dir.join("sandbox-cloud.json"),
        };
        let agent = settings.runner_agent;
        let mut cloud = SandboxCloud::new(settings, file);
        if agent {
            let Some(url) = &loaded.stack.runner.gitlab_url else {
                return Err(loaded.error_at(
                    "provider.runner_agent",
                    "runner_agent needs runner.gitlab_url to verify runner tokens with",
                    "set runner.gitlab_url (for example the GitLab simulator's URL)",
                ));
            };
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| {
                    loaded.error_at("provider.runner_agent", e.to_string(), "check TLS support")
                })?;
            cloud.agent = Some((url.trim_end_matches('/').to_string(), client));
        }
        Ok(cloud)
    }

    /// Runner agents of instances that are running now verify their tokens. One that
    /// fails tries again at the next observation.
    async fn run_agents(&self, now: DateTime<Utc>) -> Result<(), CloudError> {
        let Some((url, client)) = &self.agent else {
            return Ok(());
        };
        let due: Vec<(String, String)> = self.with_world(false, |w| {
            Ok(w.instances
                .iter()
                .filter(|i| self.observed(i, now).lifecycle == Lifecycle::Running)
                .filter_map(|i| Some((i.id.clone(), i.runner_token.clone()?)))
                .collect())
        })?;
        let mut verified = Vec::new();
        for (id, token) in due {
            let answer = client
                .post(format!("{url}/api/v4/runners/verify"))
                .json(&serde_json::json!({ "token": token, "system_id": format!("s_{id}") }))
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => verified.push(id),
                Ok(r) => {
                    tracing::debug!(instance = %id, status = %r.status(), "runner verify refused")
                }
                Err(e) => tracing::debug!(instance = %id, "runner verify failed: {e}"),
            }
        }
        if !verified.is_empty() {
            self.with_world(true, |w| {
                for i in w.instances.iter_mut().filter(|i| verified.contains(&i.id)) {
                    i.runner_token = None;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The file this sandbox lives in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Reads the world (for tests and inspection).
    pub fn world(&self) -> Result<World, CloudError> {
        self.with_world(false, |w| Ok(std::mem::take(w)))
    }

    fn error(&self, operation: &str, code: &str, message: String, transient: bool) -> CloudError {
        CloudError::new(PROVIDER, operation, code, message, transient)
    }

    /// Runs `f` on the world under the sandbox's file lock, saving it if `write`.
    fn with_world<T>(
        &self,
        write: bool,
        f: impl FnOnce(&mut World) -> Result<T, CloudError>,
    ) -> Result<T, CloudError> {
        let io = |what: &str, e: std::io::Error| {
            self.error(
                "storage",
                "SandboxIo",
                format!("{what} {}: {e}", self.file.display()),
                false,
            )
        };
        if let Some(dir) = self.file.parent() {
            fs::create_dir_all(dir).map_err(|e| io("cannot create the directory of", e))?;
        }
        let lock_path = self.file.with_extension("json.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io("cannot open the lock of", e))?;
        lock.lock().map_err(|e| io("cannot lock", e))?;
        let mut world: World = match fs::read(&self.file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                self.error(
                    "storage",
                    "SandboxCorrupt",
                    format!(
                        "{} is not a sandbox cloud file ({e}); delete it to start an empty sandbox",
                        self.file.display()
                    ),
                    false,
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => World::default(),
            Err(e) => return Err(io("cannot read", e)),
        };
        let out = f(&mut world)?;
        if write {
            let cutoff = Utc::now() - chrono::Duration::hours(1);
            world
                .instances
                .retain(|i| i.terminated_at.is_none_or(|t| t > cutoff));
            let tmp = self
                .file
                .with_extension(format!("json.tmp-{}", std::process::id()));
            let bytes = serde_json::to_vec_pretty(&world)
                .map_err(|e| self.error("storage", "SandboxIo", e.to_string(), false))?;
            let mut t = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| io("cannot write", e))?;
            t.write_all(&bytes)
                .and_then(|_| t.sync_all())
                .map_err(|e| io("cannot write", e))?;
            fs::rename(&tmp, &self.file).map_err(|e| io("cannot replace", e))?;
        }
        drop(lock);
        Ok(out)
    }

    /// Sleeps the configured latency, then draws whether this call fails and when.
    async fn enter(&self, operation: &str) -> Injection {
        if !self.settings.latency.is_zero() {
            tokio::time::sleep(self.settings.latency).await;
        }
        if self.settings.failure_rate <= 0.0 {
            return Injection::None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.gen_bool(self.settings.failure_rate) {
            if rng.gen_bool(0.5) {
                Injection::Before
            } else {
                Injection::After
            }
        } else {
            tracing::trace!(operation, "sandbox call");
            Injection::None
        }
    }

    fn injected(&self, operation: &str) -> CloudError {
        self.error(
            operation,
            "InjectedFailure",
            "the sandbox failed this call on purpose (failure_rate)".into(),
            true,
        )
    }

    /// After an effect is saved: die here if this is the call `crash_after` names.
    fn maybe_crash(&self, operation: &str) {
        let Some((op, n)) = &self.crash else { return };
        if op != operation {
            return;
        }
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let c = calls.entry(op.clone()).or_default();
        *c += 1;
        if *c == *n {
            tracing::warn!("sandbox crash_after {op}:{n}: killing this process");
            // SAFETY: sending SIGKILL to ourselves; nothing runs after it.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }

    /// Stops or starts (`operation`) instances of `scope`. Stopping a stopped instance or
    /// starting a running one changes nothing and counts as done; a terminated or unknown
    /// instance, or one still booting, is refused, as EC2 refuses it.
    async fn power(
        &self,
        scope: &Scope,
        ids: &[String],
        operation: &str,
    ) -> Result<PowerOutcome, CloudError> {
        let injection = self.enter(operation).await;
        if let Injection::Before = injection {
            return Err(self.injected(operation));
        }
        let now = Utc::now();
        let out = self.with_world(true, |w| {
            let mut out = PowerOutcome::default();
            for id in ids {
                let found = w
                    .instances
                    .iter_mut()
                    .find(|i| &i.id == id && in_stack(&i.tags, &scope.stack));
                let Some(i) = found else {
                    out.failed.push((
                        id.clone(),
                        self.error(
                            operation,
                            "InvalidInstanceID.NotFound",
                            format!("{id} is not an instance of stack {}", scope.stack),
                            false,
                        ),
                    ));
                    continue;
                };
                let lifecycle = self.observed(i, now).lifecycle;
                let refused = match operation {
                    "stop" => matches!(lifecycle, Lifecycle::Booting | Lifecycle::Terminated),
                    _ => lifecycle == Lifecycle::Terminated,
                };
                if refused {
                    out.failed.push((
                        id.clone(),
                        self.error(
                            operation,
                            "IncorrectInstanceState",
                            format!("{id} is {}; it cannot {operation} now", lifecycle.as_str()),
                            false,
                        ),
                    ));
                    continue;
                }
                match operation {
                    "stop" => {
                        i.stopped_at.get_or_insert(now);
                    }
                    _ if i.stopped_at.is_some() => {
                        i.stopped_at = None;
                        i.started_at = Some(now);
                    }
                    _ => {}
                }
                out.changed.push(id.clone());
            }
            Ok(out)
        })?;
        if let Injection::After = injection {
            return Err(self.injected(operation));
        }
        Ok(out)
    }

    fn observed(&self, i: &SandboxInstance, now: DateTime<Utc>) -> ObservedInstance {
        let boot = chrono::Duration::from_std(self.settings.boot_time).unwrap_or_default();
        let resume = chrono::Duration::from_std(self.settings.resume_time).unwrap_or_default();
        let lifecycle = match (i.terminated_at, i.stopped_at, i.started_at) {
            (Some(_), _, _) => Lifecycle::Terminated,
            (None, Some(_), _) => Lifecycle::Stopped,
            (None, None, Some(t)) if now < t + resume => Lifecycle::Starting,
            (None, None, None) if now < i.launched_at + boot => Lifecycle::Booting,
            _ => Lifecycle::Running,
        };
        let n: u64 = i.id.trim_start_matches("sbx-").parse().unwrap_or(0);
        ObservedInstance {
            cloud_id: i.id.clone(),
            name: i.tags.get(tags::NAME).cloned().unwrap_or_default(),
            lineage: i.tags.get(tags::LINEAGE).cloned().unwrap_or_default(),
            image: i.image.clone(),
            instance_type: i.instance_type.clone(),
            spec_hash: i.tags.get(tags::SPEC).cloned().unwrap_or_default(),
            lifecycle,
            // Loopback addresses: the sandbox boots nothing, and nothing is ever sent there.
            address: Some(format!(
                "127.{}.{}.{}",
                100 + (n >> 16) % 100,
                (n >> 8) & 255,
                n & 255
            )),
            launched_at: i.launched_at,
            batch: i.tags.get(tags::BATCH).cloned(),
        }
    }
}

enum Injection {
    None,
    Before,
    After,
}

/// The first runner authentication token (`glrt-...`) in a user data text.
fn runner_token_in(user_data: &str) -> Option<String> {
    let start = user_data.find("glrt-")?;
    let token: String = user_data[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    (token.len() > "glrt-".len()).then_some(token)
}

fn parse_crash(s: &str) -> Option<(String, u64)> {
    let (op, n) = s.split_once(':')?;
    let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
    matches!(op, "create" | "delete").then(|| (op.to_string(), n))
}

fn in_stack(tags_: &BTreeMap<String, String>, stack: &str) -> bool {
    tags_.get(tags::STACK).map(String::as_str) == Some(stack)
}

#[async_trait]
impl Cloud for SandboxCloud {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn label(&self) -> String {
        "sandbox cloud (embedded, for demos and tests)".into()
    }

    fn max_batch(&self) -> usize {
        self.settings.max_batch
    }

    fn resource_kinds(&self) -> &[&str] {
        &["key_pair"]
    }

    async fn observe(&self, scope: &Scope) -> Result<Observed, CloudError> {
        if let Injection::Before | Injection::After = self.enter("observe").await {
            return Err(self.injected("observe"));
        }
        let now = Utc::now();
        self.run_agents(now).await?;
        self.with_world(false, |w| {
            Ok(Observed {
                instances: w
                    .instances
                    .iter()
                    .filter(|i| in_stack(&i.tags, &scope.stack))
                    .map(|i| self.observed(i, now))
                    .collect(),
                resources: w
                    .resources
                    .iter()
                    .filter(|r| in_stack(&r.tags, &scope.stack))
                    .map(|r| ObservedResource {
                        cloud_id: r.id.clone(),
                        kind: r.kind.clone(),
                        name: r.tags.get(tags::NAME).cloned().unwrap_or_default(),
                        spec_hash: r.tags.get(tags::SPEC).cloned().unwrap_or_default(),
                    })
                    .collect(),
                ..Observed::default()
            })
        })
    }

    async fn create_instances(
        &self,
        scope: &Scope,
        token: &str,
        batch: &[CreateInstance],
    ) -> Result<CreateOutcome, CloudError> {
        let injection = self.enter("create").await;
        if let Injection::Before = injection {
            return Err(self.injected("create"));
        }
        if batch.len() > self.settings.max_batch {
            return Err(self.error(
                "create",
                "BatchTooLarge",
                format!(
                    "{} instances in one call; the sandbox takes at most {}",
                    batch.len(),
                    self.settings.max_batch
                ),
                false,
            ));
        }
        let now = Utc::now();
        let offered = &self.settings.instance_types;
        let out = self.with_world(true, |w| {
            let mut out = CreateOutcome::default();
            for req in batch {
                if let Some(existing) = w.instances.iter().find(|i| {
                    i.terminated_at.is_none()
                        && in_stack(&i.tags, &scope.stack)
                        && i.tags.get(tags::NAME) == Some(&req.name)
                }) {
                    out.created.push(self.observed(existing, now));
                    continue;
                }
                let Some(instance_type) = req
                    .spec
                    .instance_types
                    .iter()
                    .find(|t| offered.is_empty() || offered.contains(t))
                else {
                    out.failed.push((
                        req.name.clone(),
                        self.error(
                            "create",
                            "InvalidInstanceType",
                            format!(
                                "none of [{}] is offered (the sandbox offers [{}]); change instance.types",
                                req.spec.instance_types.join(", "),
                                offered.join(", ")
                            ),
                            false,
                        ),
                    ));
                    continue;
                };
                if req.spec.image.is_empty() {
                    out.failed.push((req.name.clone(), self.error("create", "InvalidImage", "image is empty".into(), false)));
                    continue;
                }
                w.next_id += 1;
                let mut t = req.tags.clone();
                t.insert(tags::STACK.into(), scope.stack.clone());
                t.insert(tags::BATCH.into(), token.to_string());
                let i = SandboxInstance {
                    id: format!("sbx-{:06}", w.next_id),
                    tags: t,
                    image: req.spec.image.clone(),
                    instance_type: instance_type.clone(),
                    launched_at: now,
                    terminated_at: None,
                    stopped_at: None,
                    started_at: None,
                    runner_token: self
                        .agent
                        .as_ref()
                        .and(req.user_data.as_ref())
                        .and_then(|u| runner_token_in(u.expose())),
                };
                out.created.push(self.observed(&i, now));
                w.instances.push(i);
            }
            Ok(out)
        })?;
        self.maybe_crash("create");
        if let Injection::After = injection {
            return Err(self.injected("create"));
        }
        Ok(out)
    }

    async fn delete_instances(
        &self,
        scope: &Scope,
        ids: &[String],
    ) -> Result<DeleteOutcome, CloudError> {
        let injection = self.enter("delete").await;
        if let Injection::Before = injection {
            return Err(self.injected("delete"));
        }
        let now = Utc::now();
        let out = self.with_world(true, |w| {
            let mut out = DeleteOutcome::default();
            for id in ids {
                if let Some(i) = w.instances.iter_mut().find(|i| &i.id == id) {
                    if !in_stack(&i.tags, &scope.stack) {
                        out.failed.push((
                            id.clone(),
                            self.error(
                                "delete",
                                "UnauthorizedOperation",
                                format!("{id} belongs to another stack; fleet-cli only deletes its own instances"),
                                false,
                            ),
                        ));
                        continue;
                    }
                    i.terminated_at.get_or_insert(now);
                }
                // Unknown ids count as deleted: they are gone either way.
                out.deleted.push(id.clone());
            }
            Ok(out)
        })?;
        self.maybe_crash("delete");
        if let Injection::After = injection {
            return Err(self.injected("delete"));
        }
        Ok(out)
    }

    async fn create_resource(
        &self,
        scope: &Scope,
        spec: &ResourceSpec,
        tags_: &BTreeMap<String, String>,
    ) -> Result<ObservedResource, CloudError> {
        if let Injection::Before | Injection::After = self.enter("create_resource").await {
            return Err(self.injected("create_resource"));
        }
        if spec.kind != "key_pair" {
            return Err(CloudError::Unsupported {
                provider: PROVIDER.into(),
                what: format!("resource kind `{}` (it has: key_pair)", spec.kind),
            });
        }
        let key_ok = spec
            .properties
            .get("public_key")
            .and_then(|v| v.as_str())
            .is_some_and(|k| k.starts_with("ssh-") || k.starts_with("ecdsa-"));
        if !key_ok {
            return Err(self.error(
                "create_resource",
                "InvalidKeyPair.Format",
                format!("key_pair `{}` needs properties.public_key in OpenSSH format (ssh-ed25519 AAAA...)", spec.name),
                false,
            ));
        }
        let cloud_name = naming::resource_name(&scope.stack, &spec.name);
        self.with_world(true, |w| {
            if let Some(r) = w
                .resources
                .iter()
                .find(|r| r.kind == spec.kind && r.cloud_name == cloud_name)
            {
                return Ok(ObservedResource {
                    cloud_id: r.id.clone(),
                    kind: r.kind.clone(),
                    name: spec.name.clone(),
                    spec_hash: r.tags.get(tags::SPEC).cloned().unwrap_or_default(),
                });
            }
            w.next_id += 1;
            let mut t = tags_.clone();
            t.insert(tags::STACK.into(), scope.stack.clone());
            let r = SandboxResource {
                id: format!("key-{:06}", w.next_id),
                kind: spec.kind.clone(),
                cloud_name,
                tags: t,
            };
            let o = ObservedResource {
                cloud_id: r.id.clone(),
                kind: r.kind.clone(),
                name: spec.name.clone(),
                spec_hash: r.tags.get(tags::SPEC).cloned().unwrap_or_default(),
            };
            w.resources.push(r);
            Ok(o)
        })
    }

    async fn delete_resource(
        &self,
        _scope: &Scope,
        _kind: &str,
        cloud_id: &str,
    ) -> Result<(), CloudError> {
        if let Injection::Before | Injection::After = self.enter("delete_resource").await {
            return Err(self.injected("delete_resource"));
        }
        self.with_world(true, |w| {
            w.resources.retain(|r| r.id != cloud_id);
            Ok(())
        })
    }

    fn can_stop(&self) -> bool {
        true
    }

    async fn stop_instances(
        &self,
        scope: &Scope,
        ids: &[String],
    ) -> Result<PowerOutcome, CloudError> {
        self.power(scope, ids, "stop").await
    }

    async fn start_instances(
        &self,
        scope: &Scope,
        ids: &[String],
    ) -> Result<PowerOutcome, CloudError> {
        self.power(scope, ids, "start").await
    }

    async fn describe_instance(
        &self,
        cloud_id: &str,
    ) -> Result<Option<ObservedInstance>, CloudError> {
        let now = Utc::now();
        self.with_world(false, |w| {
            Ok(w.instances
                .iter()
                .find(|i| i.id == cloud_id)
                .map(|i| self.observed(i, now)))
        })
    }
}
