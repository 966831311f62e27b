//! The EC2 provider: [`AwsCloud`] and its [`Cloud`] implementation, which sequences the
//! concerns kept one per file:
//!
//! * `settings`: the stack's `provider:` section and its load-time checks;
//! * `batch`: creating a batch idempotently (re-finding an earlier attempt, naming);
//! * `launch`: the launch strategy (`RunInstances` or `CreateFleet`, spot fallback, top-up);
//! * `convert`: SDK types to fleet-core types and back;
//! * `observe`, `terminate`, `power`: reading, deleting, and stopping/starting instances.
//!
//! Resources live beside this module: `key_pair` (EC2) and `bucket` (S3).
//!
//! EC2 applies one set of tags to a whole batch, so instances are tagged at creation with
//! the stack, lineage, spec hash and batch token; names (`fleet:name`, `Name`) are tagged
//! right after. A crash in between leaves unnamed instances that the next plan matches to
//! their pending records by batch token. User data is per instance (its hostname and
//! runner token differ), so a batch whose instances carry different user data is launched
//! one `RunInstances` call per instance, each named at creation and tagged with the batch
//! token; user data is sent gzipped (cloud-init unpacks it).

mod batch;
pub(super) mod convert;
mod launch;
mod observe;
mod power;
mod settings;
mod terminate;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use fleet_core::cloud::{
    Cloud, CloudError, CreateInstance, CreateOutcome, DeleteOutcome, Observed, ObservedInstance,
    ObservedResource, PowerOutcome, Scope,
};
use fleet_core::resource::ResourceSpec;
use fleet_core::stack::{LoadedStack, StackError};

use super::bucket;
use super::calls::CallCounter;
use super::key_pair;
use power::Power;
pub use settings::{AwsSettings, HttpTokens, MetadataSettings};

/// EC2's limit on user data, after base64 decoding.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// The EC2 provider.
pub struct AwsCloud {
    ec2: aws_sdk_ec2::Client,
    s3: aws_sdk_s3::Client,
    region: Option<String>,
    settings: AwsSettings,
    calls: CallCounter,
    /// Cache buckets whose objects go with them on delete (`force_destroy`).
    force_destroy: BTreeSet<String>,
    /// Whether every instance it launches can be stopped: not when spot instances may be
    /// launched by an instant `CreateFleet`, which makes one-time spot instances.
    can_stop: bool,
}

impl AwsCloud {
    /// A provider on a loaded SDK configuration.
    pub fn new(sdk: &aws_config::SdkConfig, settings: AwsSettings, calls: CallCounter) -> Self {
        let conf = aws_sdk_ec2::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .build();
        let s3 = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .interceptor(calls.clone())
            .build();
        AwsCloud {
            ec2: aws_sdk_ec2::Client::from_conf(conf),
            s3: aws_sdk_s3::Client::from_conf(s3),
            region: sdk.region().map(|r| r.to_string()),
            can_stop: !(settings.spot && settings.subnets.len() > 1),
            settings,
            calls,
            force_destroy: Default::default(),
        }
    }

    /// The provider a stack describes.
    pub async fn from_stack(loaded: &LoadedStack, calls: CallCounter) -> Result<Self, StackError> {
        let settings = AwsSettings::from_stack(loaded)?;
        let force_destroy = bucket::force_destroyed(loaded)?;
        let sdk = super::sdk_config(
            settings.region.as_deref(),
            settings.endpoint_url.as_deref(),
            settings.max_attempts,
        )
        .await;
        if sdk.region().is_none() {
            return Err(loaded.error_at(
                "provider",
                "no AWS region is configured",
                "set provider.region, or AWS_REGION in the environment",
            ));
        }
        // CreateFleet is used for batches without per-instance user data when the stack
        // offers a choice of types or subnets (see `launch`).
        let by_fleet = loaded.stack.templates.user_data.is_none()
            && (loaded.stack.instance.types.len() > 1 || settings.subnets.len() > 1);
        let can_stop = !(settings.spot && by_fleet);
        let mut cloud = AwsCloud::new(&sdk, settings, calls);
        cloud.force_destroy = force_destroy;
        cloud.can_stop = can_stop;
        Ok(cloud)
    }

    /// API calls made so far, by operation.
    pub fn calls(&self) -> &CallCounter {
        &self.calls
    }
}

#[async_trait]
impl Cloud for AwsCloud {
    fn name(&self) -> &str {
        "aws"
    }

    fn label(&self) -> String {
        "aws (EC2)".into()
    }

    fn max_batch(&self) -> usize {
        self.settings.max_batch
    }

    fn user_data_limit(&self) -> Option<fleet_core::cloud::UserDataLimit> {
        Some(fleet_core::cloud::UserDataLimit {
            max_bytes: USER_DATA_LIMIT,
            gzip: true,
        })
    }

    fn resource_kinds(&self) -> &[&str] {
        &[key_pair::KIND, bucket::KIND]
    }

    async fn observe(&self, scope: &Scope) -> Result<Observed, CloudError> {
        let instances = self.observe_instances(scope).await?;
        let mut resources = key_pair::observe(&self.ec2, scope).await?;
        resources.extend(bucket::observe(&self.s3, scope).await?);
        Ok(Observed {
            instances,
            resources,
            ..Observed::default()
        })
    }

    async fn create_instances(
        &self,
        scope: &Scope,
        token: &str,
        batch: &[CreateInstance],
    ) -> Result<CreateOutcome, CloudError> {
        self.create_batch(scope, token, batch).await
    }

    async fn delete_instances(
        &self,
        _scope: &Scope,
        ids: &[String],
    ) -> Result<DeleteOutcome, CloudError> {
        self.terminate(ids).await
    }

    async fn create_resource(
        &self,
        scope: &Scope,
        spec: &ResourceSpec,
        tags_: &BTreeMap<String, String>,
    ) -> Result<ObservedResource, CloudError> {
        match spec.kind.as_str() {
            bucket::KIND => {
                bucket::create(&self.s3, self.region.as_deref(), scope, spec, tags_).await
            }
            key_pair::KIND => key_pair::create(&self.ec2, scope, spec, tags_).await,
            _ => Err(CloudError::Unsupported {
                provider: "aws".into(),
                what: format!(
                    "resource kind `{}` (it has: {})",
                    spec.kind,
                    self.resource_kinds().join(", ")
                ),
            }),
        }
    }

    async fn delete_resource(
        &self,
        _scope: &Scope,
        kind: &str,
        cloud_id: &str,
    ) -> Result<(), CloudError> {
        if kind == bucket::KIND {
            return bucket::delete(&self.s3, cloud_id, self.force_destroy.contains(cloud_id)).await;
        }
        key_pair::delete(&self.ec2, cloud_id).await
    }

    fn can_stop(&self) -> bool {
        self.can_stop
    }

    async fn stop_instances(
        &self,
        _scope: &Scope,
        ids: &[String],
    ) -> Result<PowerOutcome, CloudError> {
        self.power(Power::Stop, ids).await
    }

    async fn start_instances(
        &self,
        _scope: &Scope,
        ids: &[String],
    ) -> Result<PowerOutcome, CloudError> {
        self.power(Power::Start, ids).await
    }

    async fn describe_instance(
        &self,
        cloud_id: &str,
    ) -> Result<Option<ObservedInstance>, CloudError> {
        self.describe_one(cloud_id).await
    }
}
