//! The GitLab client: it parses GitLab's documented responses (fixtures), and against the
//! simulator (real HTTP on 127.0.0.1) it counts demand with tags, pages, groups and rate
//! limits, and drives the runner calls of the fleet's lifecycle.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_core::ci::{Ci, Demand};
use fleet_core::secret::{Secret, MASK};
use fleet_core::stack::RunnerType;
use fleet_providers::gitlab::models::{
    CreatedRunner, Group, Job, Project, RunnerDetails, RunnerManager, RunnerSummary,
};
use fleet_providers::gitlab::webhook::{Accepted, WebhookVerifier, DEFAULT_MAX_BODY};
use fleet_providers::gitlab::{
    runner_description, DemandScope, GitLabCi, GitLabClient, GitLabError, Outcome, RetryPolicy,
    RunnerSpec,
};
use gitlab_sim::{Faults, NewJob, Sim, SimConfig, WebhookTarget};

const TOKEN: &str = "sim-admin-token";

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gitlab")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------
// GitLab's documented responses parse into the client's models.

#[test]
fn documented_job_lists_parse_with_tags_and_runners() {
    let jobs: Vec<Job> = serde_json::from_str(&fixture("project-jobs.json")).unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].id, 7);
    assert_eq!(jobs[0].tag_list, vec!["docker runner", "ubuntu18"]);
    assert_eq!(jobs[0].runner.as_ref().map(|r| r.id), Some(32));
    assert!(jobs[1].runner.is_none());
    assert_eq!(jobs[0].pipeline.as_ref().unwrap().project_id, Some(1));

    let running: Vec<Job> = serde_json::from_str(&fixture("runner-jobs.json")).unwrap();
    assert_eq!(running[0].status, "running");
    assert!(
        running[0].tag_list.is_empty(),
        "absent tag_list means no tags"
    );
}

#[test]
fn documented_runner_answers_parse() {
    let r: RunnerDetails = serde_json::from_str(&fixture("runner.json")).unwrap();
    assert_eq!(r.summary.id, 6);
    assert!(!r.summary.is_paused());
    assert_eq!(r.maximum_timeout, Some(3600));
    assert_eq!(r.tag_list, vec!["ruby", "mysql"]);
    assert_eq!(
        r.projects[0].path_with_namespace.as_deref(),
        Some("gitlab-org/gitlab-foss")
    );

    // The update example has only the deprecated `active`, no `paused`.
    let u: RunnerDetails = serde_json::from_str(&fixture("runner-updated.json")).unwrap();
    assert_eq!(u.summary.paused, None);
    assert!(!u.summary.is_paused());
    assert_eq!(u.maximum_timeout, None);

    let a: RunnerSummary = serde_json::from_str(&fixture("runner-assigned.json")).unwrap();
    assert_eq!(a.runner_type.as_deref(), Some("project_type"));

    let m: Vec<RunnerManager> = serde_json::from_str(&fixture("runner-managers.json")).unwrap();
    assert_eq!(m[0].system_id, "s_89e5e9956577");
}

#[test]
fn created_runner_tokens_are_secrets() {
    let c: CreatedRunner = serde_json::from_str(&fixture("user-runner-created.json")).unwrap();
    assert_eq!(c.id, 9171);
    assert_eq!(c.token_expires_at, None);
    let v: CreatedRunner = serde_json::from_str(&fixture("runner-verify.json")).unwrap();
    assert!(v.token.expose().starts_with("glrt-"));
    assert!(v.token_expires_at.is_some());
    let shown = format!("{v:?}");
    assert!(shown.contains(MASK), "{shown}");
    assert!(!shown.contains("glrt-"), "token leaked into Debug: {shown}");
}

#[test]
fn documented_project_and_group_lists_parse() {
    let p: Vec<Project> = serde_json::from_str(&fixture("group-projects.json")).unwrap();
    assert_eq!(p[0].path_with_namespace, "h5bp/html5-boilerplate");
    assert_eq!(p[0].archived, Some(false));
    let g: Vec<Group> = serde_json::from_str(&fixture("descendant-groups.json")).unwrap();
    assert_eq!(g[0].full_path, "foo/bar");
}

#[test]
fn the_documented_job_hook_is_accepted() {
    let v = WebhookVerifier::new(Secret::new("s3cret"), DEFAULT_MAX_BODY).unwrap();
    let body = fixture("job-hook.json");
    let Accepted::Job(e) = v
        .verify(Some("Job Hook"), Some("s3cret"), body.as_bytes())
        .unwrap()
    else {
        panic!("a job hook must parse as a job event")
    };
    assert_eq!((e.job_id, e.project_id), (1977, 380));
    assert_eq!(e.status, "created");
    assert_eq!(
        e.created_at.unwrap().to_rfc3339(),
        "2021-02-23T02:41:37+00:00"
    );
}

