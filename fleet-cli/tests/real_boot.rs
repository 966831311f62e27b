//! The real boot: `fleet-cli up` on the libvirt provider boots a Debian VM from the
//! rendered cloud-init user data, the playbook configures Docker and the runner, and the
//! runner comes online in GitLab (gitlab-sim on this machine, which the VM reaches at
//! 10.0.2.2 through QEMU's user networking). Then a stop (managedsave) and a start, and a
//! destroy that leaves nothing behind.
//!
//! Everything is the real path except one package: GitLab's package repository cannot be
//! reached from here, so the VM installs a clearly named **stand-in** for gitlab-runner
//! (`tests/standin-gitlab-runner/`, built here with dpkg-deb and served over HTTP): it runs
//! as the real package's systemd unit and checks its token in with GitLab
//! (`POST /api/v4/runners/verify`), but runs no jobs. Docker is Debian's `docker.io`, from
//! the Debian archive the base image's apt sources name.
//!
//! Needs root, a running libvirtd (`scripts/ensure-libvirt`, run by `make test`) and the
//! base image (`scripts/build-base-image`, cached outside the clone; this test builds it
//! when missing, about five minutes). Under software emulation the boot takes minutes; a VM
//! that does not come up fails the test with its console log.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");
const URI: &str = "qemu:///system";
const TOKEN: &str = "real-boot-admin-token";
const NAME: &str = "boot-0001";
/// The stand-in package's file name as the VM downloads it.
const DEB: &str = "gitlab-runner_0.0.0~standin_all.deb";
/// How long the first boot may take under software emulation on a busy 2-core machine.
const BOOT_DEADLINE: Duration = Duration::from_secs(20 * 60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a tool, failing the test with a message naming the tool when it is missing.
fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("{name} is missing ({e}): run scripts/ensure-libvirt (make test does)")
        })
}

fn virsh(args: &[&str]) -> Output {
    let mut all = vec!["-c", URI];
    all.extend_from_slice(args);
    tool("virsh", &all)
}

/// The base image directory (disk.qcow2, vmlinuz, initrd.img): built when missing, then
/// cached outside the clone keyed by the recipe.
fn base_image() -> PathBuf {
    let script = repo().join("scripts/build-base-image");
    let o = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(o.status.success(), "scripts/build-base-image failed");
    PathBuf::from(text(&o.stdout).trim())
}

/// Builds the stand-in gitlab-runner package into `dir`.
fn build_standin_deb(dir: &Path) -> PathBuf {
    let src = repo().join("fleet-cli/tests/standin-gitlab-runner");
    let root = dir.join("standin-root");
    let place = |from: &str, to: &str, mode: u32| {
        let dst = root.join(to);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src.join(from), &dst).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    place("control", "DEBIAN/control", 0o644);
    place("postinst", "DEBIAN/postinst", 0o755);
    place("prerm", "DEBIAN/prerm", 0o755);
    place("gitlab-runner", "usr/bin/gitlab-runner", 0o755);
    place(
        "gitlab-runner.service",
        "etc/systemd/system/gitlab-runner.service",
        0o644,
    );
    let deb = dir.join(DEB);
    let o = tool(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "--build",
            root.to_str().unwrap(),
            deb.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "dpkg-deb: {}", text(&o.stderr));
    deb
}

