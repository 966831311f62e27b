//! Stack keys the instance templates need (executor, cache, token source, package sources
//! and versions, template files), their defaults, and the checks that make a bad value fail
//! at load with its location.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{EnvLookup, LoadedStack, StackError};

/// gitlab-runner version the VMs install when `runner.version` is not set. Pinned, so VMs
/// started on different days run the same runner and a new version replaces them (it is
/// part of the template hash).
pub const DEFAULT_RUNNER_VERSION: &str = "18.5.0";

/// Docker Engine version installed from Docker's repository when
/// `runner.install.docker_version` is not set.
pub const DEFAULT_DOCKER_CE_VERSION: &str = "28.5.1";

/// Oldest `runner.version` the playbook installs: from 17.7 on, the helper images are a
/// package of their own (`gitlab-runner-helper-images`) pinned alongside.
const MIN_RUNNER_VERSION: (u32, u32) = (17, 7);

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
    /// Environment variable holding the store's access key (needed off AWS).
    #[serde(default)]
    pub access_key_env: Option<String>,
    /// Environment variable holding the store's secret key.
    #[serde(default)]
    pub secret_key_env: Option<String>,
    /// Talk plain HTTP to `server_address` (a MinIO on a private network).
    #[serde(default)]
    pub insecure: bool,
}

/// `runner.install.docker`: where Docker comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DockerSource {
    /// `docker-ce` from Docker's package repository (or `docker_repository`, a mirror).
    #[default]
    #[serde(rename = "docker-ce")]
    DockerCe,
    /// `docker.io` from the distribution's own archive.
    #[serde(rename = "docker.io")]
    DockerIo,
    /// Already in the image (a golden image): nothing is installed.
    #[serde(rename = "preinstalled")]
    Preinstalled,
}

impl DockerSource {
    /// The name the stack and the templates use.
    pub fn as_str(self) -> &'static str {
        match self {
            DockerSource::DockerCe => "docker-ce",
            DockerSource::DockerIo => "docker.io",
            DockerSource::Preinstalled => "preinstalled",
        }
    }
}

/// `runner.install.runner`: where gitlab-runner comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerSource {
    /// GitLab's package repository (or `runner_repository`, a mirror of it).
    #[default]
    Repository,
    /// A `.deb` at `runner_deb` (a path on the VM or an http(s) URL).
    Deb,
    /// Already in the image (a golden image): nothing is installed and the runner's
    /// `system_id` is reset, so VMs from one image do not share it.
    Preinstalled,
}

impl RunnerSource {
    /// The name the stack and the templates use.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerSource::Repository => "repository",
            RunnerSource::Deb => "deb",
            RunnerSource::Preinstalled => "preinstalled",
        }
    }
}

/// `runner.install`: where the VMs get their packages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallConfig {
    /// Where Docker comes from.
    #[serde(default)]
    pub docker: DockerSource,
    /// Docker version (`28.5.1`); default [`DEFAULT_DOCKER_CE_VERSION`] for `docker-ce`,
    /// the release's own for `docker.io`.
    #[serde(default)]
    pub docker_version: Option<String>,
    /// Base URL of a mirror of Docker's repository (it holds `<distro>/gpg` and
    /// `<distro>/dists/...`).
    #[serde(default)]
    pub docker_repository: Option<String>,
    /// Where gitlab-runner comes from.
    #[serde(default)]
    pub runner: RunnerSource,
    /// Base URL of a mirror of GitLab's gitlab-runner repository (it holds `gpgkey` and
    /// `<distro>/dists/...`).
    #[serde(default)]
    pub runner_repository: Option<String>,
    /// With `runner: deb`: the package, a path on the VM or an http(s) URL.
    #[serde(default)]
    pub runner_deb: Option<String>,
    /// `http://host:port` of an apt proxy (apt-cacher-ng, a squid) every package download
    /// goes through.
    #[serde(default)]
    pub apt_proxy: Option<String>,
}

/// The `runner.version` default, for serde.
pub(super) fn default_runner_version() -> String {
    DEFAULT_RUNNER_VERSION.into()
}

pub(super) fn default_docker_image() -> String {
    "alpine:3.20".into()
}

/// Loopback: the metrics port also serves `/debug/pprof` and `/debug/jobs/list` without
/// authentication, so it is not put on a public address unless the stack says so.
pub(super) fn default_metrics_listen() -> String {
    "127.0.0.1:9252".into()
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
            "write it as host:port, e.g. `127.0.0.1:9252`",
        ));
    }
    if r.drain_timeout.is_zero() {
        return Err(l.error_at(
            "runner.drain_timeout",
            "runner.drain_timeout is 0",
            "give running jobs time to finish when a VM stops, e.g. `2h`",
        ));
    }
    validate_tags(l)?;
    if let Some(c) = &r.cache {
        validate_cache(l, c)?;
    }
    validate_versions(l)?;
    validate_install(l)?;
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

