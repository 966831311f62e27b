//! Implementations of fleet-core's traits, and the factory that picks them from a stack.
//!
//! * [`sandbox`]: the embedded sandbox cloud, the default for demos and tests. It is a
//!   stand-in for nothing: it exists so the engine can be run and tested with no account.
//! * [`aws`]: EC2 instances, and state in S3 locked in DynamoDB.
//! * [`hetzner`]: Hetzner Cloud servers through its REST API.
//! * [`command`]: any other cloud, through executables the stack names (a JSON contract).
//! * [`gitlab`]: job demand from GitLab's API, runner calls, job webhook checks.

pub mod aws;
pub mod command;
pub mod gitlab;
pub mod hetzner;
pub mod libvirt;
mod one_by_one;
mod rate_limit;
pub mod sandbox;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::Path;

use fleet_core::cloud::Cloud;
use fleet_core::stack::BillingUnit;
use fleet_core::stack::{EnvLookup, LoadedStack, Override, StackError};
use fleet_core::state::{LocalBackend, StateBackend};

/// Provider kinds this build knows.
pub const PROVIDERS: &[&str] = &["sandbox", "aws", "hetzner", "command", "libvirt"];

/// State backends this build knows.
pub const BACKENDS: &[&str] = &["local", "s3"];

/// Loads a stack (see [`fleet_core::stack::load`]) and applies its provider's defaults.
pub fn load_stack(
    path: &Path,
    overrides: &[Override],
    env: EnvLookup,
) -> Result<LoadedStack, StackError> {
    let mut loaded = fleet_core::stack::load(path, overrides, env)?;
    provider_defaults(&mut loaded)?;
    Ok(loaded)
}

/// Fills in settings whose right default depends on the provider, where the stack leaves
/// them out: Hetzner bills each started hour, so `policy.billing.per` defaults to `hour`
/// there, and the policy keeps an idle server until shortly before its next paid hour.
/// Hetzner also bills a stopped server in full, so `policy.prices.stopped` defaults to the
/// running price there (a stopped pool saves nothing).
/// The policy settings are compiled again afterwards, so the policy decides with them.
pub fn provider_defaults(loaded: &mut LoadedStack) -> Result<(), StackError> {
    if loaded.stack.provider.kind == "hetzner" {
        let mut changed = false;
        if !loaded.declares("policy.billing.per") {
            loaded.stack.policy.billing.per = BillingUnit::Hour;
            changed = true;
        }
        if !loaded.declares("policy.prices.stopped") {
            loaded.stack.policy.prices.stopped = Some(loaded.stack.policy.prices.running);
            changed = true;
        }
        if changed {
            loaded.compile_policy()?;
        }
    }
    Ok(())
}

/// The cloud a stack's `provider:` section describes.
pub async fn cloud_for(
    loaded: &LoadedStack,
    calls: &aws::CallCounter,
) -> Result<Box<dyn Cloud>, StackError> {
    let cloud = build_cloud(loaded, calls).await?;
    // Catch resource kinds the provider cannot make now, not halfway through an apply.
    for (i, r) in loaded.stack.resources.iter().enumerate() {
        if !cloud.resource_kinds().contains(&r.kind.as_str()) {
            return Err(loaded.error_at(
                &format!("resources[{i}].kind"),
                format!(
                    "the {} provider has no resource kind `{}`",
                    cloud.name(),
                    r.kind
                ),
                match cloud.resource_kinds() {
                    [] => "it has no resource kinds; remove the resource from the stack".into(),
                    kinds => format!("it has: {}", kinds.join(", ")),
                },
            ));
        }
    }
    Ok(cloud)
}

async fn build_cloud(
    loaded: &LoadedStack,
    calls: &aws::CallCounter,
) -> Result<Box<dyn Cloud>, StackError> {
    let kind = loaded.stack.provider.kind.as_str();
    match kind {
        "sandbox" => {
            let default_dir = match backend_kind(loaded) {
                "local" => LocalBackend::from_stack(loaded)?
                    .path()
                    .parent()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_else(|| loaded.dir().join(".fleet")),
                _ => loaded.dir().join(".fleet"),
            };
            Ok(Box::new(sandbox::SandboxCloud::from_stack(
                loaded,
                &default_dir,
            )?))
        }
        "aws" => Ok(Box::new(
            aws::AwsCloud::from_stack(loaded, calls.clone()).await?,
        )),
        "hetzner" => Ok(Box::new(hetzner::HetznerCloud::from_stack(loaded)?)),
        "command" => Ok(Box::new(command::CommandCloud::from_stack(loaded)?)),
        "libvirt" => Ok(Box::new(libvirt::LibvirtCloud::from_stack(loaded)?)),
        other => Err(unknown(
            loaded,
            "provider.kind",
            "provider",
            other,
            PROVIDERS,
        )),
    }
}

/// The state backend a stack's `state:` section describes.
pub async fn backend_for(
    loaded: &LoadedStack,
    calls: &aws::CallCounter,
) -> Result<Box<dyn StateBackend>, StackError> {
    match backend_kind(loaded) {
        "local" => Ok(Box::new(LocalBackend::from_stack(loaded)?)),
        "s3" => Ok(Box::new(aws::S3Backend::from_stack(loaded, calls).await?)),
        other => Err(unknown(
            loaded,
            "state.backend",
            "state backend",
            other,
            BACKENDS,
        )),
    }
}

fn backend_kind(loaded: &LoadedStack) -> &str {
    loaded.stack.state.backend.as_str()
}

fn unknown(loaded: &LoadedStack, path: &str, what: &str, got: &str, known: &[&str]) -> StackError {
    let close = known
        .iter()
        .find(|k| got.len() > 1 && (k.starts_with(&got[..2]) || got.starts_with(&k[..2])));
    let hint = match close {
        Some(k) => format!(
            "did you mean `{k}`? (this build knows: {})",
            known.join(", ")
        ),
        None => format!("this build knows: {}", known.join(", ")),
    };
    loaded.error_at(path, format!("unknown {what} `{got}`"), hint)
}
