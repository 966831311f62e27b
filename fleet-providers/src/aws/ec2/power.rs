//! Stop and start: the stopped pool's power calls.

use fleet_core::cloud::{CloudError, PowerOutcome};

use super::super::errors;
use super::settings::INSTANCE_BATCH;
use super::AwsCloud;

#[derive(Clone, Copy)]
pub(super) enum Power {
    Stop,
    Start,
}

impl AwsCloud {
    /// `StopInstances` or `StartInstances`, up to 1,000 ids per call. When EC2 refuses a
    /// chunk because one instance is in the wrong state (`IncorrectInstanceState`), the
    /// chunk is retried id by id, so one booting instance does not hold back the others.
    pub(super) async fn power(
        &self,
        what: Power,
        ids: &[String],
    ) -> Result<PowerOutcome, CloudError> {
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
