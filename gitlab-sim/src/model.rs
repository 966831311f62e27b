//! The simulator's world: groups, projects, jobs, runners and their managers, and the rules
//! that move jobs along (`pending` → `running` → `success`) as simulated time passes.
//!
//! Everything here is plain data changed under one lock; the HTTP layer (`api.rs`) renders it
//! in GitLab's JSON shapes and the scheduler (`lib.rs`) calls [`World::advance`].

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rand::{rngs::StdRng, Rng};
use serde::{Deserialize, Serialize};

/// A group; `parent_id` makes it a subgroup.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub parent_id: Option<u64>,
    pub created_at: DateTime<Utc>,
}

/// A project, in a group or in a user namespace (`group_id: None`).
#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub path_with_namespace: String,
    pub group_id: Option<u64>,
    pub created_at: DateTime<Utc>,
}

/// Job statuses the simulator uses (a subset of GitLab's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }
}

/// A CI job.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: u64,
    pub project_id: u64,
    pub pipeline_id: u64,
    pub name: String,
    pub stage: String,
    pub git_ref: String,
    pub tag_list: Vec<String>,
    pub status: JobStatus,
    pub failure_reason: Option<String>,
    /// How long the job runs once a runner has it, in simulated seconds.
    pub run_seconds: f64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub runner_id: Option<u64>,
    pub runner_manager_id: Option<u64>,
}

impl Job {
    /// Seconds from queueing until a runner took it (so far, if still pending).
    pub fn queued_seconds(&self, now: DateTime<Utc>) -> f64 {
        let until = self.started_at.unwrap_or(now);
        seconds(until - self.created_at)
    }
}

/// `instance_type`, `group_type` or `project_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerType {
    InstanceType,
    GroupType,
    ProjectType,
}

impl RunnerType {
    pub fn parse(s: &str) -> Option<RunnerType> {
        match s {
            "instance_type" => Some(RunnerType::InstanceType),
            "group_type" => Some(RunnerType::GroupType),
            "project_type" => Some(RunnerType::ProjectType),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerType::InstanceType => "instance_type",
            RunnerType::GroupType => "group_type",
            RunnerType::ProjectType => "project_type",
        }
    }
}

/// One `gitlab-runner` process that authenticated with a runner's token.
#[derive(Debug, Clone, Serialize)]
pub struct Manager {
    pub id: u64,
    pub system_id: String,
    pub created_at: DateTime<Utc>,
    pub contacted_at: DateTime<Utc>,
}

/// A runner as `POST /user/runners` creates it.
#[derive(Debug, Clone, Serialize)]
pub struct Runner {
    pub id: u64,
    pub description: String,
    pub runner_type: RunnerType,
    pub tag_list: Vec<String>,
    pub run_untagged: bool,
    pub locked: bool,
    pub paused: bool,
    pub access_level: String,
    pub maximum_timeout: Option<u64>,
    pub maintenance_note: Option<String>,
    #[serde(skip)]
    pub token: String,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub group_id: Option<u64>,
    /// Projects the runner is assigned to (project runners; the first is the owner).
    pub projects: Vec<u64>,
    pub created_at: DateTime<Utc>,
    /// When a manager may start taking jobs (`None`: only after `POST /runners/verify`).
    pub online_at: Option<DateTime<Utc>>,
    pub managers: Vec<Manager>,
    /// Jobs this runner's managers run at once.
    pub concurrency: u32,
}

impl Runner {
    /// Whether a runner manager has contacted GitLab.
    pub fn online(&self, now: DateTime<Utc>) -> bool {
        !self.managers.is_empty() || self.online_at.is_some_and(|t| t <= now)
    }

    pub fn contacted_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.managers
            .iter()
            .map(|m| m.contacted_at)
            .max()
            .or(self.online_at.filter(|t| *t <= now))
    }

    /// GitLab's `status` field.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.online(now) {
            "online"
        } else {
            "never_contacted"
        }
    }

    /// GitLab's matching rule: every tag of the job is a tag of the runner, and untagged
    /// jobs only go to runners that run untagged.
    pub fn matches_tags(&self, job_tags: &[String]) -> bool {
        if job_tags.is_empty() {
            return self.run_untagged;
        }
        job_tags.iter().all(|t| self.tag_list.contains(t))
    }
}

