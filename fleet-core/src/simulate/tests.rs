//! Baselines and the oracle pinned on tiny hand-checked traces.

use super::*;

fn trace(jobs: &[(i64, u32)]) -> Trace {
    Trace {
        jobs: jobs
            .iter()
            .map(|&(queued_at, duration_s)| Job {
                queued_at,
                duration_s,
            })
            .collect(),
    }
}

fn dm(idle_count: u32) -> PolicySpec {
    PolicySpec::DockerMachine(DockerMachine {
        idle_count,
        idle_time_s: 600,
        ..DockerMachine::default()
    })
}

#[test]
fn docker_machine_idle_count_zero_creates_on_demand_so_a_job_waits_the_boot() {
    let model = Model::default();
    let m = run(&trace(&[(1000, 60)]), &model, &dm(0), None);
    assert_eq!(m.wait_max_s, 90.0);
    assert_eq!(m.launches, 1);
    // A second job after the first ended, within IdleTime, reuses the idle machine.
    let m = run(&trace(&[(1000, 60), (1300, 60)]), &model, &dm(0), None);
    assert_eq!(m.launches, 1);
    assert_eq!(m.wait_p50_s, 0.0);
    assert_eq!(m.wait_max_s, 90.0);
}

#[test]
fn docker_machine_only_refills_the_idle_target_however_long_the_queue() {
    // IdleCount = 2 and five jobs at once: machines come two at a time, each pair created
    // when the previous pair was taken. Waits: 90, 90, 180, 180, 270.
    let model = Model::default();
    let jobs: Vec<(i64, u32)> = (0..5).map(|_| (1000, 3600)).collect();
    let m = run(&trace(&jobs), &model, &dm(2), None);
    assert_eq!(m.wait_p50_s, 180.0);
    assert_eq!(m.wait_max_s, 270.0);
    assert_eq!(
        m.launches, 7,
        "five for the jobs and two idle ones left at the end"
    );
}

#[test]
fn taskscaler_counts_idle_count_in_job_slots() {
    let model = Model {
        capacity: 4,
        ..Model::default()
    };
    let ts = |idle_count| {
        PolicySpec::Taskscaler(Taskscaler {
            idle_count,
            capacity_per_instance: 4,
            ..Taskscaler::default()
        })
    };
    // One waiting job plus 3 idle slots fit one 4-slot instance; plus 4 idle slots need two.
    let t = trace(&[(1000, 30)]);
    assert_eq!(run(&t, &model, &ts(3), None).launches, 1);
    assert_eq!(run(&t, &model, &ts(4), None).launches, 2);
    // It reacts on its update loop: 2 s after the job is seen waiting, then the boot.
    assert_eq!(run(&t, &model, &ts(3), None).wait_max_s, 92.0);
}

#[test]
fn oracle_reuses_a_vm_across_a_gap_shorter_than_a_boot() {
    let model = Model::default();
    // Gap of 40 s between the first job's end and the second's arrival (too short to stop
    // for 15 s and resume for 30 s): kept running, no second boot.
    let m = oracle(&trace(&[(0, 100), (140, 100)]), &model);
    assert_eq!(m.launches, 1);
    assert_eq!(m.starts, 0);
    assert_eq!(m.wait_max_s, 0.0);
    let secs = 90.0 + 100.0 + 40.0 + 100.0;
    assert!((m.cost - secs / 3600.0).abs() < 1e-9, "{}", m.cost);
    // A gap of 1000 s: stopping and resuming just in time is cheaper than idling or booting.
    let m = oracle(&trace(&[(0, 100), (1100, 100)]), &model);
    assert_eq!((m.launches, m.starts), (1, 1));
    // Two overlapping jobs need two VMs.
    let m = oracle(&trace(&[(0, 100), (10, 100)]), &model);
    assert_eq!(m.launches, 2);
    assert_eq!(m.peak_instances, 2);
}

#[test]
fn fixed_fleet_never_waits_when_large_enough_and_queues_when_not() {
    let model = Model::default();
    let jobs = trace(&[(1000, 100), (1000, 100), (1000, 100)]);
    let m = run(&jobs, &model, &PolicySpec::Fixed(3), None);
    assert_eq!(m.wait_max_s, 0.0);
    let m = run(&jobs, &model, &PolicySpec::Fixed(1), None);
    assert_eq!(m.wait_max_s, 200.0);
}

