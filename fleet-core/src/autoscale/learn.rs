//! Boot-time learning: how long this cloud really takes from create to ready (a boot) and
//! from start to ready (a resume), measured on the fleet's own VMs.
//!
//! A measurement is an interval: the VM was last seen not ready at one moment and first
//! seen ready at a later one (or, when the CI system reports the runner's first contact,
//! exactly). Under a slow timer that interval is as long as the timer's period, and its
//! midpoint says more about the timer than about the cloud (a boot and a resume would look
//! alike), so a sample is kept only when the interval is narrow: at most [`MIN_SPREAD_S`]
//! or a quarter of the time already waited. The estimate is the median of the last
//! [`KEEP`] samples kept, once there are [`MIN_SAMPLES`]; until then the stack's
//! `policy.boot_time` / `policy.resume_time` stand.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::secs;
use crate::stack::Effective;

/// Samples kept per phase (the newest).
pub const KEEP: usize = 20;
/// Samples needed before the measured time replaces the configured one.
pub const MIN_SAMPLES: usize = 3;
/// Spread (seconds) a measurement may always have.
pub const MIN_SPREAD_S: u64 = 10;

/// What a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// From create to ready.
    Boot,
    /// From start (of a stopped VM) to ready.
    Resume,
}

impl Phase {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Boot => "boot",
            Phase::Resume => "resume",
        }
    }
}

/// The kept samples, in seconds, oldest first. Recorded in state so that learning survives
/// restarts of `up` and of the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Boots measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boots: Vec<u32>,
    /// Resumes measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumes: Vec<u32>,
}

/// What was learned about one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// The median of the kept samples.
    pub time: Duration,
    /// How many samples it is the median of.
    pub samples: usize,
}

impl Timings {
    /// Whether nothing was measured.
    pub fn is_empty(&self) -> bool {
        self.boots.is_empty() && self.resumes.is_empty()
    }

    /// Records that a `phase` took between `at_least_s` and `at_most_s` seconds. Returns
    /// whether the measurement was narrow enough to keep (see the module docs).
    pub fn record(&mut self, phase: Phase, at_least_s: u64, at_most_s: u64) -> bool {
        let (lo, hi) = (at_least_s.min(at_most_s), at_least_s.max(at_most_s));
        if hi - lo > MIN_SPREAD_S.max(lo / 4) {
            return false;
        }
        let mid = u32::try_from(lo + (hi - lo) / 2).unwrap_or(u32::MAX);
        let kept = self.samples_mut(phase);
        kept.push(mid);
        if kept.len() > KEEP {
            kept.remove(0);
        }
        true
    }

    /// Records a `phase` that began at `since`, was last seen not ready at `unready_at` and
    /// was first seen ready at `ready_at` (both the same when the end is known exactly).
    pub fn record_span(
        &mut self,
        phase: Phase,
        since: DateTime<Utc>,
        unready_at: DateTime<Utc>,
        ready_at: DateTime<Utc>,
    ) -> bool {
        self.record(phase, secs(unready_at - since), secs(ready_at - since))
    }

    /// The measured time of `phase`, once [`MIN_SAMPLES`] samples were kept.
    pub fn learned(&self, phase: Phase) -> Option<Learned> {
        let kept = match phase {
            Phase::Boot => &self.boots,
            Phase::Resume => &self.resumes,
        };
        if kept.len() < MIN_SAMPLES {
            return None;
        }
        let mut sorted = kept.clone();
        sorted.sort_unstable();
        // Lower median: a slow outlier among few samples does not move it.
        let median = sorted[(sorted.len() - 1) / 2];
        Some(Learned {
            time: Duration::from_secs(u64::from(median)),
            samples: kept.len(),
        })
    }

    fn samples_mut(&mut self, phase: Phase) -> &mut Vec<u32> {
        match phase {
            Phase::Boot => &mut self.boots,
            Phase::Resume => &mut self.resumes,
        }
    }
}

/// How long a VM may take before it counts as late: twice the expected time, and at least
/// a minute more than it. A late VM no longer covers the jobs waiting for it.
pub fn late_after(expected: Duration) -> Duration {
    (expected * 2).max(expected + Duration::from_secs(60))
}

impl Effective {
    /// These settings with `boot_time` and `resume_time` replaced by what was measured,
    /// where enough was.
    pub fn learn(mut self, timings: &Timings) -> Effective {
        if let Some(l) = timings.learned(Phase::Boot) {
            self.boot_time = l.time;
        }
        if let Some(l) = timings.learned(Phase::Resume) {
            self.resume_time = l.time;
        }
        self
    }
}

