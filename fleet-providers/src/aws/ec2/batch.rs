//! Creating a batch idempotently: a retried batch first re-finds what an earlier attempt
//! launched (by its batch tag) instead of launching again, then every request is matched
//! to an instance (names already tagged first, the rest in order) and the new ones are
//! tagged with their names.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Tag};
use futures_util::stream::{self, StreamExt};

use fleet_core::cloud::{
    Cloud, CloudError, CreateInstance, CreateOutcome, Detail, ObservedInstance, Scope,
};
use fleet_core::naming::tags;
use fleet_core::render::check_user_data_size;

use super::super::errors;
use super::convert::{live_filter, observed, stack_filter};
use super::AwsCloud;

impl AwsCloud {
    /// [`fleet_core::cloud::Cloud::create_instances`] for EC2.
    pub(super) async fn create_batch(
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
        // The plan checked the user data it rendered; a saved plan applied after the
        // templates changed is checked here, before any launch call.
        let limit = self.user_data_limit();
        for req in batch {
            if let (Some(u), Some(limit)) = (&req.user_data, limit) {
                check_user_data_size(&req.name, u.expose(), limit, "aws").map_err(|e| {
                    CloudError::Rejected {
                        provider: "aws".into(),
                        operation: "RunInstances".into(),
                        code: "UserDataTooLarge".into(),
                        detail: Detail(e.to_string()),
                    }
                })?;
            }
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
            .filters(live_filter())
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
