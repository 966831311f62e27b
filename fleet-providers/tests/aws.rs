//! The AWS provider and the S3 + DynamoDB backend against a real EC2/S3/DynamoDB API
//! emulator (moto). `make test` starts it and exports AWS_ENDPOINT_URL; run alone, these
//! tests fail and say so rather than skip.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
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
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    ddb.create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("LockID")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("LockID")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
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
