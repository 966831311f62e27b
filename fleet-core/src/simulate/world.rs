//! The modelled cloud and GitLab queue, advanced from event to event, and the drivers that
//! put a policy in charge of it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use chrono::{DateTime, Utc};

use super::{percentile, Metrics, Model, Trace};
use crate::autoscale::record::DemandRecord;
use crate::autoscale::{self, tune, FleetAction, Forecast, Phase, Timings, VmState, VmView};
use crate::ci::Demand;
use crate::stack::Effective;
use crate::stack::Settings;

/// A modelled VM.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vm {
    pub state: VmState,
    /// When it entered `state`.
    pub since: i64,
    /// Start of the running bill (create or start).
    pub billed_since: i64,
    pub last_active: i64,
    pub jobs_run: u64,
    pub running: u32,
}

/// What a driver asks of the cloud; `vm` indexes [`World::alive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    Create(u32),
    Start(usize),
    Stop(usize),
    Retire(usize),
}

/// The simulated world a driver looks at.
pub(crate) struct World {
    pub vms: Vec<Vm>,
    /// Indices of VMs that exist (not retired).
    pub alive: Vec<usize>,
    /// Waiting jobs (indices into the trace).
    pub queue: VecDeque<usize>,
    pub capacity: u32,
}

impl World {
    pub fn busy_slots(&self) -> u32 {
        self.alive.iter().map(|&i| self.vms[i].running).sum()
    }
}

/// A policy in charge of the simulated cloud.
pub(crate) trait Driver {
    /// Decides at `now`; `event` is true when a job arrived or ended or a VM became ready.
    fn decide(&mut self, w: &World, now: i64, event: bool, out: &mut Vec<Act>);
    /// When to decide next without an event.
    fn next_tick(&self, w: &World, now: i64) -> i64;
    /// Whether events (job queued or ended, VM ready) trigger a decision; if not, they
    /// only bring the next tick forward to [`Driver::next_tick`].
    fn reacts_to_events(&self) -> bool {
        true
    }
    /// Whether a VM may take a job (docker-machine and taskscaler do not give more jobs to a
    /// VM that reached its use limit).
    fn accepts(&self, vm: &Vm) -> bool {
        let _ = vm;
        true
    }
    /// Runs before the first job arrives (a fixed fleet boots ahead of it).
    fn setup(&mut self, first_arrival: i64, model: &Model, out: &mut Vec<Act>) -> i64 {
        let _ = (model, out);
        first_arrival
    }
}

/// The fleet over a replay: queue length and VMs by state, sampled at every event (a
/// sample holds until the next). Plain values: the pictures are drawn by fleet-cli.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Samples in time order.
    pub samples: Vec<Sample>,
}

/// One timeline sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Unix seconds.
    pub t: i64,
    /// Jobs waiting.
    pub queue: u32,
    /// VMs booting or starting.
    pub booting: u32,
    /// VMs running a job.
    pub busy: u32,
    /// VMs running idle.
    pub idle: u32,
    /// VMs stopping or stopped.
    pub stopped: u32,
}

#[derive(Default)]
struct Bill {
    run_s: u64,
    billed_run_s: u64,
    stopped_s: u64,
    launches: u64,
    starts: u64,
    running_now: u64,
    peak: u64,
}

impl Bill {
    fn close_run(&mut self, vm: &Vm, now: i64, min_s: u32) {
        let seg = (now - vm.billed_since).max(0) as u64;
        self.run_s += seg;
        self.billed_run_s += seg.max(u64::from(min_s));
        self.running_now -= 1;
    }
    fn open_run(&mut self) {
        self.running_now += 1;
        self.peak = self.peak.max(self.running_now);
    }
}

