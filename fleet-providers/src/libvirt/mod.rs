//! libvirt: VMs on your own Linux hosts, through libvirt (`qemu:///system`, or any URI such
//! as `qemu+ssh://host/system`), with the `virt` crate.
//!
//! Each VM is a domain named after the instance, with a qcow2 overlay on the base image
//! (`instance.image`: a volume of the pool, or an absolute path on the libvirt host) and a
//! NoCloud seed volume carrying its user data. The fleet's tags live in the domain's
//! `<metadata>`, so a crash leaves domains the next plan lists and adopts; a domain name is
//! unique per host, which makes creates idempotent per name. Stop is `managedsave` (memory
//! saved to disk, resumed in seconds by a start) or an ACPI shutdown, per `provider.stop`.
//! libvirt's calls block, so each runs on tokio's blocking pool with its own connection.

mod seed;
mod settings;
pub mod xml;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::{
    Cloud, CloudError, CreateInstance, CreateOutcome, DeleteOutcome, Observed, ObservedInstance,
    PowerOutcome, Scope,
};
use fleet_core::naming::tags;
use fleet_core::stack::{LoadedStack, StackError};

pub use settings::{LibvirtSettings, Size, StopMode};

/// The provider's name.
pub const PROVIDER: &str = "libvirt";

/// The libvirt provider.
#[derive(Debug, Clone)]
pub struct LibvirtCloud {
    settings: LibvirtSettings,
    domain_type: String,
}

fn kvm_loaded() -> bool {
    ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| std::path::Path::new("/sys/module").join(m).exists())
}

impl LibvirtCloud {
    /// A provider with these settings.
    pub fn new(settings: LibvirtSettings) -> LibvirtCloud {
        let domain_type = settings
            .domain_type
            .clone()
            .unwrap_or_else(|| if kvm_loaded() { "kvm" } else { "qemu" }.to_string());
        LibvirtCloud {
            settings,
            domain_type,
        }
    }

    /// The provider a stack's `provider:` section describes.
    pub fn from_stack(loaded: &LoadedStack) -> Result<LibvirtCloud, StackError> {
        let settings: LibvirtSettings =
            loaded.section("provider", &loaded.stack.provider.settings)?;
        if settings.max_batch == 0 {
            return Err(loaded.error_at("provider.max_batch", "max_batch is 0", "use at least 1"));
        }
        if let Some(t) = &settings.domain_type {
            if t != "qemu" && t != "kvm" {
                return Err(loaded.error_at(
                    "provider.domain_type",
                    format!("domain_type `{t}` is not `qemu` or `kvm`"),
                    "leave it out to use kvm when the host has it",
                ));
            }
        }
        if interface_xml(&settings.network).is_none() {
            return Err(loaded.error_at(
                "provider.network",
                format!(
                    "network `{}` is not `user`, `network:NAME` or `bridge:NAME`",
                    settings.network
                ),
                "`user` needs nothing on the host; the VM reaches the host at 10.0.2.2",
            ));
        }
        if settings.kernel.is_some() != settings.initrd.is_some() {
            return Err(loaded.error_at(
                "provider.kernel",
                "direct kernel boot needs both provider.kernel and provider.initrd",
                "set both, or neither to boot the image's own boot loader",
            ));
        }
        for (i, t) in loaded.stack.instance.types.iter().enumerate() {
            if Size::parse(t).is_none() {
                return Err(loaded.error_at(
                    &format!("instance.types[{i}]"),
                    format!("instance type `{t}` is not <vcpus>cpu-<memory>mib"),
                    "e.g. `2cpu-2048mib` (at least 1 vCPU and 128 MiB)",
                ));
            }
        }
        Ok(LibvirtCloud::new(settings))
    }