#[test]
fn fleet_resumes_stopped_vms_for_a_burst() {
    use crate::stack::PolicyConfig;
    let config = PolicyConfig {
        max_instances: 50,
        stopped_count: 3,
        ..PolicyConfig::default()
    };
    let s = crate::stack::Settings::from_config(&config).unwrap();
    let model = Model::default();
    // A lone job first (waits a boot; the pool is refilled meanwhile), then a burst of
    // three an hour later: served from the stopped pool in resume time.
    let jobs = trace(&[(0, 60), (3600, 60), (3600, 60), (3600, 60)]);
    let m = run(&jobs, &model, &PolicySpec::Fleet(Box::new(s)), None);
    assert_eq!(m.wait_max_s, 90.0);
    assert_eq!(m.wait_p50_s, 30.0);
    assert!(m.starts >= 3, "{m:?}");
}

#[test]
fn fleet_learns_a_slow_boot_and_stops_hedging_after_the_first_burst() {
    use crate::stack::PolicyConfig;
    use std::time::Duration;
    // The cloud boots in 300 s; the stack still says 90 s. Four bursts of five jobs, an
    // hour apart (the fleet is retired in between).
    let model = Model {
        boot_s: 300,
        ..Model::default()
    };
    let jobs: Vec<(i64, u32)> = (0..4)
        .flat_map(|b| (0..5).map(move |_| (b * 3600, 60)))
        .collect();
    let launches = |boot_time: u64| {
        let config = PolicyConfig {
            max_instances: 50,
            stopped_max: Some(0),
            boot_time: Duration::from_secs(boot_time),
            ..PolicyConfig::default()
        };
        let s = crate::stack::Settings::from_config(&config).unwrap();
        run(&trace(&jobs), &model, &PolicySpec::Fleet(Box::new(s)), None).launches
    };
    // Told the truth, one VM per job.
    assert_eq!(launches(300), 20);
    // Told 90 s, the first burst's boots are late at 180 s and get a second VM each; those
    // boots are measured (300 s) and the later bursts are not hedged again.
    assert_eq!(launches(90), 25);
}

#[test]
fn fleet_with_a_forecast_pre_warms_the_pool_before_a_weekly_surge() {
    use crate::stack::PolicyConfig;
    use std::time::Duration;
    // Twenty jobs every Monday at 9:00 (UTC; 1970-01-05 was a Monday), for three weeks.
    let monday_9 = 4 * 86_400 + 9 * 3600;
    let jobs: Vec<(i64, u32)> = (0..3)
        .flat_map(|w| (0..20).map(move |_| (monday_9 + w * 7 * 86_400, 60)))
        .collect();
    let model = Model::default();
    let run_with = |forecast: bool| {
        let config = PolicyConfig {
            max_instances: 50,
            idle_time: Duration::ZERO,
            stopped_count: 0,
            stopped_time: Duration::from_secs(600),
            forecast,
            ..PolicyConfig::default()
        };
        let s = crate::stack::Settings::from_config(&config).unwrap();
        run(&trace(&jobs), &model, &PolicySpec::Fleet(Box::new(s)), None)
    };
    // Without: every surge boots its VMs (the pool ages out in between).
    let off = run_with(false);
    assert_eq!(off.wait_p50_s, 90.0);
    assert_eq!(off.starts, 0);
    // With: the first surge boots; the next two find twenty stopped VMs, parked in the hour
    // before, and wait only their resume.
    let on = run_with(true);
    assert_eq!(on.wait_max_s, 90.0);
    assert_eq!(on.wait_p50_s, 30.0);
    assert_eq!(on.starts, 40, "{on:?}");
}

#[test]
fn the_pool_counts_vms_that_will_return_to_it_so_bursts_cause_no_churn() {
    use crate::stack::PolicyConfig;
    use std::time::Duration;
    // The three-pipeline trace of the churn report: 3 jobs, 3 jobs two hours later, 2 jobs
    // the next day. Starting pool VMs for a burst used to create as many again to refill
    // the pool, then retire the surplus when the started ones came back: 13 launches.
    let text = "queued_at,duration_s,project,pipeline
2020-02-01T08:00:00Z,63,a/b,1
2020-02-01T08:00:00Z,63,a/b,1
2020-02-01T08:00:00Z,63,a/b,1
2020-02-01T10:00:00Z,63,a/b,2
2020-02-01T10:00:00Z,63,a/b,2
2020-02-01T10:00:00Z,63,a/b,2
2020-02-02T10:00:00Z,63,a/b,3
2020-02-02T10:00:00Z,63,a/b,3
";
    let trace = Trace::parse("churn.csv", text).unwrap();
    let config = PolicyConfig {
        max_instances: 50,
        stopped_count: 5,
        idle_time: Duration::ZERO,
        ..PolicyConfig::default()
    };
    let s = crate::stack::Settings::from_config(&config).unwrap();
    let m = run(
        &trace,
        &Model::default(),
        &PolicySpec::Fleet(Box::new(s)),
        None,
    );
    assert_eq!(m.launches, 5, "{m:?}");
    // The later pipelines are served from the pool, in resume time.
    assert_eq!(m.starts, 5, "{m:?}");
    assert_eq!(m.wait_max_s, 90.0);
}