/// Something that happened to a job, for the job webhook.
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub job: Job,
    pub project: Project,
    pub runner: Option<Runner>,
}

/// Counters for tests and demos.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Running jobs that failed because their runner was deleted under them.
    pub jobs_killed_by_runner_delete: u64,
    pub runners_created: u64,
    pub runners_deleted: u64,
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
    pub api_requests: u64,
    pub injected_errors: u64,
    pub injected_throttles: u64,
    pub rate_limited: u64,
}

/// A job waiting in a replayed trace until its arrival time.
#[derive(Debug, Clone)]
pub struct FutureJob {
    pub arrives_at: DateTime<Utc>,
    pub project: String,
    pub pipeline: u64,
    pub run_seconds: f64,
    pub tag_list: Vec<String>,
}

/// The whole simulated GitLab.
#[derive(Debug)]
pub struct World {
    pub groups: BTreeMap<u64, Group>,
    pub projects: BTreeMap<u64, Project>,
    pub jobs: BTreeMap<u64, Job>,
    pub runners: BTreeMap<u64, Runner>,
    pub counters: Counters,
    /// Trace jobs not yet arrived, sorted by arrival.
    pub future: std::collections::VecDeque<FutureJob>,
    next_id: u64,
    next_pipeline: u64,
    next_manager: u64,
    /// Simulated time a new runner needs to come online by itself (`None`: it waits for
    /// `POST /runners/verify`, as a real runner process would do it).
    pub runner_online_after: Option<f64>,
    /// Jobs one runner runs at once.
    pub runner_concurrency: u32,
}

