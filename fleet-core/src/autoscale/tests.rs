//! The policy's decisions on hand-made fleets, and its invariants as property tests.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::ci::Demand;
use crate::stack::{BillingUnit, Effective, PolicyConfig, Settings};

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
}

fn vm(state: VmState, since: i64, jobs_run: u64) -> VmView {
    VmView {
        state,
        since: t(since),
        billed_since: match state {
            VmState::Stopped | VmState::Stopping => None,
            _ => Some(t(since.min(0) - 600)),
        },
        last_active: t(since),
        jobs_run,
        running: u32::from(matches!(state, VmState::Busy | VmState::Draining)),
    }
}

fn eff(f: impl FnOnce(&mut PolicyConfig)) -> Effective {
    let mut c = PolicyConfig {
        max_instances: 20,
        ..PolicyConfig::default()
    };
    f(&mut c);
    Settings::from_config(&c).unwrap().base().clone()
}

fn known(pending: u32, running: u32) -> Demand {
    Demand::Known { pending, running }
}

#[test]
fn a_burst_resumes_stopped_vms_first_and_counts_what_is_on_its_way() {
    let e = eff(|_| {});
    let fleet = [
        vm(VmState::Booting, -10, 0),
        vm(VmState::Stopped, -100, 3),
        vm(VmState::Stopped, -50, 3),
    ];
    // Five jobs wait; one VM is booting already: start both stopped VMs, create two.
    let s = decide(&e, &known(5, 0), &fleet, t(0));
    assert_eq!(
        s.actions,
        vec![
            FleetAction::Start {
                vm: 2,
                why: Why::Queue {
                    pending: 5,
                    covered: 1,
                    late: 0
                }
            },
            FleetAction::Start {
                vm: 1,
                why: Why::Queue {
                    pending: 5,
                    covered: 1,
                    late: 0
                }
            },
            FleetAction::Create {
                count: 2,
                why: Why::Queue {
                    pending: 5,
                    covered: 1,
                    late: 0
                }
            },
        ]
    );
    // Asked again while they come up, it adds nothing: the burst is not served twice.
    let coming = [
        vm(VmState::Booting, -10, 0),
        vm(VmState::Starting, 0, 3),
        vm(VmState::Starting, 0, 3),
        vm(VmState::Booting, 0, 0),
        vm(VmState::Booting, 0, 0),
    ];
    assert!(decide(&e, &known(5, 0), &coming, t(1)).actions.is_empty());
}

#[test]
fn a_vm_booting_for_over_twice_the_boot_time_no_longer_covers_the_queue() {
    let e = eff(|c| {
        c.boot_time = Duration::from_secs(90);
        c.resume_time = Duration::from_secs(30);
    });
    // Two jobs wait for a VM booting for 170 s and one starting for 80 s: on time.
    let fleet = [vm(VmState::Booting, -170, 0), vm(VmState::Starting, -80, 1)];
    assert!(decide(&e, &known(2, 0), &fleet, t(0)).actions.is_empty());
    // Ten seconds later both are late (over 180 s and over 90 s): two new VMs, and the
    // reason says why the late ones were not counted.
    let s = decide(&e, &known(2, 0), &fleet, t(11));
    let why = Why::Queue {
        pending: 2,
        covered: 0,
        late: 2,
    };
    assert_eq!(s.actions, vec![FleetAction::Create { count: 2, why }]);
    assert!(why.to_string().contains("2 VMs not counted"), "{why}");
    // One of each is written in the singular.
    let one = Why::Queue {
        pending: 1,
        covered: 1,
        late: 1,
    };
    assert!(
        one.to_string()
            .starts_with("1 job waiting, 1 slot free or on their way (1 VM not counted"),
        "{one}"
    );
    // A slow cloud, once measured, is expected to be slow: nothing is late.
    let mut measured = Timings::default();
    for _ in 0..3 {
        measured.record(Phase::Boot, 170, 175);
        measured.record(Phase::Resume, 80, 85);
    }
    let learned = e.clone().learn(&measured);
    assert_eq!(learned.boot_time, Duration::from_secs(172));
    assert!(decide(&learned, &known(2, 0), &fleet, t(11))
        .actions
        .is_empty());
    // Late VMs still count against max_growth_rate and max_instances.
    let capped = eff(|c| c.max_growth_rate = 2);
    assert!(decide(&capped, &known(2, 0), &fleet, t(11))
        .actions
        .is_empty());
}

