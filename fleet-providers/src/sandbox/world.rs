//! The sandbox's world: every instance and resource, in one JSON file beside the state,
//! read and written under a file lock so that separate commands see the same cloud.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use fleet_core::cloud::CloudError;

use super::SandboxCloud;

/// The sandbox's world, as stored in its file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct World {
    /// Next id number.
    pub next_id: u64,
    /// Every instance, terminated ones kept for an hour.
    pub instances: Vec<SandboxInstance>,
    /// Supporting resources.
    pub resources: Vec<SandboxResource>,
}

/// An instance in the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxInstance {
    /// Cloud id (`sbx-000001`).
    pub id: String,
    /// Tags given at creation.
    pub tags: BTreeMap<String, String>,
    /// Image.
    pub image: String,
    /// Instance type.
    pub instance_type: String,
    /// When it was created.
    pub launched_at: DateTime<Utc>,
    /// When it was terminated.
    #[serde(default)]
    pub terminated_at: Option<DateTime<Utc>>,
    /// When it was stopped, while it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
    /// When it was last started again after a stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// The runner token its user data carries, while its runner agent has not verified it
    /// (the cloud's copy of the user data; cleared once verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_token: Option<String>,
}

/// A supporting resource in the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxResource {
    /// Cloud id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Cloud-side name.
    pub cloud_name: String,
    /// Tags given at creation.
    pub tags: BTreeMap<String, String>,
}

impl SandboxCloud {
    /// Runs `f` on the world under the sandbox's file lock, saving it if `write`.
    pub(super) fn with_world<T>(
        &self,
        write: bool,
        f: impl FnOnce(&mut World) -> Result<T, CloudError>,
    ) -> Result<T, CloudError> {
        let io = |what: &str, e: std::io::Error| {
            self.error(
                "storage",
                "SandboxIo",
                format!("{what} {}: {e}", self.file.display()),
                false,
            )
        };
        if let Some(dir) = self.file.parent() {
            fs::create_dir_all(dir).map_err(|e| io("cannot create the directory of", e))?;
        }
        let lock_path = self.file.with_extension("json.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io("cannot open the lock of", e))?;
        lock.lock().map_err(|e| io("cannot lock", e))?;
        let mut world: World = match fs::read(&self.file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                self.error(
                    "storage",
                    "SandboxCorrupt",
                    format!(
                        "{} is not a sandbox cloud file ({e}); delete it to start an empty sandbox",
                        self.file.display()
                    ),
                    false,
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => World::default(),
            Err(e) => return Err(io("cannot read", e)),
        };
        let out = f(&mut world)?;
        if write {
            let cutoff = Utc::now() - chrono::Duration::hours(1);
            world
                .instances
                .retain(|i| i.terminated_at.is_none_or(|t| t > cutoff));
            let tmp = self
                .file
                .with_extension(format!("json.tmp-{}", std::process::id()));
            let bytes = serde_json::to_vec_pretty(&world)
                .map_err(|e| self.error("storage", "SandboxIo", e.to_string(), false))?;
            let mut t = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| io("cannot write", e))?;
            t.write_all(&bytes)
                .and_then(|_| t.sync_all())
                .map_err(|e| io("cannot write", e))?;
            fs::rename(&tmp, &self.file).map_err(|e| io("cannot replace", e))?;
        }
        drop(lock);
        Ok(out)
    }
}
