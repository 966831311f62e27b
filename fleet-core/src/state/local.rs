//! The local state backend: a JSON file beside the stack, written atomically, with the
//! previous version kept as a backup and an advisory lock file.
//!
//! The lock is an OS file lock (`flock`), so the kernel releases it when its holder dies,
//! however it dies; the lock file's content only says who holds it, for messages.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Deserialize;

use super::backend::{LockInfo, StateBackend, StateError};
use super::{format, State};
use crate::stack::{LoadedStack, StackError};

/// `state:` settings of the local backend.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// The state file, relative to the stack file; default `.fleet/<stack file stem>.state.json`.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// State in a local JSON file.
#[derive(Debug)]
pub struct LocalBackend {
    path: PathBuf,
    held: Mutex<Option<File>>,
}

impl LocalBackend {
    /// A backend storing state at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalBackend {
            path: path.into(),
            held: Mutex::new(None),
        }
    }

    /// The backend a stack's `state:` section describes.
    pub fn from_stack(loaded: &LoadedStack) -> Result<Self, StackError> {
        let settings: LocalSettings = loaded.section("state", &loaded.stack.state.settings)?;
        Ok(LocalBackend::new(default_path(
            loaded,
            settings.path.as_deref(),
        )))
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the previous version is kept.
    pub fn backup_path(&self) -> PathBuf {
        sibling(&self.path, "backup")
    }

    /// The lock file.
    pub fn lock_path(&self) -> PathBuf {
        sibling(&self.path, "lock")
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    }

    fn read_sync(&self) -> Result<Option<State>, StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&self.path)(e)),
        };
        format::decode(&bytes)
            .map(Some)
            .map_err(|source| StateError::Format {
                location: self.location(),
                backup: self.backup_path().display().to_string(),
                source,
            })
    }

    fn write_sync(&self, state: &State) -> Result<(), StateError> {
        let stored = self.read_sync()?;
        let found = stored.as_ref().map_or(0, |s| s.serial);
        if let Some(stored) = &stored {
            if stored.lineage != state.lineage {
                return Err(StateError::LineageMismatch {
                    location: self.location(),
                    ours: state.lineage.clone(),
                    stored: stored.lineage.clone(),
                });
            }
        }
        if state.serial != found + 1 {
            return Err(StateError::Conflict {
                location: self.location(),
                expected: state.serial.saturating_sub(1),
                found,
            });
        }
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        fs::create_dir_all(dir).map_err(self.io(dir))?;
        let tmp = sibling(&self.path, &format!("tmp-{}", std::process::id()));
        write_synced(&tmp, &format::encode(state)).map_err(self.io(&tmp))?;
        if stored.is_some() {
            // Keep the version being replaced; copy then rename so the backup is never
            // half-written either.
            let backup = self.backup_path();
            let backup_tmp = sibling(&self.path, &format!("backup-tmp-{}", std::process::id()));
            let old = fs::read(&self.path).map_err(self.io(&self.path))?;
            write_synced(&backup_tmp, &old).map_err(self.io(&backup_tmp))?;
            fs::rename(&backup_tmp, &backup).map_err(self.io(&backup))?;
        }
        fs::rename(&tmp, &self.path).map_err(self.io(&self.path))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn lock_sync(&self, info: &LockInfo) -> Result<(), StateError> {
        let lock_path = self.lock_path();
        let dir = lock_path.parent().unwrap_or_else(|| Path::new("."));
        fs::create_dir_all(dir).map_err(self.io(dir))?;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_some() {
            return Ok(());
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(self.io(&lock_path))?;
        // A holder writes its name right after it takes the lock, so a reader can find the
        // lock held and the file still empty. Wait a moment for the name (or for the lock
        // to come free, if the holder died first) before calling the holder unknown.
        let mut waited = std::time::Duration::ZERO;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let named = read_holder(&mut file);
                    if named.is_some() || waited >= HOLDER_NAME_WAIT {
                        let holder = named.unwrap_or_else(|| unknown_holder(info));
                        return Err(StateError::Locked {
                            location: self.location(),
                            holder: Box::new(holder),
                        });
                    }
                    std::thread::sleep(HOLDER_NAME_POLL);
                    waited += HOLDER_NAME_POLL;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(self.io(&lock_path)(e)),
            }
        }
        if let Some(previous) = read_holder(&mut file) {
            if previous.host == info.host && !pid_alive(previous.pid) {
                tracing::warn!(
                    "took over a stale state lock left by {previous}: that process is no longer running"
                );
            }
        }
        let body = serde_json::to_vec_pretty(info).unwrap_or_default();
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(&body))
            .and_then(|_| file.sync_all())
            .map_err(self.io(&lock_path))?;
        *held = Some(file);
        Ok(())
    }

    fn unlock_sync(&self) -> Result<(), StateError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = held.take() {
            // Clear the holder first so nobody reads a released lock as held.
            let _ = file.set_len(0);
            file.unlock().map_err(self.io(&self.lock_path()))?;
        }
        Ok(())
    }
}

#[async_trait]
impl StateBackend for LocalBackend {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn read(&self) -> Result<Option<State>, StateError> {
        self.read_sync()
    }

    async fn write(&self, state: &State) -> Result<(), StateError> {
        self.write_sync(state)
    }

    async fn lock(&self, info: &LockInfo) -> Result<(), StateError> {
        self.lock_sync(info)
    }

    async fn unlock(&self) -> Result<(), StateError> {
        self.unlock_sync()
    }
}

/// Default state path: `.fleet/<stack file stem>.state.json` beside the stack, or the
/// configured path resolved against the stack's directory.
fn default_path(loaded: &LoadedStack, configured: Option<&Path>) -> PathBuf {
    match configured {
        Some(p) => loaded.resolve(p),
        None => {
            let stem = loaded
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| loaded.stack.name.clone());
            loaded
                .dir()
                .join(".fleet")
                .join(format!("{stem}.state.json"))
        }
    }
}

/// `x.state.json` -> `x.state.json.<suffix>`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn read_holder(file: &mut File) -> Option<LockInfo> {
    let mut body = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut body).ok()?;
    serde_json::from_str(&body).ok()
}

/// How long a refused locker waits for a new holder to write its name.
const HOLDER_NAME_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const HOLDER_NAME_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// The holder had the lock but had not written its name within [`HOLDER_NAME_WAIT`].
fn unknown_holder(wanted_by: &LockInfo) -> LockInfo {
    LockInfo {
        id: String::new(),
        who: "unknown".into(),
        host: "unknown".into(),
        pid: 0,
        operation: "another fleet-cli (still writing its name)".into(),
        since: wanted_by.since,
        lease_until: None,
    }
}

/// Whether a process with this pid exists on this host.
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
