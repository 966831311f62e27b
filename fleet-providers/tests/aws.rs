//! The AWS provider and the S3 + DynamoDB backend against a real EC2/S3/DynamoDB API
//! emulator (moto). `make test` starts it and exports AWS_ENDPOINT_URL; run alone, these
//! tests fail and say so rather than skip.

use fleet_core::cloud::Lifecycle;
use fleet_core::state::{StateBackend, StateError};
use fleet_core::testing::{backend_conformance, cloud_conformance, lock_info};
use fleet_providers::aws::{sdk_config, AwsCloud, AwsSettings, CallCounter, S3Backend, S3Settings};

/// moto's bundled Ubuntu AMI.
const AMI: &str = "ami-1e749f67";

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL is not set: these tests need the moto server; run them with `make test` (scripts/with-moto starts it)")
    })
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}", n % 1_000_000_000)
}

fn settings() -> AwsSettings {
    serde_yaml_ng::from_str("{}").unwrap()
}

async fn cloud() -> AwsCloud {
    let sdk = sdk_config(Some("us-east-1"), Some(&endpoint()), 3).await;
    AwsCloud::new(&sdk, settings(), CallCounter::default())
}

#[tokio::test]
async fn ec2_passes_the_cloud_conformance_suite() {
    let c = cloud().await;
    cloud_conformance(&c, &unique("conf"), AMI, "t3.medium").await;
    let calls = c.calls().snapshot();
    assert!(
        calls.get("RunInstances").copied().unwrap_or(0) >= 1,
        "{calls:?}"
    );
}

async fn s3_backend(bucket: &str, table: &str, lease: &str) -> S3Backend {
    let sdk = sdk_config(Some("us-east-1"), Some(&endpoint()), 3).await;
    let settings: S3Settings = serde_yaml_ng::from_str(&format!(
        "{{bucket: {bucket}, key: state/test.json, lock_table: {table}, lease: {lease}}}"
    ))
    .unwrap();
    S3Backend::new(&sdk, &settings, &CallCounter::default())
}

async fn make_bucket_and_table(bucket: &str, table: &str) {
    let sdk = sdk_config(Some("us-east-1"), Some(&endpoint()), 3).await;
    fleet_providers::testing::create_state_store(&sdk, bucket, table)
        .await
        .unwrap();
}

#[tokio::test]
async fn s3_backend_passes_the_backend_conformance_suite() {
    let (bucket, table) = (unique("state"), unique("locks"));
    make_bucket_and_table(&bucket, &table).await;
    let a = s3_backend(&bucket, &table, "10m").await;
    let b = s3_backend(&bucket, &table, "10m").await;
    let backends = std::sync::Mutex::new(vec![a, b]);
    backend_conformance(|| backends.lock().unwrap().pop().expect("two backends")).await;
}

#[tokio::test]
async fn an_expired_lease_can_be_taken_over_and_a_live_one_cannot() {
    let (bucket, table) = (unique("state"), unique("locks"));
    make_bucket_and_table(&bucket, &table).await;
    let dead = s3_backend(&bucket, &table, "0s").await;
    dead.lock(&lock_info("fleet-cli up", 11)).await.unwrap();
    // The holder "died" (never unlocks) and its zero-length lease has run out.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let next = s3_backend(&bucket, &table, "10m").await;
    next.lock(&lock_info("fleet-cli up", 22))
        .await
        .expect("an expired lease is stealable");
    let third = s3_backend(&bucket, &table, "10m").await;
    match third.lock(&lock_info("fleet-cli destroy", 33)).await {
        Err(StateError::Locked { holder, .. }) => {
            assert_eq!(holder.pid, 22);
            assert!(
                holder.lease_until.is_some(),
                "the holder's lease is reported"
            );
        }
        other => panic!("a live lease must not be stolen: {other:?}"),
    }
    next.unlock().await.unwrap();
}

// Faults on the wire: a proxy between the SDK and moto answers chosen requests with EC2's
// own error shape, so the SDK's retry strategy and error parsing run for real.

use fleet_core::cloud::{Cloud, CloudError, CreateInstance, Scope};
use fleet_providers::testing::{FaultProxy, Rule};

async fn cloud_via(proxy: &FaultProxy, settings_yaml: &str, attempts: u32) -> AwsCloud {
    let sdk = sdk_config(Some("us-east-1"), Some(proxy.url()), attempts).await;
    let settings: AwsSettings = serde_yaml_ng::from_str(settings_yaml).unwrap();
    AwsCloud::new(&sdk, settings, CallCounter::default())
}

