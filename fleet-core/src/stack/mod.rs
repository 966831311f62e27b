//! The stack file: what the user declared for one fleet.
//!
//! A stack is loaded from YAML by [`load`], which reports every problem with the file, line
//! and column it comes from and a sentence on what to do. Sections that belong to one
//! provider or state backend (`provider`, `state`) are kept as YAML trees here and decoded
//! by their implementation through [`LoadedStack::section`], so adding a provider never
//! touches this model.

mod bootstrap;
mod daemon;
mod error;
mod load;
mod overrides;
mod policy;
mod source_map;
mod templates;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::resource::ResourceSpec;
use crate::secret::Secret;

pub use bootstrap::{
    CacheConfig, CacheKind, DockerSource, InstallConfig, RunnerExecutor, RunnerSource,
    DEFAULT_DOCKER_CE_VERSION, DEFAULT_RUNNER_VERSION,
};
pub use daemon::DaemonConfig;
pub use error::{StackError, StackErrorKind};
pub use load::{load, load_str, EnvLookup};
pub use overrides::Override;
pub use policy::{
    BillingConfig, BillingUnit, Effective, LearnedPool, PeriodConfig, PolicyConfig, Prices,
    PricesConfig, Settings, SettingsProblem, Target, STOPPED_SHARE,
};
pub use source_map::{Location, SourceMap};
pub use templates::{TemplateText, Templates};

/// One fleet, as declared in a stack file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// The fleet's name: a DNS label, prefix of every instance name.
    pub name: String,
    /// Free text for people reading the stack.
    #[serde(default)]
    pub description: Option<String>,
    /// Which cloud runs the VMs, and its settings (`kind` plus provider keys).
    pub provider: ProviderSection,
    /// What every runner VM looks like.
    pub instance: InstanceConfig,
    /// The GitLab runner each VM runs.
    #[serde(default)]
    pub runner: RunnerConfig,
    /// How many VMs to keep.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Where state lives.
    #[serde(default)]
    pub state: StateSection,
    /// Templates rendered for each instance, relative to the stack file.
    #[serde(default)]
    pub templates: TemplatesConfig,
    /// Supporting resources the instances use (key pairs, security groups, buckets).
    #[serde(default)]
    pub resources: Vec<ResourceDecl>,
    /// How apply runs.
    #[serde(default)]
    pub apply: ApplyConfig,
    /// How `fleet-cli serve` runs.
    #[serde(default)]
    pub daemon: DaemonConfig,
}

/// `provider:`: the provider's `kind` and its own settings, decoded by the provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderSection {
    /// `sandbox`, `aws`, ...
    pub kind: String,
    /// Every other key, for the provider to decode.
    #[serde(flatten)]
    pub settings: BTreeMap<String, serde_yaml_ng::Value>,
}

