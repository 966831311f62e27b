//! The runner lifecycle, pure half: what the CI system reports about this stack's runners,
//! copied onto the instance records, and the decisions that follow from it.
//!
//! One runner is registered per VM before the VM is created (its token goes into the VM's
//! user data) and deleted after the VM is gone. Scale-in is job-aware: the runner is paused,
//! the VM is deleted only once no job runs on it (see `draining_since` on the record), and
//! a drain that outlasts `runner.drain_timeout` returns the VM to service instead of killing
//! its job. Runners whose VM is gone are deleted; VMs whose runner never came online within
//! `runner.online_timeout` are replaced. The effects live in [`crate::apply`].

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ci::ObservedRunner;
use crate::cloud::Lifecycle;
use crate::state::InstanceRecord;

/// The stack's runner timing, as the planner needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerRules {
    /// How long a paused runner may take to finish its jobs before the scale-in is given up.
    pub drain_timeout: Duration,
    /// How long a new VM's runner may take to come online before the VM is replaced.
    pub online_timeout: Duration,
}

impl Default for RunnerRules {
    fn default() -> Self {
        RunnerRules {
            drain_timeout: Duration::from_secs(2 * 3600),
            online_timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// Runners of this stack that none of `records` names: their VM is gone (or was never made).
pub fn orphans<'a, 'r>(
    records: impl IntoIterator<Item = &'r InstanceRecord>,
    runners: &'a [ObservedRunner],
) -> Vec<&'a ObservedRunner> {
    let recorded: BTreeSet<u64> = records
        .into_iter()
        .filter_map(|r| r.jobs.runner_id)
        .collect();
    runners
        .iter()
        .filter(|r| !recorded.contains(&r.id))
        .collect()
}

/// Why a running VM should be replaced because its runner never came online, if it should.
/// Only asked when the CI system answered (`runners` known).
pub fn never_online(
    rec: &InstanceRecord,
    runners: &[ObservedRunner],
    rules: &RunnerRules,
    now: DateTime<Utc>,
) -> Option<String> {
    let id = rec.jobs.runner_id?;
    if rec.jobs.runner_online_at.is_some() || rec.lifecycle != Lifecycle::Running {
        return None;
    }
    if runners.iter().any(|r| r.id == id && r.online) {
        return None;
    }
    let waited = (now - rec.created_at).to_std().unwrap_or_default();
    (waited > rules.online_timeout).then(|| {
        format!(
            "runner #{id} never came online within runner.online_timeout = {}",
            human(rules.online_timeout)
        )
    })
}

/// What to do with a VM whose runner is draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainStep {
    /// No job runs on it: delete it.
    Delete(String),
    /// Jobs still run: wait (a note, not a change).
    Wait(String),
    /// The drain outlasted `drain_timeout`: resume the runner and keep the VM.
    GiveUp(String),
}

/// The next step of a draining VM. `running` is the runner's job count when the CI system
/// answered, `None` when it did not (then the VM waits: nothing is deleted on unknown facts).
pub fn drain_step(
    rec: &InstanceRecord,
    since: DateTime<Utc>,
    running: Option<u32>,
    rules: &RunnerRules,
    now: DateTime<Utc>,
) -> DrainStep {
    let runner = rec
        .jobs
        .runner_id
        .map_or_else(|| "its runner".to_string(), |id| format!("runner #{id}"));
    let waited = (now - since).to_std().unwrap_or_default();
    match running {
        Some(0) => DrainStep::Delete(format!(
            "scale in: {runner} paused {} ago and no job runs on it",
            human(waited)
        )),
        Some(n) if waited > rules.drain_timeout => DrainStep::GiveUp(format!(
            "drain gave up after runner.drain_timeout = {} with {n} jobs still running; a VM with a running job is never deleted by scale-in, so it returns to service",
            human(rules.drain_timeout)
        )),
        Some(n) => DrainStep::Wait(format!(
            "waiting on {}: {runner} paused for scale-in {} ago, {n} jobs still running",
            rec.name,
            human(waited)
        )),
        None => DrainStep::Wait(format!(
            "waiting on {}: {runner} is paused for scale-in, but GitLab did not report its jobs",
            rec.name
        )),
    }
}

/// `90s`, `10m`, `2h`, `1h30m`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::facts::refresh_runner_facts;
    use crate::state::{JobFacts, State};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::seconds(s)
    }

    fn rec(name: &str, runner: Option<u64>) -> InstanceRecord {
        InstanceRecord {
            name: name.into(),
            cloud_id: Some(format!("i-{name}")),
            spec_hash: "h".into(),
            image: "img".into(),
            instance_type: "small".into(),
            template_hash: None,
            created_at: t(0),
            lifecycle: Lifecycle::Running,
            address: None,
            jobs: JobFacts {
                runner_id: runner,
                ..JobFacts::default()
            },
            pending: None,
            started_at: Some(t(0)),
            draining_since: None,
            warming: None,
        }
    }

    fn runner(id: u64, online: bool, running: u32) -> ObservedRunner {
        ObservedRunner {
            id,
            instance: format!("s-{id}"),
            online,
            paused: false,
            running_jobs: running,
            first_contact_at: None,
        }
    }

    #[test]
    fn facts_count_jobs_and_mark_the_end_of_the_last_one() {
        let mut s = State::new("s", "l");
        s.instances.insert("a".into(), rec("a", Some(7)));
        assert!(refresh_runner_facts(&mut s, &[runner(7, true, 2)], t(10)));
        let j = &s.instances["a"].jobs;
        assert_eq!(
            (j.running, j.jobs_run, j.runner_online_at),
            (2, 2, Some(t(10)))
        );
        assert!(refresh_runner_facts(&mut s, &[runner(7, true, 0)], t(50)));
        let j = &s.instances["a"].jobs;
        assert_eq!((j.running, j.last_job_end), (0, Some(t(50))));
        assert!(!refresh_runner_facts(&mut s, &[runner(7, true, 0)], t(60)));
    }

    #[test]
    fn runners_no_record_names_are_orphans() {
        let mut s = State::new("s", "l");
        s.instances.insert("a".into(), rec("a", Some(7)));
        let rs = [runner(7, true, 0), runner(8, false, 0)];
        let o: Vec<u64> = orphans(s.instances.values(), &rs)
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(o, vec![8]);
    }

    #[test]
    fn a_runner_offline_past_the_online_timeout_replaces_its_vm() {
        let rules = RunnerRules {
            online_timeout: Duration::from_secs(600),
            ..RunnerRules::default()
        };
        let r = rec("a", Some(7));
        let offline = [runner(7, false, 0)];
        assert_eq!(never_online(&r, &offline, &rules, t(599)), None);
        assert!(never_online(&r, &offline, &rules, t(601))
            .unwrap()
            .contains("never came online within runner.online_timeout = 10m"));
        assert_eq!(
            never_online(&r, &[runner(7, true, 0)], &rules, t(601)),
            None
        );
        let mut seen = r.clone();
        seen.jobs.runner_online_at = Some(t(100));
        assert_eq!(never_online(&seen, &offline, &rules, t(5000)), None);
    }

    #[test]
    fn a_drain_deletes_only_when_no_job_runs_and_gives_up_after_the_timeout() {
        let rules = RunnerRules {
            drain_timeout: Duration::from_secs(3600),
            ..RunnerRules::default()
        };
        let r = rec("a", Some(7));
        assert!(matches!(
            drain_step(&r, t(0), Some(0), &rules, t(30)),
            DrainStep::Delete(_)
        ));
        assert!(matches!(
            drain_step(&r, t(0), Some(1), &rules, t(30)),
            DrainStep::Wait(_)
        ));
        assert!(matches!(
            drain_step(&r, t(0), None, &rules, t(9000)),
            DrainStep::Wait(_)
        ));
        assert!(matches!(
            drain_step(&r, t(0), Some(1), &rules, t(3601)),
            DrainStep::GiveUp(_)
        ));
    }
}
