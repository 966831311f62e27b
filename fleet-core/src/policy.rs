//! The scaling policy interface: from demand and the fleet to a desired instance count,
//! and (for the demand policy) the VMs to create, start, stop and retire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::autoscale::{self, FleetAction, Phase, Timings, VmState, VmView, Why};
use crate::ci::Demand;
use crate::cloud::Lifecycle;
use crate::stack::Settings;
use crate::state::{PendingKind, State};

/// What a policy sees.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    /// The stack's policy settings, compiled at load.
    pub settings: &'a Settings,
    /// Demand from the CI system.
    pub demand: &'a Demand,
    /// The recorded fleet.
    pub state: &'a State,
    /// The time of the decision.
    pub now: DateTime<Utc>,
}

/// How many instances to keep, and why (for the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Instances wanted.
    pub desired: u32,
    /// Why, in one line.
    pub reason: String,
    /// Whether the planner may delete instances to reach `desired`. False when demand is
    /// unknown and the policy depends on it.
    pub may_scale_in: bool,
    /// What the demand policy wants done, per instance, with reasons; `None` for policies
    /// that only give a count (the planner then creates or deletes to reach `desired`).
    pub actions: Option<Vec<PlannedAction>>,
}

/// One fleet action of the demand policy, naming the instance it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PlannedAction {
    /// Create `count` new instances.
    Create {
        /// How many.
        count: u32,
        /// Why.
        why: Why,
    },
    /// Start the stopped instance.
    Start {
        /// Instance name.
        instance: String,
        /// Why.
        why: Why,
    },
    /// Stop the idle instance.
    Stop {
        /// Instance name.
        instance: String,
        /// Why.
        why: Why,
    },
    /// Terminate the idle or stopped instance.
    Retire {
        /// Instance name.
        instance: String,
        /// Why.
        why: Why,
    },
}

