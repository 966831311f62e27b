//! The `Cloud` trait: what a provider must do for the engine, and the shapes it reports.
//!
//! A provider lists the objects tagged with a stack (observe), creates instances in
//! batches (one call per batch, idempotent per instance name), deletes them in batches,
//! and creates and deletes the supporting resource kinds it knows.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::resource::ResourceSpec;
use crate::spec::InstanceSpec;

/// A VM's lifecycle state as the cloud sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Created, not yet running.
    Booting,
    /// Running.
    Running,
    /// Being stopped.
    Stopping,
    /// Stopped (disk kept, compute not billed).
    Stopped,
    /// Being started again.
    Starting,
    /// Being terminated.
    Terminating,
    /// Terminated (gone).
    Terminated,
    /// Not known (before the first observation).
    Unknown,
}

impl Lifecycle {
    /// Whether the VM is gone or going and should not count towards the fleet.
    pub fn is_gone(self) -> bool {
        matches!(self, Lifecycle::Terminating | Lifecycle::Terminated)
    }

    /// Lowercase name, as in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Booting => "booting",
            Lifecycle::Running => "running",
            Lifecycle::Stopping => "stopping",
            Lifecycle::Stopped => "stopped",
            Lifecycle::Starting => "starting",
            Lifecycle::Terminating => "terminating",
            Lifecycle::Terminated => "terminated",
            Lifecycle::Unknown => "unknown",
        }
    }
}

/// The largest user data a provider accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserDataLimit {
    /// Largest size in bytes.
    pub max_bytes: usize,
    /// Whether the provider counts the gzip-compressed size (the provider then sends the
    /// user data compressed; cloud-init unpacks it).
    pub gzip: bool,
}

/// Which stack (and state history) a call is for; providers tag and filter by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Stack name.
    pub stack: String,
    /// State lineage.
    pub lineage: String,
}

/// An instance as the cloud reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedInstance {
    /// The cloud's id.
    pub cloud_id: String,
    /// Name from the `fleet:name` tag.
    pub name: String,
    /// Lineage from the `fleet:lineage` tag.
    #[serde(default)]
    pub lineage: String,
    /// Image.
    pub image: String,
    /// Instance type.
    pub instance_type: String,
    /// Spec hash from the `fleet:spec` tag.
    #[serde(default)]
    pub spec_hash: String,
    /// Lifecycle state.
    pub lifecycle: Lifecycle,
    /// Address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// When the cloud launched it.
    pub launched_at: DateTime<Utc>,
    /// The `fleet:batch` tag, when the cloud could not tag the name at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
}

/// A supporting resource as the cloud reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedResource {
    /// The cloud's id.
    pub cloud_id: String,
    /// Kind.
    pub kind: String,
    /// Name inside the stack (from tags).
    pub name: String,
    /// Spec hash from tags.
    #[serde(default)]
    pub spec_hash: String,
}

/// Everything tagged with one stack, and what the CI system reports about it. Providers
/// fill `instances` and `resources`; the engine adds `demand` and `runners`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Instances, including ones being terminated.
    pub instances: Vec<ObservedInstance>,
    /// Supporting resources.
    pub resources: Vec<ObservedResource>,
    /// Demand from the CI system (`None`: not asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand: Option<crate::ci::Demand>,
    /// This stack's runners, when the CI system manages one per instance and answered
    /// (`None`: not managed, or not known this time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runners: Option<Vec<crate::ci::ObservedRunner>>,
}

/// One instance to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateInstance {
    /// Name (also the idempotency key: creating a name that exists returns the existing one).
    pub name: String,
    /// What to create.
    pub spec: InstanceSpec,
    /// Tags to apply at creation.
    pub tags: BTreeMap<String, String>,
    /// The rendered user data (cloud-init) the instance boots with, runner token included;
    /// `None` when the stack names no user data template. Never serialized or logged.
    #[serde(skip)]
    pub user_data: Option<crate::secret::Secret>,
}

/// Result of a batch create: what exists now, and what failed, per name.
#[derive(Debug, Default)]
pub struct CreateOutcome {
    /// Instances created (or found already created under the same name).
    pub created: Vec<ObservedInstance>,
    /// Names that failed, with why.
    pub failed: Vec<(String, CloudError)>,
}

/// Result of a batch delete, per cloud id.
#[derive(Debug, Default)]
pub struct DeleteOutcome {
    /// Ids that are gone or going (including ones already gone).
    pub deleted: Vec<String>,
    /// Ids that failed, with why.
    pub failed: Vec<(String, CloudError)>,
}

/// Result of a batch stop or start, per cloud id.
#[derive(Debug, Default)]
pub struct PowerOutcome {
    /// Ids now stopping or stopped (for a stop), starting or running (for a start),
    /// including ones that already were.
    pub changed: Vec<String>,
    /// Ids that failed, with why.
    pub failed: Vec<(String, CloudError)>,
}

/// Errors from clouds.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    /// The cloud refused the request; retrying the same request will not help.
    #[error("{provider} refused {operation} ({code})")]
    Rejected {
        /// Provider name.
        provider: String,
        /// What was asked.
        operation: String,
        /// The cloud's error code.
        code: String,
        /// The cloud's message and what the user can do.
        #[source]
        detail: Detail,
    },
    /// A failure that may pass (throttling, 5xx, timeout). The request may or may not have
    /// taken effect; names make creates idempotent so a retry is safe.
    #[error("{provider} {operation} failed transiently ({code})")]
    Transient {
        /// Provider name.
        provider: String,
        /// What was asked.
        operation: String,
        /// The cloud's error code.
        code: String,
        /// The cloud's message.
        #[source]
        detail: Detail,
    },
    /// The provider does not support this resource kind or operation.
    #[error("{provider} does not support {what}")]
    Unsupported {
        /// Provider name.
        provider: String,
        /// What is not supported.
        what: String,
    },
}

