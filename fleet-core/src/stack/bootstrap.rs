//! Stack keys the instance templates need (executor, cache, token source, template files),
//! their defaults, and the checks that make a bad value fail at load with its location.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{LoadedStack, StackError};

/// How the runner runs jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerExecutor {
    /// Each job in a Docker container (the only executor the templates support).
    #[default]
    Docker,
}

impl RunnerExecutor {
    /// The name gitlab-runner's `config.toml` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerExecutor::Docker => "docker",
        }
    }
}

/// Kind of shared job cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheKind {
    /// Amazon S3 or an S3-compatible store.
    #[default]
    S3,
}

/// `runner.cache`: the cache jobs share across VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Kind of store (`s3`).
    #[serde(default, rename = "type")]
    pub kind: CacheKind,
    /// Bucket name.
    pub bucket: String,
    /// Bucket region (default: the provider's `region`, if it has one).
    #[serde(default)]
    pub region: Option<String>,
    /// Key prefix inside the bucket.
    #[serde(default)]
    pub path: Option<String>,
    /// `host[:port]` of an S3-compatible store; without it the VMs use S3 with their
    /// instance role.
    #[serde(default)]
    pub server_address: Option<String>,
}

pub(super) fn default_docker_image() -> String {
    "alpine:3.20".into()
}

pub(super) fn default_metrics_listen() -> String {
    "0.0.0.0:9252".into()
}

pub(super) fn default_drain_timeout() -> Duration {
    Duration::from_secs(2 * 3600)
}

/// Checks the runner keys the templates use and the template files the stack names.
pub(super) fn validate(l: &LoadedStack) -> Result<(), StackError> {
    let s = &l.stack;
    let r = &s.runner;
    if r.docker_image.trim().is_empty() {
        return Err(l.error_at(
            "runner.docker_image",
            "runner.docker_image is empty",
            "name the image jobs run in when they name none, e.g. `alpine:3.20`",
        ));
    }
    if let Some(problem) = listen_problem(&r.metrics_listen) {
        return Err(l.error_at(
            "runner.metrics_listen",
            format!("runner.metrics_listen `{}` {problem}", r.metrics_listen),
            "write it as host:port, e.g. `0.0.0.0:9252`",
        ));
    }
    if r.drain_timeout.is_zero() {
        return Err(l.error_at(
            "runner.drain_timeout",
            "runner.drain_timeout is 0",
            "give running jobs time to finish when a VM stops, e.g. `2h`",
        ));
    }
    if let Some(c) = &r.cache {
        if c.bucket.trim().is_empty() {
            return Err(l.error_at(
                "runner.cache.bucket",
                "runner.cache.bucket is empty",
                "name the bucket jobs share their cache in",
            ));
        }
    }
    if let Some(p) = &r.token_ssm_parameter {
        if s.provider.kind != "aws" {
            return Err(l.error_at(
                "runner.token_ssm_parameter",
                format!(
                    "runner.token_ssm_parameter needs the aws provider, this stack uses `{}`",
                    s.provider.kind
                ),
                "use runner.runner_token_env instead",
            ));
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || "_.-/".contains(c);
        if p.is_empty() || !p.chars().all(valid) {
            return Err(l.error_at(
                "runner.token_ssm_parameter",
                format!("`{p}` is not an SSM parameter name"),
                "SSM names use letters, digits and `_ . - /`, e.g. `/fleet/runner-token`",
            ));
        }
    }
    let t = &s.templates;
    for (key, path) in [
        ("templates.user_data", &t.user_data),
        ("templates.playbook", &t.playbook),
        ("templates.runner_config", &t.runner_config),
        ("templates.inventory", &t.inventory),
    ] {
        let Some(p) = path else { continue };
        if !l.resolve(p).is_file() {
            return Err(l.error_at(
                key,
                format!(
                    "template `{}` does not exist (looked in {})",
                    p.display(),
                    l.resolve(p).display()
                ),
                "paths are relative to the stack file",
            ));
        }
    }
    if t.user_data.is_some() && r.gitlab_url.is_none() {
        return Err(l.error_at(
            "templates.user_data",
            "the user data template needs runner.gitlab_url, which is not set",
            "set runner.gitlab_url to GitLab's base URL",
        ));
    }
    Ok(())
}

/// Why `text` is not `host:port`, if it is not.
fn listen_problem(text: &str) -> Option<&'static str> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Some("has no port");
    };
    if host.is_empty() {
        return Some("has no host");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => None,
        _ => Some("has no valid port (1 to 65535)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_need_a_host_and_a_port() {
        assert_eq!(listen_problem("0.0.0.0:9252"), None);
        assert_eq!(listen_problem("[::]:9252"), None);
        assert!(listen_problem("9252").is_some());
        assert!(listen_problem(":9252").is_some());
        assert!(listen_problem("0.0.0.0:http").is_some());
        assert!(listen_problem("0.0.0.0:0").is_some());
    }
}
