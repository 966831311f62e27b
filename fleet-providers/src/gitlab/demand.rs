//! GitLab as the fleet's CI system: demand from the API (the pending and running jobs this
//! fleet could run, in the projects and groups the stack lists; the API is the source of
//! truth for counts, webhooks only say when to look again), and, when the stack gives no
//! shared runner token, one runner per VM on the token workflow (`POST /user/runners`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};

use fleet_core::apply::error_chain;
use fleet_core::ci::{Ci, CiError, Demand, NewRunner, ObservedRunner};
use fleet_core::stack::RunnerType;

use super::client::{GitLabClient, RunnerSpec};
use super::{parse_runner_description, runner_description, GitLabError};

/// Runner calls in flight at once while listing jobs per runner.
const RUNNER_CONCURRENCY: usize = 8;

/// How long the demand listing's jobs-per-runner stay the runner facts' source.
const SNAPSHOT_TTL: Duration = Duration::from_secs(60);

/// How the fleet registers its runners: one per VM, described as `fleet:<stack>/<instance>`.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The stack (in every runner's description).
    pub stack: String,
    /// `instance_type`, `group_type` or `project_type`.
    pub runner_type: RunnerType,
    /// Whether project runners are locked to their projects.
    pub locked: bool,
    /// Longest job, in seconds.
    pub maximum_timeout: Option<u64>,
}

/// How long the projects of the listed groups are reused before they are listed again.
pub const PROJECT_CACHE_TTL: Duration = Duration::from_secs(300);

/// Whether a runner with `runner_tags` takes a job with `job_tags`: every job tag is a runner
/// tag, and an untagged job only goes to a runner that runs untagged jobs (GitLab's rule).
pub fn runnable(job_tags: &[String], runner_tags: &BTreeSet<String>, run_untagged: bool) -> bool {
    if job_tags.is_empty() {
        return run_untagged;
    }
    job_tags.iter().all(|t| runner_tags.contains(t))
}

/// Counted jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Jobs waiting for a runner.
    pub pending: u32,
    /// Jobs running.
    pub running: u32,
    /// Active jobs left out because this fleet's runners could not take them.
    pub skipped: u32,
}

/// What to count.
#[derive(Debug, Clone)]
pub struct DemandScope {
    /// Projects, by id or full path.
    pub projects: Vec<String>,
    /// Groups, by id or full path; their projects and those of their subgroups count.
    pub groups: Vec<String>,
    /// The fleet's runner tags.
    pub tags: BTreeSet<String>,
    /// Whether the fleet's runners take untagged jobs.
    pub run_untagged: bool,
}

/// The GitLab [`Ci`]: counts jobs through the REST API, and registers runners when given a
/// [`Registration`].
#[derive(Debug)]
pub struct GitLabCi {
    client: GitLabClient,
    scope: DemandScope,
    cache_ttl: Duration,
    cache: tokio::sync::Mutex<Option<(Instant, Vec<u64>)>>,
    registration: Option<Registration>,
    /// Running jobs per runner id, from the last demand listing: runner facts come from the
    /// same snapshot as demand, so a job is never counted both as waiting and as running.
    last_running: std::sync::Mutex<Option<(Instant, BTreeMap<u64, u32>)>>,
    /// When the oldest job counted as pending was queued, at the last count.
    oldest_pending: std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

impl GitLabCi {
    /// Demand for `scope`, asked through `client`.
    pub fn new(client: GitLabClient, scope: DemandScope) -> GitLabCi {
        GitLabCi {
            client,
            scope,
            cache_ttl: PROJECT_CACHE_TTL,
            cache: tokio::sync::Mutex::new(None),
            registration: None,
            last_running: std::sync::Mutex::new(None),
            oldest_pending: std::sync::Mutex::new(None),
        }
    }

    /// Registers one runner per VM as `registration` says.
    pub fn with_registration(mut self, registration: Registration) -> GitLabCi {
        self.registration = Some(registration);
        self
    }

