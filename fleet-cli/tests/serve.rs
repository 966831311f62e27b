//! `fleet-cli serve`, the binary, against a temporary copy of the sandbox stack on a free
//! port of 127.0.0.1: the first reconcile builds the fleet, a signed job webhook triggers
//! another, a wrong token gets 401, `/metrics` parses as Prometheus text, `/healthz` and
//! `/readyz` answer, and SIGTERM stops it cleanly with the lock released and the VMs kept.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{alive_in, copy_stack};

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");
const SECRET_VAR: &str = "FLEET_TEST_WEBHOOK_SECRET";
const SECRET: &str = "s3cret-hook-token-that-must-never-be-logged";

const JOB_HOOK: &str = r#"{"object_kind":"build","build_id":7,"build_status":"pending",
  "project_id":42,"build_created_at":"2026-11-25 10:00:00 UTC"}"#;

struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
    url: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Daemon {
    /// Starts `serve` on port 0 and reads the address it bound from its first stdout line.
    fn start(with_secret: bool, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stacks/sandbox.yaml");
        copy_stack(&src, &dir.path().join("sandbox.yaml"));
        let mut cmd = Command::new(BIN);
        cmd.arg("--stack")
            .arg(dir.path().join("sandbox.yaml"))
            .args(["--log-format", "json", "serve"])
            .args(["--set", "daemon.listen=127.0.0.1:0"])
            // Only the start and webhooks trigger reconciles within the test.
            .args(["--set", "daemon.interval=1h"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("FLEET_STACK")
            .env_remove("RUST_LOG");
        if with_secret {
            cmd.args(["--set", &format!("runner.webhook_secret_env={SECRET_VAR}")])
                .env(SECRET_VAR, SECRET);
        }
        let mut child = cmd.spawn().unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let url = common::serve_url(&mut child);
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Daemon {
            dir,
            child,
            url,
            stderr: Some(stderr),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.path(".fleet/sandbox.state.json")).unwrap())
            .unwrap()
    }

    /// Names of live instances in the sandbox cloud.
    fn alive(&self) -> Vec<String> {
        alive_in(&self.path(".fleet/sandbox-cloud.json"))
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns stderr.
    fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory preconditions; the pid is our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("serve did not exit within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status, stderr)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn hook(d: &Daemon, token: &str, body: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/webhooks/gitlab", d.url))
        .header("X-Gitlab-Event", "Job Hook")
        .header("X-Gitlab-Token", token)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Checks every line of the exposition strictly (the crate below is lenient about lines it
/// does not understand), then parses it with `prometheus-parse`: sample name and labels
/// to value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "OpenMetrics ends with # EOF");
    for l in &lines {
        if let Some(rest) = l.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ")
                    || rest.starts_with("TYPE ")
                    || rest.starts_with("UNIT ")
                    || rest == "EOF",
                "unknown comment line {l:?}"
            );
            continue;
        }
        let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {l:?}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {l:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels in {l:?}"
            );
        }
    }
    let scrape = prometheus_parse::Scrape::parse(lines.iter().map(|l| Ok(l.to_string()))).unwrap();
    let mut out = BTreeMap::new();
    for s in scrape.samples {
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            // Histograms: keep the count, which is all the assertions need.
            prometheus_parse::Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        out.insert(key, value);
    }
    out
}

async fn metrics(d: &Daemon) -> BTreeMap<String, f64> {
    let (status, text) = get(&format!("{}/metrics", d.url)).await;
    assert_eq!(status, 200);
    parse_metrics(&text)
}

fn m(all: &BTreeMap<String, f64>, key: &str) -> f64 {
    *all.get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have {:?}", all.keys()))
}