#[test]
fn idle_vms_are_stopped_after_idle_time_and_retired_when_the_pool_is_full() {
    let e = eff(|c| {
        c.idle_time = Duration::from_secs(60);
        c.stopped_max = Some(1);
    });
    let fleet = [
        vm(VmState::Idle, -120, 1),
        vm(VmState::Idle, -90, 1),
        vm(VmState::Idle, -30, 1),
    ];
    let s = decide(&e, &known(0, 0), &fleet, t(0));
    assert_eq!(
        s.actions,
        vec![
            FleetAction::Stop {
                vm: 1,
                why: Why::IdleStop { idle_s: 90 }
            },
            FleetAction::Retire {
                vm: 0,
                why: Why::IdleRetire { idle_s: 120 }
            },
        ]
    );
}

#[test]
fn unknown_demand_keeps_the_floor_and_never_scales_in() {
    let e = eff(|c| c.min_instances = 2);
    let fleet = [vm(VmState::Idle, -7200, 1), vm(VmState::Stopped, -7200, 1)];
    let unknown = Demand::Unknown { reason: "x".into() };
    let s = decide(&e, &unknown, &fleet, t(0));
    assert!(!s.may_scale_in);
    assert!(s
        .actions
        .iter()
        .all(|a| matches!(a, FleetAction::Create { .. } | FleetAction::Start { .. })));
    assert!(s.held.contains(&Why::DemandUnknown));
    assert_eq!(
        s.total_after, 2,
        "one VM started, none created, none removed"
    );
}

#[test]
fn hourly_billing_keeps_an_idle_vm_until_shortly_before_its_next_hour() {
    let e = eff(|c| {
        c.billing.per = BillingUnit::Hour;
        c.billing.margin = Duration::from_secs(180);
        c.stopped_max = Some(0);
    });
    let mut v = vm(VmState::Idle, -1200, 1);
    v.billed_since = Some(t(-1800)); // half an hour into its paid hour
    assert!(decide(&e, &known(0, 0), &[v], t(0)).actions.is_empty());
    v.billed_since = Some(t(-3500)); // 100 s before the next hour
    let s = decide(&e, &known(0, 0), &[v], t(0));
    assert!(matches!(s.actions[..], [FleetAction::Retire { vm: 0, .. }]));
}

#[test]
fn the_forecast_grows_the_pool_ahead_of_a_surge_and_keeps_it_through_it() {
    let e = eff(|c| {
        c.stopped_count = 1;
        c.stopped_time = Duration::from_secs(600);
        c.forecast = true;
    });
    // Last Monday at 9:00, twelve jobs at once; now it is Monday 8:30 and one VM runs.
    let monday_9 = t(0);
    let mut history = Forecast::default();
    history.observe(monday_9 - TimeDelta::weeks(1), 12);
    let now = monday_9 - TimeDelta::minutes(30);
    let e = e.with_forecast(&history, now);
    assert_eq!(e.expected_peak, 12);
    let fleet = [vm(VmState::Busy, -60, 1), vm(VmState::Stopped, -7200, 1)];
    let s = decide(&e, &known(0, 1), &fleet, now);
    // Twelve VMs wanted in all; the busy one will come back to the pool.
    let why = Why::PoolRefill {
        want: 12,
        have: 2,
        expected: 12,
    };
    assert_eq!(s.actions, vec![FleetAction::Create { count: 10, why }]);
    assert!(why.to_string().contains("forecast"), "{why}");
    // A stopped VM unused for longer than stopped_time is kept while the forecast wants
    // it, and retired once it does not (off, here).
    assert!(decide(&e, &known(0, 1), &fleet, now)
        .actions
        .iter()
        .all(|a| !matches!(a, FleetAction::Retire { .. })));
    let two_stopped = [
        fleet[0],
        vm(VmState::Stopped, -7200, 1),
        vm(VmState::Stopped, -7300, 1),
    ];
    let off = eff(|c| {
        c.stopped_count = 1;
        c.stopped_time = Duration::from_secs(600);
    })
    .with_forecast(&history, now);
    assert_eq!(off.expected_peak, 0, "forecast off: history ignored");
    assert!(matches!(
        decide(&off, &known(0, 1), &two_stopped, now).actions[..],
        [FleetAction::Retire { vm: 2, .. }]
    ));
}