    /// The domain type VMs get (`qemu` or `kvm`).
    pub fn domain_type(&self) -> &str {
        &self.domain_type
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&LibvirtCloud, &Connect) -> Result<T, CloudError> + Send + 'static,
    ) -> Result<T, CloudError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            // Dropping the connection closes it.
            let conn = Connect::open(Some(&me.settings.uri)).map_err(|e| error(operation, &e))?;
            f(&me, &conn)
        })
        .await
        .map_err(|e| CloudError::new(PROVIDER, operation, "join", e.to_string(), true))?
    }

    fn pool(&self, conn: &Connect) -> Result<StoragePool, CloudError> {
        match conn.lookup_storage_pool_by_name(&self.settings.pool) {
            Ok(p) => {
                if !p.is_active().unwrap_or(false) {
                    p.create(0).map_err(|e| error("pool", &e))?;
                }
                Ok(p)
            }
            Err(e) if is(&e, ErrorNumber::NoStoragePool) => {
                let p = conn
                    .define_storage_pool_xml(
                        &xml::dir_pool(&self.settings.pool, &self.settings.pool_path),
                        0,
                    )
                    .map_err(|e| error("pool", &e))?;
                p.build(0).map_err(|e| error("pool", &e))?;
                p.create(0).map_err(|e| error("pool", &e))?;
                let _ = p.set_autostart(true);
                Ok(p)
            }
            Err(e) => Err(error("pool", &e)),
        }
    }

    /// The base image's path on the libvirt host.
    fn base_path(&self, pool: &StoragePool, image: &str) -> Result<String, CloudError> {
        if image.starts_with('/') {
            return Ok(image.to_string());
        }
        let _ = pool.refresh(0);
        pool.lookup_storage_vol_by_name(image)
            .and_then(|v| v.path())
            .map_err(|e| {
                CloudError::new(
                    PROVIDER,
                    "create",
                    "image",
                    format!(
                        "image `{image}` is not a volume of pool {}: {}",
                        self.settings.pool,
                        e.message()
                    ),
                    false,
                )
            })
    }

    fn create_one(
        &self,
        conn: &Connect,
        scope: &Scope,
        token: &str,
        req: &CreateInstance,
    ) -> Result<ObservedInstance, CloudError> {
        if let Ok(d) = conn.lookup_domain_by_name(&req.name) {
            let o = observed(&d).map_err(|e| error("create", &e))?;
            return match o {
                Some(o) if domain_stack(&d).as_deref() == Some(scope.stack.as_str()) => Ok(o),
                _ => Err(CloudError::new(
                    PROVIDER,
                    "create",
                    "name_taken",
                    format!("a domain named {} exists and is not this stack's", req.name),
                    false,
                )),
            };
        }
        let type_name = req
            .spec
            .instance_types
            .first()
            .map(String::as_str)
            .unwrap_or("");
        let size = Size::parse(type_name).ok_or_else(|| {
            CloudError::new(
                PROVIDER,
                "create",
                "instance_type",
                format!("instance type `{type_name}` is not <vcpus>cpu-<memory>mib"),
                false,
            )
        })?;
        let pool = self.pool(conn)?;
        let base = self.base_path(&pool, &req.spec.image)?;
        let disk_name = format!("{}.qcow2", req.name);
        let seed_name = format!("{}-cidata.img", req.name);
        remove_volume(&pool, &disk_name)?;
        StorageVol::create_xml(
            &pool,
            &xml::overlay_volume(&disk_name, self.settings.disk_gib, &base),
            0,
        )
        .map_err(|e| error("create", &e))?;
        let seed = match &req.user_data {
            Some(user_data) => {
                remove_volume(&pool, &seed_name)?;
                let image = seed::build(&req.name, user_data.expose()).map_err(|e| {
                    CloudError::new(
                        PROVIDER,
                        "create",
                        "seed",
                        fleet_core::apply::error_chain(&e),
                        false,
                    )
                })?;
                upload(conn, &pool, &seed_name, &image)?;
                Some(seed_name.as_str())
            }
            None => None,
        };
        let mut all_tags = req.tags.clone();
        all_tags.insert(tags::STACK.into(), scope.stack.clone());
        all_tags.insert(tags::BATCH.into(), token.to_string());
        all_tags.insert(xml::IMAGE_TAG.into(), req.spec.image.clone());
        all_tags.insert(xml::TYPE_TAG.into(), type_name.to_string());
        all_tags.insert(xml::CREATED_TAG.into(), Utc::now().to_rfc3339());
        let kernel = match (&self.settings.kernel, &self.settings.initrd) {
            (Some(k), Some(i)) => Some((k.as_str(), i.as_str(), self.settings.cmdline.as_str())),
            _ => None,
        };
        let domain = xml::DomainXml {
            domain_type: &self.domain_type,
            name: &req.name,
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
            pool: &self.settings.pool,
            disk: &disk_name,
            seed,
            kernel,
            interface: interface_xml(&self.settings.network).unwrap_or_default(),
            console_log: format!("{}/{}-console.log", self.settings.console_log_dir, req.name),
            tags: &all_tags,
        }
        .render();
        let d = conn
            .define_domain_xml(&domain)
            .map_err(|e| error("create", &e))?;
        if let Err(e) = d.create() {
            let _ = d.undefine();
            return Err(error("create", &e));
        }
        observed(&d)
            .map_err(|e| error("create", &e))?
            .ok_or_else(|| {
                CloudError::new(
                    PROVIDER,
                    "create",
                    "metadata",
                    "the new domain lost its tags",
                    true,
                )
            })
    }

    fn delete_one(&self, conn: &Connect, id: &str) -> Result<(), CloudError> {
        let d = match conn.lookup_domain_by_uuid_string(id) {
            Ok(d) => d,
            Err(e) if is(&e, ErrorNumber::NoDomain) => return Ok(()),
            Err(e) => return Err(error("delete", &e)),
        };
        let name = d.name().map_err(|e| error("delete", &e))?;
        if d.is_active().unwrap_or(false) {
            if let Err(e) = d.destroy() {
                if !is(&e, ErrorNumber::OperationInvalid) {
                    return Err(error("delete", &e));
                }
            }
        }
        let flags =
            virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM;
        match d.undefine_flags(flags) {
            Ok(()) => {}
            Err(e) if is(&e, ErrorNumber::NoDomain) => {}
            Err(e) => return Err(error("delete", &e)),
        }
        let pool = self.pool(conn)?;
        remove_volume(&pool, &format!("{name}.qcow2"))?;
        remove_volume(&pool, &format!("{name}-cidata.img"))?;
        Ok(())
    }

    fn stop_one(&self, conn: &Connect, id: &str) -> Result<(), CloudError> {
        let d = conn
            .lookup_domain_by_uuid_string(id)
            .map_err(|e| error("stop", &e))?;
        if !d.is_active().map_err(|e| error("stop", &e))? {
            return Ok(());
        }
        match self.settings.stop {
            StopMode::Managedsave => d.managed_save(0).map_err(|e| error("stop", &e)),
            StopMode::Shutdown => {
                d.shutdown().map_err(|e| error("stop", &e))?;
                let deadline = std::time::Instant::now() + self.settings.shutdown_timeout;
                while d.is_active().unwrap_or(false) {
                    if std::time::Instant::now() > deadline {
                        let _ = d.destroy();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Ok(())
            }
        }
    }

    fn start_one(&self, conn: &Connect, id: &str) -> Result<(), CloudError> {
        let d = conn
            .lookup_domain_by_uuid_string(id)
            .map_err(|e| error("start", &e))?;
        if d.is_active().map_err(|e| error("start", &e))? {
            return Ok(());
        }
        // A managed save image is restored by a plain start.
        d.create().map_err(|e| error("start", &e))
    }
}

/// The `<interface>` of `network`, or `None` when it is not a network setting.
fn interface_xml(network: &str) -> Option<String> {
    let model = "<model type='virtio'/>";
    if network == "user" {
        return Some(format!("<interface type='user'>{model}</interface>"));
    }
    let (kind, name) = network.split_once(':')?;
    if name.is_empty() {
        return None;
    }
    match kind {
        "network" => Some(format!(
            "<interface type='network'><source network='{}'/>{model}</interface>",
            xml::escape(name)
        )),
        "bridge" => Some(format!(
            "<interface type='bridge'><source bridge='{}'/>{model}</interface>",
            xml::escape(name)
        )),
        _ => None,
    }
}

fn remove_volume(pool: &StoragePool, name: &str) -> Result<(), CloudError> {
    match pool.lookup_storage_vol_by_name(name) {
        Ok(v) => v.delete(0).map_err(|e| error("delete", &e)),
        Err(e) if is(&e, ErrorNumber::NoStorageVolume) => Ok(()),
        Err(e) => Err(error("delete", &e)),
    }
}

fn upload(conn: &Connect, pool: &StoragePool, name: &str, bytes: &[u8]) -> Result<(), CloudError> {
    let vol = StorageVol::create_xml(pool, &xml::raw_volume(name, bytes.len() as u64), 0)
        .map_err(|e| error("create", &e))?;
    let stream = Stream::new(conn, 0).map_err(|e| error("create", &e))?;
    vol.upload(&stream, 0, bytes.len() as u64, 0)
        .map_err(|e| error("create", &e))?;
    let mut sent = 0;
    while sent < bytes.len() {
        let n = stream
            .send(&bytes[sent..])
            .map_err(|e| error("create", &e))?;
        if n <= 0 {
            return Err(CloudError::new(
                PROVIDER,
                "create",
                "upload",
                "the seed upload stalled",
                true,
            ));
        }
        sent += n as usize;
    }
    stream.finish().map_err(|e| error("create", &e))
}

fn is(e: &virt::error::Error, n: ErrorNumber) -> bool {
    matches!(e.code(), Enum::Known(k) if k == n)
}

/// A libvirt error as a cloud error: a lost connection may pass, anything else is refused.
fn error(operation: &str, e: &virt::error::Error) -> CloudError {
    let transient = matches!(
        e.code(),
        Enum::Known(
            ErrorNumber::NoConnect
                | ErrorNumber::Rpc
                | ErrorNumber::SystemError
                | ErrorNumber::OperationTimeout
        )
    );
    let code = match e.code() {
        Enum::Known(k) => format!("{k:?}"),
        Enum::Unknown(n) => format!("error {n}"),
    };
    CloudError::new(
        PROVIDER,
        operation,
        &code,
        e.message().to_string(),
        transient,
    )
}

fn domain_tags(d: &Domain) -> Option<BTreeMap<String, String>> {
    let text = d
        .metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(xml::METADATA_NS),
            0,
        )
        .ok()?;
    Some(xml::parse_tags(&text))
}