fn scope(stack: &str) -> Scope {
    Scope {
        stack: stack.to_string(),
        lineage: "test-lineage".into(),
    }
}

fn requests(scope: &Scope, n: u64) -> (String, Vec<CreateInstance>) {
    requests_of(scope, n, &["t3.medium"])
}

fn requests_of(scope: &Scope, n: u64, types: &[&str]) -> (String, Vec<CreateInstance>) {
    let spec = fleet_core::spec::InstanceSpec {
        image: AMI.into(),
        instance_types: types.iter().map(|t| t.to_string()).collect(),
        template_hash: None,
        labels: Default::default(),
    };
    let reqs: Vec<CreateInstance> = (1..=n)
        .map(|i| {
            let name = fleet_core::naming::instance_name(&scope.stack, i);
            CreateInstance {
                tags: fleet_core::apply::object_tags(scope, &name, &spec.hash(), None),
                name,
                spec: spec.clone(),
                user_data: None,
            }
        })
        .collect();
    let names: Vec<&str> = reqs.iter().map(|r| r.name.as_str()).collect();
    (fleet_core::naming::batch_token(&names), reqs)
}

/// Every instance moto has with `stack`'s tag.
async fn tagged_instances(stack: &str) -> Vec<aws_sdk_ec2::types::Instance> {
    let sdk = sdk_config(Some("us-east-1"), Some(&endpoint()), 3).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let out = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:fleet:stack")
                .values(stack)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances().iter().cloned())
        .collect()
}

/// The market (`spot` or on-demand) of every live instance of `stack`, read from moto.
async fn markets(stack: &str) -> Vec<String> {
    tagged_instances(stack)
        .await
        .iter()
        .map(|i| {
            i.instance_lifecycle()
                .map_or("on-demand".to_string(), |l| l.as_str().to_string())
        })
        .collect()
}

