//! Hetzner Cloud: servers through the public REST API, with a project API token.
//!
//! Hetzner creates one server per call, so a batch is one `POST /servers` per instance, a
//! few at a time. Server names are unique per project, which makes creates idempotent
//! per name: a retried create finds the server it made (`uniqueness_error`, then a lookup
//! by name). Servers carry the fleet's tags as labels from the first call (`fleet:stack`
//! becomes the label `fleet-stack`, see [`label_key`]), so a crash right after a create
//! leaves a server the next plan adopts. Creates and deletes wait for their action
//! (`GET /actions/{id}`) to finish, so a failed action is reported as the error it names.
//! Hetzner bills stopped servers, so this provider never stops them (`can_stop` is false),
//! and it bills by the started hour (see [`crate::provider_defaults`]).

mod client;
mod errors;
pub mod models;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use serde::Deserialize;

use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::{
    Cloud, CloudError, CreateInstance, CreateOutcome, DeleteOutcome, Observed, ObservedInstance,
    Scope,
};
use fleet_core::naming::tags;
use fleet_core::secret::Secret;
use fleet_core::stack::{duration_serde, LoadedStack, StackError};

pub use client::{Client, Retry};
use errors::CAPACITY_CODES;
use models::{
    ActionResponse, CreateServerRequest, CreateServerResponse, ListServersResponse, Server,
    ServerResponse,
};

/// The provider's name.
pub const PROVIDER: &str = "hetzner";

/// Hetzner's public API.
pub const DEFAULT_ENDPOINT: &str = "https://api.hetzner.cloud/v1";

/// Hetzner's limit on user data.
pub const USER_DATA_LIMIT: usize = 32 * 1024;

/// Longest label key or value Hetzner accepts.
const LABEL_MAX: usize = 63;

/// `provider:` settings of `kind: hetzner`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HetznerSettings {
    /// Environment variable holding the project's API token (Read & Write).
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// API base URL.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Location to create servers in (`fsn1`, `nbg1`, `hel1`, `ash`, ...); Hetzner picks
    /// one when absent.
    #[serde(default)]
    pub location: Option<String>,
    /// SSH key names or ids put on every server (without one, Hetzner mails a root password).
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Instances per create or delete batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Requests of one batch in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Attempts per request, counting the first, for `429`, `5xx` and network failures.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First wait between attempts; it doubles with each attempt.
    #[serde(default = "default_backoff", with = "duration_serde")]
    pub retry_backoff: Duration,
    /// Longest wait for the rate-limit window to reopen.
    #[serde(default = "default_max_wait", with = "duration_serde")]
    pub rate_limit_max_wait: Duration,
    /// How often a running action is polled.
    #[serde(default = "default_poll", with = "duration_serde")]
    pub poll_interval: Duration,
    /// How long a create or delete action may run.
    #[serde(default = "default_action_timeout", with = "duration_serde")]
    pub action_timeout: Duration,
}

