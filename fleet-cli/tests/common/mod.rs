//! Helpers the fleet-cli binary tests (and the webhook bench) share.

// Each test crate uses some of them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Output};

use serde_json::Value;

/// Copies an example stack into a test directory, pointing its templates at instance/.
pub fn copy_stack(src: &Path, dst: &Path) {
    let instance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance/");
    let text = std::fs::read_to_string(src).unwrap();
    let text = text.replace("../instance/", &format!("{}/", instance.display()));
    std::fs::write(dst, text).unwrap();
}

/// Names of the instances alive in the sandbox cloud whose file is `cloud`, sorted
/// (duplicates kept).
pub fn alive_in(cloud: &Path) -> Vec<String> {
    let world: Value = serde_json::from_slice(&std::fs::read(cloud).unwrap()).unwrap();
    let mut names: Vec<String> = world["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["terminated_at"].is_null())
        .map(|i| i["tags"]["fleet:name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The `templates:` section of a test stack, pointing at the project's instance/ templates
/// (so each VM's user data carries its runner token).
pub fn templates_section() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    let r = repo.display();
    format!(
        "templates:\n  user_data: {r}/instance/cloudinit.yml.j2\n  playbook: {r}/instance/playbook.yml\n  runner_config: {r}/instance/config.toml.j2\n"
    )
}

/// A GitLab simulator on 127.0.0.1 that accepts `token` and has the project `team/app`. A
/// runner comes online only when a VM verifies its token (sandbox `runner_agent`).
pub async fn agent_sim(token: &str) -> gitlab_sim::Sim {
    let sim = gitlab_sim::Sim::start(
        gitlab_sim::SimConfig {
            tokens: vec![token.into()],
            runner_online_after: None,
            ..gitlab_sim::SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    sim.add_project("team/app");
    sim
}

/// The address `fleet-cli serve` (started with its stdout piped) listens on, read from its
/// first line of stdout; panics with that line when it is not the expected one.
pub fn serve_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("serve's stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    line.trim()
        .strip_prefix("fleet-cli serve: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string()
}

/// Fails, showing the exit status, stdout and stderr, unless the command exited 0.
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The `p` quantile (0 to 1) of `sorted`, nearest rank; for the benches' latency reports.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
