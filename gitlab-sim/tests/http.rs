//! The simulator over real HTTP: GitLab's 401 body, pagination and rate-limit headers,
//! seeded faults, accelerated time, and runners that come online with POST /runners/verify.

use std::time::{Duration, Instant};

use gitlab_sim::{Faults, JobStatus, NewJob, Sim, SimConfig};
use serde_json::{json, Value};

const TOKEN: &str = "sim-admin-token";

async fn start(config: SimConfig) -> Sim {
    Sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn job(project: &str, secs: f64) -> NewJob {
    NewJob {
        project: project.into(),
        name: None,
        tag_list: vec![],
        run_seconds: secs,
        pipeline_id: None,
    }
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn unauthenticated_requests_get_gitlabs_401() {
    let sim = start(SimConfig::default()).await;
    let http = reqwest::Client::new();
    for token in [None, Some("wrong")] {
        let mut req = http.get(format!("{}/api/v4/projects", sim.url()));
        if let Some(t) = token {
            req = req.header("PRIVATE-TOKEN", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"message": "401 Unauthorized"}));
    }
    let ok = http
        .get(format!("{}/api/v4/projects", sim.url()))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn lists_carry_gitlabs_pagination_headers() {
    let sim = start(SimConfig::default()).await;
    for i in 0..5 {
        sim.add_project(&format!("g/p{i}"));
    }
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/v4/groups/g/projects?per_page=2&page=2",
            sim.url()
        ))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap();
    let h = |k: &str| {
        resp.headers()
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        [
            h("x-page"),
            h("x-per-page"),
            h("x-total"),
            h("x-total-pages"),
            h("x-next-page"),
            h("x-prev-page")
        ],
        ["2", "2", "5", "3", "3", "1"].map(String::from)
    );
    let link = h("link");
    let next = format!(
        "<{}/api/v4/groups/g/projects?page=3&per_page=2>; rel=\"next\"",
        sim.url()
    );
    assert!(link.contains(&next), "{link}");
    assert!(
        link.contains("rel=\"prev\"") && link.contains("rel=\"last\""),
        "{link}"
    );
    let items: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(items.len(), 2);
}