fn domain_stack(d: &Domain) -> Option<String> {
    domain_tags(d)?.get(tags::STACK).cloned()
}

/// What the cloud reports of a domain with the fleet's tags (`None` for other domains).
fn observed(d: &Domain) -> Result<Option<ObservedInstance>, virt::error::Error> {
    let Some(t) = domain_tags(d) else {
        return Ok(None);
    };
    if !t.contains_key(tags::STACK) {
        return Ok(None);
    }
    let (state, _) = d.state()?;
    let lifecycle = match state {
        Enum::Known(DomainState::Running | DomainState::Blocked) => Lifecycle::Running,
        Enum::Known(DomainState::Shutdown) => Lifecycle::Stopping,
        Enum::Known(DomainState::Shutoff) => Lifecycle::Stopped,
        Enum::Known(DomainState::Paused | DomainState::PMSuspended) => Lifecycle::Stopped,
        _ => Lifecycle::Unknown,
    };
    let tag = |k: &str| t.get(k).cloned();
    Ok(Some(ObservedInstance {
        cloud_id: d.uuid_string()?,
        name: tag(tags::NAME).unwrap_or(d.name()?),
        lineage: tag(tags::LINEAGE).unwrap_or_default(),
        image: tag(xml::IMAGE_TAG).unwrap_or_default(),
        instance_type: tag(xml::TYPE_TAG).unwrap_or_default(),
        spec_hash: tag(tags::SPEC).unwrap_or_default(),
        lifecycle,
        address: None,
        launched_at: tag(xml::CREATED_TAG)
            .and_then(|c| DateTime::parse_from_rfc3339(&c).ok())
            .map(|c| c.with_timezone(&Utc))
            .unwrap_or(DateTime::UNIX_EPOCH),
        batch: tag(tags::BATCH),
    }))
}