impl CloudError {
    /// A `Transient` error when `transient`, else a `Rejected` one: what a provider builds
    /// from a cloud's answer once it has decided whether a retry may help.
    pub fn new(
        provider: &str,
        operation: &str,
        code: &str,
        detail: impl Into<String>,
        transient: bool,
    ) -> CloudError {
        let (provider, operation, code, detail) = (
            provider.to_string(),
            operation.to_string(),
            code.to_string(),
            Detail(detail.into()),
        );
        if transient {
            CloudError::Transient {
                provider,
                operation,
                code,
                detail,
            }
        } else {
            CloudError::Rejected {
                provider,
                operation,
                code,
                detail,
            }
        }
    }

    /// The cloud's error code, if the cloud answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CloudError::Rejected { code, .. } | CloudError::Transient { code, .. } => Some(code),
            CloudError::Unsupported { .. } => None,
        }
    }

    /// Whether the request may have taken effect even though it failed.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, CloudError::Transient { .. })
    }
}

/// A cloud's message, kept as an error source so it prints as a cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Detail(pub String);

/// A cloud provider.
///
/// Contract (checked by `fleet_core::testing::cloud_conformance`):
/// * `observe` reports every instance and resource tagged with the scope's stack, and
///   nothing of other stacks.
/// * `create_instances` makes one cloud call per batch (clouds with no batch call, such as
///   Hetzner, make one per instance); creating a name that already exists in the scope
///   returns the existing instance instead of a second one.
/// * `delete_instances` treats ids that are already gone as deleted.
/// * Every created object carries the tags the request names.
#[async_trait]
pub trait Cloud: Send + Sync {
    /// Short provider name (`sandbox`, `aws`).
    fn name(&self) -> &str;

    /// One line for plans: what this cloud is (`sandbox cloud (embedded, for demos and tests)`).
    fn label(&self) -> String;

    /// Largest batch one create or delete call takes.
    fn max_batch(&self) -> usize;

    /// The largest user data this cloud accepts, checked at plan time; `None` if no limit.
    fn user_data_limit(&self) -> Option<UserDataLimit> {
        None
    }

    /// Resource kinds this provider can create.
    fn resource_kinds(&self) -> &[&str];

    /// Everything tagged with `scope.stack`.
    async fn observe(&self, scope: &Scope) -> Result<Observed, CloudError>;

    /// Creates a batch of instances in one call. `token` identifies the batch (see
    /// [`crate::naming::batch_token`]): providers tag it (`fleet:batch`) and use it as the
    /// cloud's idempotency token. Every created instance must be reported under the name
    /// its request gave.
    async fn create_instances(
        &self,
        scope: &Scope,
        token: &str,
        batch: &[CreateInstance],
    ) -> Result<CreateOutcome, CloudError>;

    /// Deletes a batch of instances in one call.
    async fn delete_instances(
        &self,
        scope: &Scope,
        ids: &[String],
    ) -> Result<DeleteOutcome, CloudError>;

    /// Creates a supporting resource (idempotent per kind and name). Providers with no
    /// resource kinds keep this default, which refuses.
    async fn create_resource(
        &self,
        scope: &Scope,
        spec: &ResourceSpec,
        tags: &BTreeMap<String, String>,
    ) -> Result<ObservedResource, CloudError> {
        let _ = (scope, tags);
        Err(CloudError::Unsupported {
            provider: self.name().to_string(),
            what: format!("resource kind `{}`", spec.kind),
        })
    }

    /// Deletes a supporting resource; already gone counts as deleted. Providers with no
    /// resource kinds keep this default, which refuses.
    async fn delete_resource(
        &self,
        scope: &Scope,
        kind: &str,
        cloud_id: &str,
    ) -> Result<(), CloudError> {
        let _ = (scope, cloud_id);
        Err(CloudError::Unsupported {
            provider: self.name().to_string(),
            what: format!("resource kind `{kind}`"),
        })
    }

    /// Whether this cloud can stop instances and start them again, keeping their disks and
    /// not billing their compute while stopped. Clouds that bill stopped VMs say no, and
    /// the policy keeps running spares instead.
    fn can_stop(&self) -> bool {
        false
    }

    /// Stops a batch of instances in one call per batch.
    async fn stop_instances(
        &self,
        scope: &Scope,
        ids: &[String],
    ) -> Result<PowerOutcome, CloudError> {
        let _ = (scope, ids);
        Err(CloudError::Unsupported {
            provider: self.name().to_string(),
            what: "stopping instances".into(),
        })
    }

    /// Starts a batch of stopped instances in one call per batch.
    async fn start_instances(
        &self,
        scope: &Scope,
        ids: &[String],
    ) -> Result<PowerOutcome, CloudError> {
        let _ = (scope, ids);
        Err(CloudError::Unsupported {
            provider: self.name().to_string(),
            what: "starting instances".into(),
        })
    }

    /// Looks up one instance by cloud id, tagged or not (for `state import`).
    async fn describe_instance(
        &self,
        cloud_id: &str,
    ) -> Result<Option<ObservedInstance>, CloudError>;
}
