//! Terminating instances, up to 1,000 per call; ids that are already gone count as
//! deleted.

use fleet_core::cloud::{CloudError, DeleteOutcome};

use super::super::errors;
use super::settings::INSTANCE_BATCH;
use super::AwsCloud;

impl AwsCloud {
    /// [`fleet_core::cloud::Cloud::delete_instances`] for EC2.
    pub(super) async fn terminate(&self, ids: &[String]) -> Result<DeleteOutcome, CloudError> {
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
}