// ---------------------------------------------------------------------------------------
// Against the simulator.

async fn sim(config: SimConfig) -> Sim {
    Sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("start gitlab-sim on 127.0.0.1")
}

fn client(sim: &Sim, retry: RetryPolicy) -> GitLabClient {
    GitLabClient::new(&sim.url(), Secret::new(TOKEN), retry).unwrap()
}

fn scope(projects: &[&str], groups: &[&str], tags: &[&str], untagged: bool) -> DemandScope {
    DemandScope {
        projects: projects.iter().map(|s| s.to_string()).collect(),
        groups: groups.iter().map(|s| s.to_string()).collect(),
        tags: tags.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        run_untagged: untagged,
    }
}

fn job(project: &str, tags: &[&str]) -> NewJob {
    NewJob {
        project: project.into(),
        name: None,
        tag_list: tags.iter().map(|s| s.to_string()).collect(),
        run_seconds: 3600.0,
        pipeline_id: None,
    }
}

#[tokio::test]
async fn demand_counts_only_jobs_the_fleet_can_run_across_projects_and_subgroups() {
    let sim = sim(SimConfig::default()).await;
    sim.add_project("acme/api");
    sim.add_project("acme/platform/deep/db");
    sim.add_project("other/app");
    sim.add_project("solo/tool");
    for (p, tags) in [
        ("acme/api", vec!["docker"]),
        ("acme/api", vec!["docker", "linux"]),
        ("acme/api", vec!["gpu"]),
        ("acme/platform/deep/db", vec![]),
        ("acme/platform/deep/db", vec!["linux"]),
        ("other/app", vec!["docker"]),
        ("solo/tool", vec!["docker"]),
    ] {
        sim.enqueue(job(p, &tags)).unwrap();
    }
    let tagged_only = GitLabCi::new(
        client(&sim, RetryPolicy::default()),
        scope(&["solo/tool"], &["acme"], &["docker", "linux"], false),
    );
    // acme/api: 2 of 3 (gpu left out); acme/platform/deep/db: the linux job, not the
    // untagged one; solo/tool: 1; other/app is not listed.
    assert_eq!(
        tagged_only.demand().await.unwrap(),
        Demand::Known {
            pending: 4,
            running: 0
        }
    );
    let with_untagged = GitLabCi::new(
        client(&sim, RetryPolicy::default()),
        scope(&[], &["acme"], &["docker", "linux"], true),
    );
    assert_eq!(
        with_untagged.count().await.unwrap().pending,
        4,
        "acme's 3 runnable tagged jobs plus the untagged one"
    );

    // A runner takes one job: it counts as running now.
    let c = client(&sim, RetryPolicy::default());
    c.create_runner(&RunnerSpec {
        runner_type: RunnerType::InstanceType,
        group_id: None,
        project_id: None,
        description: runner_description("ci", "ci-0001"),
        tag_list: vec!["gpu".into()],
        run_untagged: false,
        locked: false,
        maximum_timeout: None,
        paused: false,
    })
    .await
    .unwrap();
    // Wait until the gpu runner has the gpu job: it runs, but it is not this fleet's, so it
    // counts neither as pending nor as running.
    wait_for(|| async {
        sim.with_world(|w, _| {
            w.jobs
                .values()
                .any(|j| j.tag_list == ["gpu"] && j.status == gitlab_sim::JobStatus::Running)
                .then_some(())
        })
    })
    .await;
    let c = with_untagged.count().await.unwrap();
    assert_eq!((c.pending, c.running), (4, 0));
}

/// Polls `f` until it returns `Some`, for at most 5 s.
async fn wait_for<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn demand_reads_every_page() {
    let sim = sim(SimConfig::default()).await;
    sim.add_project("big/repo");
    for _ in 0..250 {
        sim.enqueue(job("big/repo", &["docker"])).unwrap();
    }
    let ci = GitLabCi::new(
        client(&sim, RetryPolicy::default()),
        scope(&["big/repo"], &[], &["docker"], false),
    );
    assert_eq!(ci.count().await.unwrap().pending, 250);
    // One request to resolve the path, three pages of 100.
    assert_eq!(sim.counters().api_requests, 4);
}