/// Polls until `f` holds, for at most 30 s.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serve_reconciles_on_start_and_on_webhooks_and_stops_cleanly() {
    let mut d = Daemon::start(true, &[]);
    assert_eq!(
        get(&format!("{}/healthz", d.url)).await,
        (200, "ok\n".into())
    );

    // The first reconcile builds the sandbox fleet: a key pair and three VMs
    // (policy.min_instances: 3).
    eventually("readyz", || async {
        get(&format!("{}/readyz", d.url)).await.0 == 200
    })
    .await;
    let first = metrics(&d).await;
    assert_eq!(m(&first, "fleet_reconciles_total{result=success}"), 1.0);
    assert_eq!(
        m(&first, "fleet_reconcile_triggers_total{reason=start}"),
        1.0
    );
    assert_eq!(m(&first, "fleet_changes_applied_total{action=create}"), 4.0);
    let live = m(&first, "fleet_instances{lifecycle=booting}")
        + m(&first, "fleet_instances{lifecycle=running}");
    assert_eq!(live, 3.0);
    assert_eq!(m(&first, "fleet_reconcile_in_progress"), 0.0);
    assert_eq!(m(&first, "fleet_reconcile_duration_seconds"), 1.0);
    assert_eq!(m(&first, "fleet_instances_desired"), 3.0);
    // The sandbox stack names no GitLab: demand is unknown.
    assert_eq!(m(&first, "fleet_demand_known"), 0.0);
    assert_eq!(d.alive().len(), 3);
    let serial = d.state()["serial"].as_u64().unwrap();

    // Someone deletes a VM behind the daemon's back; only a reconcile can notice.
    let p = d.path(".fleet/sandbox-cloud.json");
    let mut world: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let gone = world["instances"][0]["tags"]["fleet:name"]
        .as_str()
        .unwrap()
        .to_string();
    world["instances"][0]["terminated_at"] = Value::String("2026-11-01T00:00:00Z".into());
    std::fs::write(&p, serde_json::to_vec(&world).unwrap()).unwrap();

    // A wrong token is refused, and triggers nothing.
    assert_eq!(hook(&d, "not-the-secret", JOB_HOOK).await, 401);
    assert_eq!(hook(&d, SECRET, "{not json").await, 400);
    // A signed job webhook triggers a reconcile: forget the lost VM, create a new one.
    assert_eq!(hook(&d, SECRET, JOB_HOOK).await, 200);
    eventually("the webhook's reconcile", || async {
        m(&metrics(&d).await, "fleet_reconciles_total{result=success}") == 2.0
    })
    .await;
    let after = metrics(&d).await;
    assert_eq!(
        m(&after, "fleet_reconcile_triggers_total{reason=webhook}"),
        1.0
    );
    assert_eq!(m(&after, "fleet_changes_applied_total{action=forget}"), 1.0);
    assert_eq!(m(&after, "fleet_changes_applied_total{action=create}"), 5.0);
    assert_eq!(m(&after, "fleet_webhooks_total{result=accepted}"), 1.0);
    assert_eq!(m(&after, "fleet_job_events_total{status=pending}"), 1.0);
    assert_eq!(m(&after, "fleet_webhooks_total{result=unauthorized}"), 1.0);
    assert_eq!(m(&after, "fleet_webhooks_total{result=bad_request}"), 1.0);
    let state = d.state();
    assert!(state["serial"].as_u64().unwrap() > serial, "state moved");
    assert!(state["instances"].get(&gone).is_none(), "{gone} forgotten");
    assert_eq!(d.alive().len(), 3);

    let (status, stderr) = d.terminate();
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    // Logs are JSON lines and never carry the secret.
    assert!(!stderr.contains(SECRET), "the secret leaked into the logs");
    for l in stderr.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{l}");
    }
    assert!(stderr.contains("SIGTERM"), "{stderr}");

    // The lock is released (its file names no holder), the VMs are all still there, a
    // one-shot command takes the lock at once, and finds nothing to do.
    let dir = d.dir.path();
    let lock = std::fs::read(dir.join(".fleet/sandbox.state.json.lock")).unwrap();
    assert!(lock.is_empty(), "the lock file still names a holder");
    assert_eq!(d.alive().len(), 3, "stopping the daemon kept every VM");
    let o = Command::new(BIN)
        .arg("--stack")
        .arg(dir.join("sandbox.yaml"))
        .args(["preview", "--detailed-exitcode"])
        .env_remove("FLEET_STACK")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = Command::new(BIN)
        .arg("--stack")
        .arg(dir.join("sandbox.yaml"))
        .args(["refresh"])
        .env_remove("FLEET_STACK")
        .output()
        .unwrap();
    assert!(o.status.success(), "the state lock is still held: {o:?}");
}

#[tokio::test]
async fn without_a_webhook_secret_the_endpoint_is_disabled() {
    let mut d = Daemon::start(false, &[]);
    assert_eq!(hook(&d, "", JOB_HOOK).await, 404);
    assert_eq!(hook(&d, "anything", JOB_HOOK).await, 404);
    let all = metrics(&d).await;
    assert_eq!(m(&all, "fleet_webhooks_total{result=disabled}"), 2.0);
    let (status, _) = d.terminate();
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_during_a_reconcile_lets_it_finish_and_release_the_lock() {
    // Every sandbox call takes 300 ms, so the first reconcile runs for a few seconds.
    let mut d = Daemon::start(false, &["--set", "provider.latency=300ms"]);
    eventually("the first reconcile to start", || async {
        m(&metrics(&d).await, "fleet_reconcile_in_progress") == 1.0
    })
    .await;
    let (status, stderr) = d.terminate();
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    let at = |what: &str| {
        stderr
            .find(what)
            .unwrap_or_else(|| panic!("no `{what}` in the log:\n{stderr}"))
    };
    assert!(at("SIGTERM") < at("reconciled"), "{stderr}");
    // It finished: the whole fleet exists and is recorded, nothing is left pending, and
    // the lock names no holder.
    let state = d.state();
    let instances = state["instances"].as_object().unwrap();
    assert_eq!(instances.len(), 3, "{state}");
    assert!(instances.values().all(|r| r.get("pending").is_none()));
    assert_eq!(d.alive().len(), 3);
    let lock = std::fs::read(d.path(".fleet/sandbox.state.json.lock")).unwrap();
    assert!(lock.is_empty(), "the lock file still names a holder");
}
