//! The `key_pair` resource: an SSH public key imported into EC2, put on the stack's
//! instances. Its name is `<stack>-<name>`, unique per region; every key pair API takes it,
//! so it is also the resource's cloud id.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{ResourceType, TagSpecification};

use fleet_core::cloud::{CloudError, ObservedResource, Scope};
use fleet_core::naming::{self, tags};
use fleet_core::resource::ResourceSpec;

use super::ec2::convert::{ec2_tags, stack_filter, tag_map};
use super::errors;

/// The resource kind.
pub const KIND: &str = "key_pair";

/// The stack's key pairs, found by their stack tag.
pub async fn observe(
    ec2: &aws_sdk_ec2::Client,
    scope: &Scope,
) -> Result<Vec<ObservedResource>, CloudError> {
    let keys = ec2
        .describe_key_pairs()
        .filters(stack_filter(scope))
        .send()
        .await
        .map_err(|e| errors::map("DescribeKeyPairs", e))?;
    Ok(keys
        .key_pairs()
        .iter()
        .map(|k| {
            let t = tag_map(k.tags());
            ObservedResource {
                cloud_id: k.key_name().unwrap_or_default().to_string(),
                kind: KIND.into(),
                name: t.get(tags::NAME).map(|v| v.to_string()).unwrap_or_default(),
                spec_hash: t.get(tags::SPEC).map(|v| v.to_string()).unwrap_or_default(),
            }
        })
        .collect())
}

/// Imports the key pair `spec` declares (its `public_key` property), tagged with `tags_`.
/// Idempotent by name: a key that is already there (a retry, or adopted) is taken as made.
pub async fn create(
    ec2: &aws_sdk_ec2::Client,
    scope: &Scope,
    spec: &ResourceSpec,
    tags_: &BTreeMap<String, String>,
) -> Result<ObservedResource, CloudError> {
    let key_name = naming::resource_name(&scope.stack, &spec.name);
    let public_key = spec
        .properties
        .get("public_key")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let made = ec2
        .import_key_pair()
        .key_name(&key_name)
        .public_key_material(aws_sdk_ec2::primitives::Blob::new(public_key.as_bytes()))
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::KeyPair)
                .set_tags(Some(ec2_tags(tags_)))
                .build(),
        )
        .send()
        .await;
    if let Err(e) = made {
        let e = errors::map("ImportKeyPair", e);
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

/// Deletes key pair `key_name`; one that is already gone counts as deleted.
pub async fn delete(ec2: &aws_sdk_ec2::Client, key_name: &str) -> Result<(), CloudError> {
    match ec2.delete_key_pair().key_name(key_name).send().await {
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
