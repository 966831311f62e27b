//! The EC2 provider.
//!
//! Creates are one call per batch, with the batch token as `ClientToken` so a retried
//! call does not double: `CreateFleet` (instant) over the instance types and subnets when
//! the stack offers a choice, else `RunInstances` with MinCount = MaxCount = N (all or
//! nothing). EC2 applies one set of tags to a whole batch, so instances are tagged at
//! creation with the stack, lineage, spec hash and batch token; names (`fleet:name`,
//! `Name`) are tagged right after. A crash in between leaves unnamed instances that the
//! next plan matches to their pending records by batch token. With `spot`, capacity errors
//! fall back to on-demand; a partial launch is topped up with one more call, so a batch
//! takes at most three launch calls.
//!
//! User data is per instance (its hostname and runner token differ), so a batch whose
//! instances carry different user data is launched one `RunInstances` call per instance,
//! each named at creation and tagged with the batch token; user data is sent gzipped
//! (cloud-init unpacks it). `CreateFleet` is used only for batches that share user data.

use std::collections::BTreeMap;
use std::io::Write;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, Filter, FleetLaunchTemplateConfigRequest,
    FleetLaunchTemplateOverridesRequest, FleetLaunchTemplateSpecificationRequest,
    FleetOnDemandAllocationStrategy, FleetType, IamInstanceProfileSpecification, Instance,
    InstanceMarketOptionsRequest, InstanceStateName, InstanceType,
    LaunchTemplateIamInstanceProfileSpecificationRequest, MarketType, OnDemandOptionsRequest,
    RequestLaunchTemplateData, ResourceType, SpotAllocationStrategy, SpotOptionsRequest, Tag,
    TagSpecification, TargetCapacitySpecificationRequest,
};
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;

use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::{
    Cloud, CloudError, CreateInstance, CreateOutcome, DeleteOutcome, Detail, Observed,
    ObservedInstance, ObservedResource, PowerOutcome, Scope,
};
use fleet_core::naming::{self, tags};
use fleet_core::resource::ResourceSpec;
use fleet_core::stack::{LoadedStack, StackError};

use super::bucket::{self, BucketProperties};
use super::calls::CallCounter;
use super::errors::{self, CAPACITY_CODES};

/// EC2's limit on user data, after base64 decoding.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// `provider:` settings of `kind: aws`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// Region; default from the SDK's chain (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint for every AWS call (an emulator, a private endpoint); default from
    /// `AWS_ENDPOINT_URL`.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Subnets to launch in; the first is used (default: the default VPC's).
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Security group ids.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Launch spot instances.
    #[serde(default)]
    pub spot: bool,
    /// On spot capacity errors, launch on-demand instead.
    #[serde(default = "yes")]
    pub spot_fallback: bool,
    /// IAM instance profile name.
    #[serde(default)]
    pub iam_instance_profile: Option<String>,
    /// EC2 key pair name to put on instances (or declare a `key_pair` resource).
    #[serde(default)]
    pub key_name: Option<String>,
    /// Instances per launch call.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Attempts per API call, counting the first, for throttling and 5xx.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn yes() -> bool {
    true
}
fn default_max_batch() -> usize {
    1000
}
fn default_attempts() -> u32 {
    5
}

/// The EC2 provider.
pub struct AwsCloud {
    ec2: aws_sdk_ec2::Client,
    s3: aws_sdk_s3::Client,
    region: Option<String>,
    settings: AwsSettings,
    calls: CallCounter,
    /// Cache buckets whose objects go with them on delete (`force_destroy`).
    force_destroy: std::collections::BTreeSet<String>,
}

const INSTANCE_BATCH: usize = 1000;