/// Fixtures shared with the policy's tests (`crate::policy`).
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ci::ObservedRunner;
    use crate::cloud::Lifecycle;
    use crate::cloud::Observed;
    use crate::cloud::ObservedInstance;
    use crate::state::facts::refresh as refresh_facts;
    use crate::state::State;
    use crate::state::{InstanceRecord, Warming};

    /// `s` seconds into the test's day.
    pub(crate) fn t(s: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::seconds(1_700_000_000 + s)
    }

    /// A state with one VM created at 0 (its runner #7 registered with it when `runner`).
    fn booting(runner: bool) -> State {
        let o = instance(Lifecycle::Booting);
        let mut rec = InstanceRecord::from_observed(&o, None);
        rec.created_at = t(0);
        rec.jobs.runner_id = runner.then_some(7);
        rec.warming = Some(Warming::new(Phase::Boot, t(0)));
        let mut state = State::new("s", "l");
        state.instances.insert(rec.name.clone(), rec);
        state
    }

    /// The cloud's view of VM `s-0001` (`i-1`), launched at 0.
    pub(crate) fn instance(lifecycle: Lifecycle) -> ObservedInstance {
        ObservedInstance {
            cloud_id: "i-1".into(),
            name: "s-0001".into(),
            lineage: "l".into(),
            image: "img".into(),
            instance_type: "small".into(),
            spec_hash: "h".into(),
            lifecycle,
            address: None,
            launched_at: t(0),
            batch: None,
        }
    }

    fn observed(lifecycle: Lifecycle, runner: Option<(bool, Option<i64>)>) -> Observed {
        Observed {
            instances: vec![instance(lifecycle)],
            runners: runner.map(|(online, first)| {
                vec![ObservedRunner {
                    id: 7,
                    instance: "s-0001".into(),
                    online,
                    paused: false,
                    running_jobs: 0,
                    first_contact_at: first.map(t),
                }]
            }),
            ..Observed::default()
        }
    }

    #[test]
    fn a_boot_ends_when_the_runner_first_contacts_gitlab_dated_exactly_when_known() {
        let mut state = booting(true);
        // Running in the cloud is not ready: the runner is not online yet.
        refresh_facts(
            &mut state,
            &observed(Lifecycle::Running, Some((false, None))),
            t(50),
        );
        assert!(state.timings.is_empty());
        assert_eq!(state.instances["s-0001"].warming.unwrap().unready_at, t(50));
        // Seen online at 200, with its first contact at 84: the boot took 84 s, not 200.
        refresh_facts(
            &mut state,
            &observed(Lifecycle::Running, Some((true, Some(84)))),
            t(200),
        );
        assert_eq!(state.timings.boots, vec![84]);
        assert_eq!(state.instances["s-0001"].warming, None);
        assert_eq!(state.instances["s-0001"].jobs.runner_online_at, Some(t(84)));
    }

    #[test]
    fn without_an_exact_date_a_boot_is_kept_only_when_observed_closely() {
        // A daemon polling every 5 s: seen booting at 80, ready at 85.
        let mut state = booting(true);
        let unknown_runners = observed(Lifecycle::Running, None);
        refresh_facts(
            &mut state,
            &observed(Lifecycle::Running, Some((false, None))),
            t(80),
        );
        // A round where GitLab did not answer says nothing about the runner.
        refresh_facts(&mut state, &unknown_runners, t(83));
        assert_eq!(state.instances["s-0001"].warming.unwrap().unready_at, t(80));
        refresh_facts(
            &mut state,
            &observed(Lifecycle::Running, Some((true, None))),
            t(85),
        );
        assert_eq!(state.timings.boots, vec![82]);

        // A one-minute timer: created at 0, seen ready at 60; not kept, and not retried.
        let mut state = booting(false);
        refresh_facts(&mut state, &observed(Lifecycle::Running, None), t(60));
        assert!(state.timings.is_empty());
        assert_eq!(state.instances["s-0001"].warming, None);
    }

    #[test]
    fn a_resume_ends_when_the_cloud_reports_the_vm_running() {
        let mut state = booting(true);
        let rec = state.instances.get_mut("s-0001").unwrap();
        rec.jobs.runner_online_at = Some(t(0));
        rec.lifecycle = Lifecycle::Starting;
        rec.warming = Some(Warming::new(Phase::Resume, t(1000)));
        refresh_facts(
            &mut state,
            &observed(Lifecycle::Starting, Some((true, None))),
            t(1025),
        );
        refresh_facts(
            &mut state,
            &observed(Lifecycle::Running, Some((true, None))),
            t(1031),
        );
        assert_eq!(state.timings.resumes, vec![28]);
        assert!(state.timings.boots.is_empty());
    }

    #[test]
    fn narrow_measurements_are_kept_and_wide_ones_dropped() {
        let mut t = Timings::default();
        // A daemon polling every 10 s while a VM boots: kept, at the midpoint.
        assert!(t.record(Phase::Boot, 80, 90));
        // A one-minute timer: the VM was seen booting at 0 s and ready at 60 s; the boot
        // took anything up to a minute, which says nothing.
        assert!(!t.record(Phase::Resume, 0, 60));
        // Long boots may be measured a little less tightly (a quarter of the time waited).
        assert!(t.record(Phase::Boot, 200, 250));
        assert!(!t.record(Phase::Boot, 200, 251));
        assert_eq!(t.boots, vec![85, 225]);
        assert!(t.resumes.is_empty());
    }

    #[test]
    fn the_median_replaces_the_setting_after_three_samples() {
        let mut t = Timings::default();
        t.record(Phase::Resume, 30, 30);
        t.record(Phase::Resume, 34, 34);
        assert_eq!(t.learned(Phase::Resume), None);
        t.record(Phase::Resume, 300, 310);
        assert_eq!(
            t.learned(Phase::Resume),
            Some(Learned {
                time: Duration::from_secs(34),
                samples: 3
            })
        );
        assert_eq!(t.learned(Phase::Boot), None);
    }

    #[test]
    fn only_the_newest_samples_count() {
        let mut t = Timings::default();
        for _ in 0..KEEP {
            t.record(Phase::Boot, 200, 200);
        }
        for _ in 0..KEEP {
            t.record(Phase::Boot, 60, 60);
        }
        assert_eq!(t.boots.len(), KEEP);
        assert_eq!(t.learned(Phase::Boot).map(|l| l.time.as_secs()), Some(60));
    }

    #[test]
    fn late_is_twice_the_expected_time_and_a_minute_at_least() {
        assert_eq!(late_after(Duration::from_secs(90)).as_secs(), 180);
        assert_eq!(late_after(Duration::from_secs(30)).as_secs(), 90);
    }
}
