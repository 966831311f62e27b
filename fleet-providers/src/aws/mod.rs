//! AWS: the EC2 provider and the S3 + DynamoDB state backend, on aws-sdk-rust.
//!
//! Credentials and region come from the SDK's standard chain. The SDK's standard
//! `AWS_ENDPOINT_URL` (or the stack's `endpoint_url`) points every client at an emulator
//! or a private endpoint. Throttling (`RequestLimitExceeded` and the other throttling
//! codes) and 5xx answers are retried by the SDK's standard retry strategy, with
//! exponential backoff and jitter, up to `max_attempts`.

mod bucket;
mod calls;
mod ec2;
mod errors;
mod key_pair;
mod s3_state;
mod ssm;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

pub use bucket::BucketProperties;
pub use calls::CallCounter;
pub use ec2::{AwsCloud, AwsSettings, HttpTokens, MetadataSettings};
pub use s3_state::{S3Backend, S3Settings};
pub use ssm::TokenStore;

/// Loads the SDK configuration: the standard chain, then the stack's overrides.
pub async fn sdk_config(
    region: Option<&str>,
    endpoint_url: Option<&str>,
    max_attempts: u32,
) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(
        RetryConfig::standard()
            .with_max_attempts(max_attempts.max(1))
            .with_initial_backoff(Duration::from_millis(200)),
    );
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
