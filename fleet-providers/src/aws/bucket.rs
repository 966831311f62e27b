//! The `cache_bucket` resource: an S3 bucket for the runners' shared build cache, as the
//! docker-machine designs keep one, with a lifecycle rule that expires old cache objects.
//!
//! Bucket names are global, so a bucket is named `<stack>-<name>` unless the stack gives
//! `bucket_name`; either way it must start with `<stack>-`, which is how `observe` finds
//! the stack's buckets without reading the tags of every bucket in the account.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration, Delete,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, ObjectIdentifier,
    PublicAccessBlockConfiguration, Tag, Tagging,
};
use serde::Deserialize;

use fleet_core::cloud::{CloudError, ObservedResource, Scope};
use fleet_core::naming::{self, tags};
use fleet_core::resource::ResourceSpec;
use fleet_core::stack::{LoadedStack, StackError};

use super::errors;

/// The resource kind.
pub const KIND: &str = "cache_bucket";

/// `properties` of a `cache_bucket`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketProperties {
    /// Bucket name; must start with `<stack>-` (default `<stack>-<name>`).
    #[serde(default)]
    pub bucket_name: Option<String>,
    /// Days after which cache objects expire.
    #[serde(default = "default_expire_days")]
    pub expire_days: i32,
    /// Delete the objects too when the bucket is deleted (like Terraform's force_destroy).
    #[serde(default)]
    pub force_destroy: bool,
}

fn default_expire_days() -> i32 {
    14
}

impl BucketProperties {
    /// Decodes and checks the properties of `spec` for stack `stack`; the error says
    /// what is wrong, for the stack loader to locate.
    pub fn of(stack: &str, spec: &ResourceSpec) -> Result<BucketProperties, String> {
        let p: BucketProperties = serde_json::from_value(serde_json::Value::Object(
            spec.properties.clone().into_iter().collect(),
        ))
        .map_err(|e| format!("{e} (cache_bucket takes bucket_name, expire_days, force_destroy)"))?;
        if p.expire_days < 1 {
            return Err(format!(
                "expire_days is {}; it must be at least 1",
                p.expire_days
            ));
        }
        let name = p.name(stack, &spec.name);
        if !name.starts_with(&format!("{stack}-")) {
            return Err(format!(
                "bucket_name `{name}` must start with `{stack}-` so the stack can find it again"
            ));
        }
        let valid = (3..=63).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !name.starts_with(['-', '.'])
            && !name.ends_with(['-', '.']);
        if !valid {
            return Err(format!(
                "`{name}` is not a valid S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"
            ));
        }
        Ok(p)
    }

    /// The bucket's name.
    pub fn name(&self, stack: &str, resource: &str) -> String {
        self.bucket_name
            .clone()
            .unwrap_or_else(|| naming::resource_name(stack, resource))
    }
}

/// The names of `loaded`'s cache buckets that go with their objects on delete
/// (`force_destroy`); checks every bucket's properties, so a bad one fails at load.
pub fn force_destroyed(loaded: &LoadedStack) -> Result<BTreeSet<String>, StackError> {
    let mut names = BTreeSet::new();
    for (i, r) in loaded.stack.resources.iter().enumerate() {
        if r.kind != KIND {
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
            names.insert(props.name(&loaded.stack.name, &r.name));
        }
    }
    Ok(names)
}

fn rejected(operation: &str, code: &str, detail: String) -> CloudError {
    CloudError::new("aws", operation, code, detail, false)
}

/// The stack's cache buckets.
pub async fn observe(
    s3: &aws_sdk_s3::Client,
    scope: &Scope,
) -> Result<Vec<ObservedResource>, CloudError> {
    let prefix = format!("{}-", scope.stack);
    let listed = s3
        .list_buckets()
        .prefix(&prefix)
        .send()
        .await
        .map_err(|e| errors::map("ListBuckets", e))?;
    let mut out = Vec::new();
    for b in listed.buckets() {
        let Some(name) = b.name().filter(|n| n.starts_with(&prefix)) else {
            continue;
        };
        let tagged = match s3.get_bucket_tagging().bucket(name).send().await {
            Ok(t) => t,
            Err(e) => {
                let e = errors::map("GetBucketTagging", e);
                match errors::code(&e) {
                    // Not ours (untagged), or deleted while we looked.
                    Some("NoSuchTagSet") | Some("NoSuchBucket") => continue,
                    _ => return Err(e),
                }
            }
        };
        let t: BTreeMap<&str, &str> = tagged
            .tag_set()
            .iter()
            .map(|t| (t.key(), t.value()))
            .collect();
        if t.get(tags::STACK) != Some(&scope.stack.as_str()) || t.get(tags::KIND) != Some(&KIND) {
            continue;
        }
        out.push(ObservedResource {
            cloud_id: name.to_string(),
            kind: KIND.into(),
            name: t.get(tags::NAME).unwrap_or(&"").to_string(),
            spec_hash: t.get(tags::SPEC).unwrap_or(&"").to_string(),
        });
    }
    Ok(out)
}