fn default_token_env() -> String {
    "HCLOUD_TOKEN".into()
}
fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.into()
}
fn default_max_batch() -> usize {
    25
}
fn default_concurrency() -> usize {
    5
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_wait() -> Duration {
    Duration::from_secs(60)
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_action_timeout() -> Duration {
    Duration::from_secs(300)
}

/// The Hetzner Cloud provider.
#[derive(Debug)]
pub struct HetznerCloud {
    client: Client,
    settings: HetznerSettings,
}

impl HetznerCloud {
    /// A provider with these settings and API token.
    pub fn new(settings: HetznerSettings, token: Secret) -> Result<HetznerCloud, CloudError> {
        let retry = Retry {
            max_attempts: settings.max_attempts.max(1),
            backoff: settings.retry_backoff,
            max_wait: settings.rate_limit_max_wait,
            poll_interval: settings.poll_interval,
            action_timeout: settings.action_timeout,
        };
        let client = Client::new(&settings.endpoint, token, retry)
            .map_err(|e| CloudError::new(PROVIDER, "setup", "client", e, false))?;
        Ok(HetznerCloud { client, settings })
    }

    /// The provider a stack describes; its token comes from the environment variable
    /// `provider.token_env` names.
    pub fn from_stack(loaded: &LoadedStack) -> Result<HetznerCloud, StackError> {
        let settings: HetznerSettings =
            loaded.section("provider", &loaded.stack.provider.settings)?;
        if settings.max_batch == 0 || settings.concurrency == 0 {
            let key = if settings.max_batch == 0 {
                "max_batch"
            } else {
                "concurrency"
            };
            return Err(loaded.error_at(
                &format!("provider.{key}"),
                format!("{key} is 0"),
                "use at least 1",
            ));
        }
        if !settings.endpoint.starts_with("https://") && !settings.endpoint.starts_with("http://") {
            return Err(loaded.error_at(
                "provider.endpoint",
                format!("`{}` is not an http(s) URL", settings.endpoint),
                format!("leave it out for {DEFAULT_ENDPOINT}"),
            ));
        }
        for (k, v) in &loaded.stack.instance.labels {
            if let Some(problem) = label_problem(k).or_else(|| value_problem(v)) {
                return Err(loaded.error_at(
                    &format!("instance.labels.{k}"),
                    format!("`{k}: {v}` is not a valid Hetzner label: {problem}"),
                    "use at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
                ));
            }
        }
        let token = match std::env::var(&settings.token_env) {
            Ok(t) if !t.trim().is_empty() => Secret::new(t.trim()),
            _ => return Err(loaded.error_at(
                "provider.token_env",
                format!(
                    "environment variable `{}` (the Hetzner API token) is not set",
                    settings.token_env
                ),
                "create a Read & Write API token in the project's Security settings and export it",
            )),
        };
        HetznerCloud::new(settings, token).map_err(|e| {
            loaded.error_at(
                "provider",
                format!(
                    "cannot build the HTTP client: {}",
                    fleet_core::apply::error_chain(&e)
                ),
                "this is a bug or a broken TLS setup; report it",
            )
        })
    }

    fn selector(scope: &Scope) -> String {
        format!("{}={}", label_key(tags::STACK), scope.stack)
    }

    /// Labels of a new server: the request's tags, the batch token and the stack's
    /// `instance.labels`.
    fn labels(
        scope: &Scope,
        token: &str,
        req: &CreateInstance,
    ) -> Result<BTreeMap<String, String>, CloudError> {
        let mut labels: BTreeMap<String, String> = req.spec.labels.clone();
        for (k, v) in &req.tags {
            labels.insert(label_key(k), v.clone());
        }
        labels.insert(label_key(tags::STACK), scope.stack.clone());
        labels.insert(label_key(tags::BATCH), token.to_string());
        for (k, v) in &labels {
            if let Some(problem) = label_problem(k).or_else(|| value_problem(v)) {
                return Err(CloudError::new(
                    PROVIDER,
                    "create",
                    "invalid_label",
                    format!("label `{k}={v}` of {} is not valid: {problem}", req.name),
                    false,
                ));
            }
        }
        Ok(labels)
    }

    /// Creates one server, falling back along the instance types on capacity errors.
    async fn create_one(
        &self,
        scope: &Scope,
        token: &str,
        req: &CreateInstance,
    ) -> Result<ObservedInstance, CloudError> {
        let labels = Self::labels(scope, token, req)?;
        let types = &req.spec.instance_types;
        let mut last = None;
        for (i, server_type) in types.iter().enumerate() {
            let body = serde_json::to_vec(&CreateServerRequest {
                name: &req.name,
                server_type,
                image: &req.spec.image,
                location: self.settings.location.as_deref(),
                ssh_keys: &self.settings.ssh_keys,
                labels: &labels,
                user_data: req.user_data.as_ref().map(Secret::expose),
                start_after_create: true,
            })
            .map_err(|e| CloudError::new(PROVIDER, "create", "encode", e.to_string(), false))?;
            let made: Result<CreateServerResponse, CloudError> = self
                .client
                .call("create", Method::POST, "/servers", &[], Some(body))
                .await;
            match made {
                Ok(resp) => {
                    self.client.wait_action("create", resp.action).await?;
                    return Ok(observed(&resp.server));
                }
                Err(e) if e.code() == Some("uniqueness_error") => {
                    return self.existing(scope, &req.name).await?.ok_or(e);
                }
                Err(e) if e.code().is_some_and(|c| CAPACITY_CODES.contains(&c)) => {
                    if let Some(next) = types.get(i + 1) {
                        tracing::info!(
                            "{}: no {server_type} available ({e}); trying {next}",
                            req.name
                        );
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            CloudError::new(
                PROVIDER,
                "create",
                "invalid_input",
                "instance.types is empty; list at least one server type",
                false,
            )
        }))
    }

    /// The server named `name`, if it is one of this stack's (a retried create).
    async fn existing(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Result<Option<ObservedInstance>, CloudError> {
        let resp: ListServersResponse = self
            .client
            .call(
                "create",
                Method::GET,
                "/servers",
                &[("name", name.to_string())],
                None,
            )
            .await?;
        let stack_key = label_key(tags::STACK);
        Ok(resp
            .servers
            .iter()
            .find(|s| s.name == name && s.labels.get(&stack_key) == Some(&scope.stack))
            .map(observed))
    }

    /// Deletes one server and waits for it to go; a server already gone counts as deleted.
    async fn delete_one(&self, id: &str) -> Result<(), CloudError> {
        let Ok(n) = id.parse::<u64>() else {
            return Err(CloudError::new(
                PROVIDER,
                "delete",
                "invalid_input",
                format!("`{id}` is not a Hetzner server id (a number); check the state file"),
                false,
            ));
        };
        let resp: Result<ActionResponse, CloudError> = self
            .client
            .call(
                "delete",
                Method::DELETE,
                &format!("/servers/{n}"),
                &[],
                None,
            )
            .await;
        match resp {
            Ok(r) => self.client.wait_action("delete", r.action).await,
            Err(e) if e.code() == Some("not_found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The Hetzner label key of a fleet tag: `fleet:stack` becomes `fleet-stack`, since label
/// keys take only letters, digits, `-`, `_` and `.`.
pub fn label_key(tag: &str) -> String {
    tag.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Why `key` is not a valid label key, if it is not.
fn label_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("the key is empty".into());
    }
    value_problem(key)
}

/// Why `value` is not a valid label value, if it is not (an empty value is valid).
fn value_problem(value: &str) -> Option<String> {
    if value.len() > LABEL_MAX {
        return Some(format!(
            "`{value}` is {} characters long, more than {LABEL_MAX}",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Some(format!("`{value}` contains `{c}`"));
    }
    let edge_ok = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    if !edge_ok(value.chars().next()) || !edge_ok(value.chars().last()) {
        return Some(format!(
            "`{value}` does not start and end with a letter or digit"
        ));
    }
    None
}

fn lifecycle(status: &str) -> Lifecycle {
    match status {
        "initializing" | "starting" => Lifecycle::Booting,
        "running" | "migrating" | "rebuilding" => Lifecycle::Running,
        "stopping" => Lifecycle::Stopping,
        "off" => Lifecycle::Stopped,
        "deleting" => Lifecycle::Terminating,
        _ => Lifecycle::Unknown,
    }
}

/// What the engine sees of a server.
fn observed(s: &Server) -> ObservedInstance {
    let label = |tag: &str| s.labels.get(&label_key(tag)).cloned();
    let address = s
        .public_net
        .as_ref()
        .and_then(|n| n.ipv4.as_ref().or(n.ipv6.as_ref()))
        .map(|a| a.ip.clone())
        .or_else(|| s.private_net.first().map(|p| p.ip.clone()));
    ObservedInstance {
        cloud_id: s.id.to_string(),
        name: label(tags::NAME).unwrap_or_else(|| s.name.clone()),
        lineage: label(tags::LINEAGE).unwrap_or_default(),
        image: s
            .image
            .as_ref()
            .map(|i| i.name.clone().unwrap_or_else(|| i.id.to_string()))
            .unwrap_or_default(),
        instance_type: s.server_type.name.clone(),
        spec_hash: label(tags::SPEC).unwrap_or_default(),
        lifecycle: lifecycle(&s.status),
        address,
        launched_at: s.created,
        batch: label(tags::BATCH),
    }
}

#[async_trait]
impl Cloud for HetznerCloud {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn label(&self) -> String {
        match &self.settings.location {
            Some(l) => format!("hetzner cloud ({l})"),
            None => "hetzner cloud".into(),
        }
    }

    fn max_batch(&self) -> usize {
        self.settings.max_batch
    }

    fn user_data_limit(&self) -> Option<fleet_core::cloud::UserDataLimit> {
        Some(fleet_core::cloud::UserDataLimit {
            max_bytes: USER_DATA_LIMIT,
            gzip: false,
        })
    }

    fn resource_kinds(&self) -> &[&str] {
        &[]
    }

    async fn observe(&self, scope: &Scope) -> Result<Observed, CloudError> {
        let servers = self.client.list_servers(&Self::selector(scope)).await?;
        let stack_key = label_key(tags::STACK);
        Ok(Observed {
            instances: servers
                .iter()
                // The selector already filters; this guards against an API that ignores it.
                .filter(|s| s.labels.get(&stack_key) == Some(&scope.stack))
                .map(observed)
                .collect(),
            ..Observed::default()
        })
    }

    async fn create_instances(
        &self,
        scope: &Scope,
        token: &str,
        batch: &[CreateInstance],
    ) -> Result<CreateOutcome, CloudError> {
        let existing = self.observe(scope).await?.instances;
        Ok(
            crate::one_by_one::create_missing(existing, batch, self.settings.concurrency, |req| {
                self.create_one(scope, token, req)
            })
            .await,
        )
    }

    async fn delete_instances(
        &self,
        _scope: &Scope,
        ids: &[String],
    ) -> Result<DeleteOutcome, CloudError> {
        let deletes: Vec<_> = ids
            .iter()
            .map(|id| async move { (id.clone(), self.delete_one(id).await) })
            .collect();
        let results: Vec<_> = stream::iter(deletes)
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        let mut out = DeleteOutcome::default();
        for (id, r) in results {
            match r {
                Ok(()) => out.deleted.push(id),
                Err(e) => out.failed.push((id, e)),
            }
        }
        Ok(out)
    }

    async fn describe_instance(
        &self,
        cloud_id: &str,
    ) -> Result<Option<ObservedInstance>, CloudError> {
        let Ok(n) = cloud_id.parse::<u64>() else {
            return Ok(None);
        };
        let resp: Result<ServerResponse, CloudError> = self
            .client
            .call("describe", Method::GET, &format!("/servers/{n}"), &[], None)
            .await;
        match resp {
            Ok(r) => Ok(Some(observed(&r.server))),
            Err(e) if e.code() == Some("not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_tags_map_to_valid_label_keys() {
        for tag in [
            tags::STACK,
            tags::NAME,
            tags::LINEAGE,
            tags::SPEC,
            tags::BATCH,
        ] {
            let key = label_key(tag);
            assert_eq!(label_problem(&key), None, "{tag} -> {key}");
        }
        assert_eq!(label_key(tags::STACK), "fleet-stack");
    }

    #[test]
    fn labels_outside_hetzner_syntax_are_named() {
        assert_eq!(value_problem(""), None);
        assert_eq!(value_problem("ci-0001"), None);
        assert!(value_problem("a b").unwrap().contains("` `"));
        assert!(value_problem(&"a".repeat(64)).unwrap().contains("64"));
        assert!(value_problem("-x").unwrap().contains("start and end"));
        assert!(label_problem("").is_some());
    }
}
