//! Shared state in S3 with a lock in DynamoDB, the way Terraform's S3 backend does it.
//!
//! The state object is written with a conditional put (`If-Match` the ETag read, or
//! `If-None-Match: *` for the first write), so a lost update is detected even without the
//! lock. The lock is a DynamoDB item put only if absent or if its lease expired; it names
//! its holder, is renewed on every state write, and is deleted on unlock only by its
//! holder. A holder that dies leaves an item whose lease runs out.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use chrono::Utc;
use serde::Deserialize;

use fleet_core::stack::{duration_serde, LoadedStack, StackError};
use fleet_core::state::{format, LockInfo, State, StateBackend, StateError};

use super::calls::CallCounter;
use super::errors;

/// `state:` settings of `backend: s3`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// Bucket holding the state object (create it, with versioning, beforehand).
    pub bucket: String,
    /// Object key of the state.
    pub key: String,
    /// DynamoDB table for the lock (hash key `LockID`, a string).
    pub lock_table: String,
    /// Region; default from the SDK's chain.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint; default from `AWS_ENDPOINT_URL`.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// How long a lock stays valid without renewal.
    #[serde(default = "default_lease", with = "duration_serde")]
    pub lease: Duration,
    /// Attempts per API call, for throttling and 5xx.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_lease() -> Duration {
    Duration::from_secs(600)
}
fn default_attempts() -> u32 {
    5
}

/// State in S3, locked in DynamoDB.
pub struct S3Backend {
    s3: aws_sdk_s3::Client,
    ddb: aws_sdk_dynamodb::Client,
    bucket: String,
    key: String,
    table: String,
    lease: Duration,
    held: Mutex<Option<LockInfo>>,
}

impl S3Backend {
    /// A backend on a loaded SDK configuration.
    pub fn new(sdk: &aws_config::SdkConfig, settings: &S3Settings, calls: &CallCounter) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .interceptor(calls.clone())
            .build();
        let ddb = aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .build();
        S3Backend {
            s3: aws_sdk_s3::Client::from_conf(s3),
            ddb: aws_sdk_dynamodb::Client::from_conf(ddb),
            bucket: settings.bucket.clone(),
            key: settings.key.clone(),
            table: settings.lock_table.clone(),
            lease: settings.lease,
            held: Mutex::new(None),
        }
    }

    /// The backend a stack's `state:` section describes.
    pub async fn from_stack(loaded: &LoadedStack, calls: &CallCounter) -> Result<Self, StackError> {
        let settings: S3Settings = loaded.section("state", &loaded.stack.state.settings)?;
        for (field, value) in [
            ("bucket", &settings.bucket),
            ("key", &settings.key),
            ("lock_table", &settings.lock_table),
        ] {
            if value.trim().is_empty() {
                return Err(loaded.error_at(
                    &format!("state.{field}"),
                    format!("state.{field} is empty"),
                    "name it",
                ));
            }
        }
        let sdk = super::sdk_config(
            settings.region.as_deref(),
            settings.endpoint_url.as_deref(),
            settings.max_attempts,
        )
        .await;
        Ok(S3Backend::new(&sdk, &settings, calls))
    }

    fn lock_id(&self) -> String {
        format!("{}/{}", self.bucket, self.key)
    }

    fn failed(&self, message: &str, e: fleet_core::cloud::CloudError) -> StateError {
        StateError::Backend {
            location: self.location(),
            message: message.to_string(),
            source: Some(Box::new(e)),
        }
    }

    /// The stored bytes and their ETag, if the object exists.
    async fn fetch(&self) -> Result<Option<(Vec<u8>, String)>, StateError> {
        let got = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await;
        let out = match got {
            Ok(o) => o,
            Err(e) => {
                let e = errors::map("GetObject", e);
                return match errors::code(&e) {
                    Some("NoSuchKey") => Ok(None),
                    _ => Err(self.failed("could not read the state object", e)),
                };
            }
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out.body.collect().await.map_err(|e| StateError::Backend {
            location: self.location(),
            message: "could not read the state object's body".into(),
            source: Some(Box::new(e)),
        })?;
        Ok(Some((body.into_bytes().to_vec(), etag)))
    }

    fn decode(&self, bytes: &[u8]) -> Result<State, StateError> {
        format::decode(bytes).map_err(|source| StateError::Format {
            location: self.location(),
            backup: "the previous version of the object (enable bucket versioning)".into(),
            source,
        })
    }

    fn lock_item(
        &self,
        info: &LockInfo,
    ) -> Result<std::collections::HashMap<String, AttributeValue>, StateError> {
        let body = serde_json::to_string(info).map_err(|e| StateError::Backend {
            location: self.location(),
            message: "could not encode the lock holder".into(),
            source: Some(Box::new(e)),
        })?;
        let until = info.lease_until.map_or(0, |t| t.timestamp());
        Ok([
            ("LockID".to_string(), AttributeValue::S(self.lock_id())),
            ("Holder".to_string(), AttributeValue::S(info.id.clone())),
            ("Info".to_string(), AttributeValue::S(body)),
            (
                "LeaseUntil".to_string(),
                AttributeValue::N(until.to_string()),
            ),
        ]
        .into_iter()
        .collect())
    }

    /// Extends our lease (called on every write while we hold the lock).
    async fn renew(&self) -> Result<(), StateError> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(mut info) = held else { return Ok(()) };
        info.lease_until =
            Some(Utc::now() + chrono::Duration::from_std(self.lease).unwrap_or_default());
        let item = self.lock_item(&info)?;
        self.ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("Holder = :me")
            .expression_attribute_values(":me", AttributeValue::S(info.id.clone()))
            .send()
            .await
            .map_err(|e| {
                self.failed(
                    "lost the state lock (its lease expired and someone took it)",
                    errors::map("PutItem", e),
                )
            })?;
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
        Ok(())
    }
}

