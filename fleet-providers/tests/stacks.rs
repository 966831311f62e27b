//! The example stacks of the two newer providers, loaded the way the CLI loads them
//! (`fleet_providers::load_stack`): provider defaults, and the clouds they build.

use std::path::{Path, PathBuf};

use fleet_core::apply::error_chain;
use fleet_core::stack::BillingUnit;
use fleet_core::stack::{LoadedStack, Override};
use fleet_providers::aws::CallCounter;

fn stack(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../stacks")
        .join(file)
}

fn load(file: &str, sets: &[&str]) -> LoadedStack {
    let overrides: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    let env = |_: &str| None;
    fleet_providers::load_stack(&stack(file), &overrides, &env).unwrap()
}

#[test]
fn hetzner_bills_by_the_hour_unless_the_stack_says_otherwise() {
    assert_eq!(
        load("hetzner.yaml", &[]).stack.policy.billing.per,
        BillingUnit::Hour
    );
    let per_second = load("hetzner.yaml", &["policy.billing.per=second"]);
    assert_eq!(per_second.stack.policy.billing.per, BillingUnit::Second);
    assert_eq!(
        load("sandbox.yaml", &[]).stack.policy.billing.per,
        BillingUnit::Second
    );
    assert_eq!(
        load("azure-cli.yaml", &[]).stack.policy.billing.per,
        BillingUnit::Second
    );
}

#[test]
fn the_policy_compiled_at_load_follows_the_provider_default() {
    // Regression (found while compiling the policy once at load): a provider default set
    // after loading must reach the compiled settings the policy decides with, not only the
    // declared `policy:` section.
    assert_eq!(
        load("hetzner.yaml", &[]).policy.base().billing.per,
        BillingUnit::Hour
    );
    assert_eq!(
        load("hetzner.yaml", &["policy.billing.per=second"])
            .policy
            .base()
            .billing
            .per,
        BillingUnit::Second
    );
}

#[tokio::test]
async fn the_hetzner_stack_names_the_missing_token_variable() {
    let loaded = load(
        "hetzner.yaml",
        &["provider.token_env=FLEET_TEST_HCLOUD_TOKEN_UNSET"],
    );
    let e = fleet_providers::cloud_for(&loaded, &CallCounter::default())
        .await
        .err()
        .expect("no token, no cloud");
    let text = error_chain(&e);
    assert!(
        text.contains("environment variable `FLEET_TEST_HCLOUD_TOKEN_UNSET` (the Hetzner API token) is not set"),
        "{text}"
    );
    assert!(
        text.contains("at --set provider.token_env="),
        "the error says where the variable was named: {text}"
    );
}

#[tokio::test]
async fn the_azure_stack_builds_a_command_cloud_on_its_example_scripts() {
    let loaded = load("azure-cli.yaml", &[]);
    let cloud = fleet_providers::cloud_for(&loaded, &CallCounter::default())
        .await
        .unwrap();
    assert_eq!(cloud.name(), "command");
    assert!(
        cloud.label().ends_with("examples/azure/create.py)"),
        "{}",
        cloud.label()
    );
    for script in ["create.py", "list.py", "delete.py"] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/azure")
            .join(script);
        assert!(p.is_file(), "{} is missing", p.display());
    }
}

#[tokio::test]
async fn the_aws_example_names_an_instance_profile_and_a_stack_that_needs_one_must() {
    // Its VMs read their runner token from SSM and reach the S3 cache with the role:
    // without a profile every VM would end in bootstrap.failed.
    let example = load("aws.yaml", &[]);
    assert!(
        fleet_providers::cloud_for(&example, &CallCounter::default())
            .await
            .is_ok()
    );
    for sets in [
        vec!["provider.iam_instance_profile=null"],
        vec![
            "provider.iam_instance_profile=null",
            "runner.token_ssm_parameter=null",
        ],
    ] {
        let loaded = load("aws.yaml", &sets);
        let e = fleet_providers::cloud_for(&loaded, &CallCounter::default())
            .await
            .err()
            .expect("no instance profile, no cloud");
        let text = format!("{}\n{e:?}", error_chain(&e));
        assert!(
            text.contains("provider.iam_instance_profile names none"),
            "{sets:?}: {text}"
        );
        assert!(
            text.contains("set provider.iam_instance_profile"),
            "the hint says the fix: {text}"
        );
    }
    // A stack whose VMs need no role (an S3-compatible cache with its own address, the
    // token in the user data) needs no profile.
    let loaded = load(
        "aws.yaml",
        &[
            "provider.iam_instance_profile=null",
            "runner.token_ssm_parameter=null",
            "runner.cache.server_address=127.0.0.1:9000",
        ],
    );
    assert!(fleet_providers::cloud_for(&loaded, &CallCounter::default())
        .await
        .is_ok());
}

#[tokio::test]
async fn spot_from_an_instant_fleet_cannot_be_stopped_so_the_aws_cloud_says_it_cannot_stop() {
    let types = "instance.types=[t3.medium, t3.large]";
    let cloud = |sets: Vec<&'static str>| async move {
        fleet_providers::cloud_for(&load("aws.yaml", &sets), &CallCounter::default())
            .await
            .unwrap()
            .can_stop()
    };
    assert!(cloud(vec![types, "templates.user_data=null"]).await);
    assert!(
        cloud(vec![types, "provider.spot=true"]).await,
        "per-instance user data goes through RunInstances"
    );
    assert!(
        !cloud(vec![
            types,
            "provider.spot=true",
            "templates.user_data=null"
        ])
        .await,
        "one-time spot instances from CreateFleet cannot be stopped"
    );
}

#[test]
fn hetzner_prices_a_stopped_server_as_a_running_one_unless_the_stack_says_otherwise() {
    let p = load("hetzner.yaml", &[]).stack.policy.prices;
    assert_eq!(p.stopped, Some(p.running));
    let set = load("hetzner.yaml", &["policy.prices.stopped=0.001"]);
    assert_eq!(set.stack.policy.prices.stopped, Some(0.001));
    // Elsewhere the stopped price is left to its default share of the running one.
    assert_eq!(load("aws.yaml", &[]).stack.policy.prices.stopped, None);
}
