//! A GitLab's finished-job history as trace rows: the jobs of the stack's projects (and of
//! its groups' projects) that ran in a window, each as when it entered the queue and how
//! long it ran. `fleet-cli history` writes them in the trace format, which `simulate`
//! replays and `state seed-demand` turns into the policy's demand record.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use fleet_core::simulate::Row;

use super::models::{Job, Project};
use super::{GitLabClient, GitLabError};

/// What was read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// One row per job that ran, in no particular order.
    pub rows: Vec<Row>,
    /// The projects read, by full path.
    pub projects: Vec<String>,
    /// Finished jobs left out because no runner ever started them (canceled while
    /// pending): they asked for no VM.
    pub never_started: u64,
}

/// The trace row of a finished job, `None` when it never started. It entered the queue
/// `queued_duration` before it started (a job of a later stage is created with its
/// pipeline but queued only when the stages before it end, so `created_at` would date its
/// demand too early); without `queued_duration`, at `created_at`. It ran `duration`
/// seconds, or from `started_at` to `finished_at`, rounded up to whole seconds.
pub fn row_of(job: &Job, project: &str) -> Option<Row> {
    let started = job.started_at?;
    let queued_at = match (job.queued_duration, job.created_at) {
        (Some(q), _) if q.is_finite() && q >= 0.0 => {
            started - chrono::Duration::milliseconds((q * 1000.0).round() as i64)
        }
        (_, Some(c)) => c.min(started),
        _ => started,
    };
    let ran = job
        .duration
        .filter(|d| d.is_finite() && *d >= 0.0)
        .or_else(|| {
            job.finished_at
                .map(|f| (f - started).num_milliseconds().max(0) as f64 / 1000.0)
        })?;
    Some(Row {
        queued_at: seconds_floor(queued_at),
        duration_s: (ran.ceil() as u32).max(1),
        project: project.to_string(),
        pipeline: job.pipeline.as_ref().map_or(0, |p| p.id),
    })
}

fn seconds_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Reads the finished jobs created since `since` of `projects` and of every project of
/// `groups` (subgroups included; a project named twice is read once), page by page
/// through the client's rate limits.
pub async fn read(
    client: &GitLabClient,
    projects: &[String],
    groups: &[String],
    since: DateTime<Utc>,
) -> Result<History, GitLabError> {
    let mut by_id: BTreeMap<u64, Project> = BTreeMap::new();
    for p in projects {
        let p = client.project(p).await?;
        by_id.insert(p.id, p);
    }
    for g in groups {
        for p in client.group_projects(g).await? {
            by_id.entry(p.id).or_insert(p);
        }
    }
    let mut h = History::default();
    for p in by_id.values() {
        for job in client.finished_jobs(p.id, since).await? {
            match row_of(&job, &p.path_with_namespace) {
                Some(row) => h.rows.push(row),
                None => h.never_started += 1,
            }
        }
        h.projects.push(p.path_with_namespace.clone());
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitlab::models::PipelineRef;

    fn t(s: &str) -> Option<DateTime<Utc>> {
        Some(DateTime::parse_from_rfc3339(s).unwrap().to_utc())
    }

    fn job() -> Job {
        Job {
            id: 1,
            status: "success".into(),
            name: "test".into(),
            tag_list: vec![],
            created_at: t("2026-11-02T09:00:00Z"),
            started_at: t("2026-11-02T09:05:00Z"),
            finished_at: t("2026-11-02T09:06:00.500Z"),
            duration: Some(60.5),
            queued_duration: Some(20.0),
            runner: None,
            pipeline: Some(PipelineRef {
                id: 9,
                project_id: Some(3),
            }),
        }
    }

    #[test]
    fn a_job_enters_the_queue_its_queued_duration_before_it_started() {
        let r = row_of(&job(), "team/app").unwrap();
        assert_eq!(Some(r.queued_at), t("2026-11-02T09:04:40Z"));
        assert_eq!((r.duration_s, r.pipeline), (61, 9));
    }

    #[test]
    fn without_durations_the_times_say_it_and_an_unstarted_job_is_left_out() {
        let j = Job {
            duration: None,
            queued_duration: None,
            ..job()
        };
        let r = row_of(&j, "team/app").unwrap();
        assert_eq!(Some(r.queued_at), t("2026-11-02T09:00:00Z"));
        assert_eq!(r.duration_s, 61);
        let canceled = Job {
            status: "canceled".into(),
            started_at: None,
            ..job()
        };
        assert_eq!(row_of(&canceled, "team/app"), None);
    }
}