/// Errors the API maps to GitLab's 400/404 answers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorldError {
    #[error("404 {what} Not Found")]
    NotFound { what: &'static str },
    #[error("{message}")]
    Invalid { message: String },
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    pub fn new() -> World {
        World {
            groups: BTreeMap::new(),
            projects: BTreeMap::new(),
            jobs: BTreeMap::new(),
            runners: BTreeMap::new(),
            counters: Counters::default(),
            future: Default::default(),
            next_id: 1,
            next_pipeline: 1,
            next_manager: 1,
            runner_online_after: Some(0.0),
            runner_concurrency: 1,
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds a group (under `parent`, making it a subgroup). An existing full path is returned.
    pub fn add_group(&mut self, path: &str, parent: Option<u64>, now: DateTime<Utc>) -> Group {
        let full_path = match parent.and_then(|p| self.groups.get(&p)) {
            Some(p) => format!("{}/{path}", p.full_path),
            None => path.to_string(),
        };
        if let Some(g) = self.groups.values().find(|g| g.full_path == full_path) {
            return g.clone();
        }
        let id = self.id();
        let g = Group {
            id,
            name: path.to_string(),
            path: path.to_string(),
            full_path,
            parent_id: parent,
            created_at: now,
        };
        self.groups.insert(id, g.clone());
        g
    }

    /// Adds a project by its full path (`a/b/name`), creating missing groups on the way. An
    /// existing path is returned as is.
    pub fn ensure_project(&mut self, full_path: &str, now: DateTime<Utc>) -> Project {
        if let Some(p) = self
            .projects
            .values()
            .find(|p| p.path_with_namespace == full_path)
        {
            return p.clone();
        }
        let mut parts: Vec<&str> = full_path.split('/').filter(|s| !s.is_empty()).collect();
        let name = parts.pop().unwrap_or("project").to_string();
        let mut parent = None;
        for part in parts {
            parent = Some(self.add_group(part, parent, now).id);
        }
        let id = self.id();
        let p = Project {
            id,
            name: name.clone(),
            path: name,
            path_with_namespace: full_path.to_string(),
            group_id: parent,
            created_at: now,
        };
        self.projects.insert(id, p.clone());
        p
    }

    /// A project by numeric id or full path.
    pub fn find_project(&self, id_or_path: &str) -> Result<&Project, WorldError> {
        let found = match id_or_path.parse::<u64>() {
            Ok(id) => self.projects.get(&id),
            Err(_) => self
                .projects
                .values()
                .find(|p| p.path_with_namespace == id_or_path),
        };
        found.ok_or(WorldError::NotFound { what: "Project" })
    }

    /// A group by numeric id or full path.
    pub fn find_group(&self, id_or_path: &str) -> Result<&Group, WorldError> {
        let found = match id_or_path.parse::<u64>() {
            Ok(id) => self.groups.get(&id),
            Err(_) => self.groups.values().find(|g| g.full_path == id_or_path),
        };
        found.ok_or(WorldError::NotFound { what: "Group" })
    }

    /// The group and all groups below it.
    pub fn group_and_descendants(&self, group: u64) -> Vec<u64> {
        let mut out = vec![group];
        let mut i = 0;
        while i < out.len() {
            let cur = out[i];
            out.extend(
                self.groups
                    .values()
                    .filter(|g| g.parent_id == Some(cur))
                    .map(|g| g.id),
            );
            i += 1;
        }
        out
    }

    /// Projects of a group, optionally with those of its subgroups.
    pub fn group_projects(&self, group: u64, include_subgroups: bool) -> Vec<Project> {
        let groups = if include_subgroups {
            self.group_and_descendants(group)
        } else {
            vec![group]
        };
        self.projects
            .values()
            .filter(|p| p.group_id.is_some_and(|g| groups.contains(&g)))
            .cloned()
            .collect()
    }

    /// Queues a new pending job.
    pub fn enqueue(&mut self, spec: NewJob, now: DateTime<Utc>) -> Result<Job, WorldError> {
        let project = self.find_project(&spec.project)?.id;
        let pipeline_id = match spec.pipeline_id {
            Some(p) => p,
            None => {
                self.next_pipeline += 1;
                self.next_pipeline
            }
        };
        if !(spec.run_seconds.is_finite() && spec.run_seconds >= 0.0) {
            return Err(WorldError::Invalid {
                message: "duration must be a number of seconds, at least 0".into(),
            });
        }
        let id = self.id();
        let job = Job {
            id,
            project_id: project,
            pipeline_id,
            name: spec.name.unwrap_or_else(|| "test".into()),
            stage: "test".into(),
            git_ref: "main".into(),
            tag_list: spec.tag_list,
            status: JobStatus::Pending,
            failure_reason: None,
            run_seconds: spec.run_seconds,
            created_at: now,
            started_at: None,
            finished_at: None,
            runner_id: None,
            runner_manager_id: None,
        };
        self.jobs.insert(id, job.clone());
        Ok(job)
    }

    /// Adds a job that already ran: created (queued) at `spec.queued_at`, taken by a runner
    /// `spec.queued_s` later, finished `spec.run_seconds` after that, as GitLab lists its
    /// history (`queued_duration` and `duration` agree with the three times). It must have
    /// finished by `now`.
    pub fn add_finished(
        &mut self,
        spec: FinishedJob,
        now: DateTime<Utc>,
    ) -> Result<Job, WorldError> {
        let project = self.ensure_project(&spec.project, now).id;
        let valid = |s: f64| s.is_finite() && s >= 0.0;
        if !(valid(spec.queued_s) && valid(spec.run_seconds)) {
            return Err(WorldError::Invalid {
                message: "queued and run times must be numbers of seconds, at least 0".into(),
            });
        }
        let ms = |s: f64| ChronoDuration::milliseconds((s * 1000.0).round() as i64);
        let started_at = spec.queued_at + ms(spec.queued_s);
        let finished_at = started_at + ms(spec.run_seconds);
        if finished_at > now {
            return Err(WorldError::Invalid {
                message: format!(
                    "a finished job must end by now ({now}); this one ends at {finished_at}"
                ),
            });
        }
        let id = self.id();
        let job = Job {
            id,
            project_id: project,
            pipeline_id: spec.pipeline_id,
            name: spec.name,
            stage: "test".into(),
            git_ref: "main".into(),
            tag_list: Vec::new(),
            status: if spec.failed {
                JobStatus::Failed
            } else {
                JobStatus::Success
            },
            failure_reason: spec.failed.then(|| "script_failure".to_string()),
            run_seconds: spec.run_seconds,
            created_at: spec.queued_at,
            started_at: Some(started_at),
            finished_at: Some(finished_at),
            runner_id: None,
            runner_manager_id: None,
        };
        self.jobs.insert(id, job.clone());
        Ok(job)
    }

    /// Creates a runner (`POST /user/runners`), with a fresh `glrt-` token.
    pub fn create_runner(
        &mut self,
        spec: NewRunner,
        rng: &mut StdRng,
        now: DateTime<Utc>,
    ) -> Result<Runner, WorldError> {
        let mut projects = Vec::new();
        let mut group_id = None;
        match spec.runner_type {
            RunnerType::InstanceType => {}
            RunnerType::GroupType => {
                let g = spec.group_id.ok_or_else(|| WorldError::Invalid {
                    message: "group_id is missing".into(),
                })?;
                if !self.groups.contains_key(&g) {
                    return Err(WorldError::NotFound { what: "Group" });
                }
                group_id = Some(g);
            }
            RunnerType::ProjectType => {
                let p = spec.project_id.ok_or_else(|| WorldError::Invalid {
                    message: "project_id is missing".into(),
                })?;
                if !self.projects.contains_key(&p) {
                    return Err(WorldError::NotFound { what: "Project" });
                }
                projects.push(p);
            }
        }
        let token: String = (0..20)
            .map(|_| {
                let c = rng.gen_range(0..36u8);
                (if c < 10 { b'0' + c } else { b'a' + c - 10 }) as char
            })
            .collect();
        let id = self.id();
        let online_at = self
            .runner_online_after
            .map(|s| now + ChronoDuration::milliseconds((s * 1000.0) as i64));
        let runner = Runner {
            id,
            description: spec.description,
            runner_type: spec.runner_type,
            tag_list: spec.tag_list,
            run_untagged: spec.run_untagged,
            locked: spec.locked,
            paused: spec.paused,
            access_level: spec.access_level,
            maximum_timeout: spec.maximum_timeout,
            maintenance_note: spec.maintenance_note,
            token: format!("glrt-{token}"),
            token_expires_at: None,
            group_id,
            projects,
            created_at: now,
            online_at,
            managers: Vec::new(),
            concurrency: self.runner_concurrency,
        };
        self.runners.insert(id, runner.clone());
        self.counters.runners_created += 1;
        Ok(runner)
    }

    /// `POST /runners/verify`: a runner process authenticated; it becomes a manager.
    pub fn verify_runner(
        &mut self,
        token: &str,
        system_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<Runner> {
        let next_manager = self.next_manager;
        let r = self.runners.values_mut().find(|r| r.token == token)?;
        let system_id = system_id.unwrap_or("s_sim").to_string();
        match r.managers.iter_mut().find(|m| m.system_id == system_id) {
            Some(m) => m.contacted_at = now,
            None => {
                r.managers.push(Manager {
                    id: next_manager,
                    system_id,
                    created_at: now,
                    contacted_at: now,
                });
                self.next_manager += 1;
            }
        }
        Some(r.clone())
    }

    /// Deletes a runner. Jobs it was running fail, as they do in GitLab when the runner goes.
    pub fn delete_runner(
        &mut self,
        id: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobEvent>, WorldError> {
        let runner = self
            .runners
            .remove(&id)
            .ok_or(WorldError::NotFound { what: "Runner" })?;
        self.counters.runners_deleted += 1;
        let mut events = Vec::new();
        for job in self.jobs.values_mut() {
            if job.runner_id == Some(id) && job.status == JobStatus::Running {
                job.status = JobStatus::Failed;
                job.failure_reason = Some("runner_system_failure".into());
                job.finished_at = Some(now);
                self.counters.jobs_killed_by_runner_delete += 1;
                if let Some(p) = self.projects.get(&job.project_id) {
                    events.push(JobEvent {
                        job: job.clone(),
                        project: p.clone(),
                        runner: Some(runner.clone()),
                    });
                }
            }
        }
        Ok(events)
    }

    /// Whether `runner` may run jobs of `project`.
    pub fn runner_serves(&self, runner: &Runner, project: &Project) -> bool {
        match runner.runner_type {
            RunnerType::InstanceType => true,
            RunnerType::ProjectType => runner.projects.contains(&project.id),
            RunnerType::GroupType => match (runner.group_id, project.group_id) {
                (Some(g), Some(pg)) => self.group_and_descendants(g).contains(&pg),
                _ => false,
            },
        }
    }

    /// Moves simulated time to `now`: trace jobs arrive, running jobs that are done succeed,
    /// and online, unpaused runners take pending jobs they match (oldest first). Returns the
    /// job status changes, for webhooks.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<JobEvent> {
        let mut changed: Vec<u64> = Vec::new();
        while self.future.front().is_some_and(|f| f.arrives_at <= now) {
            let f = self.future.pop_front().expect("checked above");
            self.ensure_project(&f.project, f.arrives_at);
            let spec = NewJob {
                project: f.project,
                name: None,
                tag_list: f.tag_list,
                run_seconds: f.run_seconds,
                pipeline_id: Some(f.pipeline),
            };
            if let Ok(job) = self.enqueue(spec, f.arrives_at) {
                changed.push(job.id);
            }
        }
        for job in self.jobs.values_mut() {
            if job.status != JobStatus::Running {
                continue;
            }
            let started = job.started_at.unwrap_or(now);
            let ends = started + ChronoDuration::milliseconds((job.run_seconds * 1000.0) as i64);
            if ends <= now {
                job.status = JobStatus::Success;
                job.finished_at = Some(ends);
                changed.push(job.id);
            }
        }
        let mut busy: BTreeMap<u64, u32> = BTreeMap::new();
        for job in self.jobs.values() {
            if let (JobStatus::Running, Some(r)) = (job.status, job.runner_id) {
                *busy.entry(r).or_default() += 1;
            }
        }
        let pending: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| j.status == JobStatus::Pending)
            .map(|j| j.id)
            .collect();
        for job_id in pending {
            let (project, tags) = {
                let j = &self.jobs[&job_id];
                (
                    self.projects.get(&j.project_id).cloned(),
                    j.tag_list.clone(),
                )
            };
            let Some(project) = project else { continue };
            let taker = self.runners.values().find(|r| {
                !r.paused
                    && r.online(now)
                    && busy.get(&r.id).copied().unwrap_or(0) < r.concurrency
                    && r.matches_tags(&tags)
                    && self.runner_serves(r, &project)
            });
            let Some(r) = taker else { continue };
            let (rid, mid) = (r.id, r.managers.first().map(|m| m.id));
            *busy.entry(rid).or_default() += 1;
            let job = self.jobs.get_mut(&job_id).expect("listed above");
            job.status = JobStatus::Running;
            job.started_at = Some(now);
            job.runner_id = Some(rid);
            job.runner_manager_id = mid;
            changed.push(job_id);
        }
        changed
            .into_iter()
            .filter_map(|id| {
                let job = self.jobs.get(&id)?.clone();
                let project = self.projects.get(&job.project_id)?.clone();
                let runner = job.runner_id.and_then(|r| self.runners.get(&r)).cloned();
                Some(JobEvent {
                    job,
                    project,
                    runner,
                })
            })
            .collect()
    }
}

/// What the control API or a trace asks to queue.
#[derive(Debug, Clone, Deserialize)]
pub struct NewJob {
    /// Project id or full path.
    pub project: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tag_list: Vec<String>,
    /// Simulated seconds the job runs.
    #[serde(default = "default_run_seconds", alias = "duration_s")]
    pub run_seconds: f64,
    #[serde(default)]
    pub pipeline_id: Option<u64>,
}

fn default_run_seconds() -> f64 {
    60.0
}

/// A job of the finished history ([`World::add_finished`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedJob {
    /// Project full path (created with its groups when missing).
    pub project: String,
    /// Job name.
    pub name: String,
    /// Its pipeline.
    pub pipeline_id: u64,
    /// When it was created and queued.
    pub queued_at: DateTime<Utc>,
    /// Seconds it waited for a runner.
    pub queued_s: f64,
    /// Seconds it ran.
    pub run_seconds: f64,
    /// Whether it failed (else it succeeded).
    pub failed: bool,
}

/// The attributes of `POST /user/runners`.
#[derive(Debug, Clone)]
pub struct NewRunner {
    pub runner_type: RunnerType,
    pub group_id: Option<u64>,
    pub project_id: Option<u64>,
    pub description: String,
    pub paused: bool,
    pub locked: bool,
    pub run_untagged: bool,
    pub tag_list: Vec<String>,
    pub access_level: String,
    pub maximum_timeout: Option<u64>,
    pub maintenance_note: Option<String>,
}

/// Seconds in a chrono duration, as a float.
pub fn seconds(d: ChronoDuration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn runner(w: &mut World, tags: &[&str], untagged: bool) -> Runner {
        let mut rng = StdRng::seed_from_u64(1);
        w.create_runner(
            NewRunner {
                runner_type: RunnerType::InstanceType,
                group_id: None,
                project_id: None,
                description: "r".into(),
                paused: false,
                locked: false,
                run_untagged: untagged,
                tag_list: tags.iter().map(|s| s.to_string()).collect(),
                access_level: "not_protected".into(),
                maximum_timeout: None,
                maintenance_note: None,
            },
            &mut rng,
            t0(),
        )
        .unwrap()
    }

    fn job(w: &mut World, tags: &[&str], secs: f64) -> u64 {
        w.enqueue(
            NewJob {
                project: "g/p".into(),
                name: None,
                tag_list: tags.iter().map(|s| s.to_string()).collect(),
                run_seconds: secs,
                pipeline_id: None,
            },
            t0(),
        )
        .unwrap()
        .id
    }

    #[test]
    fn runners_take_matching_jobs_and_finish_them_after_their_duration() {
        let mut w = World::new();
        w.ensure_project("g/p", t0());
        let r = runner(&mut w, &["docker"], false);
        assert!(r.token.starts_with("glrt-"));
        let tagged = job(&mut w, &["docker"], 10.0);
        let other = job(&mut w, &["gpu"], 10.0);
        let untagged = job(&mut w, &[], 10.0);
        w.advance(t0());
        assert_eq!(w.jobs[&tagged].status, JobStatus::Running);
        assert_eq!(w.jobs[&other].status, JobStatus::Pending);
        assert_eq!(w.jobs[&untagged].status, JobStatus::Pending);
        w.advance(t0() + ChronoDuration::seconds(9));
        assert_eq!(w.jobs[&tagged].status, JobStatus::Running);
        w.advance(t0() + ChronoDuration::seconds(10));
        assert_eq!(w.jobs[&tagged].status, JobStatus::Success);
    }

    #[test]
    fn paused_runners_take_nothing_and_deleting_a_busy_runner_fails_its_job() {
        let mut w = World::new();
        w.ensure_project("g/p", t0());
        let r = runner(&mut w, &[], true);
        w.runners.get_mut(&r.id).unwrap().paused = true;
        let j = job(&mut w, &[], 10.0);
        w.advance(t0());
        assert_eq!(w.jobs[&j].status, JobStatus::Pending);
        w.runners.get_mut(&r.id).unwrap().paused = false;
        w.advance(t0());
        assert_eq!(w.jobs[&j].status, JobStatus::Running);
        let events = w.delete_runner(r.id, t0()).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(w.jobs[&j].status, JobStatus::Failed);
        assert_eq!(w.counters.jobs_killed_by_runner_delete, 1);
    }

    #[test]
    fn groups_include_subgroup_projects() {
        let mut w = World::new();
        let a = w.ensure_project("top/sub/deep/a", t0());
        let b = w.ensure_project("top/b", t0());
        w.ensure_project("other/c", t0());
        let top = w.find_group("top").unwrap().id;
        let mut ids: Vec<u64> = w.group_projects(top, true).iter().map(|p| p.id).collect();
        ids.sort();
        assert_eq!(ids, vec![a.id, b.id]);
        assert_eq!(w.group_projects(top, false).len(), 1);
    }
}