/// A bursty trace over `days` days: pipelines of 2 to 30 jobs at pseudo-random moments,
/// more in working hours (seeded, so the same every run).
pub(crate) fn bursty(days: i64, seed: u64) -> Vec<(i64, u32)> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x >> 33
    };
    let mut jobs = Vec::new();
    let mut t = 0i64;
    while t < days * 86_400 {
        let hour = (t / 3600) % 24;
        let gap = if (8..18).contains(&hour) { 1200 } else { 5400 };
        t += 60 + (next() % (2 * gap)) as i64;
        let n = 2 + (next() % 29) as u32;
        let d = 120 + (next() % 900) as u32;
        for _ in 0..n {
            jobs.push((t, d));
        }
    }
    jobs
}

#[test]
fn the_fleet_policy_sees_no_arrival_before_it_happens() {
    use crate::stack::PolicyConfig;
    // Two traces share their first three days; after that one has a 150-job pipeline every
    // hour. Whatever the policy learns or forecasts, it must do exactly the same in both
    // until the first of those arrives: nothing it reads comes from the future.
    let past = bursty(3, 7);
    let cut = 3 * 86_400;
    let mut a = past.clone();
    a.extend(bursty(2, 8).into_iter().map(|(t, d)| (t + cut, d)));
    let mut b = past;
    b.extend((0..48).flat_map(|h| (0..150).map(move |_| (cut + 600 + h * 3600, 300))));
    let config = PolicyConfig {
        max_instances: 400,
        forecast: true,
        ..PolicyConfig::default()
    };
    let s = crate::stack::Settings::from_config(&config).unwrap();
    let replay = |jobs: &[(i64, u32)]| {
        let mut tl = Timeline::default();
        let spec = PolicySpec::Fleet(Box::new(s.clone()));
        run(&trace(jobs), &Model::default(), &spec, Some(&mut tl));
        tl.samples
    };
    let (sa, sb) = (replay(&a), replay(&b));
    let first = |jobs: &[(i64, u32)]| jobs.iter().map(|j| j.0).find(|&t| t >= cut).unwrap();
    let differ = first(&a).min(first(&b));
    let before =
        |v: &[Sample]| -> Vec<Sample> { v.iter().filter(|s| s.t < differ).copied().collect() };
    assert!(before(&sa).len() > 100);
    assert_eq!(before(&sa), before(&sb));
    // And the traces do make it act differently afterwards.
    assert_ne!(sa, sb);
}

/// Synthetic CI demand of one shape, over `days` days from a Monday 00:00 UTC, seeded.
/// Every pipeline's jobs arrive together and run 2 to 15 minutes.
fn shaped(shape: &str, days: i64, seed: u64) -> Vec<(i64, u32)> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n.max(1)
    };
    let monday = 4 * 86_400; // 1970-01-05
    let mut jobs = Vec::new();
    let mut push = |t: i64, n: u32, d: u32| {
        for _ in 0..n {
            jobs.push((monday + t, d));
        }
    };
    for day in 0..days {
        let weekday = day % 7 < 5;
        for hour in 0..24 {
            let work = weekday && (8..18).contains(&hour);
            // Pipelines this hour, and their size.
            let (count, size) = match shape {
                "steady" => (if work { 6 } else { 1 }, 8),
                "weekly" => (if work { 3 } else { 0 }, 5),
                "huge" => (if work { 3 } else { 1 }, 6),
                "quiet" => (u64::from(work && rnd(3) == 0), 29),
                _ => unreachable!(),
            };
            for _ in 0..rnd(2 * count + 1) {
                let t = day * 86_400 + hour * 3600 + rnd(3600) as i64;
                push(t, 1 + rnd(size) as u32, 120 + rnd(780) as u32);
            }
        }
        // Every Monday at 9:00, sixty jobs at once.
        if shape == "weekly" && day % 7 == 0 {
            push(day * 86_400 + 9 * 3600 + 120, 60, 600);
        }
        // Now and then, at any hour, a pipeline of a hundred jobs.
        if shape == "huge" && rnd(3) == 0 {
            push(day * 86_400 + rnd(86_400) as i64, 100, 300);
        }
    }
    jobs.sort_unstable();
    jobs
}