/// Instance states that count as present (terminated ones are gone).
const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];

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
            settings,
            calls,
            force_destroy: Default::default(),
        }
    }

    /// The provider a stack describes.
    pub async fn from_stack(loaded: &LoadedStack, calls: CallCounter) -> Result<Self, StackError> {
        let settings: AwsSettings = loaded.section("provider", &loaded.stack.provider.settings)?;
        if settings.max_batch == 0 || settings.max_batch > INSTANCE_BATCH {
            return Err(loaded.error_at(
                "provider.max_batch",
                format!("max_batch {} is outside 1..=1000", settings.max_batch),
                "EC2 launches and terminates at most 1,000 instances per call",
            ));
        }
        check_user_data(loaded)?;
        let mut force_destroy = std::collections::BTreeSet::new();
        for (i, r) in loaded.stack.resources.iter().enumerate() {
            if r.kind != bucket::KIND {
                continue;
            }
            let spec = ResourceSpec::from(r);
            let props = BucketProperties::of(&loaded.stack.name, &spec).map_err(|m| {
                loaded.error_at(
                    &format!("resources.{i}.properties"),
                    m,
                    "see the cache_bucket properties in the README",
                )
            })?;
            if props.force_destroy {
                force_destroy.insert(props.name(&loaded.stack.name, &r.name));
            }
        }
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
        let mut cloud = AwsCloud::new(&sdk, settings, calls);
        cloud.force_destroy = force_destroy;
        Ok(cloud)
    }

    /// API calls made so far, by operation.
    pub fn calls(&self) -> &CallCounter {
        &self.calls
    }

    /// One launch call; returns the instances it started.
    async fn run_instances(
        &self,
        req: &CreateInstance,
        count: usize,
        token: &str,
        batch_tags: &[Tag],
        spot: bool,
    ) -> Result<Vec<Instance>, CloudError> {
        let spec = &req.spec;
        let instance_type = spec.instance_types.first().cloned().unwrap_or_default();
        let tag_spec = |rt: ResourceType| {
            TagSpecification::builder()
                .resource_type(rt)
                .set_tags(Some(batch_tags.to_vec()))
                .build()
        };
        let mut call = self
            .ec2
            .run_instances()
            .image_id(&spec.image)
            .instance_type(InstanceType::from(instance_type.as_str()))
            // All or nothing: EC2 either starts the whole batch or answers a capacity
            // error, which the caller handles (spot fallback, next run).
            .min_count(count as i32)
            .max_count(count as i32)
            .client_token(token)
            .tag_specifications(tag_spec(ResourceType::Instance))
            .tag_specifications(tag_spec(ResourceType::Volume));
        if let Some(subnet) = self.settings.subnets.first() {
            call = call.subnet_id(subnet);
        }
        if !self.settings.security_groups.is_empty() {
            call = call.set_security_group_ids(Some(self.settings.security_groups.clone()));
        }
        if let Some(k) = &self.settings.key_name {
            call = call.key_name(k);
        }
        if let Some(p) = &self.settings.iam_instance_profile {
            call = call
                .iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
        }
        if let Some(u) = &req.user_data {
            call = call.user_data(encode_user_data(u.expose()));
        }
        if spot {
            call = call.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .build(),
            );
        }
        let out = call
            .send()
            .await
            .map_err(|e| errors::map("RunInstances", e))?;
        Ok(out.instances().to_vec())
    }

    /// One launch call: `CreateFleet` (instant) when the stack offers a choice of instance
    /// types or subnets, `RunInstances` when a single type and subnet suffice.
    async fn launch_once(
        &self,
        req: &CreateInstance,
        count: usize,
        token: &str,
        batch_tags: &[Tag],
        spot: bool,
    ) -> Result<Vec<Instance>, CloudError> {
        // A launch template is shared by the spec, so per-instance user data goes through
        // RunInstances.
        if req.user_data.is_none()
            && (req.spec.instance_types.len() > 1 || self.settings.subnets.len() > 1)
        {
            self.create_fleet(req, count, token, batch_tags, spot).await
        } else {
            self.run_instances(req, count, token, batch_tags, spot)
                .await
        }
    }

    /// The launch template `CreateFleet` needs: one per stack and instance spec, named
    /// `<stack>-<spec hash>`, created once and reused.
    async fn ensure_launch_template(&self, req: &CreateInstance) -> Result<String, CloudError> {
        let stack = req.tags.get(tags::STACK).cloned().unwrap_or_default();
        let name = format!("{stack}-{}", req.spec.hash());
        let mut data = RequestLaunchTemplateData::builder().image_id(&req.spec.image);
        if !self.settings.security_groups.is_empty() {
            data = data.set_security_group_ids(Some(self.settings.security_groups.clone()));
        }
        if let Some(k) = &self.settings.key_name {
            data = data.key_name(k);
        }
        if let Some(p) = &self.settings.iam_instance_profile {
            data = data.iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(p)
                    .build(),
            );
        }
        let made = self
            .ec2
            .create_launch_template()
            .launch_template_name(&name)
            .launch_template_data(data.build())
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::LaunchTemplate)
                    .tags(Tag::builder().key(tags::STACK).value(&stack).build())
                    .tags(
                        Tag::builder()
                            .key(tags::SPEC)
                            .value(req.spec.hash())
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await;
        match made {
            Ok(_) => Ok(name),
            Err(e) => {
                let e = errors::map("CreateLaunchTemplate", e);
                match errors::code(&e) {
                    Some("InvalidLaunchTemplateName.AlreadyExistsException") => Ok(name),
                    _ => Err(e),
                }
            }
        }
    }

    /// One `CreateFleet` call of type `instant` over every instance type (in the stack's
    /// order of preference) and subnet. EC2 reports capacity shortfalls per launch in the
    /// answer; an answer with no instance at all becomes the error it names.
    async fn create_fleet(
        &self,
        req: &CreateInstance,
        count: usize,
        token: &str,
        batch_tags: &[Tag],
        spot: bool,
    ) -> Result<Vec<Instance>, CloudError> {
        let template = self.ensure_launch_template(req).await?;
        let subnets: Vec<Option<&String>> = if self.settings.subnets.is_empty() {
            vec![None]
        } else {
            self.settings.subnets.iter().map(Some).collect()
        };
        let mut config = FleetLaunchTemplateConfigRequest::builder().launch_template_specification(
            FleetLaunchTemplateSpecificationRequest::builder()
                .launch_template_name(&template)
                .version("$Latest")
                .build(),
        );
        for (priority, t) in req.spec.instance_types.iter().enumerate() {
            for subnet in &subnets {
                let mut o = FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(InstanceType::from(t.as_str()))
                    .priority(priority as f64);
                if let Some(sn) = subnet {
                    o = o.subnet_id(*sn);
                }
                config = config.overrides(o.build());
            }
        }
        let capacity_type = if spot {
            DefaultTargetCapacityType::Spot
        } else {
            DefaultTargetCapacityType::OnDemand
        };
        let out = self
            .ec2
            .create_fleet()
            .r#type(FleetType::Instant)
            .client_token(token)
            .launch_template_configs(config.build())
            .target_capacity_specification(
                TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(count as i32)
                    .default_target_capacity_type(capacity_type)
                    .build(),
            )
            .spot_options(
                SpotOptionsRequest::builder()
                    .allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized)
                    .build(),
            )
            .on_demand_options(
                OnDemandOptionsRequest::builder()
                    .allocation_strategy(FleetOnDemandAllocationStrategy::Prioritized)
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(batch_tags.to_vec()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| errors::map("CreateFleet", e))?;
        let ids: Vec<String> = out
            .instances()
            .iter()
            .flat_map(|i| i.instance_ids().iter().cloned())
            .collect();
        if ids.is_empty() {
            let first = out.errors().first();
            let code = first
                .and_then(|e| e.error_code())
                .unwrap_or("UnfulfillableCapacity")
                .to_string();
            let message = first
                .and_then(|e| e.error_message())
                .unwrap_or("CreateFleet launched no instance");
            return Err(errors::from_code("CreateFleet", &code, message));
        }
        for e in out.errors() {
            tracing::info!(
                "CreateFleet: {} ({})",
                e.error_message().unwrap_or("no message"),
                e.error_code().unwrap_or("no code")
            );
        }
        let described = self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids))
            .send()
            .await
            .map_err(|e| errors::map("DescribeInstances", e))?;
        Ok(described
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .cloned()
            .collect())
    }

    /// Launches `batch` in at most three calls: spot (if asked), on-demand on capacity
    /// errors, and one top-up when fewer instances started than asked.
    async fn launch(
        &self,
        token: &str,
        batch: &[CreateInstance],
    ) -> Result<Vec<Instance>, CloudError> {
        let first = &batch[0];
        let shared = batch.iter().all(|r| r.user_data == first.user_data);
        if !shared {
            // One call per instance (bounded concurrency), each with its own client token
            // and its name tagged at creation.
            let mut calls: Vec<Result<Vec<Instance>, CloudError>> = Vec::new();
            for group in batch.chunks(8) {
                let futs: Vec<_> = group
                    .iter()
                    .map(|req| self.launch_single(token, req))
                    .collect();
                calls.extend(futures_util::future::join_all(futs).await);
            }
            let mut started = Vec::new();
            let mut first_error = None;
            for c in calls {
                match c {
                    Ok(v) => started.extend(v),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            return match (started.is_empty(), first_error) {
                (true, Some(e)) => Err(e),
                _ => Ok(started),
            };
        }
        self.launch_tagged(token, token, batch).await
    }

    /// One instance of a batch, in its own call.
    async fn launch_single(
        &self,
        batch_token: &str,
        req: &CreateInstance,
    ) -> Result<Vec<Instance>, CloudError> {
        // EC2 client tokens are at most 64 characters; names can be long.
        let client_token = format!(
            "{batch_token}-{}",
            fleet_core::spec::short_hash(req.name.as_bytes())
        );
        self.launch_tagged(batch_token, &client_token, std::slice::from_ref(req))
            .await
    }

    /// [`Self::launch`] of instances sharing user data; `batch_token` is tagged, and
    /// `token` is the client token. A single instance is named at creation.
    async fn launch_tagged(
        &self,
        batch_token: &str,
        token: &str,
        batch: &[CreateInstance],
    ) -> Result<Vec<Instance>, CloudError> {
        let first = &batch[0];
        let mut batch_tags: Vec<Tag> = first
            .tags
            .iter()
            .filter(|(k, _)| batch.len() == 1 || k.as_str() != tags::NAME)
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        if batch.len() == 1 {
            batch_tags.push(Tag::builder().key("Name").value(&first.name).build());
        }
        batch_tags.push(Tag::builder().key(tags::BATCH).value(batch_token).build());

        let mut spot = self.settings.spot;
        let mut started = match self
            .launch_once(first, batch.len(), token, &batch_tags, spot)
            .await
        {
            Ok(v) => v,
            Err(e)
                if spot
                    && self.settings.spot_fallback
                    && errors::code(&e).is_some_and(|c| CAPACITY_CODES.contains(&c)) =>
            {
                tracing::warn!("spot capacity unavailable ({e}); launching on-demand instead");
                spot = false;
                self.launch_once(
                    first,
                    batch.len(),
                    &format!("{token}-od"),
                    &batch_tags,
                    false,
                )
                .await?
            }
            Err(e) => return Err(e),
        };
        if started.len() < batch.len() {
            let missing = batch.len() - started.len();
            tracing::info!(
                "{missing} of {} instances did not start; asking once more",
                batch.len()
            );
            let more = self
                .launch_once(first, missing, &format!("{token}-topup"), &batch_tags, spot)
                .await;
            match more {
                Ok(v) => started.extend(v),
                Err(e) => tracing::warn!("top-up launch failed: {e}"),
            }
        }
        Ok(started)
    }

    /// Live instances of this stack launched under batch `token`.
    async fn batch_members(
        &self,
        scope: &Scope,
        token: &str,
    ) -> Result<Vec<ObservedInstance>, CloudError> {
        let out = self
            .ec2
            .describe_instances()
            .filters(stack_filter(scope))
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", tags::BATCH))
                    .values(token)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(LIVE_STATES.map(String::from).to_vec()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| errors::map("DescribeInstances", e))?;
        let mut v: Vec<ObservedInstance> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(observed)
            .collect();
        v.sort_by(|a, b| a.cloud_id.cmp(&b.cloud_id));
        Ok(v)
    }

    /// Tags each started instance with its name (best effort: the batch tag covers a miss).
    async fn tag_names(&self, pairs: &[(String, String)]) {
        let calls: Vec<_> = pairs
            .iter()
            .cloned()
            .map(|(id, name)| {
                let ec2 = self.ec2.clone();
                async move {
                    let r = ec2
                        .create_tags()
                        .resources(&id)
                        .tags(Tag::builder().key(tags::NAME).value(&name).build())
                        .tags(Tag::builder().key("Name").value(&name).build())
                        .send()
                        .await;
                    (id, r)
                }
            })
            .collect();
        let results: Vec<_> = stream::iter(calls).buffer_unordered(8).collect().await;
        for (id, r) in results {
            if let Err(e) = r {
                tracing::warn!(
                    "could not tag {id} with its name: {}",
                    errors::map("CreateTags", e)
                );
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Power {
    Stop,
    Start,
}

impl AwsCloud {
    /// `StopInstances` or `StartInstances`, up to 1,000 ids per call. When EC2 refuses a
    /// chunk because one instance is in the wrong state (`IncorrectInstanceState`), the
    /// chunk is retried id by id, so one booting instance does not hold back the others.
    async fn power(&self, what: Power, ids: &[String]) -> Result<PowerOutcome, CloudError> {
        let operation = match what {
            Power::Stop => "StopInstances",
            Power::Start => "StartInstances",
        };
        let call = |ids: Vec<String>| {
            let ec2 = self.ec2.clone();
            async move {
                match what {
                    Power::Stop => ec2
                        .stop_instances()
                        .set_instance_ids(Some(ids))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| errors::map(operation, e)),
                    Power::Start => ec2
                        .start_instances()
                        .set_instance_ids(Some(ids))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| errors::map(operation, e)),
                }
            }
        };
        let mut out = PowerOutcome::default();
        for chunk in ids.chunks(INSTANCE_BATCH) {
            match call(chunk.to_vec()).await {
                Ok(()) => out.changed.extend(chunk.iter().cloned()),
                Err(e) if errors::code(&e) == Some("IncorrectInstanceState") && chunk.len() > 1 => {
                    for id in chunk {
                        match call(vec![id.clone()]).await {
                            Ok(()) => out.changed.push(id.clone()),
                            Err(e) => out.failed.push((id.clone(), e)),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

fn tag_map(tags_: &[Tag]) -> BTreeMap<&str, &str> {
    tags_
        .iter()
        .filter_map(|t| Some((t.key()?, t.value().unwrap_or(""))))
        .collect()
}

fn lifecycle(i: &Instance) -> Lifecycle {
    match i.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Pending) => Lifecycle::Booting,
        Some(InstanceStateName::Running) => Lifecycle::Running,
        Some(InstanceStateName::Stopping) => Lifecycle::Stopping,
        Some(InstanceStateName::Stopped) => Lifecycle::Stopped,
        Some(InstanceStateName::ShuttingDown) => Lifecycle::Terminating,
        Some(InstanceStateName::Terminated) => Lifecycle::Terminated,
        _ => Lifecycle::Unknown,
    }
}

fn observed(i: &Instance) -> ObservedInstance {
    let t = tag_map(i.tags());
    let get = |k: &str| t.get(k).map(|v| v.to_string()).unwrap_or_default();
    ObservedInstance {
        cloud_id: i.instance_id().unwrap_or_default().to_string(),
        name: get(tags::NAME),
        lineage: get(tags::LINEAGE),
        image: i.image_id().unwrap_or_default().to_string(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        spec_hash: get(tags::SPEC),
        lifecycle: lifecycle(i),
        address: i.private_ip_address().map(str::to_string),
        launched_at: i
            .launch_time()
            .and_then(|d| DateTime::<Utc>::from_timestamp(d.secs(), d.subsec_nanos()))
            .unwrap_or(DateTime::UNIX_EPOCH),
        batch: t.get(tags::BATCH).map(|v| v.to_string()),
    }
}

fn stack_filter(scope: &Scope) -> Filter {
    Filter::builder()
        .name(format!("tag:{}", tags::STACK))
        .values(&scope.stack)
        .build()
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
        &["key_pair", bucket::KIND]
    }

    async fn observe(&self, scope: &Scope) -> Result<Observed, CloudError> {
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(stack_filter(scope))
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(LIVE_STATES.map(String::from).to_vec()))
                    .build(),
            )
            .max_results(1000)
            .into_paginator()
            .send();
        let mut instances = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| errors::map("DescribeInstances", e))?;
            for r in page.reservations() {
                instances.extend(r.instances().iter().map(observed));
            }
        }
        let keys = self
            .ec2
            .describe_key_pairs()
            .filters(stack_filter(scope))
            .send()
            .await
            .map_err(|e| errors::map("DescribeKeyPairs", e))?;
        let mut resources: Vec<ObservedResource> = keys
            .key_pairs()
            .iter()
            .map(|k| {
                let t = tag_map(k.tags());
                // The key name is unique per region and every key pair API takes it.
                ObservedResource {
                    cloud_id: k.key_name().unwrap_or_default().to_string(),
                    kind: "key_pair".into(),
                    name: t.get(tags::NAME).map(|v| v.to_string()).unwrap_or_default(),
                    spec_hash: t.get(tags::SPEC).map(|v| v.to_string()).unwrap_or_default(),
                }
            })
            .collect();
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
        if batch.is_empty() {
            return Ok(CreateOutcome::default());
        }
        if batch.iter().any(|r| r.spec != batch[0].spec) {
            return Err(CloudError::Rejected {
                provider: "aws".into(),
                operation: "RunInstances".into(),
                code: "MixedBatch".into(),
                detail: Detail(
                    "one launch call needs one instance spec; this batch mixes specs".into(),
                ),
            });
        }
        // A retried batch finds what its first attempt launched (EC2's ClientToken does
        // this too, for a while; emulators and expired tokens do not), so it never doubles.
        let earlier = self.batch_members(scope, token).await?;
        let started: Vec<ObservedInstance> = if earlier.is_empty() {
            self.launch(token, batch)
                .await?
                .iter()
                .map(observed)
                .collect()
        } else {
            tracing::info!(
                "batch {token} was launched before; reusing its {} instances",
                earlier.len()
            );
            earlier
        };
        // Members already named keep their names; the rest take the unused names in order.
        let mut by_name: BTreeMap<String, ObservedInstance> = BTreeMap::new();
        let mut unnamed = Vec::new();
        for o in started {
            if batch.iter().any(|r| r.name == o.name) && !by_name.contains_key(&o.name) {
                by_name.insert(o.name.clone(), o);
            } else {
                unnamed.push(o);
            }
        }
        let mut unnamed = unnamed.into_iter();
        let mut out = CreateOutcome::default();
        let mut to_tag = Vec::new();
        let mut missing = Vec::new();
        for req in batch {
            let o = match by_name.remove(&req.name) {
                Some(o) => o,
                None => match unnamed.next() {
                    Some(mut o) => {
                        o.name = req.name.clone();
                        to_tag.push((o.cloud_id.clone(), req.name.clone()));
                        o
                    }
                    None => {
                        missing.push(req);
                        continue;
                    }
                },
            };
            out.created.push(o);
        }
        for req in missing {
            out.failed.push((
                req.name.clone(),
                CloudError::Rejected {
                    provider: "aws".into(),
                    operation: "RunInstances".into(),
                    code: "InsufficientInstanceCapacity".into(),
                    detail: Detail(
                        "EC2 started fewer instances than asked; the next run tries again".into(),
                    ),
                },
            ));
        }
        self.tag_names(&to_tag).await;
        Ok(out)
    }

    async fn delete_instances(
        &self,
        _scope: &Scope,
        ids: &[String],
    ) -> Result<DeleteOutcome, CloudError> {
        let mut out = DeleteOutcome::default();
        for chunk in ids.chunks(INSTANCE_BATCH) {
            match self
                .ec2
                .terminate_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
            {
                Ok(_) => out.deleted.extend(chunk.iter().cloned()),
                Err(e) => {
                    let e = errors::map("TerminateInstances", e);
                    if errors::code(&e) != Some("InvalidInstanceID.NotFound") {
                        return Err(e);
                    }
                    // Some ids are already gone: settle them one by one.
                    for id in chunk {
                        match self.ec2.terminate_instances().instance_ids(id).send().await {
                            Ok(_) => out.deleted.push(id.clone()),
                            Err(e) => {
                                let e = errors::map("TerminateInstances", e);
                                if errors::code(&e) == Some("InvalidInstanceID.NotFound") {
                                    out.deleted.push(id.clone());
                                } else {
                                    out.failed.push((id.clone(), e));
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    async fn create_resource(
        &self,
        scope: &Scope,
        spec: &ResourceSpec,
        tags_: &BTreeMap<String, String>,
    ) -> Result<ObservedResource, CloudError> {
        if spec.kind == bucket::KIND {
            return bucket::create(&self.s3, self.region.as_deref(), scope, spec, tags_).await;
        }
        if spec.kind != "key_pair" {
            return Err(CloudError::Unsupported {
                provider: "aws".into(),
                what: format!(
                    "resource kind `{}` (it has: {})",
                    spec.kind,
                    self.resource_kinds().join(", ")
                ),
            });
        }
        let key_name = naming::resource_name(&scope.stack, &spec.name);
        let public_key = spec
            .properties
            .get("public_key")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let aws_tags: Vec<Tag> = tags_
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let made = self
            .ec2
            .import_key_pair()
            .key_name(&key_name)
            .public_key_material(aws_sdk_ec2::primitives::Blob::new(public_key.as_bytes()))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::KeyPair)
                    .set_tags(Some(aws_tags))
                    .build(),
            )
            .send()
            .await;
        if let Err(e) = made {
            let e = errors::map("ImportKeyPair", e);
            // Already there (a retry, or adopted): creating is idempotent by name.
            if errors::code(&e) != Some("InvalidKeyPair.Duplicate") {
                return Err(e);
            }
        }
        Ok(ObservedResource {
            cloud_id: key_name,
            kind: spec.kind.clone(),
            name: spec.name.clone(),
            spec_hash: tags_.get(tags::SPEC).cloned().unwrap_or_default(),
        })
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
        match self.ec2.delete_key_pair().key_name(cloud_id).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = errors::map("DeleteKeyPair", e);
                if errors::code(&e) == Some("InvalidKeyPair.NotFound") {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn can_stop(&self) -> bool {
        true
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
        match self
            .ec2
            .describe_instances()
            .instance_ids(cloud_id)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .next()
                .map(observed)),
            Err(e) => {
                let e = errors::map("DescribeInstances", e);
                if errors::code(&e) == Some("InvalidInstanceID.NotFound") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// User data as `RunInstances` takes it: gzipped, then base64.
fn encode_user_data(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(fleet_core::render::gzip(text))
}

/// User data must fit EC2's 16 KB after gzip; say so when the stack loads, not at launch.
fn check_user_data(loaded: &LoadedStack) -> Result<(), StackError> {
    let Some(t) = &loaded.stack.templates.user_data else {
        return Ok(());
    };
    let path = loaded.resolve(t);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(());
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let size = gz
        .write_all(&bytes)
        .and_then(|_| gz.finish())
        .map(|v| v.len())
        .unwrap_or(bytes.len());
    if size > USER_DATA_LIMIT {
        return Err(loaded.error_at(
            "templates.user_data",
            format!(
                "user data is {size} bytes after gzip, over EC2's {USER_DATA_LIMIT}-byte limit"
            ),
            "move large files out of the template (fetch them at boot)",
        ));
    }
    Ok(())
}
