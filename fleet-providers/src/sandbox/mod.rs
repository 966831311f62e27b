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

mod agent;
mod faults;
mod settings;
mod world;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;

use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::{
    Cloud, CloudError, CreateInstance, CreateOutcome, DeleteOutcome, Observed, ObservedInstance,
    ObservedResource, PowerOutcome, Scope,
};
use fleet_core::naming::{self, tags};
use fleet_core::resource::ResourceSpec;
use fleet_core::stack::{LoadedStack, StackError};

use agent::runner_token_in;
use faults::{parse_crash, Injection};
pub use settings::SandboxSettings;
pub use world::{SandboxInstance, SandboxResource, World};

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
