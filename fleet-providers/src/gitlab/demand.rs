//! Demand from GitLab's API: the pending and running jobs this fleet could run, in the
//! projects and groups the stack lists. The API is the source of truth for counts; webhooks
//! only say when to look again.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use fleet_core::ci::{Ci, CiError, Demand};

use super::client::GitLabClient;
use super::GitLabError;

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

/// The GitLab [`Ci`]: counts jobs through the REST API.
#[derive(Debug)]
pub struct GitLabCi {
    client: GitLabClient,
    scope: DemandScope,
    cache_ttl: Duration,
    cache: tokio::sync::Mutex<Option<(Instant, Vec<u64>)>>,
}

impl GitLabCi {
    /// Demand for `scope`, asked through `client`.
    pub fn new(client: GitLabClient, scope: DemandScope) -> GitLabCi {
        GitLabCi {
            client,
            scope,
            cache_ttl: PROJECT_CACHE_TTL,
            cache: tokio::sync::Mutex::new(None),
        }
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
        for id in self.project_ids().await? {
            for job in self.client.active_jobs(id).await? {
                if !runnable(&job.tag_list, &self.scope.tags, self.scope.run_untagged) {
                    c.skipped += 1;
                    continue;
                }
                match job.status.as_str() {
                    "pending" => c.pending += 1,
                    "running" => c.running += 1,
                    _ => {}
                }
            }
        }
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
            Err(e) => Err(CiError {
                system: "gitlab".into(),
                message: error_chain(&e),
            }),
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
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
