//! Terminating instances, up to 1,000 per call; ids that are already gone count as
//! deleted. A spot instance's persistent request is cancelled first, or EC2 would launch
//! a replacement for the terminated instance.

use fleet_core::cloud::{CloudError, DeleteOutcome};

use aws_sdk_ec2::types::Filter;

use super::super::errors;
use super::settings::INSTANCE_BATCH;
use super::AwsCloud;

impl AwsCloud {
    /// [`fleet_core::cloud::Cloud::delete_instances`] for EC2.
    pub(super) async fn terminate(&self, ids: &[String]) -> Result<DeleteOutcome, CloudError> {
        let mut out = DeleteOutcome::default();
        for chunk in ids.chunks(INSTANCE_BATCH) {
            if self.settings.spot {
                self.cancel_spot_requests(chunk).await?;
            }
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

    /// Cancels the persistent spot requests behind `ids` (on-demand instances have none).
    async fn cancel_spot_requests(&self, ids: &[String]) -> Result<(), CloudError> {
        let out = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(ids.to_vec()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| errors::map("DescribeInstances", e))?;
        let requests: Vec<String> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.spot_instance_request_id().map(str::to_string))
            .collect();
        if requests.is_empty() {
            return Ok(());
        }
        self.ec2
            .cancel_spot_instance_requests()
            .set_spot_instance_request_ids(Some(requests))
            .send()
            .await
            .map_err(|e| errors::map("CancelSpotInstanceRequests", e))?;
        Ok(())
    }
}