/// Serves `file` at `/<its name>` on 127.0.0.1; returns the port.
async fn serve_file(file: PathBuf) -> u16 {
    let name = format!("/{}", file.file_name().unwrap().to_string_lossy());
    let body = std::fs::read(&file).unwrap();
    let app = axum::Router::new().route(
        &name,
        axum::routing::get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// The VM, the pool and the runner of one test, removed on drop whatever happened.
struct Rig {
    dir: tempfile::TempDir,
    pool: String,
    sim: gitlab_sim::Sim,
}

impl Rig {
    fn stack(&self) -> PathBuf {
        self.dir.path().join("boot.yaml")
    }

    fn console_log(&self) -> PathBuf {
        self.dir.path().join(format!("{NAME}-console.log"))
    }

    fn fleet(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--stack")
            .arg(self.stack())
            .args(args)
            .env("FLEET_TEST_GITLAB_TOKEN", TOKEN)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs fleet-cli, failing with its output (and the console log) unless it exits 0;
    /// returns stdout. Nothing it prints may carry the runner token.
    fn fleet_ok(&self, args: &[&str]) -> String {
        let o = self.fleet(args);
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        if !o.status.success() {
            self.fail(&format!(
                "fleet-cli {args:?} failed ({:?})\nstdout:\n{out}\nstderr:\n{err}",
                o.status
            ));
        }
        assert!(
            !out.contains("glrt-") && !err.contains("glrt-"),
            "fleet-cli {args:?} printed a runner token"
        );
        out
    }

    fn state(&self) -> Value {
        let path = self.dir.path().join("state.json");
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(!body.contains("glrt-"), "a runner token reached state");
        serde_json::from_str(&body).unwrap()
    }

    /// Fails the test with the VM's console log, and the bootstrap's log when the guest
    /// agent still answers.
    fn fail(&self, what: &str) -> ! {
        let log = std::fs::read_to_string(self.console_log()).unwrap_or_else(|e| {
            format!("(no console log at {}: {e})", self.console_log().display())
        });
        let bootstrap = self
            .try_in_vm("tail -n 60 /var/log/fleet-bootstrap.log /var/log/cloud-init-output.log")
            .map_or_else(
                || "(the guest agent does not answer)".to_string(),
                |(_, out)| out,
            );
        panic!(
            "{what}\n--- last lines of the console log ({}) ---\n{}\n--- in the VM ---\n{bootstrap}",
            self.console_log().display(),
            last_lines(&log, 150),
        );
    }

    /// Runs `script` in the VM through the QEMU guest agent; returns (exit code, stdout),
    /// failing the test when the agent does not answer.
    fn in_vm(&self, script: &str) -> (i64, String) {
        self.try_in_vm(script)
            .unwrap_or_else(|| self.fail(&format!("the guest agent did not run `{script}`")))
    }

    /// `in_vm`, or `None` when the agent does not answer or the script does not end
    /// within two minutes.
    fn try_in_vm(&self, script: &str) -> Option<(i64, String)> {
        let cmd = json!({"execute": "guest-exec", "arguments": {
            "path": "/bin/sh", "arg": ["-c", script], "capture-output": true}})
        .to_string();
        let o = virsh(&["qemu-agent-command", NAME, &cmd]);
        if !o.status.success() {
            return None;
        }
        let pid = serde_json::from_slice::<Value>(&o.stdout).ok()?["return"]["pid"].clone();
        let status = json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}).to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let o = virsh(&["qemu-agent-command", NAME, &status]);
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            let r = &v["return"];
            if r["exited"] == true {
                let out = r["out-data"]
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .map(|b| text(&b))
                    .unwrap_or_default();
                return Some((r["exitcode"].as_i64().unwrap_or(-1), out));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        None
    }

    /// Whether the guest agent answers (the VM is up to multi-user with its agent).
    fn agent_answers(&self) -> bool {
        virsh(&["qemu-agent-command", NAME, r#"{"execute":"guest-ping"}"#])
            .status
            .success()
    }

    fn domain_state(&self) -> String {
        text(&virsh(&["domstate", NAME]).stdout).trim().to_string()
    }

    fn runner_online(&self) -> bool {
        self.sim
            .with_world(|w, now| w.runners.values().any(|r| r.online(now)))
    }

    fn runner_count(&self) -> usize {
        self.sim.with_world(|w, _| w.runners.len())
    }

    /// Polls `check` every few seconds until it holds; fails with the console log at the
    /// deadline.
    fn wait(&self, what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            if start.elapsed() > deadline {
                self.fail(&format!("timed out after {deadline:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_secs(5));
        }
        eprintln!("real boot: {what} after {:.0?}", start.elapsed());
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Leave nothing on the host, also when the test failed half-way.
        let _ = virsh(&["destroy", NAME]);
        let _ = virsh(&["undefine", NAME, "--managed-save", "--nvram"]);
        let _ = virsh(&["pool-destroy", &self.pool]);
        let _ = virsh(&["pool-undefine", &self.pool]);
    }
}

fn require_root_and_libvirtd() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the real-boot test runs VMs on qemu:///system: run it as root"
    );
    let o = virsh(&["version"]);
    assert!(
        o.status.success(),
        "libvirtd does not answer at {URI}: run scripts/ensure-libvirt (make test does): {}",
        text(&o.stderr)
    );
    let o = virsh(&["dominfo", NAME]);
    assert!(
        !o.status.success(),
        "a domain {NAME} already exists on this host (left by an earlier run?): remove it with `virsh destroy {NAME}; virsh undefine {NAME} --managed-save`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debian_vm_boots_from_the_rendered_files_and_its_runner_comes_online() {
    require_root_and_libvirtd();
    let image = base_image();
    let dir = tempfile::tempdir().unwrap();
    let deb = build_standin_deb(dir.path());
    let deb_port = serve_file(deb).await;
    let sim = common::agent_sim(TOKEN).await;
    let sim_port = sim
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let pool = format!("fleet-boot-{}", std::process::id());
    let stack = format!(
        "name: boot
provider:
  kind: libvirt
  uri: {URI}
  pool: {pool}
  pool_path: {pool_path}
  network: user
  kernel: {image}/vmlinuz
  initrd: {image}/initrd.img
  stop: managedsave
  disk_gib: 8
  console_log_dir: {logs}
instance:
  image: {image}/disk.qcow2
  types: [2cpu-2048mib]
runner:
  gitlab_url: {sim_url}
  instance_gitlab_url: http://10.0.2.2:{sim_port}
  token_env: FLEET_TEST_GITLAB_TOKEN
  projects: [team/app]
  tags: [docker, libvirt]
  run_untagged: false
  install:
    docker: docker.io
    runner: deb
    runner_deb: http://10.0.2.2:{deb_port}/{DEB}
policy:
  min_instances: 1
  max_instances: 1
  idle_count: 0
  idle_time: 1s
  stopped_count: 1
  stopped_time: 1h
state:
  backend: local
  path: state.json
{templates}",
        pool_path = dir.path().join("pool").display(),
        image = image.display(),
        logs = dir.path().display(),
        sim_url = sim.url(),
        templates = common::templates_section(),
    );
    std::fs::write(dir.path().join("boot.yaml"), stack).unwrap();
    let rig = Rig { dir, pool, sim };

    // Up: one VM and its runner.
    let up = rig.fleet_ok(&["up", "--yes"]);
    assert!(up.contains(NAME), "{up}");
    assert_eq!(rig.runner_count(), 1, "one runner registered for the VM");
    assert_eq!(rig.domain_state(), "running");

    // The boot: cloud-init runs the user data, the playbook installs Docker and the runner,
    // and the runner's first contact makes it online in GitLab.
    rig.wait("the runner to come online in GitLab", BOOT_DEADLINE, || {
        if rig.domain_state() != "running" {
            rig.fail(&format!(
                "the VM is {} before its runner came online",
                rig.domain_state()
            ));
        }
        rig.runner_online()
    });
    rig.wait("the bootstrap to end", Duration::from_secs(5 * 60), || {
        rig.agent_answers() && {
            let (_, out) = rig.in_vm("ls /var/lib/fleet/");
            out.contains("bootstrap.done") || out.contains("bootstrap.failed")
        }
    });

    // What the VM did.
    let (_, ls) = rig.in_vm("ls /var/lib/fleet/");
    if !ls.contains("bootstrap.done") {
        let (_, log) = rig.in_vm("cat /var/log/fleet-bootstrap.log");
        rig.fail(&format!("the bootstrap failed; its log:\n{log}"));
    }
    let (rc, status) = rig.in_vm("cloud-init status --format json");
    let status: Value = serde_json::from_str(&status)
        .unwrap_or_else(|e| rig.fail(&format!("cloud-init status (exit {rc}): {e}: {status}")));
    assert_eq!(status["status"], "done", "cloud-init status: {status}");
    assert_eq!(
        status["errors"].as_array().map(Vec::len),
        Some(0),
        "cloud-init reported errors: {status}"
    );
    let token = rig
        .sim
        .with_world(|w, _| w.runners.values().next().map(|r| r.token.clone()).unwrap());
    let (rc, config) = rig.in_vm(
        "python3 -c 'import json, tomllib; print(json.dumps(tomllib.load(open(\"/etc/gitlab-runner/config.toml\", \"rb\"))))'",
    );
    assert_eq!(rc, 0, "config.toml does not parse as TOML: {config}");
    let config: Value = serde_json::from_str(&config).unwrap();
    let runner = &config["runners"][0];
    assert_eq!(
        config["runners"].as_array().map(Vec::len),
        Some(1),
        "{config}"
    );
    assert_eq!(runner["url"], format!("http://10.0.2.2:{sim_port}"));
    assert_eq!(
        runner["token"],
        token.as_str(),
        "the VM's config.toml has the runner's token"
    );
    assert_eq!(runner["executor"], "docker");
    assert_eq!(runner["name"], NAME);
    assert!(config["concurrent"].as_i64().unwrap_or(0) >= 1, "{config}");
    // The playbook validated config.toml with `gitlab-runner lint` (the stand-in logs each
    // call) on the file Ansible renders before it moves it into place.
    let (_, lints) = rig.in_vm("cat /var/log/gitlab-runner-standin-lint.log");
    let lint: Vec<&str> = lints.lines().collect();
    assert!(
        lint.len() == 1 && lint[0].starts_with("lint /") && lint[0].ends_with(" ok"),
        "one passing lint of the rendered file: {lints}"
    );
    assert!(
        !lint[0].contains("/etc/gitlab-runner/config.toml "),
        "lint ran on the file before it was put in place: {lints}"
    );
    let (_, modes) =
        rig.in_vm("stat -c '%a %U' /etc/gitlab-runner/fleet-token /etc/gitlab-runner/config.toml");
    assert_eq!(
        modes.trim(),
        "600 root\n600 root".trim(),
        "token and config modes"
    );
    let (_, services) = rig.in_vm(
        "systemctl is-active docker gitlab-runner fleet-metadata-block; gitlab-runner --version",
    );
    assert!(
        services.starts_with("active\nactive\nactive\n") && services.contains("stand-in"),
        "Docker, the stand-in runner and the metadata block run: {services}"
    );
    let (_, rules) = rig.in_vm("iptables -S DOCKER-USER");
    for addr in ["169.254.169.254/32", "168.63.129.16/32"] {
        assert!(
            rules.contains(&format!("-A DOCKER-USER -d {addr} -j REJECT")),
            "job containers are kept from {addr}: {rules}"
        );
    }
    let (_, bootstrap_log) =
        rig.in_vm("cat /var/log/fleet-bootstrap.log /var/log/cloud-init-output.log");
    assert!(
        bootstrap_log.contains("fleet bootstrap of boot-0001 finished"),
        "{bootstrap_log}"
    );
    assert!(
        !bootstrap_log.contains(&token),
        "the runner token is in the VM's bootstrap or cloud-init log"
    );
    let console = std::fs::read_to_string(rig.console_log()).unwrap();
    assert!(
        console.contains("cloud-init finished for boot-0001"),
        "console log has cloud-init's final message"
    );
    assert!(
        !console.contains(&token),
        "the runner token is in the console log"
    );

    // fleet-cli saw the runner online and measured the boot from its first contact.
    rig.fleet_ok(&["refresh"]);
    let state = rig.state();
    assert!(
        state["instances"][NAME]["jobs"]["runner_online_at"].is_string(),
        "{state}"
    );
    let boots = state["timings"]["boots"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(boots.len(), 1, "one boot measured: {state}");
    let boot_s = boots[0].as_u64().unwrap();
    eprintln!("real boot: fleet-cli measured the boot (create to runner online) at {boot_s} s");

    // Stop into the pool: with no VM wanted running, the idle VM is saved (managedsave).
    let up = rig.fleet_ok(&["up", "--yes", "--set", "policy.min_instances=0"]);
    assert!(up.contains("stop"), "{up}");
    rig.wait("the managed save", Duration::from_secs(120), || {
        rig.domain_state() == "shut off"
    });
    let info = text(&virsh(&["dominfo", NAME]).stdout);
    assert!(info.contains("Managed save:   yes"), "{info}");

    // Start again: restored from the saved memory, not booted; the resume is measured.
    let up = rig.fleet_ok(&["up", "--yes"]);
    assert!(up.contains("start"), "{up}");
    rig.wait("the VM to run again", Duration::from_secs(120), || {
        rig.domain_state() == "running"
    });
    rig.fleet_ok(&["refresh"]);
    let state = rig.state();
    let resumes = state["timings"]["resumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(resumes.len(), 1, "one resume measured: {state}");
    eprintln!(
        "real boot: fleet-cli measured the resume (start to running) at {} s",
        resumes[0]
    );
    rig.wait(
        "the guest agent after the restore",
        Duration::from_secs(60),
        || rig.agent_answers(),
    );
    let (_, uptime) = rig.in_vm("cut -d' ' -f1 /proc/uptime");
    let uptime: f64 = uptime.trim().parse().unwrap();
    assert!(
        uptime >= boot_s as f64,
        "restored, not booted again: uptime {uptime} s is at least the boot's {boot_s} s"
    );

    // Destroy: no domain, no volume, no runner.
    rig.fleet_ok(&["destroy", "--yes"]);
    assert!(
        !virsh(&["dominfo", NAME]).status.success(),
        "the domain is gone"
    );
    let vols = text(&virsh(&["vol-list", &rig.pool]).stdout);
    assert!(!vols.contains(NAME), "no volume is left: {vols}");
    assert_eq!(rig.runner_count(), 0, "the runner is deleted from GitLab");
}