#[tokio::test]
async fn throttled_calls_are_retried_with_backoff() {
    let proxy = FaultProxy::start(&endpoint()).await.unwrap();
    proxy.add(Rule::error(
        &["Action=DescribeInstances"],
        503,
        "RequestLimitExceeded",
        2,
    ));
    let c = cloud_via(&proxy, "{}", 3).await;
    c.observe(&scope(&unique("throttle")))
        .await
        .expect("two throttled answers are retried away");
    assert_eq!(proxy.injected(), 2);
    assert_eq!(
        c.calls().snapshot().get("DescribeInstances").copied(),
        Some(3),
        "two throttled attempts and one that went through"
    );
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_is_reported_as_transient_with_its_code() {
    let proxy = FaultProxy::start(&endpoint()).await.unwrap();
    proxy.add(Rule::error(
        &["Action=DescribeInstances"],
        503,
        "RequestLimitExceeded",
        u32::MAX,
    ));
    let c = cloud_via(&proxy, "{}", 2).await;
    match c.observe(&scope(&unique("throttle"))).await {
        Err(e @ CloudError::Transient { .. }) => {
            let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
            assert!(text.contains("RequestLimitExceeded"), "{text}");
            assert!(text.contains("the next run retries"), "{text}");
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert_eq!(proxy.injected(), 2, "max_attempts bounds the retries");
}

#[tokio::test]
async fn spot_is_requested_when_the_stack_asks_for_it() {
    let proxy = FaultProxy::start(&endpoint()).await.unwrap();
    let c = cloud_via(&proxy, "{spot: true}", 3).await;
    let s = scope(&unique("spot"));
    let (token, reqs) = requests(&s, 2);
    let out = c.create_instances(&s, &token, &reqs).await.unwrap();
    assert_eq!(out.created.len(), 2, "{:?}", out.failed);
    assert_eq!(markets(&s.stack).await, ["spot", "spot"]);
}

#[tokio::test]
async fn spot_capacity_errors_fall_back_to_on_demand() {
    let proxy = FaultProxy::start(&endpoint()).await.unwrap();
    proxy.add(Rule::error(
        &["Action=RunInstances", "MarketType=spot"],
        500,
        "InsufficientInstanceCapacity",
        u32::MAX,
    ));
    let c = cloud_via(&proxy, "{spot: true}", 2).await;
    let s = scope(&unique("fallback"));
    let (token, reqs) = requests(&s, 3);
    let out = c.create_instances(&s, &token, &reqs).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.created.len(), 3);
    assert!(proxy.injected() >= 1, "the spot request was refused");
    assert_eq!(markets(&s.stack).await, ["on-demand"; 3]);
    let launches = c.calls().snapshot().get("RunInstances").copied();
    assert_eq!(
        launches,
        Some(3),
        "two spot attempts (max_attempts 2), then one on-demand launch"
    );
}

#[tokio::test]
async fn without_fallback_a_spot_capacity_error_is_a_refusal_naming_the_code() {
    let proxy = FaultProxy::start(&endpoint()).await.unwrap();
    proxy.add(Rule::error(
        &["Action=RunInstances", "MarketType=spot"],
        500,
        "InsufficientInstanceCapacity",
        u32::MAX,
    ));
    let c = cloud_via(&proxy, "{spot: true, spot_fallback: false}", 1).await;
    let s = scope(&unique("nofallback"));
    let (token, reqs) = requests(&s, 1);
    match c.create_instances(&s, &token, &reqs).await {
        Err(e @ CloudError::Rejected { .. }) => {
            let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
            assert!(text.contains("InsufficientInstanceCapacity"), "{text}");
            assert!(text.contains("spot_fallback"), "{text}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(markets(&s.stack).await.is_empty());
}

#[tokio::test]
async fn runner_tokens_live_in_ssm_as_secure_strings_and_are_deleted() {
    use fleet_core::secret::Secret;
    use fleet_providers::aws::TokenStore;
    let sdk = sdk_config(Some("us-east-1"), Some(&endpoint()), 3).await;
    let store = TokenStore::new(&sdk, None, &CallCounter::default());
    let stack = unique("ssm");
    let name = store
        .put(&stack, "runner-0001", &Secret::new("glrt-test-token-1"))
        .await
        .unwrap();
    assert_eq!(name, format!("/fleet/{stack}/runner-0001/runner-token"));
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let raw = ssm.get_parameter().name(&name).send().await.unwrap();
    let p = raw.parameter().unwrap();
    assert_eq!(
        p.r#type(),
        Some(&aws_sdk_ssm::types::ParameterType::SecureString)
    );
    assert_ne!(
        p.value(),
        Some("glrt-test-token-1"),
        "read without decryption, a SecureString does not show the token"
    );
    let back = store.get(&stack, "runner-0001").await.unwrap().unwrap();
    assert_eq!(back.expose(), "glrt-test-token-1");
    // A new token for the same instance replaces the old one.
    store
        .put(&stack, "runner-0001", &Secret::new("glrt-test-token-2"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get(&stack, "runner-0001")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        "glrt-test-token-2"
    );
    store.delete(&stack, "runner-0001").await.unwrap();
    assert!(store.get(&stack, "runner-0001").await.unwrap().is_none());
    store
        .delete(&stack, "runner-0001")
        .await
        .expect("deleting a token that is gone is not an error");
}

#[tokio::test]
async fn cache_buckets_get_tags_an_expiry_rule_and_are_found_again() {
    use fleet_core::resource::ResourceSpec;
    let c = cloud().await;
    let s = scope(&unique("cache"));
    let spec = ResourceSpec {
        kind: "cache_bucket".into(),
        name: "cache".into(),
        properties: [("expire_days".to_string(), serde_json::json!(7))]
            .into_iter()
            .collect(),
        depends_on: vec![],
    };
    let tags = fleet_core::apply::object_tags(&s, "cache", &spec.hash(), Some("cache_bucket"));
    let made = c.create_resource(&s, &spec, &tags).await.unwrap();
    assert_eq!(made.cloud_id, format!("{}-cache", s.stack));
    // Idempotent: a retry after a crash finds the bucket and finishes the job.
    c.create_resource(&s, &spec, &tags).await.unwrap();

    let seen = c.observe(&s).await.unwrap();
    assert_eq!(seen.resources.len(), 1, "{:?}", seen.resources);
    assert_eq!(seen.resources[0].name, "cache");
    assert_eq!(seen.resources[0].spec_hash, spec.hash());
    let other = c.observe(&scope(&format!("{}-x", s.stack))).await.unwrap();
    assert!(other.resources.is_empty(), "another stack sees none of it");

    let sdk = sdk_config(Some("us-east-1"), Some(&endpoint()), 3).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let rules = s3
        .get_bucket_lifecycle_configuration()
        .bucket(&made.cloud_id)
        .send()
        .await
        .unwrap();
    let days: Vec<Option<i32>> = rules
        .rules()
        .iter()
        .map(|r| r.expiration().and_then(|e| e.days()))
        .collect();
    assert_eq!(days, [Some(7)]);

    // A bucket holding objects is not deleted unless force_destroy says so.
    s3.put_object()
        .bucket(&made.cloud_id)
        .key("runner/cache.zip")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"cache"))
        .send()
        .await
        .unwrap();
    let e = c
        .delete_resource(&s, "cache_bucket", &made.cloud_id)
        .await
        .unwrap_err();
    assert!(format!("{e} {:?}", e).contains("force_destroy"), "{e:?}");
    s3.delete_object()
        .bucket(&made.cloud_id)
        .key("runner/cache.zip")
        .send()
        .await
        .unwrap();
    c.delete_resource(&s, "cache_bucket", &made.cloud_id)
        .await
        .unwrap();
    assert!(c.observe(&s).await.unwrap().resources.is_empty());
    c.delete_resource(&s, "cache_bucket", &made.cloud_id)
        .await
        .expect("already gone counts as deleted");
}

#[tokio::test]
async fn several_instance_types_launch_with_one_create_fleet_call() {
    let proxy = FaultProxy::start(&endpoint()).await.unwrap();
    let c = cloud_via(&proxy, "{}", 3).await;
    let s = scope(&unique("fleet"));
    let (token, reqs) = requests_of(&s, 4, &["t3.medium", "t3.large"]);
    let out = c.create_instances(&s, &token, &reqs).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let calls = c.calls().snapshot();
    assert_eq!(calls.get("CreateFleet").copied(), Some(1), "{calls:?}");
    assert_eq!(calls.get("RunInstances"), None, "{calls:?}");
    let seen = c.observe(&s).await.unwrap();
    let mut names: Vec<&str> = seen.instances.iter().map(|o| o.name.as_str()).collect();
    names.sort();
    let wanted: Vec<&str> = reqs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names, wanted,
        "every instance carries the name it was asked under"
    );
    for o in &seen.instances {
        assert!(
            ["t3.medium", "t3.large"].contains(&o.instance_type.as_str()),
            "{o:?}"
        );
        assert_eq!(o.batch.as_deref(), Some(token.as_str()));
    }
    // A second batch of the same spec reuses the launch template.
    let (token2, more) = requests_of(&s, 6, &["t3.medium", "t3.large"]);
    let out = c.create_instances(&s, &token2, &more[4..]).await.unwrap();
    assert_eq!(out.created.len(), 2, "{:?}", out.failed);
    assert_eq!(
        c.calls().snapshot().get("CreateLaunchTemplate").copied(),
        Some(2)
    );
    assert_eq!(c.observe(&s).await.unwrap().instances.len(), 6);
}

#[tokio::test]
async fn a_spot_fleet_short_of_capacity_falls_back_to_on_demand() {
    let proxy = FaultProxy::start(&endpoint()).await.unwrap();
    proxy.add(Rule::error(
        &["Action=CreateFleet", "DefaultTargetCapacityType=spot"],
        500,
        "InsufficientInstanceCapacity",
        u32::MAX,
    ));
    let c = cloud_via(&proxy, "{spot: true}", 1).await;
    let s = scope(&unique("fleetspot"));
    let (token, reqs) = requests_of(&s, 2, &["t3.medium", "t3.large"]);
    let out = c.create_instances(&s, &token, &reqs).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(proxy.injected(), 1);
    assert_eq!(markets(&s.stack).await, ["on-demand"; 2]);
}

#[tokio::test]
async fn instances_stop_and_start_again_keeping_their_ids() {
    let c = cloud().await;
    assert!(c.can_stop(), "EC2 does not bill stopped instances' compute");
    let s = scope(&unique("power"));
    let (token, reqs) = requests(&s, 2);
    let made = c.create_instances(&s, &token, &reqs).await.unwrap();
    let ids: Vec<String> = made.created.iter().map(|o| o.cloud_id.clone()).collect();
    let lifecycles = |o: fleet_core::cloud::Observed| {
        let mut v: Vec<(String, Lifecycle)> = o
            .instances
            .into_iter()
            .map(|i| (i.cloud_id, i.lifecycle))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };

    let stopped = c.stop_instances(&s, &ids).await.unwrap();
    assert!(stopped.failed.is_empty(), "{:?}", stopped.failed);
    assert_eq!(stopped.changed.len(), 2);
    let seen = lifecycles(c.observe(&s).await.unwrap());
    assert_eq!(
        seen.len(),
        2,
        "stopped instances are still observed: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|(_, l)| matches!(l, Lifecycle::Stopping | Lifecycle::Stopped)),
        "{seen:?}"
    );

    let started = c.start_instances(&s, &ids).await.unwrap();
    assert!(started.failed.is_empty(), "{:?}", started.failed);
    let seen = lifecycles(c.observe(&s).await.unwrap());
    let mut same: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    let mut want = ids.clone();
    same.sort();
    want.sort();
    assert_eq!(same, want, "a start keeps the instances and their ids");
    assert!(
        seen.iter()
            .all(|(_, l)| matches!(l, Lifecycle::Booting | Lifecycle::Running)),
        "{seen:?}"
    );
    c.delete_instances(&s, &ids).await.unwrap();
}

#[tokio::test]
async fn clouds_that_cannot_stop_say_so() {
    let cloud = fleet_core::testing::MemoryCloud::default();
    assert!(!cloud.can_stop());
    let e = cloud
        .stop_instances(&scope("x"), &["i-1".to_string()])
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("does not support stopping instances"),
        "{e}"
    );
}

/// The user data of instance `id`, as moto stores it (base64 of what was sent).
async fn user_data_of(id: &str) -> Option<String> {
    let sdk = sdk_config(Some("us-east-1"), Some(&endpoint()), 3).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let out = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    out.user_data().and_then(|u| u.value()).map(str::to_string)
}

#[tokio::test]
async fn each_instance_boots_with_its_own_user_data_gzipped_and_is_named_at_creation() {
    use base64::Engine as _;
    use std::io::Read as _;
    let c = cloud().await;
    let scope = scope(&unique("userdata"));
    let (token, mut reqs) = requests(&scope, 3);
    for r in &mut reqs {
        r.user_data = Some(fleet_core::secret::Secret::new(format!(
            "#cloud-config\nhostname: {}\n",
            r.name
        )));
    }
    let out = c.create_instances(&scope, &token, &reqs).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.created.len(), 3);
    // One call per instance: user data differs, so one launch cannot carry it.
    assert_eq!(c.calls().snapshot().get("RunInstances").copied(), Some(3));
    // Named at creation: no tagging call afterwards.
    assert_eq!(c.calls().snapshot().get("CreateTags").copied(), None);
    for o in &out.created {
        let encoded = user_data_of(&o.cloud_id).await.expect("user data");
        let gz = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, format!("#cloud-config\nhostname: {}\n", o.name));
        assert_eq!(o.batch.as_deref(), Some(token.as_str()));
    }
    let seen = c.observe(&scope).await.unwrap();
    let mut names: Vec<&str> = seen.instances.iter().map(|i| i.name.as_str()).collect();
    names.sort();
    let mut wanted: Vec<&str> = reqs.iter().map(|r| r.name.as_str()).collect();
    wanted.sort();
    assert_eq!(names, wanted);
}