/// A scaling policy.
pub trait Policy: Send + Sync {
    /// Decides the desired count.
    fn decide(&self, input: &PolicyInput<'_>) -> Decision;
}

/// Keeps exactly `min_instances`, clamped to `max_instances`; ignores demand.
#[derive(Debug, Default, Clone, Copy)]
pub struct StaticPolicy;

impl Policy for StaticPolicy {
    fn decide(&self, input: &PolicyInput<'_>) -> Decision {
        let c = input.settings.base();
        let desired = c.min_instances.min(c.max_instances);
        Decision {
            desired,
            reason: format!("policy.min_instances = {desired}"),
            may_scale_in: true,
            actions: None,
        }
    }
}

/// The demand-driven policy ([`autoscale::decide`]) over the recorded fleet: the same code
/// the simulator replays traces through.
#[derive(Debug, Default, Clone, Copy)]
pub struct DemandPolicy;

impl Policy for DemandPolicy {
    fn decide(&self, input: &PolicyInput<'_>) -> Decision {
        let e = input
            .settings
            .at(input.now)
            .learn(&input.state.timings)
            .with_forecast(&input.state.forecast, input.now);
        let (e, learned) = autoscale::tune::effective(e, &input.state.demand, input.now);
        let (names, views) = fleet_view(input.state);
        let s = autoscale::decide(&e, input.demand, &views, input.now);
        let actions: Vec<PlannedAction> = s
            .actions
            .iter()
            .map(|a| match *a {
                FleetAction::Create { count, why } => PlannedAction::Create { count, why },
                FleetAction::Start { vm, why } => PlannedAction::Start {
                    instance: names[vm].clone(),
                    why,
                },
                FleetAction::Stop { vm, why } => PlannedAction::Stop {
                    instance: names[vm].clone(),
                    why,
                },
                FleetAction::Retire { vm, why } => PlannedAction::Retire {
                    instance: names[vm].clone(),
                    why,
                },
            })
            .collect();
        let mut reason = match (&actions.first(), input.demand) {
            (_, Demand::Unknown { reason }) => format!(
                "demand unknown ({reason}): keeping at least policy.min_instances = {}, not scaling in",
                e.min_instances
            ),
            (None, _) => "demand policy: nothing to change".to_string(),
            (Some(_), _) => format!("demand policy: {} actions", actions.len()),
        };
        for h in &s.held {
            if *h != Why::DemandUnknown {
                reason.push_str(&format!("; held: {h}"));
            }
        }
        if let Some(l) = learned {
            reason.push_str(&format!("; {l}"));
        }
        reason.push_str(&timings_note(&input.state.timings, e.stopped_max > 0));
        Decision {
            desired: s.total_after,
            reason,
            may_scale_in: s.may_scale_in,
            actions: Some(actions),
        }
    }
}

/// What was measured of boots and resumes, for the decision line; and a warning when
/// stopped VMs resume no faster than new ones boot (a stopped pool then saves no wait).
fn timings_note(t: &Timings, pool: bool) -> String {
    let (boot, resume) = (t.learned(Phase::Boot), t.learned(Phase::Resume));
    let mut note = String::new();
    for (name, l) in [("boot", boot), ("resume", resume)] {
        if let Some(l) = l {
            note.push_str(&format!(
                "; {name} measured {} s (median of {})",
                l.time.as_secs(),
                l.samples
            ));
        }
    }
    if let (Some(b), Some(r), true) = (boot, resume, pool) {
        if r.time >= b.time {
            note.push_str(
                "; warning: stopped VMs resume no faster than new ones boot, so the stopped pool saves no wait (consider policy.stopped_count: 0)",
            );
        }
    }
    note
}

/// The recorded fleet as the policy sees it: names and views, in the same order. Instances
/// being deleted are left out, and so are instances whose runner is paused for scale-in
/// (they leave once their jobs end: they are neither capacity nor candidates); an instance
/// whose state is not known yet counts as booting, so it is never stopped or retired.
pub fn fleet_view(state: &State) -> (Vec<String>, Vec<VmView>) {
    let mut names = Vec::with_capacity(state.instances.len());
    let mut views = Vec::with_capacity(state.instances.len());
    for r in state.instances.values() {
        if r.lifecycle.is_gone()
            || r.draining_since.is_some()
            || r.pending
                .as_ref()
                .is_some_and(|p| p.op == PendingKind::Delete)
        {
            continue;
        }
        // A VM whose runner the fleet registered is ready when that runner is online.
        let runner_pending = r.jobs.runner_id.is_some() && r.jobs.runner_online_at.is_none();
        let state = match r.lifecycle {
            Lifecycle::Running if r.jobs.running > 0 => VmState::Busy,
            Lifecycle::Running if runner_pending => VmState::Booting,
            Lifecycle::Running => VmState::Idle,
            Lifecycle::Stopping => VmState::Stopping,
            Lifecycle::Stopped => VmState::Stopped,
            Lifecycle::Starting => VmState::Starting,
            _ => VmState::Booting,
        };
        let last_active = r
            .jobs
            .last_job_end
            .unwrap_or(r.created_at)
            .max(r.created_at);
        let started = r.started_at.unwrap_or(r.created_at);
        let since = match state {
            VmState::Booting => r.created_at,
            VmState::Starting => started,
            // Idle since its last job or since it (re)started, whichever is later.
            _ => last_active.max(started),
        };
        views.push(VmView {
            state,
            since,
            billed_since: match state {
                VmState::Stopped | VmState::Stopping => None,
                _ => Some(r.started_at.unwrap_or(r.created_at)),
            },
            last_active,
            jobs_run: r.jobs.jobs_run,
            running: r.jobs.running,
        });
        names.push(r.name.clone());
    }
    (names, views)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::PolicyConfig;

    #[test]
    fn static_policy_keeps_min_within_max() {
        let config = PolicyConfig {
            min_instances: 3,
            ..PolicyConfig::default()
        };
        let state = State::new("s", "l");
        let demand = Demand::Unknown { reason: "x".into() };
        let d = StaticPolicy.decide(&PolicyInput {
            settings: &Settings::from_config(&config).unwrap(),
            demand: &demand,
            state: &state,
            now: DateTime::UNIX_EPOCH,
        });
        assert_eq!(d.desired, 3);
        assert!(d.may_scale_in);
    }

    use crate::autoscale::learn::tests::{instance, t};

    /// A state with one VM created at 0, running in the cloud, its runner #7 registered.
    fn one_vm(runner_online_at: Option<i64>) -> State {
        let mut state = State::new("s", "l");
        let o = instance(Lifecycle::Running);
        let mut rec = crate::state::InstanceRecord::from_observed(&o, None);
        rec.jobs.runner_id = Some(7);
        rec.jobs.runner_online_at = runner_online_at.map(t);
        state.instances.insert(rec.name.clone(), rec);
        state
    }

    fn decide_at(state: &State, config: &PolicyConfig, now: i64) -> Decision {
        DemandPolicy.decide(&PolicyInput {
            settings: &Settings::from_config(config).unwrap(),
            demand: &Demand::Known {
                pending: 0,
                running: 0,
            },
            state,
            now: t(now),
        })
    }

    #[test]
    fn a_vm_whose_runner_is_not_online_yet_is_booting_and_never_parked() {
        // Regression: a VM running in the cloud counted as idle before its runner came
        // online, so a VM made for the stopped pool could be stopped mid-boot.
        let config = PolicyConfig {
            stopped_count: 1,
            ..PolicyConfig::default()
        };
        let park = |d: &Decision| {
            d.actions
                .iter()
                .flatten()
                .any(|a| matches!(a, PlannedAction::Stop { .. }))
        };
        assert!(!park(&decide_at(&one_vm(None), &config, 100)));
        assert!(park(&decide_at(&one_vm(Some(80)), &config, 100)));
    }

    #[test]
    fn up_records_demand_by_hour_and_the_forecast_fills_the_pool_a_week_later() {
        // Observed (as up observes): 8 jobs waiting and 4 running, recorded in state.
        let mut state = one_vm(Some(80));
        let observed = crate::cloud::Observed {
            demand: Some(Demand::Known {
                pending: 8,
                running: 4,
            }),
            ..Default::default()
        };
        assert!(crate::state::facts::refresh(&mut state, &observed, t(0)));
        let week = 7 * 86_400;
        let config = |forecast| PolicyConfig {
            forecast,
            max_instances: 50,
            ..PolicyConfig::default()
        };
        // A week later, quiet: with the forecast on, the pool is filled for 12 slots: the
        // idle VM will be parked (1 there), eleven are made. Off, nothing is made.
        let d = decide_at(&state, &config(true), week - 1800);
        let pool: Vec<_> = d
            .actions
            .iter()
            .flatten()
            .filter_map(|a| match a {
                PlannedAction::Create { count, why } => Some((*count, *why)),
                _ => None,
            })
            .collect();
        assert_eq!(
            pool,
            vec![(
                11,
                Why::PoolRefill {
                    want: 12,
                    have: 1,
                    expected: 12
                }
            )]
        );
        assert!(decide_at(&state, &config(false), week - 1800)
            .actions
            .iter()
            .flatten()
            .all(|a| !matches!(a, PlannedAction::Create { .. })));
    }

    #[test]
    fn with_a_target_up_learns_the_pool_from_the_recorded_demand_and_says_so() {
        use crate::stack::Target;
        let config = PolicyConfig {
            max_instances: 50,
            target: Some(Target {
                wait: std::time::Duration::from_secs(60),
                percentile: 95.0,
            }),
            ..PolicyConfig::default()
        };
        // Cold: the conservative start, said so.
        let mut state = one_vm(Some(80));
        let d = decide_at(&state, &config, 100);
        assert!(d.reason.contains("learning the pool"), "{}", d.reason);
        // Four days of pipelines of 12 jobs every twelve hours, recorded as up records them.
        // The gap is longer than the longest time a burst's VMs are kept (8 h), so only a
        // pool serves them (bursts two hours apart are met as well by keeping the VMs).
        for k in 0..8 {
            let at = k * 43_200;
            for (pending, running) in [(12, 0), (0, 12), (0, 0)] {
                let observed = crate::cloud::Observed {
                    demand: Some(Demand::Known { pending, running }),
                    ..Default::default()
                };
                let t0 = at
                    + if running > 0 {
                        30
                    } else if pending > 0 {
                        0
                    } else {
                        600
                    };
                crate::state::facts::refresh(&mut state, &observed, t(t0));
            }
        }
        let d = decide_at(&state, &config, 4 * 86_400 + 100);
        assert!(d.reason.contains("pool learned from"), "{}", d.reason);
        // The pool is made for the learned level (the idle VM is counted in it), and the
        // reason says what was learned.
        let made: Vec<(u32, Why)> = d
            .actions
            .iter()
            .flatten()
            .filter_map(|a| match a {
                PlannedAction::Create { count, why } => Some((*count, *why)),
                _ => None,
            })
            .collect();
        let [(count, why)] = made[..] else {
            panic!("{d:?}")
        };
        let Why::PoolLearned {
            want,
            have,
            level,
            largest,
            ..
        } = why
        else {
            panic!("{why:?}")
        };
        assert_eq!((want, have, largest), (level, 1, 12));
        assert!(level >= 4 && count == want - have, "{why:?}");
        assert!(
            why.to_string()
                .starts_with(&format!("pool {want}: the level learned")),
            "{why}"
        );
    }

    #[test]
    fn the_decision_says_what_was_measured_and_warns_when_resumes_are_no_faster() {
        let config = PolicyConfig {
            stopped_count: 1,
            ..PolicyConfig::default()
        };
        let mut state = one_vm(Some(80));
        for _ in 0..3 {
            state.timings.record(Phase::Boot, 60, 62);
        }
        let d = decide_at(&state, &config, 100);
        assert!(
            d.reason.contains("boot measured 61 s (median of 3)"),
            "{}",
            d.reason
        );
        assert!(!d.reason.contains("warning"), "{}", d.reason);
        for _ in 0..3 {
            state.timings.record(Phase::Resume, 70, 72);
        }
        let d = decide_at(&state, &config, 100);
        assert!(d.reason.contains("resume measured 71 s"), "{}", d.reason);
        assert!(
            d.reason.contains("stopped pool saves no wait"),
            "{}",
            d.reason
        );
        // No pool (stopped_max 0, as on clouds that cannot stop): no warning.
        let no_pool = PolicyConfig {
            stopped_max: Some(0),
            ..PolicyConfig::default()
        };
        assert!(!decide_at(&state, &no_pool, 100).reason.contains("warning"));
    }
}