fn target_config(max_instances: u32) -> crate::stack::Settings {
    use crate::stack::PolicyConfig;
    use crate::stack::Target;
    let config = PolicyConfig {
        max_instances,
        target: Some(Target {
            wait: std::time::Duration::from_secs(60),
            percentile: 95.0,
        }),
        ..PolicyConfig::default()
    };
    crate::stack::Settings::from_config(&config).unwrap()
}

#[test]
fn with_a_target_the_learned_pool_meets_it_after_learning_on_every_shape() {
    // Two weeks of history (as `fleet-cli history` would give), judged on the week after.
    for shape in ["steady", "weekly", "huge", "quiet"] {
        for seed in [1, 2] {
            let jobs = shaped(shape, 21, seed);
            let all = trace(&jobs);
            let (past, next) = all.split_at(all.jobs[0].queued_at + 14 * 86_400);
            let s = target_config(400);
            let mut tl = Timeline::default();
            let m = run_fleet(
                &next,
                &Model::default(),
                &s,
                history_record(&past),
                Some(&mut tl),
            );
            assert!(
                m.wait_p95_s <= 60.0,
                "{shape} seed {seed}: p95 {} s over {} jobs",
                m.wait_p95_s,
                m.jobs
            );
            // Nothing made that never ran a job: no more launches than the jobs that
            // waited a boot would need plus the pool's own growth.
            assert!(m.launches <= m.jobs, "{shape} seed {seed}: {m:?}");
        }
    }
}

#[test]
fn with_a_target_the_fleet_never_exceeds_max_instances() {
    // Hundred-job pipelines against a limit of 40: the learned level wants more than
    // the limit allows, and is held to it.
    for seed in [1, 2, 3] {
        let jobs = shaped("huge", 10, seed);
        let s = target_config(40);
        let mut tl = Timeline::default();
        run(
            &trace(&jobs),
            &Model::default(),
            &PolicySpec::Fleet(Box::new(s)),
            Some(&mut tl),
        );
        let most = tl
            .samples
            .iter()
            .map(|s| s.booting + s.busy + s.idle + s.stopped)
            .max()
            .unwrap();
        assert!(most <= 40, "seed {seed}: {most} VMs");
        assert_eq!(most, 40, "seed {seed}: the limit is reached");
    }
}

#[test]
fn a_sweep_keeps_every_run_so_the_whole_trade_off_can_be_drawn() {
    let model = Model::default();
    let jobs = trace(&[(1000, 100), (1000, 100), (1300, 100), (5000, 60)]);
    let candidates: Vec<Candidate> = (0..4)
        .map(|n| Candidate {
            policy: dm(n),
            params: [("IdleCount".to_string(), serde_json::json!(n))].into(),
        })
        .collect();
    // The first burst waits a boot whatever the pool: a target above it.
    let r = sweep(&jobs, &model, &candidates, 120.0, 2, &|| {});
    let indices: Vec<usize> = r.runs.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, vec![0, 1, 2, 3]);
    assert_eq!(r.evaluated, 4);
    for (i, m) in &r.runs {
        assert_eq!(*m, run(&jobs, &model, &candidates[*i].policy, None));
    }
    let (_, best) = r.best.expect("a docker-machine meets a wait of one boot");
    assert!(r.runs.iter().any(|(_, m)| *m == best));
}

#[test]
fn a_fixed_fleet_sweep_keeps_the_runs_its_bisection_made() {
    let model = Model::default();
    let jobs = trace(&[(1000, 100), (1000, 100), (1000, 100)]);
    let candidates: Vec<Candidate> = (1..=3)
        .map(|n| Candidate {
            policy: PolicySpec::Fixed(n),
            params: [("instances".to_string(), serde_json::json!(n))].into(),
        })
        .collect();
    let r = sweep(&jobs, &model, &candidates, 0.0, 1, &|| {});
    // Two VMs queue a job, three do not: the bisection never runs one VM.
    let indices: Vec<usize> = r.runs.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, vec![1, 2]);
    assert_eq!(r.evaluated, 2);
    assert_eq!(
        r.best.map(|(p, _)| p["instances"].clone()),
        Some(serde_json::json!(3))
    );
}