/// Replays `trace` with `driver` in charge.
pub(crate) fn run<D: Driver>(
    trace: &Trace,
    model: &Model,
    mut driver: D,
    mut timeline: Option<&mut Timeline>,
) -> Metrics {
    let jobs = &trace.jobs;
    let cap = model.capacity.max(1);
    let mut w = World {
        vms: Vec::new(),
        alive: Vec::new(),
        queue: VecDeque::new(),
        capacity: cap,
    };
    let mut bill = Bill::default();
    let mut waits: Vec<u32> = Vec::with_capacity(jobs.len());
    // (time, vm) when a job on that VM ends; (time, vm) when a VM's transition completes.
    let mut ends: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    let mut transitions: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    let mut acts = Vec::new();
    let first = jobs.first().map_or(0, |j| j.queued_at);
    let mut now = driver.setup(first, model, &mut acts);
    apply(&mut w, &mut bill, &mut transitions, model, now, &mut acts);
    let mut next_job = 0usize;
    let mut tick = driver.next_tick(&w, now);
    let mut done = 0usize;
    loop {
        // Next event.
        let mut t = i64::MAX;
        if next_job < jobs.len() {
            t = t.min(jobs[next_job].queued_at);
        }
        if let Some(Reverse((e, _))) = ends.peek() {
            t = t.min(*e);
        }
        if let Some(Reverse((e, _))) = transitions.peek() {
            t = t.min(*e);
        }
        if done == jobs.len() {
            break;
        }
        t = t.min(tick.max(now));
        if t == i64::MAX {
            // Nothing will ever run the waiting jobs (a policy that never adds VMs): they
            // count as waiting until now.
            for &j in &w.queue {
                waits.push((now - jobs[j].queued_at).max(0) as u32);
            }
            break;
        }
        now = t;
        let mut event = false;
        while let Some(&Reverse((e, i))) = ends.peek() {
            if e > now {
                break;
            }
            ends.pop();
            let v = &mut w.vms[i];
            v.running -= 1;
            v.last_active = now;
            if v.running == 0 && v.state == VmState::Busy {
                v.state = VmState::Idle;
                v.since = now;
            }
            done += 1;
            event = true;
        }
        while let Some(&Reverse((e, i))) = transitions.peek() {
            if e > now {
                break;
            }
            transitions.pop();
            let v = &mut w.vms[i];
            match v.state {
                VmState::Booting | VmState::Starting => {
                    v.state = VmState::Idle;
                    v.since = now;
                    v.last_active = now;
                }
                VmState::Stopping => {
                    v.state = VmState::Stopped;
                }
                _ => {}
            }
            event = true;
        }
        while next_job < jobs.len() && jobs[next_job].queued_at <= now {
            w.queue.push_back(next_job);
            next_job += 1;
            event = true;
        }
        assign(&mut w, &driver, jobs, now, &mut ends, &mut waits);
        if event && !driver.reacts_to_events() {
            tick = tick.min(driver.next_tick(&w, now));
        }
        if (event && driver.reacts_to_events()) || now >= tick {
            acts.clear();
            driver.decide(&w, now, event, &mut acts);
            apply(&mut w, &mut bill, &mut transitions, model, now, &mut acts);
            tick = driver.next_tick(&w, now);
        }
        if let Some(tl) = timeline.as_deref_mut() {
            tl.samples.push(sample(&w, now));
        }
    }
    // The run ends when the last job has ended: close every bill there.
    for &i in &w.alive {
        let v = w.vms[i];
        match v.state {
            VmState::Stopped | VmState::Stopping => bill.stopped_s += (now - v.since) as u64,
            _ => bill.close_run(&v, now, model.billing_min_s),
        }
    }
    waits.sort_unstable();
    let hours = |s: u64| s as f64 / 3600.0;
    Metrics {
        jobs: jobs.len() as u64,
        wait_p50_s: percentile(&waits, 0.50),
        wait_p95_s: percentile(&waits, 0.95),
        wait_p99_s: percentile(&waits, 0.99),
        wait_max_s: waits.last().map_or(0.0, |&w| f64::from(w)),
        cost: hours(bill.billed_run_s) * model.price_running
            + hours(bill.stopped_s) * model.price_stopped,
        vm_hours: hours(bill.run_s),
        stopped_hours: hours(bill.stopped_s),
        launches: bill.launches,
        starts: bill.starts,
        peak_instances: bill.peak,
    }
}

fn sample(w: &World, t: i64) -> Sample {
    let mut s = Sample {
        t,
        queue: w.queue.len() as u32,
        ..Sample::default()
    };
    for &i in &w.alive {
        match w.vms[i].state {
            VmState::Booting | VmState::Starting => s.booting += 1,
            VmState::Busy | VmState::Draining => s.busy += 1,
            VmState::Idle => s.idle += 1,
            VmState::Stopping | VmState::Stopped => s.stopped += 1,
        }
    }
    s
}

