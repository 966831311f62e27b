//! The libvirt provider's `provider:` settings and its instance types (`2cpu-2048mib`).

use std::time::Duration;

use serde::Deserialize;

use fleet_core::stack::duration_serde;

/// `provider.stop`: what stopping a VM does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// `virsh managedsave`: memory saved with the disk, the next start resumes it.
    #[default]
    Managedsave,
    /// ACPI shutdown: the next start boots again.
    Shutdown,
}

/// `provider:` settings of `kind: libvirt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtSettings {
    /// libvirt connection URI.
    #[serde(default = "default_uri")]
    pub uri: String,
    /// Storage pool of the disks and seeds; made as a directory pool at `pool_path` when
    /// it does not exist.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// Directory of the pool, if it has to be made.
    #[serde(default = "default_pool_path")]
    pub pool_path: String,
    /// `qemu` (software emulation) or `kvm`; default: `kvm` when `kvm_intel` or `kvm_amd`
    /// is loaded on this machine, else `qemu`.
    #[serde(default)]
    pub domain_type: Option<String>,
    /// Network: `user` (QEMU's user networking: the host is 10.0.2.2, no inbound
    /// connections), `network:NAME` (a libvirt network) or `bridge:NAME`.
    #[serde(default = "default_network")]
    pub network: String,
    /// Direct kernel boot: kernel on the libvirt host (without it, the image's own boot
    /// loader).
    #[serde(default)]
    pub kernel: Option<String>,
    /// Initrd of the direct kernel boot.
    #[serde(default)]
    pub initrd: Option<String>,
    /// Kernel command line of the direct kernel boot.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Size of each VM's disk (the overlay may grow to it).
    #[serde(default = "default_disk_gib")]
    pub disk_gib: u64,
    /// What stopping a VM does.
    #[serde(default)]
    pub stop: StopMode,
    /// How long an ACPI shutdown may take before the VM is powered off.
    #[serde(default = "default_shutdown_timeout", with = "duration_serde")]
    pub shutdown_timeout: Duration,
    /// Directory of the console logs on the libvirt host.
    #[serde(default = "default_log_dir")]
    pub console_log_dir: String,
    /// Instances per create or delete batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

fn default_uri() -> String {
    "qemu:///system".into()
}
fn default_pool() -> String {
    "fleet".into()
}
fn default_pool_path() -> String {
    "/var/lib/libvirt/images/fleet".into()
}
fn default_network() -> String {
    "user".into()
}
fn default_cmdline() -> String {
    "root=/dev/vda console=ttyS0".into()
}
fn default_disk_gib() -> u64 {
    10
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_log_dir() -> String {
    "/var/log/libvirt/qemu".into()
}
fn default_max_batch() -> usize {
    10
}

/// An instance type: `<vcpus>cpu-<memory>mib`, e.g. `2cpu-2048mib`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
}

impl Size {
    /// Parses `2cpu-2048mib`.
    pub fn parse(text: &str) -> Option<Size> {
        let (cpu, mem) = text.split_once("cpu-")?;
        let mem = mem.strip_suffix("mib")?;
        let size = Size {
            vcpus: cpu.parse().ok()?,
            memory_mib: mem.parse().ok()?,
        };
        (size.vcpus >= 1 && size.memory_mib >= 128).then_some(size)
    }
}