#[async_trait]
impl Cloud for LibvirtCloud {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn label(&self) -> String {
        format!(
            "libvirt at {} ({} domains)",
            self.settings.uri, self.domain_type
        )
    }

    fn max_batch(&self) -> usize {
        self.settings.max_batch
    }

    fn resource_kinds(&self) -> &[&str] {
        &[]
    }

    fn can_stop(&self) -> bool {
        true
    }

    async fn observe(&self, scope: &Scope) -> Result<Observed, CloudError> {
        let stack = scope.stack.clone();
        self.blocking("observe", move |_, conn| {
            let domains = conn
                .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
                .map_err(|e| error("observe", &e))?;
            let mut instances = Vec::new();
            for d in domains {
                if domain_stack(&d).as_deref() != Some(stack.as_str()) {
                    continue;
                }
                match observed(&d) {
                    Ok(Some(o)) => instances.push(o),
                    Ok(None) => {}
                    Err(e) if is(&e, ErrorNumber::NoDomain) => {}
                    Err(e) => return Err(error("observe", &e)),
                }
            }
            instances.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Observed {
                instances,
                ..Observed::default()
            })
        })
        .await
    }

    async fn create_instances(
        &self,
        scope: &Scope,
        token: &str,
        requests: &[CreateInstance],
    ) -> Result<CreateOutcome, CloudError> {
        let (scope, token, requests) = (scope.clone(), token.to_string(), requests.to_vec());
        self.blocking("create", move |me, conn| {
            let mut out = CreateOutcome::default();
            for req in &requests {
                match me.create_one(conn, &scope, &token, req) {
                    Ok(o) => out.created.push(o),
                    Err(e) => out.failed.push((req.name.clone(), e)),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_instances(
        &self,
        _scope: &Scope,
        ids: &[String],
    ) -> Result<DeleteOutcome, CloudError> {
        let ids = ids.to_vec();
        self.blocking("delete", move |me, conn| {
            let mut out = DeleteOutcome::default();
            for id in ids {
                match me.delete_one(conn, &id) {
                    Ok(()) => out.deleted.push(id),
                    Err(e) => out.failed.push((id, e)),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn stop_instances(
        &self,
        _scope: &Scope,
        ids: &[String],
    ) -> Result<PowerOutcome, CloudError> {
        let ids = ids.to_vec();
        self.blocking("stop", move |me, conn| {
            let mut out = PowerOutcome::default();
            for id in ids {
                match me.stop_one(conn, &id) {
                    Ok(()) => out.changed.push(id),
                    Err(e) => out.failed.push((id, e)),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn start_instances(
        &self,
        _scope: &Scope,
        ids: &[String],
    ) -> Result<PowerOutcome, CloudError> {
        let ids = ids.to_vec();
        self.blocking("start", move |me, conn| {
            let mut out = PowerOutcome::default();
            for id in ids {
                match me.start_one(conn, &id) {
                    Ok(()) => out.changed.push(id),
                    Err(e) => out.failed.push((id, e)),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn describe_instance(
        &self,
        cloud_id: &str,
    ) -> Result<Option<ObservedInstance>, CloudError> {
        let id = cloud_id.to_string();
        self.blocking("describe", move |_, conn| {
            match conn.lookup_domain_by_uuid_string(&id) {
                Ok(d) => observed(&d).map_err(|e| error("describe", &e)),
                Err(e) if is(&e, ErrorNumber::NoDomain) || is(&e, ErrorNumber::InvalidArg) => {
                    Ok(None)
                }
                Err(e) => Err(error("describe", &e)),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_vcpus_and_memory() {
        assert_eq!(
            Size::parse("2cpu-2048mib"),
            Some(Size {
                vcpus: 2,
                memory_mib: 2048
            })
        );
        assert_eq!(Size::parse("0cpu-2048mib"), None);
        assert_eq!(Size::parse("1cpu-64mib"), None);
        assert_eq!(Size::parse("small"), None);
    }

    #[test]
    fn networks_are_user_a_libvirt_network_or_a_bridge() {
        assert!(interface_xml("user").unwrap().contains("type='user'"));
        assert!(interface_xml("network:default")
            .unwrap()
            .contains("network='default'"));
        assert!(interface_xml("bridge:br0")
            .unwrap()
            .contains("bridge='br0'"));
        assert_eq!(interface_xml("network:"), None);
        assert_eq!(interface_xml("nat"), None);
    }
}
