//! The template variables: one documented set, built from the stack and an instance (user
//! data) or from state (inventory). README.md has the table; keep the two in step.

use serde::Serialize;

use crate::stack::{CacheConfig, DockerSource, Stack, DEFAULT_DOCKER_CE_VERSION};
use crate::state::State;

/// Variables every instance of a stack gets alike. Together with the template files they
/// make the template hash, so changing one replaces the instances.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackVars {
    /// The stack's name.
    pub stack: String,
    /// The stack's name as an Ansible group (`-` becomes `_`).
    pub stack_group: String,
    /// `provider.kind`.
    pub provider: String,
    /// `instance.image`.
    pub image: String,
    /// GitLab's URL as the VMs reach it: `runner.instance_gitlab_url`, else
    /// `runner.gitlab_url`.
    pub gitlab_url: Option<String>,
    /// `runner.tags`.
    pub runner_tags: Vec<String>,
    /// `runner.run_untagged`.
    pub runner_run_untagged: bool,
    /// `runner.executor`.
    pub runner_executor: &'static str,
    /// `runner.docker_image`.
    pub runner_docker_image: String,
    /// `runner.dind`.
    pub runner_dind: bool,
    /// `policy.capacity_per_instance`: the runner's `concurrent`.
    pub runner_concurrent: u32,
    /// `runner.metrics_listen`.
    pub runner_metrics_listen: String,
    /// `runner.drain_timeout` in seconds.
    pub runner_drain_timeout_secs: u64,
    /// `runner.cache`, with `region` defaulted to the provider's.
    pub runner_cache: Option<CacheConfig>,
    /// Where the VM gets its runner token: `ssm`, `inline` (written by the user data) or
    /// `none` (the runner is installed but not registered).
    pub runner_token_source: &'static str,
    /// `runner.token_ssm_parameter`.
    pub runner_token_ssm_parameter: Option<String>,
    /// `provider.region`, when the provider has one.
    pub aws_region: Option<String>,
    /// `runner.version`.
    pub runner_version: String,
    /// `runner.install`, with the Docker version defaulted.
    pub install: InstallVars,
}

/// `runner.install` as the playbook sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstallVars {
    /// `docker-ce`, `docker.io` or `preinstalled`.
    pub docker: &'static str,
    /// Docker version to pin, `none` for the distribution's own.
    pub docker_version: Option<String>,
    /// Mirror of Docker's repository, `none` for Docker's own.
    pub docker_repository: Option<String>,
    /// `repository`, `deb` or `preinstalled`.
    pub runner: &'static str,
    /// Mirror of GitLab's repository, `none` for GitLab's own.
    pub runner_repository: Option<String>,
    /// The `.deb` to install with `runner: deb`.
    pub runner_deb: Option<String>,
    /// apt proxy URL.
    pub apt_proxy: Option<String>,
}

impl StackVars {
    /// The variables of `stack`; `has_token` says whether a token will be written inline.
    pub fn from_stack(stack: &Stack, has_token: bool) -> StackVars {
        let r = &stack.runner;
        let region = stack
            .provider
            .settings
            .get("region")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let cache = r.cache.clone().map(|mut c| {
            if c.region.is_none() {
                c.region = region.clone();
            }
            c
        });
        StackVars {
            stack: stack.name.clone(),
            stack_group: ansible_group(&stack.name),
            provider: stack.provider.kind.clone(),
            image: stack.instance.image.clone(),
            gitlab_url: r
                .instance_gitlab_url
                .clone()
                .or_else(|| r.gitlab_url.clone()),
            runner_tags: r.tags.clone(),
            runner_run_untagged: r.run_untagged,
            runner_executor: r.executor.as_str(),
            runner_docker_image: r.docker_image.clone(),
            runner_dind: r.dind,
            runner_concurrent: stack.policy.capacity_per_instance,
            runner_metrics_listen: r.metrics_listen.clone(),
            runner_drain_timeout_secs: r.drain_timeout.as_secs().max(1),
            runner_cache: cache,
            runner_token_source: match (&r.token_ssm_parameter, has_token) {
                (Some(_), _) => "ssm",
                (None, true) => "inline",
                (None, false) => "none",
            },
            runner_token_ssm_parameter: r.token_ssm_parameter.clone(),
            aws_region: region,
            runner_version: r.version.clone(),
            install: InstallVars {
                docker: r.install.docker.as_str(),
                docker_version: match (&r.install.docker_version, r.install.docker) {
                    (Some(v), _) => Some(v.clone()),
                    (None, DockerSource::DockerCe) => Some(DEFAULT_DOCKER_CE_VERSION.into()),
                    (None, _) => None,
                },
                docker_repository: r.install.docker_repository.clone(),
                runner: r.install.runner.as_str(),
                runner_repository: r.install.runner_repository.clone(),
                runner_deb: r.install.runner_deb.clone(),
                apt_proxy: r.install.apt_proxy.clone(),
            },
        }
    }
}

/// Variables of one instance's user data.
#[derive(Debug, Clone, Serialize)]
pub struct UserDataVars {
    /// The stack-wide variables.
    #[serde(flatten)]
    pub stack: StackVars,
    /// The instance's name, also its hostname.
    pub hostname: String,
    /// The runner token written to the VM (mode 0600), masked unless secrets are shown;
    /// `none` unless `runner_token_source` is `inline`.
    pub runner_token: Option<String>,
    /// The cache store's access key (`runner.cache.access_key_env`), written to the VM
    /// (mode 0600), masked unless secrets are shown.
    pub runner_cache_access_key: Option<String>,
    /// The cache store's secret key, like the access key.
    pub runner_cache_secret_key: Option<String>,
    /// The playbook file's text (`templates.playbook`), carried verbatim.
    pub playbook: Option<String>,
    /// The `config.toml` template's text (`templates.runner_config`), carried verbatim for
    /// Ansible to fill in.
    pub runner_config_template: Option<String>,
}

/// One host of the inventory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InventoryHost {
    /// Instance name.
    pub name: String,
    /// The cloud's id.
    pub cloud_id: String,
    /// Address, when the cloud reported one.
    pub address: Option<String>,
    /// GitLab runner id, when known.
    pub runner_id: Option<u64>,
    /// Last lifecycle state the cloud reported.
    pub lifecycle: &'static str,
    /// Jobs running on it when last observed.
    pub running_jobs: u32,
    /// Whether it was running jobs (`busy`) or not (`idle`).
    pub busy: bool,
}

/// Variables of the inventory template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InventoryVars {
    /// The stack's name.
    pub stack: String,
    /// The stack's name as an Ansible group.
    pub stack_group: String,
    /// Live instances (recorded with a cloud id, not gone), by name.
    pub hosts: Vec<InventoryHost>,
}

impl InventoryVars {
    /// The live fleet recorded in `state`.
    pub fn from_state(state: &State) -> InventoryVars {
        let hosts = state
            .instances
            .values()
            .filter(|r| !r.lifecycle.is_gone())
            .filter_map(|r| {
                Some(InventoryHost {
                    name: r.name.clone(),
                    cloud_id: r.cloud_id.clone()?,
                    address: r.address.clone(),
                    runner_id: r.jobs.runner_id,
                    lifecycle: r.lifecycle.as_str(),
                    running_jobs: r.jobs.running,
                    busy: r.jobs.running > 0,
                })
            })
            .collect();
        InventoryVars {
            stack: state.stack.clone(),
            stack_group: ansible_group(&state.stack),
            hosts,
        }
    }
}

/// An Ansible group name for `name`: groups must be identifiers, so `-` becomes `_`.
pub fn ansible_group(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
