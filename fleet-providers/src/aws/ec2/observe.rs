//! Reading the stack's instances back from EC2: all of them for a plan, or one by id.

use fleet_core::cloud::{CloudError, ObservedInstance, Scope};

use super::super::errors;
use super::convert::{live_filter, observed, stack_filter};
use super::AwsCloud;

impl AwsCloud {
    /// Every live instance tagged with the scope's stack, over all result pages.
    pub(super) async fn observe_instances(
        &self,
        scope: &Scope,
    ) -> Result<Vec<ObservedInstance>, CloudError> {
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(stack_filter(scope))
            .filters(live_filter())
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
        Ok(instances)
    }

    /// Instance `cloud_id`, or `None` when EC2 does not know it.
    pub(super) async fn describe_one(
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
