//! The one place where what was observed becomes state: lifecycle, address and type facts
//! from the cloud, runner facts from the CI system, the boots and resumes those facts show
//! ended (measured into [`State::timings`]), demand for the forecast, and the adopts and
//! forgets a plan settles. The engine refreshes a view of state once per plan, and apply
//! writes the same facts in its first state write, so what the policy saw is what is
//! recorded.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{InstanceRecord, Lifecycle, ResourceRecord, State, Warming};
use crate::autoscale::Phase;
use crate::ci::{Demand, ObservedRunner};
use crate::cloud::{Observed, ObservedInstance};
use crate::plan::{Action, Change};
use crate::resource::resource_key;

/// Updates records with lifecycle facts the cloud reported and the runner facts the CI
/// system reported, measures the boots and resumes they show ended, and records the demand
/// for the forecast (not a plan change: nothing is decided from it). Returns whether
/// anything changed.
pub fn refresh(state: &mut State, observed: &Observed, now: DateTime<Utc>) -> bool {
    let by_id: HashMap<&str, &ObservedInstance> = observed
        .instances
        .iter()
        .map(|o| (o.cloud_id.as_str(), o))
        .collect();
    let mut changed = false;
    for rec in state.instances.values_mut() {
        let Some(o) = rec.cloud_id.as_deref().and_then(|id| by_id.get(id)) else {
            continue;
        };
        if rec.lifecycle != o.lifecycle
            || rec.address != o.address
            || rec.instance_type != o.instance_type
        {
            rec.lifecycle = o.lifecycle;
            rec.address = o.address.clone();
            rec.instance_type = o.instance_type.clone();
            changed = true;
        }
    }
    if let Some(rs) = &observed.runners {
        changed |= refresh_runner_facts(state, rs, now);
    }
    changed |= measure(state, observed, now);
    if let Some(Demand::Known { pending, running }) = &observed.demand {
        changed |= state.forecast.observe(now, pending + running);
        changed |= state.demand.observe(now, *pending, *running);
    }
    changed
}

/// Copies runner facts onto the records that name the runners. Returns whether anything
/// changed. A runner that went from busy to idle marks the end of a job at `now`.
pub(crate) fn refresh_runner_facts(
    state: &mut State,
    runners: &[ObservedRunner],
    now: DateTime<Utc>,
) -> bool {
    let by_id: BTreeMap<u64, &ObservedRunner> = runners.iter().map(|r| (r.id, r)).collect();
    let mut changed = false;
    for rec in state.instances.values_mut() {
        let Some(r) = rec.jobs.runner_id.and_then(|id| by_id.get(&id)) else {
            continue;
        };
        changed |= apply_facts(rec, r, now);
    }
    changed
}

fn apply_facts(rec: &mut InstanceRecord, r: &ObservedRunner, now: DateTime<Utc>) -> bool {
    let before = rec.jobs.clone();
    let j = &mut rec.jobs;
    if r.running_jobs > j.running {
        j.jobs_run += u64::from(r.running_jobs - j.running);
    }
    if r.running_jobs == 0 && j.running > 0 {
        j.last_job_end = Some(now);
    }
    j.running = r.running_jobs;
    if r.online && j.runner_online_at.is_none() {
        j.runner_online_at = Some(r.first_contact_at.unwrap_or(now).min(now));
    }
    *j != before
}

/// Measures the boots and resumes this observation saw end, into `state.timings`, and
/// notes for the others that they were still not ready at `now`. Called after the
/// observed lifecycles and runner facts were recorded. Returns whether anything changed.
///
/// Ready means: after a create, the VM's runner online (when the fleet registers one per
/// VM; its first contact dates it exactly when the CI system says), else the cloud
/// reporting it running; after a start, the cloud reporting it running (a runner's online
/// status outlives a stop, so it cannot date a resume).
fn measure(state: &mut State, observed: &Observed, now: DateTime<Utc>) -> bool {
    let seen: HashSet<&str> = observed
        .instances
        .iter()
        .map(|o| o.cloud_id.as_str())
        .collect();
    let first_contact: HashMap<u64, DateTime<Utc>> = observed
        .runners
        .iter()
        .flatten()
        .filter_map(|r| Some((r.id, r.first_contact_at?)))
        .collect();
    let mut changed = false;
    for rec in state.instances.values_mut() {
        let Some(w) = rec.warming else { continue };
        if !rec.cloud_id.as_deref().is_some_and(|id| seen.contains(id)) {
            continue;
        }
        let by_runner = w.phase == Phase::Boot && rec.jobs.runner_id.is_some();
        if by_runner && observed.runners.is_none() {
            // The runner's state was not observed this time.
            continue;
        }
        let ready = if by_runner {
            rec.jobs.runner_online_at.is_some()
        } else {
            rec.lifecycle == Lifecycle::Running
        };
        changed = true;
        if ready {
            let exact = rec
                .jobs
                .runner_id
                .and_then(|id| first_contact.get(&id))
                .filter(|&&t| by_runner && w.since <= t && t <= now);
            let (lo, hi) = match exact {
                Some(&t) => (t, t),
                None => (w.unready_at, now),
            };
            state.timings.record_span(w.phase, w.since, lo, hi);
            rec.warming = None;
        } else if matches!(
            rec.lifecycle,
            Lifecycle::Running | Lifecycle::Booting | Lifecycle::Starting | Lifecycle::Unknown
        ) {
            rec.warming = Some(Warming {
                unready_at: now,
                ..w
            });
        } else {
            // Stopped, stopping or gone before it was ready: nothing to measure.
            rec.warming = None;
        }
    }
    changed
}

/// Applies an adopt or forget to state.
pub fn settle(c: &Change, state: &mut State, now: DateTime<Utc>) {
    match (c.action, c.is_instance()) {
        (Action::Forget, true) => {
            let ours = state
                .instances
                .get(&c.name)
                .is_some_and(|r| r.cloud_id.is_none() || r.cloud_id == c.cloud_id);
            if ours {
                state.instances.remove(&c.name);
            }
        }
        (Action::Forget, false) => {
            state.resources.remove(&resource_key(&c.kind, &c.name));
        }
        (Action::Adopt, true) => {
            let Some(o) = &c.observed else { return };
            let previous = state.instances.remove(&o.name);
            let template_hash = match &previous {
                Some(r) => r.template_hash.clone(),
                None => c.instance.as_ref().and_then(|s| s.template_hash.clone()),
            };
            let mut record = InstanceRecord::from_observed(o, template_hash);
            if let Some(p) = previous {
                record.created_at = p.created_at;
                record.jobs = p.jobs;
                record.draining_since = p.draining_since;
                record.started_at = p.started_at.or(record.started_at);
            }
            state.instances.insert(o.name.clone(), record);
        }
        (Action::Adopt, false) => {
            let Some(o) = &c.observed_resource else {
                return;
            };
            let key = resource_key(&o.kind, &o.name);
            let depends_on = state
                .resources
                .get(&key)
                .map(|r| r.depends_on.clone())
                .unwrap_or_default();
            state.resources.insert(
                key,
                ResourceRecord {
                    kind: o.kind.clone(),
                    name: o.name.clone(),
                    cloud_id: Some(o.cloud_id.clone()),
                    spec_hash: o.spec_hash.clone(),
                    depends_on,
                    created_at: now,
                    pending: None,
                },
            );
        }
        _ => {}
    }
}
