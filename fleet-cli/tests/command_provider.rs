//! fleet-cli end to end on the command provider, against the fake cloud script of
//! fleet-providers' tests (python3, instances in a JSON file of a temp dir): `up` with user
//! data on stdin, the fixed point, adoption after the state is lost, and `destroy`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");

struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let script = root.join("fleet-providers/tests/fixtures/command/cloud.py");
        let script = script.display();
        let instance = root.join("instance");
        let instance = instance.display();
        let stack = format!(
            "name: cmd
provider:
  kind: command
  create: [python3, '{script}', create]
  list: [python3, '{script}', list]
  delete: [python3, '{script}', delete]
  timeout: 30s
  env:
    FLEET_TEST_CLOUD_FILE: '{cloud}'
instance:
  image: Ubuntu2404
  types: [Standard_Huge, Standard_B2s]
runner:
  gitlab_url: http://10.0.2.2:8929
policy:
  min_instances: 3
state:
  backend: local
  path: .fleet/cmd.state.json
templates:
  user_data: '{instance}/cloudinit.yml.j2'
  playbook: '{instance}/playbook.yml'
  runner_config: '{instance}/config.toml.j2'
",
            cloud = dir.path().join("cloud.json").display()
        );
        std::fs::write(dir.path().join("cmd.yaml"), stack).unwrap();
        Fleet { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--stack")
            .arg(self.dir.path().join("cmd.yaml"))
            .args(args)
            .stdin(Stdio::null())
            .env_remove("FLEET_STACK")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    fn cloud(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.path().join("cloud.json")).unwrap()).unwrap()
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join(".fleet/cmd.state.json")
    }
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{out}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn up_adopt_and_destroy_through_executables() {
    let f = Fleet::new();
    ok(&f.run(&["up", "--yes"]));
    let cloud = f.cloud();
    let instances = cloud["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 3, "{cloud:#}");
    for i in instances {
        assert_eq!(
            i["instance_type"], "Standard_B2s",
            "fell back along the types"
        );
        let name = i["name"].as_str().unwrap();
        let user_data = cloud["user_data"][name].as_str().unwrap_or_default();
        assert!(
            user_data.starts_with("#cloud-config"),
            "{name} got its user data on stdin: {user_data:.40}"
        );
    }

    let o = f.run(&["preview", "--detailed-exitcode"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "no changes after up:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // Lose the state: the next up adopts the tagged instances and creates nothing.
    std::fs::remove_file(f.state_file()).unwrap();
    ok(&f.run(&["up", "--yes"]));
    assert_eq!(f.cloud()["instances"].as_array().unwrap().len(), 3);
    let state: Value = serde_json::from_slice(&std::fs::read(f.state_file()).unwrap()).unwrap();
    assert_eq!(state["instances"].as_object().unwrap().len(), 3);

    ok(&f.run(&["destroy", "--yes"]));
    assert!(f.cloud()["instances"].as_array().unwrap().is_empty());
}