#[tokio::test]
async fn rate_limits_send_headers_and_429_with_retry_after() {
    let sim = start(SimConfig {
        rate_limit: Some(2),
        rate_limit_period: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let get = || {
        http.get(format!("{}/api/v4/projects", sim.url()))
            .header("PRIVATE-TOKEN", TOKEN)
            .send()
    };
    let first = get().await.unwrap();
    assert_eq!(first.headers()["ratelimit-limit"], "2");
    assert_eq!(first.headers()["ratelimit-remaining"], "1");
    assert!(first.headers().contains_key("ratelimit-reset"));
    let second = get().await.unwrap();
    assert_eq!(second.headers()["ratelimit-remaining"], "0");
    let third = get().await.unwrap();
    assert_eq!(third.status(), 429);
    let retry: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(third.text().await.unwrap(), "Retry later\n");
    assert_eq!(sim.counters().rate_limited, 1);
}

#[tokio::test]
async fn faults_are_drawn_from_the_seed_and_latency_is_added() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let sim = start(SimConfig {
            seed,
            faults: Faults {
                error_rate: 0.3,
                throttle_rate: 0.2,
                latency_ms: 0,
            },
            ..SimConfig::default()
        })
        .await;
        let http = reqwest::Client::new();
        let mut out = Vec::new();
        for _ in 0..40 {
            let r = http
                .get(format!("{}/api/v4/projects", sim.url()))
                .header("PRIVATE-TOKEN", TOKEN)
                .send()
                .await
                .unwrap();
            out.push(r.status().as_u16());
        }
        out
    }
    let a = statuses(7).await;
    assert_eq!(a, statuses(7).await, "same seed, same faults");
    assert!(
        a.contains(&500) && a.contains(&429) && a.contains(&200),
        "{a:?}"
    );

    let sim = start(SimConfig {
        faults: Faults {
            latency_ms: 150,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let t = Instant::now();
    reqwest::Client::new()
        .get(format!("{}/api/v4/projects", sim.url()))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn accelerated_time_finishes_long_jobs_quickly() {
    let sim = start(SimConfig {
        speed: 200.0,
        ..SimConfig::default()
    })
    .await;
    sim.add_project("g/p");
    // An instance runner that is online at once takes the 100 s job; at 200x it ends in
    // half a wall second.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v4/user/runners", sim.url()))
        .header("PRIVATE-TOKEN", TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("runner_type=instance_type&run_untagged=true&tag_list=a,b")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let j = sim.enqueue(job("g/p", 100.0)).unwrap();
    wait_until(|| sim.with_world(|w, _| w.jobs[&j.id].status == JobStatus::Success)).await;
}

#[tokio::test]
async fn runners_take_jobs_only_once_their_process_verifies() {
    let sim = start(SimConfig {
        runner_online_after: None,
        ..SimConfig::default()
    })
    .await;
    sim.add_project("g/p");
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/api/v4/user/runners", sim.url()))
        .header("PRIVATE-TOKEN", TOKEN)
        .json(&json!({"runner_type": "instance_type", "run_untagged": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_u64().unwrap();
    let j = sim.enqueue(job("g/p", 600.0)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sim.with_world(|w, _| w.jobs[&j.id].status),
        JobStatus::Pending
    );
    let runner: Value = http
        .get(format!("{}/api/v4/runners/{id}", sim.url()))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runner["status"], "never_contacted");
    // What `gitlab-runner` does at start with its glrt- token (no PRIVATE-TOKEN).
    let verified = http
        .post(format!("{}/api/v4/runners/verify", sim.url()))
        .json(&json!({"token": created["token"], "system_id": "s_vm0001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    wait_until(|| sim.with_world(|w, _| w.jobs[&j.id].status == JobStatus::Running)).await;
    let managers: Value = http
        .get(format!("{}/api/v4/runners/{id}/managers", sim.url()))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(managers[0]["system_id"], "s_vm0001");
    let bad = http
        .post(format!("{}/api/v4/runners/verify", sim.url()))
        .json(&json!({"token": "glrt-nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
}

#[tokio::test]
async fn a_finished_history_is_listed_with_gitlabs_time_fields_in_agreement() {
    use gitlab_sim::trace::{ending_at, TraceJob};
    let sim = start(SimConfig::default()).await;
    let t0 = chrono::DateTime::parse_from_rfc3339("2020-02-01T08:00:00Z")
        .unwrap()
        .to_utc();
    let row = |m: i64, pipeline: u64| TraceJob {
        queued_at: t0 + chrono::Duration::minutes(m),
        duration_s: 63,
        project: "team/app".into(),
        pipeline,
    };
    let trace = vec![row(0, 1), row(0, 1), row(120, 2)];
    // A history must have ended: the trace as it stands is refused, moved to end now it
    // is taken.
    let future = vec![TraceJob {
        queued_at: sim.now() + chrono::Duration::hours(1),
        ..row(0, 1)
    }];
    assert!(sim.add_history(&future, 0.0).is_err());
    let end = sim.now() - chrono::Duration::minutes(1);
    assert_eq!(sim.add_history(&ending_at(&trace, end), 7.0).unwrap(), 3);
    let v: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v4/projects/team%2Fapp/jobs?scope[]=success&scope[]=failed",
            sim.url()
        ))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jobs = v.as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    let time = |j: &Value, k: &str| {
        chrono::DateTime::parse_from_rfc3339(j[k].as_str().unwrap())
            .unwrap()
            .to_utc()
    };
    for j in jobs {
        let (c, s, f) = (
            time(j, "created_at"),
            time(j, "started_at"),
            time(j, "finished_at"),
        );
        assert_eq!(j["queued_duration"].as_f64(), Some(7.0), "{j}");
        assert_eq!((s - c).num_seconds(), 7);
        assert_eq!(j["duration"].as_f64(), Some(63.0), "{j}");
        assert_eq!((f - s).num_seconds(), 63);
    }
    // Newest first; the last ended a minute ago (and the 7 s it waited), two hours after
    // the first pipeline.
    assert_eq!(jobs[0]["pipeline"]["id"], 2);
    let late = time(&jobs[0], "finished_at") - (end + chrono::Duration::seconds(7));
    assert!(late.num_milliseconds().abs() <= 1, "{late}");
    assert_eq!(
        (time(&jobs[0], "created_at") - time(&jobs[2], "created_at")).num_minutes(),
        120
    );
}