    /// The `POST /user/runners` attributes of `instance`'s runner.
    async fn runner_spec(
        &self,
        reg: &Registration,
        instance: &str,
    ) -> Result<RunnerSpec, GitLabError> {
        let first = |list: &[String], key: &str| {
            list.first().cloned().ok_or_else(|| GitLabError::Config {
                message: format!(
                    "runner.runner_type {} needs at least one entry in runner.{key}",
                    reg.runner_type.as_str()
                ),
            })
        };
        let (group_id, project_id) = match reg.runner_type {
            RunnerType::InstanceType => (None, None),
            RunnerType::GroupType => {
                let g = first(&self.scope.groups, "groups")?;
                (Some(self.client.group(&g).await?.id), None)
            }
            RunnerType::ProjectType => {
                let p = first(&self.scope.projects, "projects")?;
                (None, Some(self.client.project(&p).await?.id))
            }
        };
        Ok(RunnerSpec {
            runner_type: reg.runner_type,
            group_id,
            project_id,
            description: runner_description(&reg.stack, instance),
            tag_list: self.scope.tags.iter().cloned().collect(),
            run_untagged: self.scope.run_untagged,
            locked: reg.locked,
            maximum_timeout: reg.maximum_timeout,
            paused: false,
        })
    }

    /// Registers `instance`'s runner; a project runner is also assigned to the stack's
    /// other projects. A runner that cannot be fully set up is deleted again.
    pub async fn register(&self, instance: &str) -> Result<NewRunner, GitLabError> {
        let reg = self.registration.as_ref().ok_or_else(|| GitLabError::Config {
            message: "this stack gives a shared runner token (runner.runner_token_env), so the fleet registers no runners".into(),
        })?;
        let spec = self.runner_spec(reg, instance).await?;
        let created = self.client.create_runner(&spec).await?;
        if reg.runner_type == RunnerType::ProjectType {
            for p in self.scope.projects.iter().skip(1) {
                if let Err(e) = self.client.assign_runner(p, created.id).await {
                    let _ = self.client.delete_runner(created.id).await;
                    return Err(e);
                }
            }
        }
        Ok(NewRunner {
            id: created.id,
            token: created.token,
        })
    }

    /// This stack's runners, with the jobs each runs now.
    pub async fn stack_runners(&self) -> Result<Vec<ObservedRunner>, GitLabError> {
        let Some(reg) = &self.registration else {
            return Ok(Vec::new());
        };
        let listed = match reg.runner_type {
            RunnerType::InstanceType => self.client.all_runners().await?,
            _ => self.client.runners().await?,
        };
        let ours: Vec<ObservedRunner> = listed
            .into_iter()
            .filter_map(|r| {
                let (stack, instance) = parse_runner_description(r.description.as_deref()?)?;
                (stack == reg.stack).then(|| ObservedRunner {
                    id: r.id,
                    instance: instance.to_string(),
                    online: r.online == Some(true) || r.status.as_deref() == Some("online"),
                    paused: r.is_paused(),
                    running_jobs: 0,
                    first_contact_at: None,
                })
            })
            .collect();
        // Running jobs per runner from the demand listing just taken (one snapshot, so no job
        // counts both as waiting and as busy). Without a fresh one, ask each runner. Jobs of
        // projects the stack does not list are not in the listing; the executor asks each
        // runner exactly before it stops or deletes a VM, so that never deletes a busy one.
        let snapshot = self
            .last_running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|(at, _)| at.elapsed() < SNAPSHOT_TTL)
            .map(|(_, m)| m);
        let counted: Vec<Result<ObservedRunner, GitLabError>> =
            stream::iter(ours.into_iter().map(|mut r| {
                let snapshot = snapshot.as_ref();
                async move {
                    match snapshot {
                        Some(m) => r.running_jobs = m.get(&r.id).copied().unwrap_or(0),
                        None if r.online => {
                            r.running_jobs = self.client.running_jobs(r.id).await?.len() as u32
                        }
                        None => {}
                    }
                    Ok(r)
                }
            }))
            .buffer_unordered(RUNNER_CONCURRENCY)
            .collect()
            .await;
        let mut out = counted.into_iter().collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    /// Changes how long group expansions are reused.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> GitLabCi {
        self.cache_ttl = ttl;
        self
    }

    /// The client, for runner calls.
    pub fn client(&self) -> &GitLabClient {
        &self.client
    }

