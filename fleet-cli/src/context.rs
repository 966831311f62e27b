//! Builds the engine's parts from the global flags: stack, cloud, state backend, policy,
//! and the state lock.

use std::time::Instant;

use anyhow::{Context as _, Result};
use chrono::Utc;

use fleet_core::ci::{Ci, NoCi};
use fleet_core::cloud::Cloud;
use fleet_core::engine::{read_state, Fleet};
use fleet_core::policy::{DemandPolicy, Policy, StaticPolicy};
use fleet_core::stack::{LoadedStack, Override};
use fleet_core::state::{LockInfo, State, StateBackend, StateError};

use crate::Global;

/// Everything a command runs with.
pub struct Ctx {
    pub loaded: LoadedStack,
    /// Cloud API calls made, by operation (AWS: counted by an SDK interceptor).
    pub calls: fleet_providers::aws::CallCounter,
    pub cloud: Box<dyn Cloud>,
    pub backend: Box<dyn StateBackend>,
    /// The demand policy when a CI system reports demand, else `min_instances` as a count.
    policy: Box<dyn Policy>,
    /// GitLab when the stack names `runner.gitlab_url` and `runner.token_env`, else `NoCi`.
    ci: Box<dyn Ci>,
}

/// The stack the global flags name (`--stack`, `--set`, secrets from the environment), with
/// its provider's defaults.
pub fn load_stack(g: &Global) -> Result<LoadedStack> {
    let overrides = g
        .set
        .iter()
        .map(|s| Override::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let env = |k: &str| std::env::var(k).ok();
    Ok(fleet_providers::load_stack(&g.stack, &overrides, &env)?)
}

/// What the read-only commands (`state list`, `state show`, `render`, `inventory`) run
/// with: the stack and its state backend; no cloud, no CI system, no lock.
pub struct ReadOnly {
    pub loaded: LoadedStack,
    pub backend: Box<dyn StateBackend>,
}

impl ReadOnly {
    pub async fn load(g: &Global) -> Result<ReadOnly> {
        let loaded = load_stack(g)?;
        let calls = fleet_providers::aws::CallCounter::default();
        let backend = fleet_providers::backend_for(&loaded, &calls).await?;
        Ok(ReadOnly { loaded, backend })
    }

    /// The recorded state of this stack, or an empty one when there is none yet.
    pub async fn state(&self) -> Result<State> {
        Ok(read_state(self.backend.as_ref(), &self.loaded.stack.name, String::new).await?)
    }
}

impl Ctx {
    pub async fn load(g: &Global) -> Result<Ctx> {
        let loaded = load_stack(g)?;
        let calls = fleet_providers::aws::CallCounter::default();
        let cloud = fleet_providers::cloud_for(&loaded, &calls).await?;
        let backend = fleet_providers::backend_for(&loaded, &calls).await?;
        let (ci, policy): (Box<dyn Ci>, Box<dyn Policy>) =
            match fleet_providers::gitlab::ci_for(&loaded)? {
                Some(gitlab) => (Box::new(gitlab), Box::new(DemandPolicy)),
                None => (Box::new(NoCi), Box::new(StaticPolicy)),
            };
        Ok(Ctx {
            loaded,
            calls,
            cloud,
            backend,
            policy,
            ci,
        })
    }

    /// The CI system (for its API call counts).
    pub fn ci(&self) -> &dyn Ci {
        self.ci.as_ref()
    }

    pub fn fleet(&self) -> Fleet<'_> {
        Fleet {
            stack: &self.loaded,
            cloud: self.cloud.as_ref(),
            backend: self.backend.as_ref(),
            policy: self.policy.as_ref(),
            ci: self.ci.as_ref(),
        }
    }

    /// Takes the state lock, waiting up to `--lock-timeout`.
    pub async fn lock(&self, g: &Global, operation: &str) -> Result<()> {
        let info = lock_info(operation);
        let started = Instant::now();
        let mut told = false;
        loop {
            match self.backend.lock(&info).await {
                Ok(()) => return Ok(()),
                Err(StateError::Locked { holder, location })
                    if started.elapsed() < g.lock_timeout =>
                {
                    if !told {
                        eprintln!(
                            "waiting up to {:?} for the state lock held by {holder}",
                            g.lock_timeout
                        );
                        told = true;
                    }
                    let _ = location;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).context("could not take the state lock"),
            }
        }
    }

    pub async fn unlock(&self) {
        if let Err(e) = self.backend.unlock().await {
            tracing::warn!("could not release the state lock: {e}");
        }
    }
}

/// Who we are, for the lock.
fn lock_info(operation: &str) -> LockInfo {
    LockInfo {
        id: uuid::Uuid::new_v4().to_string(),
        who: std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| format!("uid {}", unsafe_uid())),
        host: hostname(),
        pid: std::process::id(),
        operation: operation.to_string(),
        since: Utc::now(),
        lease_until: None,
    }
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A new lineage for a state that does not exist yet.
pub fn new_lineage() -> String {
    uuid::Uuid::new_v4().to_string()
}
