//! A plan: the changes that take the recorded fleet to the declared one.
//!
//! Actions are a small closed set; each change carries a reason that is for display only
//! and never drives apply. A plan can be saved (`plan --out`) and applied later, but only
//! on the state serial and lineage it was made from.

mod display;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cloud::{ObservedInstance, ObservedResource};
use crate::resource::ResourceSpec;
use crate::spec::InstanceSpec;

pub use display::{instances, PlanDisplay};

/// Version of the saved plan format.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// The `kind` of runner instances in a change (resources use their own kind).
pub const INSTANCE: &str = "instance";

/// The `kind` of a CI runner registered for an instance (its `cloud_id` is the runner id).
pub const RUNNER: &str = "runner";

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Create in the cloud and record.
    Create,
    /// Spec changed. Instances: create the new one, then delete the old one once the new
    /// one exists. Resources (names are unique in the cloud): delete, then create.
    Replace,
    /// Delete from the cloud and from state.
    Delete,
    /// Record an object the cloud has with this stack's tags but state lacks.
    Adopt,
    /// Drop a record whose object the cloud no longer has.
    Forget,
    /// Start a stopped instance (or return a draining one to service) and resume its
    /// runner.
    Start,
    /// Pause an idle instance's runner and stop the instance (disk kept, compute not
    /// billed).
    Stop,
}

impl Action {
    /// The one-character symbol of the human diff.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Replace => "±",
            Action::Delete => "-",
            Action::Adopt | Action::Forget => "~",
            Action::Start => "↑",
            Action::Stop => "↓",
        }
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Adopt => "adopt",
            Action::Forget => "forget",
            Action::Start => "start",
            Action::Stop => "stop",
        }
    }

    /// Whether applying it calls the cloud (adopt and forget only touch state).
    pub fn touches_cloud(self) -> bool {
        !matches!(self, Action::Adopt | Action::Forget)
    }
}

/// What command a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Converge on the stack.
    Up,
    /// Converge on nothing.
    Destroy,
    /// Only settle state with what the cloud reports.
    Refresh,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// What to do.
    pub action: Action,
    /// `instance`, or a resource kind.
    pub kind: String,
    /// Name inside the stack.
    pub name: String,
    /// The cloud's id, when the object exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_id: Option<String>,
    /// For an instance replace: the new instance's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// For instance creates and replaces: what to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceSpec>,
    /// For resource creates and replaces: what to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceSpec>,
    /// For instance adopts: what the cloud reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<ObservedInstance>,
    /// For resource adopts: what the cloud reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_resource: Option<ObservedResource>,
    /// Why, for display only.
    pub reason: String,
}

impl Change {
    /// A change with only the common fields set.
    pub fn new(
        action: Action,
        kind: impl Into<String>,
        name: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Change {
            action,
            kind: kind.into(),
            name: name.into(),
            cloud_id: None,
            replacement: None,
            instance: None,
            resource: None,
            observed: None,
            observed_resource: None,
            reason: reason.into(),
        }
    }

    /// Whether this change is about a runner instance.
    pub fn is_instance(&self) -> bool {
        self.kind == INSTANCE
    }

    /// Whether this change is about a supporting resource (not an instance, not a runner).
    pub fn is_resource(&self) -> bool {
        self.kind != INSTANCE && self.kind != RUNNER
    }
}

/// Counts of changes by action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Creates.
    pub create: usize,
    /// Replaces.
    pub replace: usize,
    /// Deletes.
    pub delete: usize,
    /// Adopts.
    pub adopt: usize,
    /// Forgets.
    pub forget: usize,
    /// Starts.
    #[serde(default)]
    pub start: usize,
    /// Stops.
    #[serde(default)]
    pub stop: usize,
}

impl Summary {
    /// Counts one more `action`.
    pub fn count(&mut self, action: Action) {
        match action {
            Action::Create => self.create += 1,
            Action::Replace => self.replace += 1,
            Action::Delete => self.delete += 1,
            Action::Adopt => self.adopt += 1,
            Action::Forget => self.forget += 1,
            Action::Start => self.start += 1,
            Action::Stop => self.stop += 1,
        }
    }
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Saved-plan format version.
    pub format_version: u32,
    /// The stack.
    pub stack: String,
    /// What the plan is for.
    pub operation: Operation,
    /// The cloud, as its provider labels itself.
    pub cloud: String,
    /// Lineage of the state it was made from.
    pub lineage: String,
    /// Serial of the state it was made from (0: no state yet).
    pub serial: u64,
    /// Instances wanted after the plan (none for refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<u32>,
    /// Why that many (the policy's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Why something was not done (not errors): "waiting on ...".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The changes, in display order; apply runs them by phase (see `apply`).
    pub changes: Vec<Change>,
    /// Counts by action.
    pub summary: Summary,
    /// When the plan was made.
    pub created_at: DateTime<Utc>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Recomputes [`Plan::summary`] from the changes.
    pub fn summarize(changes: &[Change]) -> Summary {
        let mut s = Summary::default();
        for c in changes {
            s.count(c.action);
        }
        s
    }

    /// The human rendering the CLI prints and snapshot tests compare.
    pub fn display(&self) -> PlanDisplay<'_> {
        PlanDisplay { plan: self }
    }
}