/// Hands waiting jobs to free VM slots, first in first out, each to the most recently
/// active free VM (the others age out).
fn assign<D: Driver>(
    w: &mut World,
    driver: &D,
    jobs: &[super::Job],
    now: i64,
    ends: &mut BinaryHeap<Reverse<(i64, usize)>>,
    waits: &mut Vec<u32>,
) {
    while !w.queue.is_empty() {
        let best = w
            .alive
            .iter()
            .copied()
            .filter(|&i| {
                let v = &w.vms[i];
                matches!(v.state, VmState::Idle | VmState::Busy)
                    && v.running < w.capacity
                    && driver.accepts(v)
            })
            .max_by_key(|&i| w.vms[i].last_active);
        let Some(i) = best else { break };
        let j = w.queue.pop_front().expect("queue is not empty");
        let v = &mut w.vms[i];
        v.running += 1;
        v.jobs_run += 1;
        v.state = VmState::Busy;
        v.since = now;
        waits.push((now - jobs[j].queued_at).max(0) as u32);
        ends.push(Reverse((now + i64::from(jobs[j].duration_s), i)));
    }
}

fn apply(
    w: &mut World,
    bill: &mut Bill,
    transitions: &mut BinaryHeap<Reverse<(i64, usize)>>,
    model: &Model,
    now: i64,
    acts: &mut [Act],
) {
    // Retires swap-remove from `alive`: do them last, highest index first.
    let mut retire: Vec<usize> = Vec::new();
    for &a in acts.iter() {
        match a {
            Act::Create(n) => {
                for _ in 0..n {
                    let i = w.vms.len();
                    w.vms.push(Vm {
                        state: VmState::Booting,
                        since: now,
                        billed_since: now,
                        last_active: now,
                        jobs_run: 0,
                        running: 0,
                    });
                    w.alive.push(i);
                    bill.launches += 1;
                    bill.open_run();
                    transitions.push(Reverse((now + i64::from(model.boot_s), i)));
                }
            }
            Act::Start(k) => {
                let i = w.alive[k];
                let v = &mut w.vms[i];
                if v.state != VmState::Stopped {
                    continue;
                }
                bill.stopped_s += (now - v.since) as u64;
                v.state = VmState::Starting;
                v.since = now;
                v.billed_since = now;
                bill.starts += 1;
                bill.open_run();
                transitions.push(Reverse((now + i64::from(model.resume_s), i)));
            }
            Act::Stop(k) => {
                let i = w.alive[k];
                let v = w.vms[i];
                if v.state != VmState::Idle || v.running > 0 {
                    continue;
                }
                bill.close_run(&v, now, model.billing_min_s);
                let v = &mut w.vms[i];
                v.state = VmState::Stopping;
                v.since = now;
                transitions.push(Reverse((now + i64::from(model.stop_s), i)));
            }
            Act::Retire(k) => retire.push(k),
        }
    }
    retire.sort_unstable_by(|a, b| b.cmp(a));
    retire.dedup();
    for k in retire {
        let i = w.alive[k];
        let v = w.vms[i];
        match v.state {
            VmState::Idle if v.running == 0 => bill.close_run(&v, now, model.billing_min_s),
            VmState::Stopped => bill.stopped_s += (now - v.since) as u64,
            // Busy, booting, starting and stopping VMs are never retired.
            _ => continue,
        }
        w.alive.swap_remove(k);
    }
}

/// Ours: [`autoscale::decide`] on every event and every `fleet_tick_s`.
pub(crate) struct FleetDriver<'a> {
    settings: &'a Settings,
    tick_s: i64,
    cached: Option<(i64, Effective)>,
    views: Vec<VmView>,
    /// Boots and resumes measured as `up` measures them (here exactly), so the policy's
    /// expectations follow the modelled cloud as they follow a real one.
    timings: Timings,
    /// Each VM's state at the last decision, to see boots and resumes end.
    seen: Vec<VmState>,
    /// Demand by hour of the week, recorded as `up` records it.
    forecast: Forecast,
    /// The demand record (`policy.target`), written as `up` writes it: from the demand
    /// the policy is shown, at each decision.
    record: DemandRecord,
    /// What was learned from it, per hour (see [`tune::Cache`]).
    learned: tune::Cache,
}

impl<'a> FleetDriver<'a> {
    pub fn new(settings: &'a Settings) -> Self {
        FleetDriver {
            settings,
            tick_s: 10,
            cached: None,
            views: Vec::new(),
            timings: Timings::default(),
            seen: Vec::new(),
            forecast: Forecast::default(),
            record: DemandRecord::default(),
            learned: tune::Cache::default(),
        }
    }

