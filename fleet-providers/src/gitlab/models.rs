//! GitLab's response shapes, as its REST v4 documentation shows them. Only the fields the
//! fleet reads are modelled; GitLab adds fields often, so unknown ones are ignored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use fleet_core::secret::Secret;

/// A job, from `GET /projects/:id/jobs` or `GET /runners/:id/jobs`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Job {
    /// Job id.
    pub id: u64,
    /// `pending`, `running`, `success`, ...
    pub status: String,
    /// Job name.
    #[serde(default)]
    pub name: String,
    /// Tags a runner needs to take the job (absent in some older answers: no tags).
    #[serde(default)]
    pub tag_list: Vec<String>,
    /// When the job was created.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// When a runner started it.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished (succeeded, failed or was canceled).
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds it ran (fractional), once started.
    #[serde(default)]
    pub duration: Option<f64>,
    /// Seconds it waited in the queue for a runner (fractional).
    #[serde(default)]
    pub queued_duration: Option<f64>,
    /// The runner running it, if any.
    #[serde(default)]
    pub runner: Option<RunnerSummary>,
    /// Its pipeline.
    #[serde(default)]
    pub pipeline: Option<PipelineRef>,
}

/// The pipeline a job belongs to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PipelineRef {
    /// Pipeline id.
    pub id: u64,
    /// Its project (absent in `GET /runners/:id/jobs`).
    #[serde(default)]
    pub project_id: Option<u64>,
}

/// A runner as lists show it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RunnerSummary {
    /// Runner id.
    pub id: u64,
    /// Free text; the fleet writes its stack and instance here.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether it ignores new jobs (newer GitLab).
    #[serde(default)]
    pub paused: Option<bool>,
    /// The opposite of `paused` (deprecated, older GitLab).
    #[serde(default)]
    pub active: Option<bool>,
    /// `instance_type`, `group_type` or `project_type`.
    #[serde(default)]
    pub runner_type: Option<String>,
    /// Whether a runner manager contacted GitLab recently.
    #[serde(default)]
    pub online: Option<bool>,
    /// `online`, `offline`, `stale`, `never_contacted`.
    #[serde(default)]
    pub status: Option<String>,
}

impl RunnerSummary {
    /// Whether the runner ignores new jobs, from `paused` or the older `active`.
    pub fn is_paused(&self) -> bool {
        self.paused.unwrap_or_else(|| !self.active.unwrap_or(true))
    }
}

/// A runner's details, from `GET` or `PUT /runners/:id`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RunnerDetails {
    /// What lists show.
    #[serde(flatten)]
    pub summary: RunnerSummary,
    /// Runner tags.
    #[serde(default)]
    pub tag_list: Vec<String>,
    /// Longest job it runs, in seconds.
    #[serde(default)]
    pub maximum_timeout: Option<u64>,
    /// Last contact of any of its managers.
    #[serde(default)]
    pub contacted_at: Option<DateTime<Utc>>,
    /// Projects it is assigned to.
    #[serde(default)]
    pub projects: Vec<ProjectRef>,
    /// Whether it takes untagged jobs (not in every answer).
    #[serde(default)]
    pub run_untagged: Option<bool>,
    /// Whether it is locked to its projects (not in every answer).
    #[serde(default)]
    pub locked: Option<bool>,
    /// `not_protected` or `ref_protected`.
    #[serde(default)]
    pub access_level: Option<String>,
}

/// A project as runner details list it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ProjectRef {
    /// Project id.
    pub id: u64,
    /// `group/sub/name`.
    #[serde(default)]
    pub path_with_namespace: Option<String>,
}

/// A project, from `GET /projects/:id` or `GET /groups/:id/projects`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Project {
    /// Project id.
    pub id: u64,
    /// `group/sub/name`.
    pub path_with_namespace: String,
    /// Archived projects run no pipelines.
    #[serde(default)]
    pub archived: Option<bool>,
}

/// A group, from `GET /groups/:id/descendant_groups`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Group {
    /// Group id.
    pub id: u64,
    /// `group/sub`.
    pub full_path: String,
    /// The parent group.
    #[serde(default)]
    pub parent_id: Option<u64>,
}

/// One `gitlab-runner` process of a runner, from `GET /runners/:id/managers`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RunnerManager {
    /// Manager id.
    pub id: u64,
    /// The machine's system id.
    pub system_id: String,
    /// `online`, `offline`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// When the process first contacted GitLab.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Last contact.
    #[serde(default)]
    pub contacted_at: Option<DateTime<Utc>>,
}

/// What `POST /user/runners` returns. The token is a secret: it is masked in `Debug` and
/// this type cannot be serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedRunner {
    /// Runner id; record it in state.
    pub id: u64,
    /// The `glrt-` authentication token the runner on the VM needs.
    pub token: Secret,
    /// When the token expires, if it does.
    pub token_expires_at: Option<DateTime<Utc>>,
}

impl<'de> Deserialize<'de> for CreatedRunner {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            id: u64,
            token: String,
            #[serde(default)]
            token_expires_at: Option<DateTime<Utc>>,
        }
        let raw = Raw::deserialize(d)?;
        Ok(CreatedRunner {
            id: raw.id,
            token: Secret::new(raw.token),
            token_expires_at: raw.token_expires_at,
        })
    }
}
