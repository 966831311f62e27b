//! State: what the last apply recorded about the fleet.
//!
//! The state is one JSON document with a `format_version` (read first, then dispatched and
//! upgraded step by step), a `serial` that every write increments, and a `lineage` set
//! once when the state is created. Instance and resource records carry a `pending`
//! operation while a cloud call is in flight, so a crash leaves a visible trail that the
//! next plan settles. Secrets are never recorded here.

mod backend;
pub mod facts;
pub mod format;
mod local;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::autoscale::record::DemandRecord;
use crate::autoscale::{Forecast, Phase, Timings};
use crate::cloud::{Lifecycle, ObservedInstance};

pub use backend::{commit, LockInfo, StateBackend, StateError};
pub use format::{FormatError, FORMAT_VERSION};
pub use local::{LocalBackend, LocalSettings};

/// The recorded fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Version of this document's format.
    pub format_version: u32,
    /// Incremented on every write; a saved plan is applied only on the serial it was made on.
    pub serial: u64,
    /// Identity of this state, set once; distinguishes a recreated state from the old one.
    pub lineage: String,
    /// The stack this state belongs to.
    pub stack: String,
    /// Index the next new instance name gets.
    pub next_index: u64,
    /// Instance records by name.
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceRecord>,
    /// Supporting resource records by `kind/name`.
    #[serde(default)]
    pub resources: BTreeMap<String, ResourceRecord>,
    /// Boot and resume times measured on this fleet's VMs (the policy's expectations).
    #[serde(default, skip_serializing_if = "Timings::is_empty")]
    pub timings: Timings,
    /// The highest demand seen in each hour of the last weeks (`policy.forecast`).
    #[serde(default, skip_serializing_if = "Forecast::is_empty")]
    pub forecast: Forecast,
    /// Recent demand, by ten-minute slot (`policy.target` learns the pool from it).
    #[serde(default, skip_serializing_if = "DemandRecord::is_empty")]
    pub demand: DemandRecord,
}

impl State {
    /// A new, never written state (serial 0).
    pub fn new(stack: impl Into<String>, lineage: impl Into<String>) -> State {
        State {
            format_version: FORMAT_VERSION,
            serial: 0,
            lineage: lineage.into(),
            stack: stack.into(),
            next_index: 1,
            instances: BTreeMap::new(),
            resources: BTreeMap::new(),
            timings: Timings::default(),
            forecast: Forecast::default(),
            demand: DemandRecord::default(),
        }
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.resources.is_empty()
    }

    /// Whether a VM is on its way to ready (booting after a create, starting after a
    /// start), as far as recorded.
    pub fn warming(&self) -> bool {
        self.instances.values().any(|r| r.warming.is_some())
    }
}

/// One runner VM, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Name inside the stack (also the hostname).
    pub name: String,
    /// The cloud's id, once the cloud has answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_id: Option<String>,
    /// Spec hash at creation.
    pub spec_hash: String,
    /// Image it was created from.
    pub image: String,
    /// Instance type the cloud gave it (empty until known).
    #[serde(default)]
    pub instance_type: String,
    /// Template hash it was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,
    /// When the create was issued or the instance was adopted.
    pub created_at: DateTime<Utc>,
    /// Last lifecycle state the cloud reported.
    pub lifecycle: Lifecycle,
    /// Address, when the cloud reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Last-known job facts.
    #[serde(default)]
    pub jobs: JobFacts,
    /// A cloud call in flight (or interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingOp>,
    /// When the VM last started running (its create or its last start): where its running
    /// bill began. `None` in records written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When its runner was paused for a scale-in: the VM is deleted once no job runs on it,
    /// and never while one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_since: Option<DateTime<Utc>>,
    /// While it is on its way to ready after a create or a start: how long it takes is
    /// measured from this (see [`crate::autoscale::learn`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warming: Option<Warming>,
}

/// A VM on its way to ready, as measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warming {
    /// A boot (after create) or a resume (after start).
    pub phase: Phase,
    /// When the create or start was issued.
    pub since: DateTime<Utc>,
    /// The last time it was seen not ready yet.
    pub unready_at: DateTime<Utc>,
}

impl Warming {
    /// A boot or resume issued at `since`.
    pub fn new(phase: Phase, since: DateTime<Utc>) -> Warming {
        Warming {
            phase,
            since,
            unready_at: since,
        }
    }
}

impl InstanceRecord {
    /// A settled record of what the cloud reports, as adopt and import make it.
    pub fn from_observed(o: &ObservedInstance, template_hash: Option<String>) -> Self {
        InstanceRecord {
            name: o.name.clone(),
            cloud_id: Some(o.cloud_id.clone()),
            spec_hash: o.spec_hash.clone(),
            image: o.image.clone(),
            instance_type: o.instance_type.clone(),
            template_hash,
            created_at: o.launched_at,
            lifecycle: o.lifecycle,
            address: o.address.clone(),
            jobs: JobFacts::default(),
            pending: None,
            started_at: Some(o.launched_at),
            draining_since: None,
            warming: None,
        }
    }
}

/// What the fleet last knew about a VM's jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobFacts {
    /// Jobs the VM has run.
    #[serde(default)]
    pub jobs_run: u64,
    /// Jobs running on it when last observed.
    #[serde(default)]
    pub running: u32,
    /// When its last job ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_end: Option<DateTime<Utc>>,
    /// The GitLab runner id registered for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<u64>,
    /// When its runner was first seen online (a runner process on the VM contacted GitLab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_online_at: Option<DateTime<Utc>>,
}

/// A cloud call recorded before it is made, settled after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingOp {
    /// What was being done.
    pub op: PendingKind,
    /// When the call was issued.
    pub since: DateTime<Utc>,
    /// For creates: the batch token the instance was requested under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
}

/// The kind of a pending operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingKind {
    /// Being created.
    Create,
    /// Being deleted.
    Delete,
}

/// One supporting resource, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// Kind.
    pub kind: String,
    /// Name inside the stack.
    pub name: String,
    /// The cloud's id, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_id: Option<String>,
    /// Spec hash at creation.
    pub spec_hash: String,
    /// Keys it depends on (kept so it is deleted in the right order after leaving the stack).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// When it was created or adopted.
    pub created_at: DateTime<Utc>,
    /// A cloud call in flight (or interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingOp>,
}

impl ResourceRecord {
    /// `kind/name`.
    pub fn key(&self) -> String {
        crate::resource::resource_key(&self.kind, &self.name)
    }
}
