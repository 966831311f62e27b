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
    let s = crate::autoscale::Settings::from_config(&config).unwrap();
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
        let s = crate::autoscale::Settings::from_config(&config).unwrap();
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
        let s = crate::autoscale::Settings::from_config(&config).unwrap();
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
    let s = crate::autoscale::Settings::from_config(&config).unwrap();
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