#[test]
fn each_step_reports_what_it_found() {
    let e = eff(|c| c.stopped_count = 4);
    // Six jobs wait; one VM boots, one is stopped, one is busy.
    let fleet = [
        vm(VmState::Booting, -10, 0),
        vm(VmState::Stopped, -100, 3),
        vm(VmState::Busy, -50, 3),
    ];
    let s = decide(&e, &known(6, 1), &fleet, t(0));
    assert_eq!(
        s.steps.stock,
        Stock {
            free_slots: 0,
            incoming_slots: 1,
            on_the_way: 1,
            late: 0,
            running: 2,
            pending: 6,
            in_use: 1,
        }
    );
    assert_eq!(
        s.steps.grow,
        Grow {
            queue_short: 5,
            spare_want: 0,
            started: 1,
            created: 4,
        }
    );
    // The queue is short: the pool waits (its seven VMs will come back to it anyway).
    assert_eq!(
        s.steps.pool,
        Pool {
            want: 4,
            have: 7,
            created: 0
        }
    );
    assert_eq!((s.steps.stopped, s.steps.retired, s.total_after), (0, 0, 7));
}

#[test]
fn the_stopped_pool_is_refilled_and_fresh_vms_are_parked() {
    let e = eff(|c| c.stopped_count = 3);
    let fleet = [vm(VmState::Stopped, -10, 2)];
    let s = decide(&e, &known(0, 0), &fleet, t(0));
    assert_eq!(
        s.actions,
        vec![FleetAction::Create {
            count: 2,
            why: Why::PoolRefill {
                want: 3,
                have: 1,
                expected: 0
            }
        }]
    );
    // Once booted and unused, they are stopped at once (their minimum bill is paid).
    let mut fresh = vm(VmState::Idle, -5, 0);
    fresh.billed_since = Some(t(-95));
    let stopped = vm(VmState::Stopped, -20, 1);
    let s = decide(&e, &known(0, 0), &[fleet[0], fresh, stopped], t(0));
    assert_eq!(
        s.actions,
        vec![FleetAction::Stop {
            vm: 1,
            why: Why::Park
        }]
    );
}

#[test]
fn stopped_vms_above_the_floor_are_retired_when_unused_for_stopped_time() {
    let e = eff(|c| {
        c.stopped_count = 1;
        c.stopped_time = Duration::from_secs(1800);
    });
    let fleet = [
        vm(VmState::Stopped, -4000, 1),
        vm(VmState::Stopped, -100, 1),
        vm(VmState::Stopped, -2000, 1),
    ];
    let s = decide(&e, &known(0, 0), &fleet, t(0));
    assert_eq!(
        s.actions,
        vec![
            FleetAction::Retire {
                vm: 2,
                why: Why::StoppedUnused { unused_s: 2000 }
            },
            FleetAction::Retire {
                vm: 0,
                why: Why::StoppedUnused { unused_s: 4000 }
            },
        ]
    );
}

#[test]
fn max_growth_rate_and_max_instances_hold_growth_and_say_so() {
    let e = eff(|c| {
        c.max_instances = 3;
        c.max_growth_rate = 2;
    });
    let s = decide(&e, &known(10, 0), &[vm(VmState::Booting, 0, 0)], t(0));
    assert_eq!(s.created(), 1);
    assert!(matches!(s.held[..], [Why::GrowthLimited { rate: 2 }]));
    let e = eff(|c| c.max_instances = 3);
    let s = decide(&e, &known(10, 0), &[vm(VmState::Busy, 0, 1)], t(0));
    assert_eq!(s.created(), 2);
    assert!(matches!(s.held[..], [Why::AtMax { max: 3, short: 8 }]));
}

fn state_strategy() -> impl Strategy<Value = VmState> {
    prop_oneof![
        Just(VmState::Booting),
        Just(VmState::Idle),
        Just(VmState::Busy),
        Just(VmState::Draining),
        Just(VmState::Stopping),
        Just(VmState::Stopped),
        Just(VmState::Starting),
    ]
}

