//! The `StateBackend` trait: where state lives and how writers exclude each other.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{FormatError, State};

/// Who holds (or wants) the state lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Unique id of this lock acquisition.
    pub id: String,
    /// User name.
    pub who: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The command (`fleet-cli up`).
    pub operation: String,
    /// When the lock was taken.
    pub since: DateTime<Utc>,
    /// For leased locks (shared backends): when the lease runs out unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` (pid {} on {}, user {}) since {}",
            self.operation,
            self.pid,
            self.host,
            self.who,
            self.since.format("%Y-%m-%d %H:%M:%S UTC")
        )?;
        if let Some(until) = self.lease_until {
            write!(f, ", lease until {}", until.format("%H:%M:%S UTC"))?;
        }
        Ok(())
    }
}

/// Errors of state backends.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The stored state is not readable; the previous version is kept as a backup.
    #[error("state at {location} is unreadable (the previous version is kept at {backup}); fix or restore it")]
    Format {
        /// Where the state is.
        location: String,
        /// Where the backup is.
        backup: String,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// Someone else holds the lock.
    #[error("state at {location} is locked by {holder}")]
    Locked {
        /// Where the state is.
        location: String,
        /// The current holder.
        holder: Box<LockInfo>,
    },
    /// A write was based on a serial that is no longer the stored one.
    #[error(
        "state at {location} moved: expected to replace serial {expected}, found serial {found}"
    )]
    Conflict {
        /// Where the state is.
        location: String,
        /// The serial this write was based on.
        expected: u64,
        /// The serial stored now.
        found: u64,
    },
    /// A write from a different state history.
    #[error(
        "state at {location} has lineage {stored}, not {ours}; it belongs to another state history"
    )]
    LineageMismatch {
        /// Where the state is.
        location: String,
        /// The lineage being written.
        ours: String,
        /// The lineage stored.
        stored: String,
    },
    /// A backend-specific failure (network, permissions of a shared backend).
    #[error("state backend {location} failed: {message}")]
    Backend {
        /// Where the state is.
        location: String,
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Where state is stored, and the lock that serialises writers.
///
/// Contract (checked by `fleet_core::testing::backend_conformance`):
/// * `read` returns `None` until the first write.
/// * `write` stores `state` only if `state.serial` is the stored serial plus one (1 for the
///   first write) and the lineage matches; otherwise `Conflict` or `LineageMismatch`, and
///   the stored state is unchanged.
/// * `lock` fails with `Locked` naming the holder while another holder has it; a lock left
///   by a dead holder is taken over (same-host dead pid, or an expired lease).
/// * `unlock` releases this backend's lock and is harmless when none is held.
#[async_trait]
pub trait StateBackend: Send + Sync {
    /// Where the state is, for messages (`.fleet/sandbox.state.json`, `s3://b/k`).
    fn location(&self) -> String;

    /// The stored state, if any.
    async fn read(&self) -> Result<Option<State>, StateError>;

    /// Stores `state` (see the contract above).
    async fn write(&self, state: &State) -> Result<(), StateError>;

    /// Takes the lock for `info`.
    async fn lock(&self, info: &LockInfo) -> Result<(), StateError>;

    /// Releases the lock.
    async fn unlock(&self) -> Result<(), StateError>;
}

/// Records `state` as the next state: its serial is raised by one and it is written; on a
/// failed write the serial is put back, so the caller's copy still matches what is stored.
/// Every writer goes through here (apply's steps, `state rm`, `state import`).
pub async fn commit(backend: &dyn StateBackend, state: &mut State) -> Result<(), StateError> {
    state.serial += 1;
    if let Err(e) = backend.write(state).await {
        state.serial -= 1;
        return Err(e);
    }
    Ok(())
}