#[tokio::test]
async fn user_data_over_ec2s_limit_is_refused_before_any_launch_call() {
    // A saved plan applied after its templates grew renders user data the plan never
    // checked; the provider checks it with fleet-core's size rule before launching.
    let c = cloud().await;
    let scope = scope(&unique("bigdata"));
    let (token, mut reqs) = requests(&scope, 2);
    // Pseudo-random text barely compresses: 40 KB stays far above 16 KB after gzip.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: String = (0..40_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect();
    for r in &mut reqs {
        r.user_data = Some(fleet_core::secret::Secret::new(format!(
            "#cloud-config\n# {noise}\nhostname: {}\n",
            r.name
        )));
    }
    match c.create_instances(&scope, &token, &reqs).await {
        Err(e @ CloudError::Rejected { .. }) => {
            let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
            assert!(text.contains("UserDataTooLarge"), "{text}");
            assert!(text.contains("after gzip"), "{text}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(c.calls().snapshot().get("RunInstances").copied(), None);
    assert!(c.observe(&scope).await.unwrap().instances.is_empty());
}

/// `(HttpTokens, HttpPutResponseHopLimit)` of every live instance of `stack`, as moto
/// records them.
async fn metadata_options(stack: &str) -> Vec<(String, i32)> {
    tagged_instances(stack)
        .await
        .iter()
        .map(|i| {
            let m = i.metadata_options().expect("moto records metadata options");
            (
                m.http_tokens()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                m.http_put_response_hop_limit().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn instance_metadata_needs_imdsv2_and_stays_on_the_host_unless_the_stack_loosens_it() {
    // Without these options, IMDSv1 answers and (with many AMIs' hop limit of 2) a job's
    // container can read the user data and take the instance role's credentials.
    let c = cloud().await;
    let s = scope(&unique("imds"));
    let (token, reqs) = requests(&s, 2);
    c.create_instances(&s, &token, &reqs).await.unwrap();
    assert_eq!(
        metadata_options(&s.stack).await,
        vec![("required".to_string(), 1); 2]
    );

    let proxy = FaultProxy::start(&endpoint()).await.unwrap();
    let loose = cloud_via(
        &proxy,
        "{metadata: {http_tokens: optional, hop_limit: 2}}",
        3,
    )
    .await;
    let s = scope(&unique("imdsloose"));
    let (token, reqs) = requests(&s, 1);
    loose.create_instances(&s, &token, &reqs).await.unwrap();
    assert_eq!(metadata_options(&s.stack).await, [("optional".into(), 2)]);

    // CreateFleet launches from a launch template: the options are in its data.
    let s = scope(&unique("imdsfleet"));
    let (token, reqs) = requests_of(&s, 2, &["t3.medium", "t3.large"]);
    c.create_instances(&s, &token, &reqs).await.unwrap();
    let sdk = sdk_config(Some("us-east-1"), Some(&endpoint()), 3).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let versions = ec2
        .describe_launch_template_versions()
        .launch_template_name(format!("{}-{}", s.stack, reqs[0].spec.hash()))
        .send()
        .await;
    // The template name carries a hash of the launch settings too; find it by prefix.
    let templates = ec2.describe_launch_templates().send().await.unwrap();
    let name = templates
        .launch_templates()
        .iter()
        .filter_map(|t| t.launch_template_name())
        .find(|n| n.starts_with(&format!("{}-{}-", s.stack, reqs[0].spec.hash())))
        .expect("a launch template for the spec")
        .to_string();
    assert!(
        versions.is_err(),
        "the name without the settings hash is not used"
    );
    let data = ec2
        .describe_launch_template_versions()
        .launch_template_name(&name)
        .send()
        .await
        .unwrap();
    let m = data.launch_template_versions()[0]
        .launch_template_data()
        .and_then(|d| d.metadata_options())
        .expect("moto records the template's metadata options");
    assert_eq!(m.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(m.http_put_response_hop_limit(), Some(1));
}

#[tokio::test]
async fn spot_instances_are_persistent_requests_that_stop_so_the_pool_can_stop_them() {
    // RunInstances with only MarketType=spot makes one-time spot instances, which EC2
    // refuses to stop. moto does not enforce that, so the request is checked on the wire.
    let proxy = FaultProxy::start(&endpoint()).await.unwrap();
    let c = cloud_via(&proxy, "{spot: true}", 3).await;
    assert!(c.can_stop());
    let s = scope(&unique("spotpool"));
    let (token, reqs) = requests(&s, 2);
    let made = c.create_instances(&s, &token, &reqs).await.unwrap();
    assert_eq!(markets(&s.stack).await, ["spot", "spot"]);
    let sent = proxy.requests_containing(&["Action=RunInstances"]);
    assert_eq!(sent.len(), 1, "{sent:?}");
    for needle in [
        "InstanceMarketOptions.MarketType=spot",
        "InstanceMarketOptions.SpotOptions.SpotInstanceType=persistent",
        "InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior=stop",
    ] {
        assert!(
            sent[0].contains(needle),
            "{needle} missing from {}",
            sent[0]
        );
    }
    let ids: Vec<String> = made.created.iter().map(|o| o.cloud_id.clone()).collect();
    let stopped = c.stop_instances(&s, &ids).await.unwrap();
    assert!(stopped.failed.is_empty(), "{:?}", stopped.failed);
    // Terminating first looks for the persistent requests to cancel (moto's RunInstances
    // makes none, so there is nothing to cancel here).
    c.delete_instances(&s, &ids).await.unwrap();
    let looked =
        proxy.requests_containing(&["Action=DescribeInstances", "Filter.1.Name=instance-id"]);
    assert_eq!(looked.len(), 1, "{looked:?}");
}
