//! The sandbox's `provider:` settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use fleet_core::stack::duration_serde;

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
