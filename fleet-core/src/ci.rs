//! The `Ci` trait: how much work the CI system has for the fleet, and the runners it
//! registers for the fleet's instances (one runner per VM, created before the VM boots and
//! deleted after it is gone).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// What the CI system reported about jobs this fleet can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Demand {
    /// Counts from the CI system's API.
    Known {
        /// Jobs waiting for a runner.
        pending: u32,
        /// Jobs running.
        running: u32,
    },
    /// The CI system could not be asked or did not answer; the planner never scales in on
    /// unknown demand.
    Unknown {
        /// Why it is unknown.
        reason: String,
    },
}

impl Demand {
    /// Whether demand is known.
    pub fn is_known(&self) -> bool {
        matches!(self, Demand::Known { .. })
    }
}

/// A call to the CI system that failed, naming the call (`count demand`, `pause runner
/// #7`), so an error says which one.
#[derive(Debug, thiserror::Error)]
#[error("{system} could not {call}: {message}")]
pub struct CiError {
    /// The CI system (`gitlab`).
    pub system: String,
    /// What was asked, as a verb phrase (`count demand`, `create a runner for s-0001`).
    pub call: String,
    /// What went wrong, with its causes.
    pub message: String,
}

/// One of this stack's runners, as the CI system reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedRunner {
    /// The CI system's runner id.
    pub id: u64,
    /// The instance its description names.
    pub instance: String,
    /// Whether a runner process on the VM has contacted the CI system.
    pub online: bool,
    /// Whether it takes no new jobs.
    pub paused: bool,
    /// Jobs it runs now, when known from the demand listing (the executor asks again,
    /// exactly, before it stops or deletes a VM).
    pub running_jobs: u32,
    /// When a runner process on the VM first contacted the CI system, when it was asked
    /// ([`Ci::first_contact`]: the engine asks once, when a runner is first seen online).
    /// It dates the end of the VM's boot exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_contact_at: Option<DateTime<Utc>>,
}

/// A runner just registered for an instance.
#[derive(Debug, Clone)]
pub struct NewRunner {
    /// The CI system's runner id (recorded in state).
    pub id: u64,
    /// Its authentication token: goes to the VM only, never to logs, plans or state.
    pub token: Secret,
}

/// A CI system the fleet serves.
///
/// Only [`Ci::demand`] is required. A CI system that registers one runner per instance
/// says so with [`Ci::manages_runners`] and implements the runner calls; the others keep
/// the defaults (the VMs then use a token the stack provides).
#[async_trait]
pub trait Ci: Send + Sync {
    /// Current demand for this fleet.
    async fn demand(&self) -> Result<Demand, CiError>;

    /// Whether the engine creates a runner for each instance and deletes it with the VM.
    fn manages_runners(&self) -> bool {
        false
    }

    /// This stack's runners (by the description the fleet gave them).
    async fn runners(&self) -> Result<Vec<ObservedRunner>, CiError> {
        Ok(Vec::new())
    }

    /// Registers a runner for `instance`.
    async fn create_runner(&self, instance: &str) -> Result<NewRunner, CiError> {
        Err(unsupported(format!("create a runner for {instance}")))
    }

    /// Pauses (takes no new jobs) or resumes a runner.
    async fn set_paused(&self, runner: u64, paused: bool) -> Result<(), CiError> {
        let _ = paused;
        Err(unsupported(format!("pause runner #{runner}")))
    }

    /// Jobs the runner runs now, asked exactly (not from a cached listing).
    async fn running_jobs(&self, runner: u64) -> Result<u32, CiError> {
        Err(unsupported(format!("list the jobs of runner #{runner}")))
    }

    /// When a runner process first contacted the CI system with `runner`'s token (`None`:
    /// not known). Asked once per runner, when it is first seen online, to time the boot.
    async fn first_contact(&self, runner: u64) -> Result<Option<DateTime<Utc>>, CiError> {
        let _ = runner;
        Ok(None)
    }

    /// Deletes a runner; one that is already gone is not an error.
    async fn delete_runner(&self, runner: u64) -> Result<(), CiError> {
        Err(unsupported(format!("delete runner #{runner}")))
    }

    /// API requests made so far, by kind (`GET`, `POST`, ..., and `error` for requests that
    /// failed or were answered with an error status), for metrics.
    fn api_calls(&self) -> std::collections::BTreeMap<String, u64> {
        std::collections::BTreeMap::new()
    }

    /// When the longest-waiting job this fleet can run was queued, at the last demand count
    /// (`None`: no job waits, or not known), for the wait estimate in metrics.
    fn oldest_pending(&self) -> Option<DateTime<Utc>> {
        None
    }
}

fn unsupported(call: String) -> CiError {
    CiError {
        system: "this CI integration".into(),
        call,
        message: "it does not manage runners".into(),
    }
}

/// No CI system configured: demand is always unknown.
#[derive(Debug, Default)]
pub struct NoCi;

#[async_trait]
impl Ci for NoCi {
    async fn demand(&self) -> Result<Demand, CiError> {
        Ok(Demand::Unknown {
            reason: "no CI system is configured for this stack".into(),
        })
    }
}