#[async_trait]
impl StateBackend for S3Backend {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    async fn read(&self) -> Result<Option<State>, StateError> {
        match self.fetch().await? {
            Some((bytes, _)) => self.decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn write(&self, state: &State) -> Result<(), StateError> {
        let stored = self.fetch().await?;
        let (found, etag) = match &stored {
            Some((bytes, etag)) => {
                let s = self.decode(bytes)?;
                if s.lineage != state.lineage {
                    return Err(StateError::LineageMismatch {
                        location: self.location(),
                        ours: state.lineage.clone(),
                        stored: s.lineage,
                    });
                }
                (s.serial, Some(etag.clone()))
            }
            None => (0, None),
        };
        if state.serial != found + 1 {
            return Err(StateError::Conflict {
                location: self.location(),
                expected: state.serial.saturating_sub(1),
                found,
            });
        }
        let mut put = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(format::encode(state)));
        put = match &etag {
            Some(t) => put.if_match(t),
            None => put.if_none_match("*"),
        };
        if let Err(e) = put.send().await {
            let e = errors::map("PutObject", e);
            return match errors::code(&e) {
                // Someone wrote between our read and our put.
                Some("PreconditionFailed") | Some("ConditionalRequestConflict") => {
                    let now = self.read().await?.map_or(0, |s| s.serial);
                    Err(StateError::Conflict {
                        location: self.location(),
                        expected: found,
                        found: now,
                    })
                }
                _ => Err(self.failed("could not write the state object", e)),
            };
        }
        self.renew().await
    }

    async fn lock(&self, info: &LockInfo) -> Result<(), StateError> {
        if self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let now = Utc::now();
        let mut ours = info.clone();
        ours.lease_until = Some(now + chrono::Duration::from_std(self.lease).unwrap_or_default());
        let item = self.lock_item(&ours)?;
        let put = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(LockID) OR LeaseUntil < :now")
            .expression_attribute_values(":now", AttributeValue::N(now.timestamp().to_string()))
            .send()
            .await;
        match put {
            Ok(_) => {
                *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(ours);
                Ok(())
            }
            Err(e) => {
                let e = errors::map("PutItem", e);
                if errors::code(&e) != Some("ConditionalCheckFailedException") {
                    return Err(self.failed("could not take the state lock", e));
                }
                let got = self
                    .ddb
                    .get_item()
                    .table_name(&self.table)
                    .key("LockID", AttributeValue::S(self.lock_id()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| {
                        self.failed("could not read the lock holder", errors::map("GetItem", e))
                    })?;
                let holder = got
                    .item()
                    .and_then(|i| i.get("Info"))
                    .and_then(|v| v.as_s().ok())
                    .and_then(|s| serde_json::from_str::<LockInfo>(s).ok())
                    .unwrap_or_else(|| LockInfo {
                        id: String::new(),
                        who: "unknown".into(),
                        host: "unknown".into(),
                        pid: 0,
                        operation: "another fleet-cli (lock released while we looked)".into(),
                        since: now,
                        lease_until: None,
                    });
                Err(StateError::Locked {
                    location: self.location(),
                    holder: Box::new(holder),
                })
            }
        }
    }

    async fn unlock(&self) -> Result<(), StateError> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(info) = held else { return Ok(()) };
        let del = self
            .ddb
            .delete_item()
            .table_name(&self.table)
            .key("LockID", AttributeValue::S(self.lock_id()))
            .condition_expression("Holder = :me")
            .expression_attribute_values(":me", AttributeValue::S(info.id.clone()))
            .send()
            .await;
        match del {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = errors::map("DeleteItem", e);
                // Not ours any more (the lease expired and someone took it): nothing to do.
                if errors::code(&e) == Some("ConditionalCheckFailedException") {
                    Ok(())
                } else {
                    Err(self.failed("could not release the state lock", e))
                }
            }
        }
    }
}
