//! fleet-cli end to end on the Hetzner provider, against the Hetzner API test double of
//! fleet-providers' tests on 127.0.0.1: `up` sends each server its labels and user data,
//! waits for the actions, reaches a fixed point, adopts after the state is lost, and
//! `destroy` deletes every server.

mod common;
#[path = "../../fleet-providers/tests/hetzner_double/mod.rs"]
mod hetzner_double;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use hetzner_double::{Double, TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");

fn stack(dir: &Path, endpoint: &str) -> std::path::PathBuf {
    let instance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks/hetzner.yaml"),
    )
    .unwrap()
    .replace("../instance/", &format!("{}/", instance.display()))
    .replace(
        "  # endpoint: https://api.hetzner.cloud/v1",
        &format!("  poll_interval: 10ms\n  endpoint: {endpoint}\n  #"),
    );
    let path = dir.join("hetzner.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn run(stack: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("--stack")
        .arg(stack)
        .args(args)
        .args(["--set", "policy.min_instances=2"])
        .stdin(Stdio::null())
        .env("HCLOUD_TOKEN", TOKEN)
        .env_remove("RUST_LOG");
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_adopt_and_destroy_on_the_api_double() {
    let d = Double::start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = stack(dir.path(), &d.url);

    common::assert_ok(&run(&s, &["up", "--yes"]).await);
    {
        let w = d.world();
        assert_eq!(w.servers.len(), 2);
        for server in w.servers.values() {
            assert_eq!(server["labels"]["fleet-stack"], "hetzner-runners");
            assert_eq!(server["server_type"]["name"], "cpx21");
        }
        let posts: Vec<_> = w.seen.iter().filter(|r| r.method == "POST").collect();
        assert_eq!(posts.len(), 2);
        for p in posts {
            let body = p.body.as_ref().unwrap();
            let user_data = body["user_data"].as_str().unwrap_or_default();
            assert!(user_data.starts_with("#cloud-config"), "{user_data:.40}");
            assert_eq!(body["location"], "fsn1");
        }
    }

    let o = run(&s, &["preview", "--detailed-exitcode"]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "no changes after up:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );

    std::fs::remove_file(dir.path().join(".fleet/hetzner.state.json")).unwrap();
    common::assert_ok(&run(&s, &["up", "--yes"]).await);
    assert_eq!(
        d.world().servers.len(),
        2,
        "lost state: adopted, not created again"
    );

    common::assert_ok(&run(&s, &["destroy", "--yes"]).await);
    assert!(d.world().servers.is_empty());
}
