//! The `Ci` trait: how much work the CI system has for the fleet.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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

/// Errors of CI integrations.
#[derive(Debug, thiserror::Error)]
#[error("{system} could not report demand: {message}")]
pub struct CiError {
    /// The CI system (`gitlab`).
    pub system: String,
    /// What failed.
    pub message: String,
}

/// A CI system the fleet serves.
#[async_trait]
pub trait Ci: Send + Sync {
    /// Current demand for this fleet.
    async fn demand(&self) -> Result<Demand, CiError>;
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
