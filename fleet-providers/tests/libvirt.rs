//! The libvirt provider against the real libvirtd on this machine (`make test` installs
//! and starts it with scripts/ensure-libvirt): the cloud conformance suites, and stop and
//! start through managedsave. Each test uses a storage pool of its own in a temporary
//! directory, a blank base image, and removes both at the end; the domains find no boot
//! disk, which is all these tests need (the real-boot test boots Debian).

use std::collections::BTreeMap;
use std::process::Command;

use fleet_core::apply::object_tags;
use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::{Cloud, CreateInstance, Scope};
use fleet_core::spec::InstanceSpec;
use fleet_core::testing::{cloud_conformance, cloud_refusal_conformance};
use fleet_providers::libvirt::{LibvirtCloud, LibvirtSettings};

const URI: &str = "qemu:///system";
const SIZE: &str = "1cpu-128mib";

fn require_libvirtd() {
    let o = Command::new("virsh").args(["-c", URI, "version"]).output();
    match o {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "libvirtd does not answer at {URI}: run scripts/ensure-libvirt (make test does): {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("virsh is missing ({e}): run scripts/ensure-libvirt (make test does)"),
    }
}

/// A pool of its own with a blank 64 MiB base image, removed on drop.
struct TestPool {
    name: String,
    dir: tempfile::TempDir,
}

impl TestPool {
    fn new(tag: &str) -> TestPool {
        require_libvirtd();
        let name = format!("fleet-test-{tag}-{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(dir.path().join("base.qcow2"))
            .arg("64M")
            .output()
            .expect("qemu-img is missing: run scripts/ensure-libvirt");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        TestPool { name, dir }
    }

    fn cloud(&self) -> LibvirtCloud {
        let settings: LibvirtSettings = serde_json::from_value(serde_json::json!({
            "uri": URI,
            "pool": self.name,
            "pool_path": self.dir.path().join("pool").display().to_string(),
            "console_log_dir": self.dir.path().display().to_string(),
        }))
        .unwrap();
        LibvirtCloud::new(settings)
    }

    fn base(&self) -> String {
        self.dir.path().join("base.qcow2").display().to_string()
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        for cmd in [["pool-destroy", &self.name], ["pool-undefine", &self.name]] {
            let _ = Command::new("virsh").args(["-c", URI]).args(cmd).output();
        }
    }
}

#[tokio::test]
async fn libvirt_passes_the_cloud_conformance_suite() {
    let pool = TestPool::new("conf");
    let cloud = pool.cloud();
    cloud_conformance(
        &cloud,
        &format!("lvconf{}", std::process::id()),
        &pool.base(),
        SIZE,
    )
    .await;
}

#[tokio::test]
async fn libvirt_refuses_an_instance_type_it_cannot_read() {
    let pool = TestPool::new("refuse");
    let cloud = pool.cloud();
    let refused = InstanceSpec {
        image: pool.base(),
        instance_types: vec!["huge".into()],
        template_hash: None,
        labels: BTreeMap::new(),
    };
    cloud_refusal_conformance(&cloud, &format!("lvrefuse{}", std::process::id()), refused).await;
}

#[tokio::test]
async fn stop_is_a_managedsave_and_start_resumes_it() {
    let pool = TestPool::new("power");
    let cloud = pool.cloud();
    let stack = format!("lvpower{}", std::process::id());
    let scope = Scope {
        stack: stack.clone(),
        lineage: "power-lineage".into(),
    };
    let spec = InstanceSpec {
        image: pool.base(),
        instance_types: vec![SIZE.into()],
        template_hash: None,
        labels: BTreeMap::new(),
    };
    let name = fleet_core::naming::instance_name(&stack, 1);
    let req = CreateInstance {
        tags: object_tags(&scope, &name, &spec.hash(), None),
        name: name.clone(),
        spec,
        user_data: Some(fleet_core::secret::Secret::new(
            "#cloud-config\nhostname: power-test\n",
        )),
    };
    let made = cloud
        .create_instances(&scope, "fb-power", &[req])
        .await
        .unwrap();
    assert!(made.failed.is_empty(), "{:?}", made.failed);
    let id = made.created[0].cloud_id.clone();
    assert_eq!(made.created[0].lifecycle, Lifecycle::Running);
    // The seed volume was uploaded beside the disk.
    let vols = Command::new("virsh")
        .args(["-c", URI, "vol-list", &pool.name])
        .output()
        .unwrap();
    let vols = String::from_utf8_lossy(&vols.stdout);
    assert!(
        vols.contains(&format!("{name}-cidata.img")) && vols.contains(&format!("{name}.qcow2")),
        "{vols}"
    );

    let stopped = cloud
        .stop_instances(&scope, std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(stopped.changed, vec![id.clone()], "{:?}", stopped.failed);
    let o = cloud.describe_instance(&id).await.unwrap().unwrap();
    assert_eq!(o.lifecycle, Lifecycle::Stopped);
    let info = Command::new("virsh")
        .args(["-c", URI, "dominfo", &name])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Managed save:   yes"), "{info}");

    let started = cloud
        .start_instances(&scope, std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(started.changed, vec![id.clone()], "{:?}", started.failed);
    let o = cloud.describe_instance(&id).await.unwrap().unwrap();
    assert_eq!(o.lifecycle, Lifecycle::Running);

    let gone = cloud
        .delete_instances(&scope, std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(gone.deleted, vec![id.clone()]);
    assert!(cloud.observe(&scope).await.unwrap().instances.is_empty());
    let vols = Command::new("virsh")
        .args(["-c", URI, "vol-list", &pool.name])
        .output()
        .unwrap();
    let vols = String::from_utf8_lossy(&vols.stdout);
    assert!(!vols.contains(&name), "volumes left: {vols}");
}