#[tokio::test]
async fn group_expansion_is_cached_between_cycles() {
    let sim = sim(SimConfig::default()).await;
    sim.add_project("team/a");
    sim.enqueue(job("team/a", &[])).unwrap();
    let ci = GitLabCi::new(
        client(&sim, RetryPolicy::default()),
        scope(&[], &["team"], &[], true),
    );
    assert_eq!(ci.count().await.unwrap().pending, 1);
    sim.add_project("team/sub/b");
    sim.enqueue(job("team/sub/b", &[])).unwrap();
    assert_eq!(
        ci.count().await.unwrap().pending,
        1,
        "the cached expansion does not know team/sub/b yet"
    );
    let fresh = ci.with_cache_ttl(Duration::ZERO);
    assert_eq!(fresh.count().await.unwrap().pending, 2);
}

#[tokio::test]
async fn throttled_requests_wait_for_retry_after_and_then_succeed() {
    let sim = sim(SimConfig {
        rate_limit: Some(2),
        rate_limit_period: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    for p in ["r/a", "r/b", "r/c"] {
        sim.add_project(p);
        sim.enqueue(job(p, &[])).unwrap();
    }
    let ci = GitLabCi::new(
        client(&sim, RetryPolicy::default()),
        scope(&["r/a", "r/b", "r/c"], &[], &[], true),
    );
    // Six requests (three paths, three job lists) against two per second: the client must
    // wait for the window to reopen, by RateLimit-Reset or by Retry-After.
    let started = std::time::Instant::now();
    assert_eq!(
        ci.demand().await.unwrap(),
        Demand::Known {
            pending: 3,
            running: 0
        }
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "six requests at two per second cannot finish within one window"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_makes_demand_an_error() {
    let sim = sim(SimConfig {
        rate_limit: Some(1),
        rate_limit_period: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .await;
    sim.add_project("r/a");
    let ci = GitLabCi::new(
        client(
            &sim,
            RetryPolicy {
                max_wait: Duration::from_secs(2),
                max_retries: 3,
            },
        ),
        scope(&["r/a"], &[], &[], true),
    );
    let err = ci.demand().await.expect_err("GitLab asks to wait a minute");
    assert_eq!(err.system, "gitlab");
    assert!(err.message.contains("rate limited"), "{}", err.message);
    // The first answer said `RateLimit-Remaining: 0` for a minute: the client did not send
    // the second request at all.
    assert_eq!(sim.counters().api_requests, 1);
    assert_eq!(sim.counters().rate_limited, 0);

    // A 429 whose Retry-After is over the allowed wait ends the attempt too.
    sim.set_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    });
    let ci = GitLabCi::new(
        client(
            &sim,
            RetryPolicy {
                max_wait: Duration::from_millis(500),
                max_retries: 3,
            },
        ),
        scope(&["r/a"], &[], &[], true),
    );
    let err = ci
        .demand()
        .await
        .expect_err("GitLab throttles every request");
    assert!(err.message.contains("retry after 1s"), "{}", err.message);
    assert_eq!(sim.counters().injected_throttles, 1);
}

#[tokio::test]
async fn server_errors_and_unreachable_gitlab_make_demand_an_error() {
    let sim = sim(SimConfig {
        faults: Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let ci = GitLabCi::new(
        client(&sim, RetryPolicy::default()),
        scope(&["1"], &[], &[], true),
    );
    let err = ci.demand().await.unwrap_err();
    assert!(err.message.contains("answered 500"), "{}", err.message);

    // Nothing listens on a port just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gone = GitLabClient::new(
        &format!("http://127.0.0.1:{port}"),
        Secret::new(TOKEN),
        RetryPolicy::default(),
    )
    .unwrap();
    let ci = GitLabCi::new(gone, scope(&["1"], &[], &[], true));
    assert!(ci.demand().await.is_err());
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_gitlabs_401() {
    let sim = sim(SimConfig::default()).await;
    let c = GitLabClient::new(&sim.url(), Secret::new("wrong"), RetryPolicy::default()).unwrap();
    match c.project("1").await {
        Err(GitLabError::Status {
            status, message, ..
        }) => {
            assert_eq!(status, 401);
            assert_eq!(message, "401 Unauthorized");
        }
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn runner_lifecycle_calls_create_pause_drain_and_delete() {
    let sim = sim(SimConfig::default()).await;
    let owner = sim.add_project("fleet/owner");
    sim.add_project("fleet/second");
    let c = client(&sim, RetryPolicy::default());
    let created = c
        .create_runner(&RunnerSpec {
            runner_type: RunnerType::ProjectType,
            group_id: None,
            project_id: Some(owner.id),
            description: runner_description("ci", "ci-0001"),
            tag_list: vec!["docker".into()],
            run_untagged: false,
            locked: true,
            maximum_timeout: Some(3600),
            paused: false,
        })
        .await
        .unwrap();
    assert!(created.token.expose().starts_with("glrt-"));
    assert!(!format!("{created:?}").contains("glrt-"));
    let details = c.runner(created.id).await.unwrap();
    assert_eq!(
        details.summary.description.as_deref(),
        Some("fleet:ci/ci-0001")
    );
    assert_eq!(details.maximum_timeout, Some(3600));
    assert_eq!(details.locked, Some(true));

    assert_eq!(
        c.assign_runner("fleet/second", created.id).await.unwrap(),
        Outcome::Done
    );
    assert_eq!(
        c.assign_runner("fleet/second", created.id).await.unwrap(),
        Outcome::AlreadyDone
    );

    // The runner takes a job; paused, it takes no more; it drains when the job ends.
    let first = sim
        .enqueue(NewJob {
            run_seconds: 0.3,
            ..job("fleet/second", &["docker"])
        })
        .unwrap();
    let running = wait_for(|| async {
        let r = c.running_jobs(created.id).await.unwrap();
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(running[0].id, first.id);
    assert!(c
        .set_paused(created.id, true)
        .await
        .unwrap()
        .summary
        .is_paused());
    let second = sim.enqueue(job("fleet/owner", &["docker"])).unwrap();
    wait_for(|| async {
        c.running_jobs(created.id)
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    let still_pending = sim.with_world(|w, _| w.jobs[&second.id].status);
    assert_eq!(still_pending, gitlab_sim::JobStatus::Pending);

    assert_eq!(c.delete_runner(created.id).await.unwrap(), Outcome::Done);
    assert_eq!(
        c.delete_runner(created.id).await.unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(sim.counters().jobs_killed_by_runner_delete, 0);
}

#[tokio::test]
async fn simulator_job_webhooks_pass_the_verifier() {
    use std::io::{Read, Write};
    // A minimal HTTP receiver on 127.0.0.1: it records what the verifier says.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Result<Accepted, u16>>>> = Arc::default();
    let verifier = WebhookVerifier::new(Secret::new("hook-secret"), DEFAULT_MAX_BODY).unwrap();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, len) = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (i + 4, len);
                }
            };
            while buf.len() < head_end + len {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
            };
            let r = verifier
                .verify(
                    header("x-gitlab-event").as_deref(),
                    header("x-gitlab-token").as_deref(),
                    &buf[head_end..],
                )
                .map_err(|e| e.status());
            seen2.lock().unwrap().push(r);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    let sim = sim(SimConfig {
        webhook: Some(WebhookTarget {
            url,
            secret: "hook-secret".into(),
        }),
        ..SimConfig::default()
    })
    .await;
    sim.add_project("hooks/app");
    let queued = sim.enqueue(job("hooks/app", &[])).unwrap();
    wait_for(|| async { (sim.counters().webhooks_sent >= 1).then_some(()) }).await;
    let seen = seen.lock().unwrap().clone();
    match &seen[0] {
        Ok(Accepted::Job(e)) => {
            assert_eq!(e.job_id, queued.id);
            assert_eq!(e.status, "pending");
            assert!(e.created_at.is_some());
        }
        other => panic!("the simulator's job hook was refused: {other:?}"),
    }
}

#[tokio::test]
async fn a_project_runner_is_created_in_the_first_project_and_assigned_to_the_others() {
    let s = sim(SimConfig::default()).await;
    let a = s.add_project("team/a");
    let b = s.add_project("team/b");
    let ci = GitLabCi::new(
        client(&s, RetryPolicy::default()),
        scope(&["team/a", "team/b"], &[], &["docker"], false),
    )
    .with_registration(fleet_providers::gitlab::Registration {
        stack: "st".into(),
        runner_type: fleet_core::stack::RunnerType::ProjectType,
        locked: true,
        maximum_timeout: Some(3600),
    });
    let made = fleet_core::ci::Ci::create_runner(&ci, "st-0001")
        .await
        .unwrap();
    assert!(made.token.expose().starts_with("glrt-"));
    let runner = s.with_world(|w, _| w.runners[&made.id].clone());
    assert_eq!(runner.description, "fleet:st/st-0001");
    assert_eq!(runner.projects, vec![a.id, b.id]);
    assert!(runner.locked);
    assert_eq!(runner.maximum_timeout, Some(3600));
    assert_eq!(runner.tag_list, vec!["docker".to_string()]);
    // It is this stack's, listed with its (lack of) jobs.
    let ours = fleet_core::ci::Ci::runners(&ci).await.unwrap();
    assert_eq!(ours.len(), 1);
    assert_eq!(
        (ours[0].id, ours[0].instance.as_str()),
        (made.id, "st-0001")
    );
    fleet_core::ci::Ci::delete_runner(&ci, made.id)
        .await
        .unwrap();
    // Deleting again is not an error: it is already gone.
    fleet_core::ci::Ci::delete_runner(&ci, made.id)
        .await
        .unwrap();
    assert!(fleet_core::ci::Ci::runners(&ci).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_group_runner_needs_a_group_in_the_stack() {
    let s = sim(SimConfig::default()).await;
    s.add_project("team/a");
    let ci = GitLabCi::new(
        client(&s, RetryPolicy::default()),
        scope(&["team/a"], &[], &[], true),
    )
    .with_registration(fleet_providers::gitlab::Registration {
        stack: "st".into(),
        runner_type: fleet_core::stack::RunnerType::GroupType,
        locked: false,
        maximum_timeout: None,
    });
    let e = fleet_core::ci::Ci::create_runner(&ci, "st-0001")
        .await
        .unwrap_err();
    assert!(e.message.contains("runner.groups"), "{e}");
}

#[tokio::test]
async fn demand_remembers_when_the_oldest_waiting_job_was_queued_and_counts_requests() {
    let s = sim(SimConfig::default()).await;
    s.add_project("team/a");
    let first = s.enqueue(job("team/a", &[])).unwrap();
    s.enqueue(job("team/a", &[])).unwrap();
    let ci = GitLabCi::new(
        client(&s, RetryPolicy::default()),
        scope(&["team/a"], &[], &[], true),
    );
    assert_eq!(fleet_core::ci::Ci::oldest_pending(&ci), None);
    fleet_core::ci::Ci::demand(&ci).await.unwrap();
    let oldest = fleet_core::ci::Ci::oldest_pending(&ci).expect("a job waits");
    assert!(
        (oldest - first.created_at).num_milliseconds().abs() < 1000,
        "{oldest} vs {}",
        first.created_at
    );
    let calls = fleet_core::ci::Ci::api_calls(&ci);
    assert!(calls.get("GET").copied().unwrap_or(0) >= 2, "{calls:?}");
    assert_eq!(calls.get("error"), None, "{calls:?}");
}

// ---------------------------------------------------------------------------------------
// Behaving like the real GitLab, not only like the simulator (regression tests, each named
// after the defect it pins).

fn registration(stack: &str, runner_type: RunnerType) -> fleet_providers::gitlab::Registration {
    fleet_providers::gitlab::Registration {
        stack: stack.into(),
        runner_type,
        locked: false,
        maximum_timeout: None,
    }
}

fn shared_runner(tags: &[&str]) -> RunnerSpec {
    RunnerSpec {
        runner_type: RunnerType::InstanceType,
        group_id: None,
        project_id: None,
        description: "shared-runner-1".into(),
        tag_list: tags.iter().map(|t| t.to_string()).collect(),
        run_untagged: false,
        locked: false,
        maximum_timeout: None,
        paused: false,
    }
}

#[tokio::test]
async fn running_jobs_on_runners_outside_the_fleet_do_not_count_as_its_load() {
    let sim = sim(SimConfig::default()).await;
    sim.add_project("acme/api");
    // A shared runner with the fleet's tags takes the first job.
    client(&sim, RetryPolicy::default())
        .create_runner(&shared_runner(&["docker"]))
        .await
        .unwrap();
    sim.enqueue(job("acme/api", &["docker"])).unwrap();
    let running = || {
        sim.with_world(|w, _| {
            w.jobs
                .values()
                .filter(|j| j.status == gitlab_sim::JobStatus::Running)
                .count()
        })
    };
    wait_for(|| async { (running() == 1).then_some(()) }).await;
    let ci = GitLabCi::new(
        client(&sim, RetryPolicy::default()),
        scope(&["acme/api"], &[], &["docker"], false),
    )
    .with_registration(registration("ci", RunnerType::InstanceType));
    assert_eq!(
        ci.demand().await.unwrap(),
        Demand::Known {
            pending: 0,
            running: 0
        },
        "the job runs on a runner that is not the fleet's"
    );
    let c = ci.count().await.unwrap();
    assert_eq!(c.elsewhere, 1);

    // The fleet's own runner takes the next job (the shared one is busy): that is load.
    fleet_core::ci::Ci::create_runner(&ci, "ci-0001")
        .await
        .unwrap();
    sim.enqueue(job("acme/api", &["docker"])).unwrap();
    wait_for(|| async { (running() == 2).then_some(()) }).await;
    assert_eq!(
        ci.demand().await.unwrap(),
        Demand::Known {
            pending: 0,
            running: 1
        }
    );
}

/// A listener on 127.0.0.1 that answers every connection with `404` and counts requests
/// and the access tokens they carried: another host a redirect may point to.
struct OtherHost {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl OtherHost {
    async fn start() -> OtherHost {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).to_string());
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        OtherHost { url, seen }
    }
}

#[tokio::test]
async fn redirects_are_not_followed_so_the_token_stays_and_the_error_names_the_url_to_use() {
    // GitLab reached over http:// while it forces https: nginx answers 301 to https.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let https = format!("https://127.0.0.1:{closed}");
    let sim_https = sim(SimConfig {
        redirect_to: Some(https.clone()),
        ..SimConfig::default()
    })
    .await;
    let e = client(&sim_https, RetryPolicy::default())
        .create_runner(&shared_runner(&["docker"]))
        .await
        .unwrap_err();
    match &e {
        GitLabError::Redirected {
            method,
            status,
            location,
            ..
        } => {
            assert_eq!((method.as_str(), *status), ("POST", 301));
            assert_eq!(location, &format!("{https}/api/v4/user/runners"));
        }
        other => panic!("expected a redirect error, got {other:?}"),
    }
    // (Not a bare "404": the sim's random port may contain those digits.)
    assert!(!e.to_string().contains("answered 404"), "{e}");
    assert_eq!(
        e.hint().unwrap(),
        format!("set runner.gitlab_url to {https}")
    );
    assert!(e.is_misconfiguration());

    // A redirect to another host: nothing is sent there, so the token does not leak.
    let other = OtherHost::start().await;
    let sim_other = sim(SimConfig {
        redirect_to: Some(other.url.clone()),
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim_other, RetryPolicy::default());
    assert!(matches!(
        c.create_runner(&shared_runner(&[])).await,
        Err(GitLabError::Redirected { .. })
    ));
    assert!(matches!(
        c.project("acme/api").await,
        Err(GitLabError::Redirected { .. })
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = other.seen.lock().unwrap().clone();
    assert!(
        seen.is_empty(),
        "the other host was sent requests (with PRIVATE-TOKEN: {}): {seen:?}",
        seen.iter()
            .any(|r| r.to_ascii_lowercase().contains("private-token"))
    );
    assert_eq!(c.calls().get("error").copied(), Some(2));
}

#[tokio::test]
async fn an_insufficient_scope_answer_names_the_missing_scope_in_the_error_and_hint() {
    let sim = sim(SimConfig {
        token_scopes: [("read-only".to_string(), vec!["read_api".to_string()])].into(),
        ..SimConfig::default()
    })
    .await;
    sim.add_project("acme/api");
    let c =
        GitLabClient::new(&sim.url(), Secret::new("read-only"), RetryPolicy::default()).unwrap();
    // Reading works with read_api; creating a runner needs create_runner.
    assert!(c.project("acme/api").await.is_ok());
    let e = c
        .create_runner(&shared_runner(&["docker"]))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(&e, GitLabError::InsufficientScope { scope, .. } if scope == "create_runner"),
        "{e:?}"
    );
    assert!(text.contains("lacks the `create_runner` scope"), "{text}");
    assert!(text.contains("requires higher privileges"), "{text}");
    assert!(e.hint().unwrap().contains("`create_runner` scope"));
    // Pausing a runner needs manage_runner.
    let e = c.set_paused(1, true).await.unwrap_err();
    assert!(
        matches!(&e, GitLabError::InsufficientScope { scope, .. } if scope == "manage_runner"),
        "{e:?}"
    );
}

#[test]
fn error_bodies_in_gitlabs_documented_shapes_become_one_line() {
    use fleet_providers::gitlab::client::ErrorBody;
    // OAuth's answer for a token without the scope: the description, and the scopes.
    let oauth = ErrorBody::parse(
        r#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token.","scope":"api create_runner"}"#,
    );
    assert!(oauth.insufficient_scope);
    assert_eq!(oauth.scope.as_deref(), Some("api create_runner"));
    assert_eq!(
        oauth.message,
        "The request requires higher privileges than provided by the access token."
    );
    // Validation errors by field (`400` on a bad attribute).
    let invalid =
        ErrorBody::parse(r#"{"message":{"tag_list":["is too long","is invalid"],"base":["x"]}}"#);
    assert_eq!(
        invalid.message,
        "base: x; tag_list: is too long, is invalid"
    );
    assert_eq!(
        ErrorBody::parse(r#"{"message":"404 Project Not Found"}"#).message,
        "404 Project Not Found"
    );
    assert_eq!(
        ErrorBody::parse(r#"{"error":"runner_type does not have a valid value"}"#).message,
        "runner_type does not have a valid value"
    );
    // A proxy's HTML page: its title, on one line, never the markup.
    let html = ErrorBody::parse(
        "<!DOCTYPE html>\n<html>\n<head>\n<title>\n  Something went wrong (500)\n</title>\n</head>\n<body>\n<h1>500</h1>\n</body>\n</html>\n",
    );
    assert_eq!(
        html.message,
        "an HTML page titled `Something went wrong (500)`, not GitLab's API"
    );
    assert_eq!(ErrorBody::parse("Retry later\n\n").message, "Retry later");
}

#[tokio::test]
async fn an_html_error_page_is_reported_on_one_line_without_its_markup() {
    let sim = sim(SimConfig {
        html_errors: true,
        faults: Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let ci = GitLabCi::new(
        client(&sim, RetryPolicy::default()),
        scope(&["1"], &[], &[], true),
    );
    let err = ci.demand().await.unwrap_err();
    assert!(!err.message.contains('\n'), "{}", err.message);
    assert!(!err.message.contains('<'), "{}", err.message);
    assert!(err.message.contains("answered 502"), "{}", err.message);
    assert!(
        err.message.contains("GitLab is not responding (502)"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_refused_token_or_an_unknown_project_is_remembered_as_a_refusal_but_an_outage_is_not() {
    let sim = sim(SimConfig::default()).await;
    sim.add_project("acme/api");
    let wrong = GitLabCi::new(
        GitLabClient::new(&sim.url(), Secret::new("wrong"), RetryPolicy::default()).unwrap(),
        scope(&["acme/api"], &[], &[], true),
    );
    assert!(wrong.demand().await.is_err());
    let r = wrong
        .refusal()
        .expect("a 401 is the stack's token being wrong");
    assert!(r.message.contains("answered 401"), "{}", r.message);
    assert!(r.hint.contains("create_runner"), "{}", r.hint);

    let missing = GitLabCi::new(
        client(&sim, RetryPolicy::default()),
        scope(&["acme/nope"], &[], &[], true),
    );
    assert!(missing.demand().await.is_err());
    let r = missing
        .refusal()
        .expect("a 404 names a project that is not there");
    assert!(r.hint.contains("runner.projects"), "{}", r.hint);

    let fine = GitLabCi::new(
        client(&sim, RetryPolicy::default()),
        scope(&["acme/api"], &[], &[], true),
    );
    fine.demand().await.unwrap();
    assert!(fine.refusal().is_none());
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    assert!(fine.demand().await.is_err());
    assert!(
        fine.refusal().is_none(),
        "a 500 is GitLab unwell, not the stack"
    );
}

#[tokio::test]
async fn creating_runners_asks_for_their_group_once_and_without_its_projects() {
    let sim = sim(SimConfig::default()).await;
    sim.add_project("acme/api");
    sim.add_project("acme/web");
    let ci = GitLabCi::new(
        client(&sim, RetryPolicy::default()),
        scope(&[], &["acme"], &["docker"], false),
    )
    .with_registration(registration("ci", RunnerType::GroupType));
    for i in 1..=3 {
        fleet_core::ci::Ci::create_runner(&ci, &format!("ci-000{i}"))
            .await
            .unwrap();
    }
    let groups: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v4/groups/acme"))
        .collect();
    assert_eq!(
        groups,
        ["GET /api/v4/groups/acme?with_projects=false"],
        "one lookup for three runners, without the group's project list"
    );
    assert_eq!(sim.counters().runners_created, 3);
}

#[test]
fn one_attempt_is_written_in_the_singular() {
    let e = GitLabError::RateLimited {
        url: "http://127.0.0.1/api/v4/projects/1/jobs".into(),
        retry_after: Duration::from_secs(60),
        attempts: 1,
    };
    assert!(e.to_string().ends_with("(1 attempt)"), "{e}");
    let e = GitLabError::RateLimited {
        url: "u".into(),
        retry_after: Duration::from_secs(1),
        attempts: 3,
    };
    assert!(e.to_string().ends_with("(3 attempts)"), "{e}");
}

// ---------------------------------------------------------------------------------------
// The finished-job history (`fleet-cli history`).

#[test]
fn documented_finished_jobs_parse_into_trace_rows_and_unstarted_ones_are_left_out() {
    use fleet_providers::gitlab::history::row_of;
    let jobs: Vec<Job> = serde_json::from_str(&fixture("finished-jobs.json")).unwrap();
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs[0].queued_duration, Some(37.125));
    assert_eq!(jobs[0].duration, Some(382.651));
    assert!(jobs[2].started_at.is_none() && jobs[2].duration.is_none());
    let rows: Vec<_> = jobs.iter().filter_map(|j| row_of(j, "team/app")).collect();
    assert_eq!(
        rows.len(),
        2,
        "the job canceled before it started asked for no VM"
    );
    // Queued when it became pending (started_at - queued_duration), not when its pipeline
    // created it: the test stage waited for the build stage.
    assert_eq!(rows[0].queued_at.to_rfc3339(), "2026-03-09T14:06:03+00:00");
    assert_eq!((rows[0].duration_s, rows[0].pipeline), (383, 1704));
    assert_eq!(rows[1].queued_at.to_rfc3339(), "2026-03-09T14:02:11+00:00");
    assert_eq!(rows[1].duration_s, 157);
}

#[tokio::test]
async fn the_history_reads_projects_and_groups_once_and_stops_paging_at_the_window() {
    use gitlab_sim::trace::TraceJob;
    let sim = sim(SimConfig::default()).await;
    sim.add_project("org/a");
    sim.add_project("org/sub/b");
    let now = sim.now();
    let at = |h: i64| now - chrono::Duration::hours(h);
    let row = |queued_at, project: &str, pipeline| TraceJob {
        queued_at,
        duration_s: 100,
        project: project.into(),
        pipeline,
    };
    // org/a: 150 jobs forty days ago, then 130 in the last two days (pipelines of ten).
    let mut jobs: Vec<TraceJob> = (0..150).map(|i| row(at(960), "org/a", i / 10)).collect();
    jobs.extend((0..130).map(|i| row(at(47 - i / 10), "org/a", 100 + i as u64 / 10)));
    // org/sub/b, in the group: 5 jobs a day ago.
    jobs.extend((0..5).map(|_| row(at(24), "org/sub/b", 500)));
    assert_eq!(sim.add_history(&jobs, 3.0).unwrap(), 285);

    let c = client(&sim, RetryPolicy::default());
    let h = fleet_providers::gitlab::history::read(
        &c,
        &["org/a".into()],
        &["org".into()],
        now - chrono::Duration::days(28),
    )
    .await
    .unwrap();
    assert_eq!(
        h.projects,
        vec!["org/a".to_string(), "org/sub/b".to_string()]
    );
    assert_eq!(h.rows.len(), 135);
    let pipelines: BTreeSet<u64> = h.rows.iter().map(|r| r.pipeline).collect();
    assert_eq!(pipelines.len(), 14);
    // Each row arrives when the sim queued it: started_at - queued_duration.
    let newest = h.rows.iter().map(|r| r.queued_at).max().unwrap();
    assert_eq!(newest.timestamp(), at(24).timestamp());
    // org/a's 280 jobs are three pages; the second reaches the window's start, so the
    // third (all older) is never asked for.
    let pages: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.contains("/jobs?scope[]=success"))
        .collect();
    assert!(
        pages.iter().all(|p| p.contains("scope[]=failed")),
        "{pages:?}"
    );
    assert_eq!(
        pages.len(),
        3,
        "two pages of org/a, one of org/sub/b: {pages:?}"
    );
}

#[tokio::test]
async fn the_history_waits_out_gitlabs_rate_limit_and_reads_every_page() {
    use gitlab_sim::trace::TraceJob;
    // Two requests a second: the project, then three pages of jobs.
    let sim = sim(SimConfig {
        rate_limit: Some(2),
        rate_limit_period: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let at = sim.now() - chrono::Duration::hours(3);
    let jobs: Vec<TraceJob> = (0..250)
        .map(|i| TraceJob {
            queued_at: at,
            duration_s: 60,
            project: "r/a".into(),
            pipeline: i / 50,
        })
        .collect();
    sim.add_history(&jobs, 1.0).unwrap();
    let c = client(&sim, RetryPolicy::default());
    let started = std::time::Instant::now();
    let h = fleet_providers::gitlab::history::read(
        &c,
        &["r/a".into()],
        &[],
        sim.now() - chrono::Duration::days(28),
    )
    .await
    .unwrap();
    assert_eq!(h.rows.len(), 250);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "four requests at two per second cannot finish within one window"
    );
}