/// Creates (or finds) the bucket, then sets its tags, lifecycle rule and public access
/// block; every step is idempotent, so a retry after a crash finishes the job.
pub async fn create(
    s3: &aws_sdk_s3::Client,
    region: Option<&str>,
    scope: &Scope,
    spec: &ResourceSpec,
    tags_: &BTreeMap<String, String>,
) -> Result<ObservedResource, CloudError> {
    let props = BucketProperties::of(&scope.stack, spec)
        .map_err(|m| rejected("CreateBucket", "InvalidProperties", m))?;
    let name = props.name(&scope.stack, &spec.name);
    let mut call = s3.create_bucket().bucket(&name);
    if let Some(r) = region.filter(|r| *r != "us-east-1") {
        call = call.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(r))
                .build(),
        );
    }
    if let Err(e) = call.send().await {
        let e = errors::map("CreateBucket", e);
        match errors::code(&e) {
            Some("BucketAlreadyOwnedByYou") => {}
            Some("BucketAlreadyExists") => {
                return Err(rejected(
                    "CreateBucket",
                    "BucketAlreadyExists",
                    format!(
                        "another account owns a bucket named `{name}` (names are global); set properties.bucket_name to a unique `{}-...` name",
                        scope.stack
                    ),
                ))
            }
            _ => return Err(e),
        }
    }
    let tag_set: Vec<Tag> = tags_
        .iter()
        .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
        .collect();
    let tagging = Tagging::builder()
        .set_tag_set(Some(tag_set))
        .build()
        .map_err(|e| rejected("PutBucketTagging", "Build", e.to_string()))?;
    s3.put_bucket_tagging()
        .bucket(&name)
        .tagging(tagging)
        .send()
        .await
        .map_err(|e| errors::map("PutBucketTagging", e))?;
    let rule = LifecycleRule::builder()
        .id("fleet-expire-cache")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .expiration(
            LifecycleExpiration::builder()
                .days(props.expire_days)
                .build(),
        )
        .build()
        .map_err(|e| rejected("PutBucketLifecycleConfiguration", "Build", e.to_string()))?;
    let lifecycle = BucketLifecycleConfiguration::builder()
        .rules(rule)
        .build()
        .map_err(|e| rejected("PutBucketLifecycleConfiguration", "Build", e.to_string()))?;
    s3.put_bucket_lifecycle_configuration()
        .bucket(&name)
        .lifecycle_configuration(lifecycle)
        .send()
        .await
        .map_err(|e| errors::map("PutBucketLifecycleConfiguration", e))?;
    s3.put_public_access_block()
        .bucket(&name)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| errors::map("PutPublicAccessBlock", e))?;
    Ok(ObservedResource {
        cloud_id: name,
        kind: KIND.into(),
        name: spec.name.clone(),
        spec_hash: tags_.get(tags::SPEC).cloned().unwrap_or_default(),
    })
}

/// Deletes the bucket; with `force_destroy` its objects first. Already gone counts as
/// deleted.
pub async fn delete(
    s3: &aws_sdk_s3::Client,
    name: &str,
    force_destroy: bool,
) -> Result<(), CloudError> {
    if force_destroy {
        empty(s3, name).await?;
    }
    match s3.delete_bucket().bucket(name).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = errors::map("DeleteBucket", e);
            match errors::code(&e) {
                Some("NoSuchBucket") => Ok(()),
                Some("BucketNotEmpty") => Err(rejected(
                    "DeleteBucket",
                    "BucketNotEmpty",
                    format!("bucket `{name}` still holds cache objects; empty it, or set properties.force_destroy: true"),
                )),
                _ => Err(e),
            }
        }
    }
}

/// Deletes every object, 1,000 per call.
async fn empty(s3: &aws_sdk_s3::Client, name: &str) -> Result<(), CloudError> {
    loop {
        let listed = match s3.list_objects_v2().bucket(name).send().await {
            Ok(l) => l,
            Err(e) => {
                let e = errors::map("ListObjectsV2", e);
                return match errors::code(&e) {
                    Some("NoSuchBucket") => Ok(()),
                    _ => Err(e),
                };
            }
        };
        let keys: Vec<ObjectIdentifier> = listed
            .contents()
            .iter()
            .filter_map(|o| {
                ObjectIdentifier::builder()
                    .set_key(o.key().map(str::to_string))
                    .build()
                    .ok()
            })
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let delete = Delete::builder()
            .set_objects(Some(keys))
            .quiet(true)
            .build()
            .map_err(|e| rejected("DeleteObjects", "Build", e.to_string()))?;
        s3.delete_objects()
            .bucket(name)
            .delete(delete)
            .send()
            .await
            .map_err(|e| errors::map("DeleteObjects", e))?;
    }
}