/// `instance:`: the VM every runner gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Image (AMI id, image name...).
    pub image: String,
    /// Instance types, most preferred first; the provider may fall back along the list.
    pub types: Vec<String>,
    /// Extra labels or tags put on every VM.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `runner:`: the GitLab runner on each VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// GitLab's base URL.
    #[serde(default)]
    pub gitlab_url: Option<String>,
    /// GitLab's base URL as the VMs reach it, when that differs from `gitlab_url` (a
    /// private address, or the host's 10.0.2.2 under libvirt's user networking).
    #[serde(default)]
    pub instance_gitlab_url: Option<String>,
    /// Runner tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether the runner takes jobs without tags.
    #[serde(default = "default_true")]
    pub run_untagged: bool,
    /// Environment variable holding the GitLab access token: demand and runner calls.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Environment variable holding a runner authentication token (`glrt-...`) that every
    /// VM registers with, for fleets whose runner is created in GitLab beforehand.
    #[serde(default)]
    pub runner_token_env: Option<String>,
    /// Projects (ids or full paths) whose pending and running jobs are this fleet's demand.
    #[serde(default)]
    pub projects: Vec<GitLabRef>,
    /// Groups (ids or full paths) whose projects, subgroups included, count as demand.
    #[serde(default)]
    pub groups: Vec<GitLabRef>,
    /// Scope of the runners the fleet creates.
    #[serde(default)]
    pub runner_type: RunnerType,
    /// Whether project runners are locked to their projects.
    #[serde(default)]
    pub locked: bool,
    /// Longest a job may run on the fleet's runners (GitLab's `maximum_timeout`).
    #[serde(default, with = "opt_duration_serde")]
    pub maximum_timeout: Option<Duration>,
    /// Environment variable holding the secret job webhooks must carry (`X-Gitlab-Token`).
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
    /// How long a new VM's runner may take to come online before the VM is replaced.
    #[serde(default = "default_online_timeout", with = "duration_serde")]
    pub online_timeout: Duration,
    /// How the runner runs jobs (only `docker`).
    #[serde(default)]
    pub executor: RunnerExecutor,
    /// Image of jobs that name none.
    #[serde(default = "bootstrap::default_docker_image")]
    pub docker_image: String,
    /// Run jobs privileged with a TLS certs volume, so Docker-in-Docker works.
    #[serde(default)]
    pub dind: bool,
    /// `host:port` of the runner's Prometheus metrics (`listen_address`).
    #[serde(default = "bootstrap::default_metrics_listen")]
    pub metrics_listen: String,
    /// How long a VM's running jobs may take to finish before it goes: scale-in waits
    /// this long for a paused runner, and stopping the runner's service waits this long
    /// (graceful drain).
    #[serde(default = "bootstrap::default_drain_timeout", with = "duration_serde")]
    pub drain_timeout: Duration,
    /// Shared job cache in S3 (or an S3-compatible store).
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// AWS: SSM parameter each VM reads its runner token from with its instance role,
    /// so the token is not in the user data.
    #[serde(default)]
    pub token_ssm_parameter: Option<String>,
    /// gitlab-runner version the VMs install.
    #[serde(default = "bootstrap::default_runner_version")]
    pub version: String,
    /// Where the VMs get Docker and gitlab-runner, and an apt proxy.
    #[serde(default)]
    pub install: InstallConfig,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            gitlab_url: None,
            instance_gitlab_url: None,
            tags: Vec::new(),
            run_untagged: true,
            token_env: None,
            runner_token_env: None,
            projects: Vec::new(),
            groups: Vec::new(),
            runner_type: RunnerType::default(),
            locked: false,
            maximum_timeout: None,
            webhook_secret_env: None,
            online_timeout: default_online_timeout(),
            executor: RunnerExecutor::default(),
            docker_image: bootstrap::default_docker_image(),
            dind: false,
            metrics_listen: bootstrap::default_metrics_listen(),
            drain_timeout: bootstrap::default_drain_timeout(),
            cache: None,
            token_ssm_parameter: None,
            version: bootstrap::default_runner_version(),
            install: InstallConfig::default(),
        }
    }
}

/// A GitLab project or group, by numeric id or full path (`group/sub/name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GitLabRef {
    /// A numeric id.
    Id(u64),
    /// A full path.
    Path(String),
}

impl std::fmt::Display for GitLabRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitLabRef::Id(id) => write!(f, "{id}"),
            GitLabRef::Path(p) => f.write_str(p),
        }
    }
}

/// `runner.runner_type`: which scope the fleet's runners are created in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerType {
    /// Available to every project of the instance (needs an administrator's token).
    #[default]
    InstanceType,
    /// Created in the first of `runner.groups`, available to its projects.
    GroupType,
    /// Created in the first of `runner.projects` and assigned to the others.
    ProjectType,
}

impl RunnerType {
    /// The name GitLab's API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerType::InstanceType => "instance_type",
            RunnerType::GroupType => "group_type",
            RunnerType::ProjectType => "project_type",
        }
    }
}

/// `state:`: the backend's `backend` kind and its own settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateSection {
    /// `local` (the default, and the only backend in this build).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Every other key, for the backend to decode.
    #[serde(flatten)]
    pub settings: BTreeMap<String, serde_yaml_ng::Value>,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            backend: default_backend(),
            settings: BTreeMap::new(),
        }
    }
}

/// `templates:`: files rendered for each instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesConfig {
    /// The cloud-init user data template.
    #[serde(default)]
    pub user_data: Option<PathBuf>,
    /// The Ansible playbook the user data carries and runs (passed as text, not rendered).
    #[serde(default)]
    pub playbook: Option<PathBuf>,
    /// The gitlab-runner `config.toml` template the playbook fills in (passed as text).
    #[serde(default)]
    pub runner_config: Option<PathBuf>,
    /// The Ansible inventory template `fleet-cli inventory` renders from state.
    #[serde(default)]
    pub inventory: Option<PathBuf>,
}

