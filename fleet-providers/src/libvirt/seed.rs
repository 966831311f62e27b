//! The NoCloud seed a VM reads its user data from: a small FAT file system labelled
//! `CIDATA` holding `user-data` and `meta-data`, built on this machine with `mkfs.vfat`
//! and `mcopy` (dosfstools and mtools, no mount needed) and uploaded into a volume.

use std::path::Path;
use std::process::Command;

/// Size of the seed file system: user data is limited to far less.
pub const SEED_KIB: u64 = 2048;

/// Why a seed could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A tool is missing or failed.
    #[error("`{tool}` failed building the NoCloud seed of {instance}: {detail}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// The instance.
        instance: String,
        /// Its output or the OS error.
        detail: String,
    },
    /// A file could not be written.
    #[error("cannot write the NoCloud seed of {instance}")]
    Io {
        /// The instance.
        instance: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The seed image of `instance` with `user_data`.
pub fn build(instance: &str, user_data: &str) -> Result<Vec<u8>, SeedError> {
    let io = |source| SeedError::Io {
        instance: instance.to_string(),
        source,
    };
    let dir = tempfile_dir().map_err(io)?;
    let result = (|| {
        let image = dir.join("seed.img");
        std::fs::write(dir.join("user-data"), user_data).map_err(io)?;
        std::fs::write(
            dir.join("meta-data"),
            format!("instance-id: {instance}\nlocal-hostname: {instance}\n"),
        )
        .map_err(io)?;
        run(
            instance,
            "mkfs.vfat",
            Command::new("mkfs.vfat")
                .args(["-n", "CIDATA", "-C"])
                .arg(&image)
                .arg(SEED_KIB.to_string()),
        )?;
        run(
            instance,
            "mcopy",
            Command::new("mcopy")
                .arg("-i")
                .arg(&image)
                .arg(dir.join("user-data"))
                .arg(dir.join("meta-data"))
                .arg("::")
                .env("MTOOLS_SKIP_CHECK", "1"),
        )?;
        std::fs::read(&image).map_err(io)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(instance: &str, tool: &'static str, cmd: &mut Command) -> Result<(), SeedError> {
    let fail = |detail: String| SeedError::Tool {
        tool,
        instance: instance.to_string(),
        detail,
    };
    let out = cmd.output().map_err(|e| {
        fail(format!(
            "{e} (install dosfstools and mtools; scripts/ensure-libvirt does)"
        ))
    })?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// A private directory for the seed's files (the user data holds the runner token).
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("fleet-seed-{}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "no free seed directory under {}",
        Path::new(&base).display()
    )))
}
