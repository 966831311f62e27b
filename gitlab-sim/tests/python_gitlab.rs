//! Keeps the simulator honest: python-gitlab, the widely used GitLab client, lists jobs page
//! by page, reads groups, reads a finished-job history, and creates, pauses, assigns and
//! deletes runners against it.

use std::path::PathBuf;
use std::process::Command;

use gitlab_sim::trace::TraceJob;
use gitlab_sim::{NewJob, Sim, SimConfig};

fn venv_python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var_os("FLEET_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv"));
    let python = venv.join("bin").join("python");
    assert!(
        python.is_file(),
        "python-gitlab test needs the test virtualenv at {}: run scripts/ensure-venv (make test does)",
        venv.display()
    );
    let probe = Command::new(&python)
        .args(["-c", "import gitlab"])
        .output()
        .expect("run the venv's python");
    assert!(
        probe.status.success(),
        "python-gitlab is missing from {}: run scripts/ensure-venv (it installs scripts/requirements-test.txt)",
        venv.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_gitlab_lists_pages_and_manages_runners() {
    let python = venv_python();
    // Runners wait for POST /runners/verify, so the jobs below stay pending.
    let config = SimConfig {
        runner_online_after: None,
        ..SimConfig::default()
    };
    let sim = Sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    sim.add_project("acme/backend/api");
    sim.add_project("acme/other");
    for i in 0..5 {
        sim.enqueue(NewJob {
            project: "acme/backend/api".into(),
            name: Some(format!("job-{i}")),
            tag_list: vec!["docker".into()],
            run_seconds: 600.0,
            pipeline_id: None,
        })
        .unwrap();
    }
    // A finished history in the other project: three pipelines, the last a minute ago.
    let at = |ago_s: i64| sim.now() - chrono::Duration::seconds(ago_s);
    let history: Vec<TraceJob> = [(3600, 1), (3600, 1), (1800, 2), (900, 3), (900, 3)]
        .iter()
        .map(|&(ago, pipeline)| TraceJob {
            queued_at: at(ago),
            duration_s: 240,
            project: "acme/other".into(),
            pipeline,
        })
        .collect();
    assert_eq!(sim.add_history(&history, 12.5).unwrap(), 5);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/python_gitlab_check.py");
    let url = sim.url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([
                &url,
                "sim-admin-token",
                "acme/backend/api",
                "acme",
                "5",
                "5",
            ])
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python-gitlab check failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    let c = sim.counters();
    assert_eq!((c.runners_created, c.runners_deleted), (1, 1));
}
