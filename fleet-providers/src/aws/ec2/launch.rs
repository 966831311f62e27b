//! The launch strategy: how one batch becomes EC2 launch calls. `CreateFleet` (instant)
//! over the instance types and subnets when the stack offers a choice, else `RunInstances`
//! with MinCount = MaxCount = N (all or nothing); spot capacity errors fall back to
//! on-demand, and a partial launch is topped up once, so a batch takes at most three
//! launch calls. Instances whose user data differs are launched one call each.

use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest,
    FleetLaunchTemplateOverridesRequest, FleetLaunchTemplateSpecificationRequest,
    FleetOnDemandAllocationStrategy, FleetType, HttpTokensState, IamInstanceProfileSpecification,
    Instance, InstanceInterruptionBehavior, InstanceMarketOptionsRequest,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceType,
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    MarketType, OnDemandOptionsRequest, RequestLaunchTemplateData, ResourceType,
    SpotAllocationStrategy, SpotInstanceType, SpotMarketOptions, SpotOptionsRequest, Tag,
    TagSpecification, TargetCapacitySpecificationRequest,
};

use fleet_core::cloud::{CloudError, CreateInstance};
use fleet_core::naming::tags;

use super::super::errors::{self, CAPACITY_CODES};
use super::convert::encode_user_data;
use super::settings::HttpTokens;
use super::AwsCloud;

impl AwsCloud {
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
        let m = &self.settings.metadata;
        call = call.metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .http_tokens(match m.http_tokens {
                    HttpTokens::Required => HttpTokensState::Required,
                    HttpTokens::Optional => HttpTokensState::Optional,
                })
                .http_put_response_hop_limit(m.hop_limit)
                .build(),
        );
        if spot {
            // One-time spot instances cannot be stopped; a persistent request that stops
            // on interruption can, so the stopped pool works with spot. The request is
            // cancelled when the instance is terminated (see `terminate`).
            call = call.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::Persistent)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Stop)
                            .build(),
                    )
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

    /// The launch template `CreateFleet` needs: one per stack, instance spec and launch
    /// settings, named `<stack>-<spec hash>-<settings hash>`, created once and reused (a
    /// template cannot change, so changed settings get a new one).
    async fn ensure_launch_template(&self, req: &CreateInstance) -> Result<String, CloudError> {
        let stack = req.tags.get(tags::STACK).cloned().unwrap_or_default();
        let s = &self.settings;
        let launch_settings = format!(
            "{:?}|{:?}|{:?}|{:?}",
            s.security_groups, s.key_name, s.iam_instance_profile, s.metadata
        );
        let name = format!(
            "{stack}-{}-{}",
            req.spec.hash(),
            fleet_core::spec::short_hash(launch_settings.as_bytes())
        );
        let m = &self.settings.metadata;
        let mut data = RequestLaunchTemplateData::builder()
            .image_id(&req.spec.image)
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .http_tokens(match m.http_tokens {
                        HttpTokens::Required => LaunchTemplateHttpTokensState::Required,
                        HttpTokens::Optional => LaunchTemplateHttpTokensState::Optional,
                    })
                    .http_put_response_hop_limit(m.hop_limit)
                    .build(),
            );
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
    pub(super) async fn launch(
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
}