    /// Starts from a demand record (history seeded before the replay, as `up` would find
    /// one in state).
    pub fn with_record(mut self, record: DemandRecord) -> Self {
        self.record = record;
        self
    }

    /// Records the boots and resumes that ended since the last decision. Returns whether
    /// anything was measured.
    fn measure(&mut self, w: &World) -> bool {
        self.seen.resize(w.vms.len(), VmState::Booting);
        let mut any = false;
        for &i in &w.alive {
            let v = &w.vms[i];
            let phase = match self.seen[i] {
                VmState::Booting => Phase::Boot,
                VmState::Starting => Phase::Resume,
                _ => {
                    self.seen[i] = v.state;
                    continue;
                }
            };
            if !matches!(v.state, VmState::Booting | VmState::Starting) {
                let took = (v.since - v.billed_since).max(0) as u64;
                any |= self.timings.record(phase, took, took);
            }
            self.seen[i] = v.state;
        }
        any
    }
}

fn at(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

impl Driver for FleetDriver<'_> {
    fn setup(&mut self, first_arrival: i64, model: &Model, _out: &mut Vec<Act>) -> i64 {
        self.tick_s = i64::from(model.fleet_tick_s.max(1));
        if self.record.is_empty() {
            first_arrival
        } else {
            // With history, the fleet was running before the replay starts (the daemon
            // with a seeded record): it decides from two hours ahead of the first job, as
            // its timer would, so the learned pool is there when the jobs come.
            first_arrival - 7200
        }
    }

    fn decide(&mut self, w: &World, now: i64, _event: bool, out: &mut Vec<Act>) {
        let measured = self.measure(w);
        let (pending, running) = (w.queue.len() as u32, w.busy_slots());
        self.forecast.observe(at(now), pending + running);
        self.record.observe(at(now), pending, running);
        let minute = now.div_euclid(60);
        let e = match &mut self.cached {
            Some((m, e)) if *m == minute || !self.settings.has_periods() => {
                if measured {
                    *e = e.clone().learn(&self.timings);
                }
                &*e
            }
            _ => {
                self.cached = Some((minute, self.settings.at(at(now)).learn(&self.timings)));
                &self.cached.as_ref().expect("just set").1
            }
        };
        let mut e = e.clone().with_forecast(&self.forecast, at(now));
        if let Some(l) = self.learned.learned(&e, &self.record, at(now)) {
            e = tune::apply(e, &l);
        }
        let e = &e;
        self.views.clear();
        for &i in &w.alive {
            let v = &w.vms[i];
            self.views.push(VmView {
                state: v.state,
                since: at(v.since),
                billed_since: match v.state {
                    VmState::Stopped | VmState::Stopping => None,
                    _ => Some(at(v.billed_since)),
                },
                last_active: at(v.last_active),
                jobs_run: v.jobs_run,
                running: v.running,
            });
        }
        let demand = Demand::Known { pending, running };
        let s = autoscale::decide(e, &demand, &self.views, at(now));
        for a in s.actions {
            out.push(match a {
                FleetAction::Create { count, .. } => Act::Create(count),
                FleetAction::Start { vm, .. } => Act::Start(vm),
                FleetAction::Stop { vm, .. } => Act::Stop(vm),
                FleetAction::Retire { vm, .. } => Act::Retire(vm),
            });
        }
    }

    fn next_tick(&self, w: &World, now: i64) -> i64 {
        // Nothing ages while the fleet is empty and nothing waits; only the forecast
        // changes, at the hour.
        if w.alive.is_empty() && w.queue.is_empty() {
            let base = self.settings.base();
            return if base.forecast || base.target.is_some() {
                (now.div_euclid(3600) + 1) * 3600
            } else {
                i64::MAX
            };
        }
        now + self.tick_s
    }
}

/// `n` VMs, booted ahead of the first job and never removed.
pub(crate) struct Fixed(pub u32);

impl Driver for Fixed {
    fn setup(&mut self, first_arrival: i64, model: &Model, out: &mut Vec<Act>) -> i64 {
        out.push(Act::Create(self.0));
        first_arrival - i64::from(model.boot_s)
    }
    fn decide(&mut self, _w: &World, _now: i64, _event: bool, _out: &mut Vec<Act>) {}
    fn next_tick(&self, _w: &World, _now: i64) -> i64 {
        i64::MAX
    }
}
