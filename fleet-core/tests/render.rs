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