    /// Ids of the listed projects and of every project in the listed groups, without
    /// duplicates. Reused for [`PROJECT_CACHE_TTL`] between cycles.
    pub async fn project_ids(&self) -> Result<Vec<u64>, GitLabError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, ids)) = cache.as_ref() {
            if at.elapsed() < self.cache_ttl {
                return Ok(ids.clone());
            }
        }
        let mut ids = BTreeSet::new();
        for p in &self.scope.projects {
            match p.parse::<u64>() {
                Ok(id) => ids.insert(id),
                Err(_) => ids.insert(self.client.project(p).await?.id),
            };
        }
        for g in &self.scope.groups {
            for p in self.client.group_projects(g).await? {
                if p.archived != Some(true) {
                    ids.insert(p.id);
                }
            }
        }
        let ids: Vec<u64> = ids.into_iter().collect();
        *cache = Some((Instant::now(), ids.clone()));
        Ok(ids)
    }

    /// Counts the pending and running jobs this fleet could run.
    pub async fn count(&self) -> Result<Counts, GitLabError> {
        let mut c = Counts::default();
        let mut by_runner: BTreeMap<u64, u32> = BTreeMap::new();
        let mut oldest: Option<chrono::DateTime<chrono::Utc>> = None;
        for id in self.project_ids().await? {
            for job in self.client.active_jobs(id).await? {
                if job.status == "running" {
                    if let Some(r) = &job.runner {
                        *by_runner.entry(r.id).or_default() += 1;
                    }
                }
                if !runnable(&job.tag_list, &self.scope.tags, self.scope.run_untagged) {
                    c.skipped += 1;
                    continue;
                }
                match job.status.as_str() {
                    "pending" => {
                        c.pending += 1;
                        if let Some(t) = job.created_at {
                            oldest = Some(oldest.map_or(t, |o| o.min(t)));
                        }
                    }
                    "running" => c.running += 1,
                    _ => {}
                }
            }
        }
        *self.last_running.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), by_runner));
        *self
            .oldest_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = oldest;
        Ok(c)
    }
}

#[async_trait]
impl Ci for GitLabCi {
    async fn demand(&self) -> Result<Demand, CiError> {
        if self.scope.projects.is_empty() && self.scope.groups.is_empty() {
            return Ok(Demand::Unknown {
                reason: "runner.projects and runner.groups are empty, so no jobs are counted"
                    .into(),
            });
        }
        match self.count().await {
            Ok(c) => {
                tracing::debug!(?c, "gitlab demand");
                Ok(Demand::Known {
                    pending: c.pending,
                    running: c.running,
                })
            }
            Err(e) => Err(ci_error("count demand", &e)),
        }
    }

    fn manages_runners(&self) -> bool {
        self.registration.is_some()
    }

    async fn runners(&self) -> Result<Vec<ObservedRunner>, CiError> {
        self.stack_runners()
            .await
            .map_err(|e| ci_error("list the stack's runners", &e))
    }

    async fn create_runner(&self, instance: &str) -> Result<NewRunner, CiError> {
        self.register(instance)
            .await
            .map_err(|e| ci_error(&format!("create a runner for {instance}"), &e))
    }

    async fn set_paused(&self, runner: u64, paused: bool) -> Result<(), CiError> {
        self.client
            .set_paused(runner, paused)
            .await
            .map(|_| ())
            .map_err(|e| {
                let verb = if paused { "pause" } else { "resume" };
                ci_error(&format!("{verb} runner #{runner}"), &e)
            })
    }

    async fn running_jobs(&self, runner: u64) -> Result<u32, CiError> {
        self.client
            .running_jobs(runner)
            .await
            .map(|jobs| jobs.len() as u32)
            .map_err(|e| ci_error(&format!("list the jobs of runner #{runner}"), &e))
    }

    async fn first_contact(&self, runner: u64) -> Result<Option<DateTime<Utc>>, CiError> {
        // A manager is created when a `gitlab-runner` process first uses the token.
        let managers = self
            .client
            .managers(runner)
            .await
            .map_err(|e| ci_error(&format!("list the managers of runner #{runner}"), &e))?;
        Ok(managers.iter().filter_map(|m| m.created_at).min())
    }

    async fn delete_runner(&self, runner: u64) -> Result<(), CiError> {
        self.client
            .delete_runner(runner)
            .await
            .map(|_| ())
            .map_err(|e| ci_error(&format!("delete runner #{runner}"), &e))
    }

    fn api_calls(&self) -> BTreeMap<String, u64> {
        self.client.calls()
    }

    fn oldest_pending(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        *self
            .oldest_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn ci_error(call: &str, e: &GitLabError) -> CiError {
    CiError {
        system: "gitlab".into(),
        call: call.into(),
        message: error_chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> BTreeSet<String> {
        t.iter().map(|s| s.to_string()).collect()
    }
    fn v(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn job_tags_must_be_a_subset_of_runner_tags() {
        let fleet = tags(&["docker", "linux"]);
        assert!(runnable(&v(&["docker"]), &fleet, false));
        assert!(runnable(&v(&["docker", "linux"]), &fleet, false));
        assert!(!runnable(&v(&["docker", "gpu"]), &fleet, true));
        assert!(!runnable(&v(&[]), &fleet, false));
        assert!(runnable(&v(&[]), &fleet, true));
    }
}