/// One supporting resource in `resources:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceDecl {
    /// Resource kind, as the provider names it (`key_pair`, ...).
    pub kind: String,
    /// Name inside the stack.
    pub name: String,
    /// Provider-specific properties.
    #[serde(default)]
    pub properties: BTreeMap<String, serde_json::Value>,
    /// Other resources (`kind/name`) that must exist first.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

impl From<&ResourceDecl> for ResourceSpec {
    fn from(d: &ResourceDecl) -> Self {
        ResourceSpec {
            kind: d.kind.clone(),
            name: d.name.clone(),
            properties: d.properties.clone(),
            depends_on: d.depends_on.clone(),
        }
    }
}

/// `apply:`: how changes are executed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfig {
    /// Cloud calls in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Instances per create or delete call (capped by the provider's own limit).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            concurrency: default_concurrency(),
            batch_size: default_batch_size(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_backend() -> String {
    "local".into()
}
fn default_concurrency() -> usize {
    4
}
fn default_batch_size() -> usize {
    100
}
fn default_online_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

/// A stack together with where it came from, so later errors can still point into the file.
#[derive(Debug, Clone)]
pub struct LoadedStack {
    /// The validated stack.
    pub stack: Stack,
    /// The file it was read from.
    pub path: PathBuf,
    /// Key positions in that file.
    pub source_map: SourceMap,
    /// `--set` overrides that were applied.
    pub overrides: Vec<Override>,
    /// Secrets read from the environment variables the stack names.
    pub secrets: BTreeMap<String, Secret>,
    /// The `policy:` section, checked and compiled (schedules parsed) once at load.
    pub policy: Settings,
    /// The texts of the templates the stack names, read once at load.
    pub templates: Templates,
}

impl LoadedStack {
    /// Checks and compiles `stack.policy` into [`LoadedStack::policy`]; call again after
    /// changing `stack.policy` (as provider defaults do).
    pub fn compile_policy(&mut self) -> Result<(), StackError> {
        self.policy = Settings::from_config(&self.stack.policy)
            .map_err(|p| self.error_at(&p.path, p.message, p.hint))?;
        Ok(())
    }

    /// The directory relative paths in the stack resolve against.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// Resolves a path written in the stack against the stack's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir().join(p)
        }
    }

    /// Where `path` (a dotted key path such as `policy.max_instances`) was set, for messages.
    pub fn origin(&self, path: &str) -> String {
        load::origin(&self.path, &self.source_map, &self.overrides, path)
    }

    /// Whether the stack sets the key at `path` (a dotted key path), in the file or with
    /// `--set`, rather than leaving it to its default.
    pub fn declares(&self, path: &str) -> bool {
        self.source_map.contains(path)
            || self.overrides.iter().any(|o| {
                let p = o.canonical_path();
                path == p || path.starts_with(&format!("{p}."))
            })
    }

    /// An error about the value at `path`, located in the file.
    pub fn error_at(
        &self,
        path: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> StackError {
        StackError::new(
            self.origin(path),
            StackErrorKind::Invalid {
                message: message.into(),
                hint: hint.into(),
            },
        )
    }

    /// Decodes a provider or backend section (`provider`, `state`) into its settings type,
    /// with located errors and key suggestions. `skip` names keys the core already used.
    pub fn section<T: serde::de::DeserializeOwned>(
        &self,
        section: &str,
        settings: &BTreeMap<String, serde_yaml_ng::Value>,
    ) -> Result<T, StackError> {
        load::decode_section(self, section, settings)
    }

    /// The secret read from the environment variable `name`, if the stack named it.
    pub fn secret(&self, env_name: &str) -> Option<&Secret> {
        self.secrets.get(env_name)
    }
}

/// Parses a duration written as `90s`, `5m`, `1h` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => return Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Serde adapter for durations written as `90s`, `5m`, `1h` or seconds.
pub mod duration_serde {
    use std::time::Duration;

    use serde::{de, Deserialize, Deserializer, Serializer};

    /// Reads a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => super::parse_duration(&t).ok_or_else(|| {
                de::Error::custom(format!(
                    "`{t}` is not a duration; write it like `90s`, `5m`, `1h` or `250ms`"
                ))
            }),
        }
    }

    /// Writes a duration as `<n>ms` or `<n>s`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_millis() != 0 {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        } else {
            s.serialize_str(&format!("{}s", d.as_secs()))
        }
    }
}

/// Serde adapter for optional durations (`null` or absent is `None`).
pub mod opt_duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads an optional duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::duration_serde")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }

    /// Writes an optional duration.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_common_units() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration(""), None);
    }
}
