//! The command provider against a fake cloud script (`tests/fixtures/command/cloud.py`,
//! run with python3) that keeps instances in a JSON file in a temp dir: the shared cloud
//! conformance suite, then user data on stdin, exit codes, stderr, timeouts and malformed
//! output.

use std::path::Path;

use fleet_core::apply::error_chain;
use fleet_core::cloud::{Cloud, CreateInstance, Scope};
use fleet_core::secret::Secret;
use fleet_core::spec::InstanceSpec;
use fleet_core::testing::{cloud_conformance, cloud_refusal_conformance};
use fleet_providers::command::{CommandCloud, CommandSettings};

fn script() -> String {
    format!(
        "{}/tests/fixtures/command/cloud.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A provider on the fake cloud in `dir`, with `fault` (`op:kind`, see the script).
fn cloud(dir: &Path, fault: &str, timeout: &str) -> CommandCloud {
    let s = script();
    let settings: CommandSettings = serde_yaml_ng::from_str(&format!(
        "{{create: [python3, '{s}', create], list: [python3, '{s}', list], delete: [python3, '{s}', delete],
          timeout: {timeout}, env: {{FLEET_TEST_CLOUD_FILE: '{}', FLEET_TEST_FAULT: '{fault}'}}}}",
        dir.join("cloud.json").display()
    ))
    .unwrap();
    CommandCloud::new(settings, dir.to_path_buf()).unwrap()
}

fn scope() -> Scope {
    Scope {
        stack: "cmd".into(),
        lineage: "lin-1".into(),
    }
}

fn request(name: &str) -> CreateInstance {
    let spec = InstanceSpec {
        image: "Ubuntu2404".into(),
        instance_types: vec!["Standard_B2s".into()],
        template_hash: None,
        labels: Default::default(),
    };
    CreateInstance {
        tags: fleet_core::apply::object_tags(&scope(), name, &spec.hash(), None),
        name: name.into(),
        spec,
        user_data: Some(Secret::new("#cloud-config\n# token glrt-secret\n")),
    }
}

#[tokio::test]
async fn command_provider_passes_the_cloud_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    cloud_conformance(
        &cloud(dir.path(), "", "30s"),
        "conformance",
        "Ubuntu2404",
        "Standard_B2s",
    )
    .await;
    let unknown_size = InstanceSpec {
        image: "Ubuntu2404".into(),
        instance_types: vec!["Standard_Huge".into()],
        template_hash: None,
        labels: Default::default(),
    };
    cloud_refusal_conformance(&cloud(dir.path(), "", "30s"), "refused", unknown_size).await;
}

#[tokio::test]
async fn create_gets_the_user_data_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let c = cloud(dir.path(), "", "30s");
    let out = c
        .create_instances(&scope(), "fb-1", &[request("cmd-0001")])
        .await
        .unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.created[0].address.as_deref(), Some("10.0.0.1"));
    let world: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cloud.json")).unwrap()).unwrap();
    assert_eq!(
        world["user_data"]["cmd-0001"],
        "#cloud-config\n# token glrt-secret\n"
    );
    assert_eq!(world["instances"][0]["tags"]["fleet:batch"], "fb-1");
}

#[tokio::test]
async fn a_failing_command_is_refused_with_its_exit_status_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let c = cloud(dir.path(), "create:fail", "30s");
    let out = c
        .create_instances(&scope(), "fb-1", &[request("cmd-0001")])
        .await
        .unwrap();
    let (name, e) = &out.failed[0];
    assert_eq!(name, "cmd-0001");
    assert!(!e.is_ambiguous());
    assert_eq!(
        error_chain(e),
        format!(
            "command refused create (exit_3): `python3 {} create` failed (exit status: 3): ERROR: QuotaExceeded: no cores left in westeurope; fix what it says, then run again",
            script()
        )
    );
}

#[tokio::test]
async fn exit_status_75_is_a_failure_that_may_pass() {
    let dir = tempfile::tempdir().unwrap();
    let c = cloud(dir.path(), "delete:tempfail", "30s");
    let out = c
        .delete_instances(&scope(), &["vm-0001".to_string()])
        .await
        .unwrap();
    let (_, e) = &out.failed[0];
    assert!(e.is_ambiguous(), "{e:?}");
    assert!(error_chain(e).contains("throttled, try again; the next run retries"));
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_and_the_call_is_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let c = cloud(dir.path(), "list:slow", "300ms");
    let started = std::time::Instant::now();
    let e = c.observe(&scope()).await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(e.is_ambiguous());
    assert_eq!(e.code(), Some("timeout"));
    assert!(error_chain(&e).contains("did not finish within 300ms and was killed"));
}

#[tokio::test]
async fn malformed_output_is_an_error_naming_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let c = cloud(dir.path(), "list:bad_json", "30s");
    let e = c.observe(&scope()).await.unwrap_err();
    let text = error_chain(&e);
    let start = format!(
        "command refused list (malformed_output): `python3 {} list` (provider.list) printed something that is not a JSON array of instances",
        script()
    );
    assert!(text.starts_with(&start), "{text}");
    assert!(text.ends_with("see docs/providers/command.md"), "{text}");
}

#[tokio::test]
async fn a_missing_program_says_which_setting_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let settings: CommandSettings = serde_yaml_ng::from_str(
        "{create: ./no-such-create, list: ./no-such-list, delete: ./no-such-delete}",
    )
    .unwrap();
    let c = CommandCloud::new(settings, dir.path().to_path_buf()).unwrap();
    let e = c.observe(&scope()).await.unwrap_err();
    let text = error_chain(&e);
    assert!(text.contains("no-such-list"), "{text}");
    assert!(text.contains("check provider.list in the stack"), "{text}");
}
