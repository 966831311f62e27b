//! Load on the daemon's webhook endpoint: `fleet-cli serve` (the binary cargo built) on the
//! sandbox stack, on 127.0.0.1, takes signed job webhooks at a fixed rate (open loop: a
//! request is sent every 1/RATE s whether or not earlier ones were answered), while a
//! sampler reads `fleet_reconcile_in_progress` from `/metrics` every 20 ms.
//!
//! It prints the latency percentiles of the webhook answers, the statuses, how many
//! reconciles the burst caused, and the most reconciles ever seen in flight at once
//! (which must be 1). Everything stops by itself after SECONDS.
//!
//! Run: `make bench-webhook`, which is `cargo test --release -p fleet-core -p
//! fleet-providers -p fleet-cli --bench webhook_load -- [RATE] [SECONDS]` (default 1000 30);
//! naming the same packages as `make fuzz` lets both share one release build.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");
const SECRET: &str = "bench-webhook-secret";
const BODY: &str =
    r#"{"object_kind":"build","build_id":1,"build_status":"pending","project_id":1}"#;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The value of the first sample whose series starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let rate = args.next().unwrap_or(1000).max(1);
    let seconds = args.next().unwrap_or(30).max(1);

    let dir = tempfile::tempdir()?;
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks/sandbox.yaml");
    common::copy_stack(&src, &dir.path().join("sandbox.yaml"));
    let mut child = Command::new(BIN)
        .arg("--stack")
        .arg(dir.path().join("sandbox.yaml"))
        .args(["serve", "--set", "daemon.listen=127.0.0.1:0"])
        .args(["--set", "daemon.interval=1h"])
        .args(["--set", "runner.webhook_secret_env=BENCH_WEBHOOK_SECRET"])
        .env("BENCH_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let url = common::serve_url(&mut child);
    let result = run(&url, rate, seconds).await;
    // SAFETY: kill has no memory preconditions; the pid is our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait()?;
    result?;
    println!("daemon exit after SIGTERM: {status}");
    Ok(())
}

async fn run(url: &str, rate: u64, seconds: u64) -> Result<(), Error> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()?;
    let started = Instant::now();
    loop {
        let ready = client.get(format!("{url}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the daemon did not get ready within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = |c: reqwest::Client, u: String| async move {
        c.get(format!("{u}/metrics")).send().await?.text().await
    };
    let before = metrics(client.clone(), url.to_string()).await?;

    // The sampler: the most reconciles in flight at once.
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (stop, most, c, u) = (stop.clone(), most.clone(), client.clone(), url.to_string());
        tokio::spawn(async move {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(text) = metrics(c.clone(), u.clone()).await {
                    if let Some(v) = sample(&text, "fleet_reconcile_in_progress ") {
                        most.fetch_max(v as i64, Ordering::Relaxed);
                        samples += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        })
    };

    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total as usize);
    let load_started = Instant::now();
    for _ in 0..total {
        tick.tick().await;
        let c = client.clone();
        let u = format!("{url}/webhooks/gitlab");
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = c
                .post(u)
                .header("X-Gitlab-Event", "Job Hook")
                .header("X-Gitlab-Token", SECRET)
                .body(BODY)
                .send()
                .await;
            (
                t.elapsed(),
                r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()),
            )
        }));
    }
    let sent_in = load_started.elapsed();
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let (d, r) = t.await?;
        latencies.push(d);
        let key = match r {
            Ok(s) => s.to_string(),
            Err(e) => format!("error: {e}"),
        };
        *statuses.entry(key).or_default() += 1;
    }
    let all_answered = load_started.elapsed();
    // Let the reconcile the last webhooks asked for run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    let after = metrics(client.clone(), url.to_string()).await?;

    latencies.sort();
    let count = |text: &str, s: &str| sample(text, s).unwrap_or(0.0);
    let webhook_reconciles = count(&after, "fleet_reconcile_triggers_total{reason=\"webhook\"}")
        - count(
            &before,
            "fleet_reconcile_triggers_total{reason=\"webhook\"}",
        );
    let accepted = count(&after, "fleet_webhooks_total{result=\"accepted\"}");
    let dur_sum = count(&after, "fleet_reconcile_duration_seconds_sum")
        - count(&before, "fleet_reconcile_duration_seconds_sum");
    println!(
        "webhook load: {total} requests at {rate}/s over {seconds} s (sent in {:.2} s, all answered after {:.2} s)",
        sent_in.as_secs_f64(),
        all_answered.as_secs_f64()
    );
    println!("statuses: {statuses:?}; daemon counted {accepted} accepted");
    println!(
        "latency: p50={} p90={} p99={} max={}",
        ms(common::percentile(&latencies, 0.5)),
        ms(common::percentile(&latencies, 0.9)),
        ms(common::percentile(&latencies, 0.99)),
        ms(*latencies.last().ok_or("no requests")?)
    );
    println!(
        "reconciles caused by webhooks: {webhook_reconciles} (mean {:.1} ms each); most in flight at once: {} over {samples} samples",
        if webhook_reconciles > 0.0 { dur_sum * 1000.0 / webhook_reconciles } else { 0.0 },
        most.load(Ordering::Relaxed)
    );
    if most.load(Ordering::Relaxed) > 1 {
        return Err("more than one reconcile was in flight at once".into());
    }
    Ok(())
}