/// GitLab's rules for a runner tag, checked here because the templates write tags into the
/// runner's configuration: a tag is split at commas by GitLab's tag list, stripped of
/// surrounding blanks, and at most 255 characters; control characters (a newline) have no
/// place in one.
fn validate_tags(l: &LoadedStack) -> Result<(), StackError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, tag) in l.stack.runner.tags.iter().enumerate() {
        let key = format!("runner.tags[{i}]");
        let problem = if tag.contains(',') {
            Some("contains a comma, which GitLab reads as two tags")
        } else if tag.chars().any(char::is_control) {
            Some("contains a control character (a newline or tab)")
        } else if tag.trim() != tag {
            Some("starts or ends with a blank, which GitLab strips")
        } else if tag.chars().count() > 255 {
            Some("is longer than GitLab's 255 characters")
        } else if !seen.insert(tag.as_str()) {
            Some("is listed twice")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(l.error_at(
                &key,
                format!("runner tag {} {problem}", serde_json::json!(tag)),
                "tags are single words or short phrases like `docker` or `linux-amd64`",
            ));
        }
    }
    Ok(())
}

/// The cache settings gitlab-runner needs to reach the store: an S3-compatible store is
/// `host[:port]` (the runner adds the scheme) with keys, and off AWS there is no instance
/// role to fall back on.
fn validate_cache(l: &LoadedStack, c: &CacheConfig) -> Result<(), StackError> {
    let kind = l.stack.provider.kind.as_str();
    if c.bucket.trim().is_empty() {
        return Err(l.error_at(
            "runner.cache.bucket",
            "runner.cache.bucket is empty",
            "name the bucket jobs share their cache in",
        ));
    }
    match &c.server_address {
        Some(a) if a.contains("://") => {
            return Err(l.error_at(
                "runner.cache.server_address",
                format!("runner.cache.server_address `{a}` has a scheme; gitlab-runner adds one itself"),
                "write host[:port], e.g. `minio.internal:9000`, and set runner.cache.insecure: true for plain http",
            ))
        }
        Some(a) if a.trim().is_empty() || a.contains('/') || a.contains(char::is_whitespace) => {
            return Err(l.error_at(
                "runner.cache.server_address",
                format!("runner.cache.server_address `{a}` is not host[:port]"),
                "write host[:port], e.g. `minio.internal:9000`",
            ))
        }
        Some(_) => {}
        None if kind != "aws" && kind != "sandbox" => {
            return Err(l.error_at(
                "runner.cache",
                format!("runner.cache has no server_address: on the {kind} provider the runner would try AWS S3 with an instance role it does not have"),
                "set runner.cache.server_address (host[:port] of an S3-compatible store) with access_key_env and secret_key_env",
            ))
        }
        None => {}
    }
    if c.insecure && c.server_address.is_none() {
        return Err(l.error_at(
            "runner.cache.insecure",
            "runner.cache.insecure needs runner.cache.server_address",
            "AWS S3 is only reached over https; remove insecure",
        ));
    }
    match (&c.access_key_env, &c.secret_key_env) {
        (Some(_), None) | (None, Some(_)) => {
            let missing = if c.access_key_env.is_none() {
                "access_key_env"
            } else {
                "secret_key_env"
            };
            return Err(l.error_at(
                "runner.cache",
                format!("runner.cache.{missing} is not set; the store needs both keys"),
                "set access_key_env and secret_key_env to the variables holding the keys",
            ));
        }
        (None, None) if c.server_address.is_some() && kind != "aws" && kind != "sandbox" => {
            return Err(l.error_at(
                "runner.cache",
                format!("runner.cache has a server_address but no keys: on the {kind} provider there is no instance role"),
                "set runner.cache.access_key_env and secret_key_env to the variables holding the store's keys",
            ));
        }
        _ => {}
    }
    Ok(())
}

/// `runner.version` and `runner.install.docker_version` are plain versions (`18.5.0`),
/// which the playbook turns into the packages' version strings.
fn validate_versions(l: &LoadedStack) -> Result<(), StackError> {
    let r = &l.stack.runner;
    let Some(parts) = version_parts(&r.version) else {
        return Err(l.error_at(
            "runner.version",
            format!(
                "runner.version `{}` is not a version like `{DEFAULT_RUNNER_VERSION}`",
                r.version
            ),
            format!("write major.minor.patch; the default is {DEFAULT_RUNNER_VERSION}"),
        ));
    };
    if (parts[0], parts[1]) < MIN_RUNNER_VERSION {
        return Err(l.error_at(
            "runner.version",
            format!(
                "runner.version `{}` is older than {}.{}, which the playbook installs",
                r.version, MIN_RUNNER_VERSION.0, MIN_RUNNER_VERSION.1
            ),
            format!("use {DEFAULT_RUNNER_VERSION} (the default) or newer"),
        ));
    }
    if let Some(v) = &r.install.docker_version {
        if version_parts(v).is_none() {
            return Err(l.error_at(
                "runner.install.docker_version",
                format!("runner.install.docker_version `{v}` is not a version like `{DEFAULT_DOCKER_CE_VERSION}`"),
                "write major.minor.patch",
            ));
        }
    }
    Ok(())
}