fn vm_strategy() -> impl Strategy<Value = VmView> {
    (
        state_strategy(),
        -20_000i64..0,
        -20_000i64..0,
        0u64..6,
        1u32..3,
    )
        .prop_map(|(state, since, active, jobs_run, running)| {
            let busy = matches!(state, VmState::Busy | VmState::Draining);
            VmView {
                state,
                since: t(since),
                billed_since: (!matches!(state, VmState::Stopped | VmState::Stopping))
                    .then(|| t(since.min(active) - 60)),
                last_active: t(active),
                jobs_run: if busy { jobs_run + 1 } else { jobs_run },
                running: if busy { running } else { 0 },
            }
        })
}

fn config_strategy() -> impl Strategy<Value = PolicyConfig> {
    (
        0u32..6,
        0u32..30,
        1u32..4,
        0u32..5,
        0u64..600,
        0u32..8,
        0u32..4,
        0u32..4,
        any::<bool>(),
    )
        .prop_map(
            |(min, extra, cap, idle, idle_t, stopped, growth, max_use, hourly)| {
                let max = min + extra;
                let mut c = PolicyConfig {
                    min_instances: min,
                    max_instances: max,
                    capacity_per_instance: cap,
                    idle_count: idle,
                    idle_time: Duration::from_secs(idle_t),
                    stopped_count: stopped.min(max),
                    max_growth_rate: growth,
                    max_use_count: max_use,
                    scale_factor: f64::from(idle) / 4.0,
                    ..PolicyConfig::default()
                };
                if hourly {
                    c.billing.per = BillingUnit::Hour;
                }
                c
            },
        )
}

/// Anything the learner may conclude: a cold start, or any level, retention and tier.
fn learned_strategy() -> impl Strategy<Value = Option<tune::Learned>> {
    prop_oneof![
        Just(None),
        Just(Some(tune::Learned::Cold { covers_s: 100 })),
        (0u32..120, 0u32..200, 1u64..48, any::<bool>()).prop_map(
            |(floor, level, keep, running)| {
                Some(tune::Learned::Tuned(tune::Choice {
                    floor,
                    keep: Duration::from_secs(keep * 600),
                    profile: tune::Profile::Daily,
                    running,
                    level: level.max(floor),
                    missed: 0.01,
                    jobs: 100,
                    largest: level,
                    days: 3.0,
                }))
            }
        ),
    ]
}

proptest! {
    #[test]
    fn the_policy_keeps_its_invariants(
        config in config_strategy(),
        fleet in proptest::collection::vec(vm_strategy(), 0..40),
        pending in 0u32..60,
        running in 0u32..60,
        known_demand in any::<bool>(),
        at in 0i64..7200,
        expected_peak in prop_oneof![Just(0u32), 0u32..120],
        learned in learned_strategy(),
    ) {
        // Forecast on or off, with any expected demand; any time for late boots; and
        // whatever the target's learning concluded.
        let mut e = Settings::from_config(&config).unwrap().base().clone();
        e.expected_peak = expected_peak;
        if let Some(l) = learned {
            e = tune::apply(e, &l);
        }
        let demand = if known_demand {
            Demand::Known { pending, running }
        } else {
            Demand::Unknown { reason: "no answer".into() }
        };
        let now = t(0) + TimeDelta::seconds(at);
        let s = decide(&e, &demand, &fleet, now);
        let n = fleet.len() as u32;
        // Never more than max_instances (a fleet already above it only shrinks).
        prop_assert!(s.total_after <= e.max_instances.max(n));
        if n >= e.max_instances {
            prop_assert_eq!(s.created(), 0);
        }
        let mut touched = std::collections::BTreeSet::new();
        for a in &s.actions {
            match *a {
                FleetAction::Create { count, .. } => prop_assert!(count > 0),
                FleetAction::Start { vm, .. } => {
                    prop_assert_eq!(fleet[vm].state, VmState::Stopped);
                    prop_assert!(touched.insert(vm));
                }
                FleetAction::Stop { vm, .. } | FleetAction::Retire { vm, .. } => {
                    // Never a VM with a job, nor one booting, starting or stopping.
                    let v = &fleet[vm];
                    prop_assert_eq!(v.running, 0);
                    prop_assert!(matches!(v.state, VmState::Idle | VmState::Stopped), "{:?}", v.state);
                    if matches!(a, FleetAction::Stop { .. }) {
                        prop_assert_eq!(v.state, VmState::Idle);
                    }
                    // Never on unknown demand.
                    prop_assert!(demand.is_known());
                    prop_assert!(touched.insert(vm));
                }
            }
        }
    }
}