/// `a.b.c` as numbers.
fn version_parts(text: &str) -> Option<[u32; 3]> {
    let mut it = text.split('.').map(|p| {
        (!p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
    });
    let parts = [it.next()??, it.next()??, it.next()??];
    it.next().is_none().then_some(parts)
}

/// Each package source names what it needs and nothing it does not use.
fn validate_install(l: &LoadedStack) -> Result<(), StackError> {
    let i = &l.stack.runner.install;
    let unused = |key: &str, needs: &str| {
        Err(l.error_at(
            &format!("runner.install.{key}"),
            format!("runner.install.{key} is set but {needs}"),
            "remove it, or change the source it belongs to",
        ))
    };
    if i.docker == DockerSource::Preinstalled && i.docker_version.is_some() {
        return unused("docker_version", "runner.install.docker is `preinstalled`");
    }
    if i.docker != DockerSource::DockerCe && i.docker_repository.is_some() {
        return unused(
            "docker_repository",
            "runner.install.docker is not `docker-ce`",
        );
    }
    if i.runner != RunnerSource::Repository && i.runner_repository.is_some() {
        return unused(
            "runner_repository",
            "runner.install.runner is not `repository`",
        );
    }
    if i.runner != RunnerSource::Deb && i.runner_deb.is_some() {
        return unused("runner_deb", "runner.install.runner is not `deb`");
    }
    for (key, url) in [
        ("docker_repository", &i.docker_repository),
        ("runner_repository", &i.runner_repository),
        ("apt_proxy", &i.apt_proxy),
    ] {
        let Some(url) = url else { continue };
        if !is_http_url(url) {
            return Err(l.error_at(
                &format!("runner.install.{key}"),
                format!("runner.install.{key} `{url}` is not an http:// or https:// URL"),
                "write the full URL, e.g. `http://10.0.0.2:3142`",
            ));
        }
    }
    if i.runner == RunnerSource::Deb {
        match &i.runner_deb {
            None => {
                return Err(l.error_at(
                    "runner.install.runner",
                    "runner.install.runner is `deb` but runner.install.runner_deb is not set",
                    "set runner_deb to the package's path on the VM or its http(s) URL",
                ))
            }
            Some(d) if !(d.starts_with('/') || is_http_url(d)) || !d.ends_with(".deb") => {
                return Err(l.error_at(
                    "runner.install.runner_deb",
                    format!("runner.install.runner_deb `{d}` is not an absolute path or http(s) URL of a .deb"),
                    "e.g. `/opt/packages/gitlab-runner_18.5.0-1_amd64.deb`",
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn is_http_url(text: &str) -> bool {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

/// The URL the VMs reach GitLab at must not be the VM itself: a loopback `gitlab_url` only
/// works where nothing boots (the sandbox) or where the cloud is an emulator on this machine
/// too (its endpoint is loopback, as in the tests).
pub(super) fn validate_gitlab_reach(l: &LoadedStack, env: EnvLookup) -> Result<(), StackError> {
    let s = &l.stack;
    let r = &s.runner;
    // The providers whose VMs boot the user data; an unknown kind is reported by the
    // provider factory instead.
    const BOOTING: [&str; 4] = ["aws", "hetzner", "command", "libvirt"];
    if s.templates.user_data.is_none() || !BOOTING.contains(&s.provider.kind.as_str()) {
        return Ok(());
    }
    let (key, url) = match (&r.instance_gitlab_url, &r.gitlab_url) {
        (Some(u), _) => ("runner.instance_gitlab_url", u),
        (None, Some(u)) => ("runner.gitlab_url", u),
        (None, None) => return Ok(()),
    };
    if !is_loopback_url(url) {
        return Ok(());
    }
    let setting = |k: &str| {
        s.provider
            .settings
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let endpoint = setting("endpoint")
        .or_else(|| setting("endpoint_url"))
        .or_else(|| {
            (s.provider.kind == "aws")
                .then(|| env("AWS_ENDPOINT_URL"))
                .flatten()
        });
    if endpoint.as_deref().is_some_and(is_loopback_url) {
        return Ok(());
    }
    Err(l.error_at(
        key,
        format!("{key} `{url}` is a loopback address: on a {} VM that is the VM itself", s.provider.kind),
        "give the address VMs reach GitLab at (set runner.instance_gitlab_url when fleet-cli reaches it at another; with libvirt's user networking the host is 10.0.2.2)",
    ))
}

/// Whether `url`'s host is `localhost`, `127.x.x.x` or `[::1]`.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

    #[test]
    fn versions_are_three_numbers() {
        assert_eq!(version_parts("18.5.0"), Some([18, 5, 0]));
        assert_eq!(version_parts("18.5"), None);
        assert_eq!(version_parts("18.5.0.1"), None);
        assert_eq!(version_parts("v18.5.0"), None);
        assert_eq!(version_parts("18..0"), None);
    }

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(is_loopback_url("http://127.0.0.1:8929"));
        assert!(is_loopback_url("http://localhost/gitlab"));
        assert!(is_loopback_url("http://[::1]:80"));
        assert!(!is_loopback_url("http://10.0.2.2:8929"));
        assert!(!is_loopback_url("https://gitlab.example.com"));
    }
}
