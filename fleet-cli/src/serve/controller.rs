//! The daemon's reconcile loop, after kube-runtime's controller: `reconcile` returns a
//! [`Requeue`] (when to run again; kube-runtime calls it an `Action`), and one `error_policy`
//! maps every error to one.
//!
//! Triggers are coalesced: one reconcile runs at a time, and any number of webhooks that
//! arrive while it runs mark the fleet dirty, which causes exactly one more reconcile
//! afterwards. After a failure, the next attempt waits out the backoff even if webhooks
//! arrive, so a failing cloud is never retried in a tight loop. The reason for a reconcile
//! is not passed to it, which keeps it idempotent.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// What the loop does after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requeue {
    requeue_after: Duration,
}

impl Requeue {
    /// Run again after `d`, or sooner when a trigger arrives (unless backing off).
    pub fn after(d: Duration) -> Requeue {
        Requeue { requeue_after: d }
    }

    /// The delay.
    pub fn requeue_after(&self) -> Duration {
        self.requeue_after
    }
}

/// Exponential backoff: `initial`, doubled per consecutive failure, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` consecutive failures (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Asks for a reconcile. Requests made while one runs coalesce into one more.
#[derive(Debug, Default)]
pub struct Trigger {
    dirty: AtomicBool,
    notify: Notify,
}

impl Trigger {
    /// Marks the fleet dirty and wakes the loop.
    pub fn request(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Clears the flag: the reconcile about to start covers every request before it.
    fn take(&self) -> bool {
        self.dirty.swap(false, Ordering::SeqCst)
    }

    fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }
}

/// Why the loop woke, for logs and metrics only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The first reconcile at start.
    Start,
    /// The requeue time came.
    Timer,
    /// A trigger (webhook) asked for it.
    Trigger,
    /// The backoff after a failure ran out.
    Retry,
}

impl Wake {
    /// Lowercase name, for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Wake::Start => "start",
            Wake::Timer => "timer",
            Wake::Trigger => "webhook",
            Wake::Retry => "retry",
        }
    }
}

/// Runs `reconcile` until `shutdown` turns true: at start, then whenever the last action's
/// delay runs out or a trigger arrives. A reconcile in progress is always finished, never
/// cancelled, so the state lock it holds is released by the reconcile itself.
///
/// `error_policy` gets the error and the number of consecutive failures. `on_wake` is told
/// why each reconcile runs.
pub async fn run<E, F, Fut>(
    trigger: &Trigger,
    mut shutdown: watch::Receiver<bool>,
    mut reconcile: F,
    error_policy: impl Fn(&E, u32) -> Requeue,
    on_wake: impl Fn(Wake),
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Requeue, E>>,
{
    let mut failures = 0u32;
    let mut next = Instant::now();
    let mut immediate = Some(Wake::Start);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let wake = match immediate.take() {
            Some(wake) => wake,
            None => loop {
                let backing_off = failures > 0;
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep_until(next) => {
                        break if backing_off { Wake::Retry } else { Wake::Timer };
                    }
                    _ = trigger.notify.notified(), if !backing_off => {
                        // Otherwise a stale wake-up whose request a reconcile already covered.
                        if trigger.is_dirty() {
                            break Wake::Trigger;
                        }
                    }
                }
            },
        };
        trigger.take();
        on_wake(wake);
        let action = match reconcile().await {
            Ok(action) => {
                failures = 0;
                action
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                error_policy(&e, failures)
            }
        };
        next = Instant::now() + action.requeue_after();
        // Requests that came in while it ran: once more, right away. After a failure they
        // wait for the backoff instead (the select above keeps them pending).
        if trigger.is_dirty() && failures == 0 {
            immediate = Some(Wake::Trigger);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(60);
    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_secs(2),
        max: Duration::from_secs(30),
    };

    #[test]
    fn backoff_doubles_and_stops_at_its_cap() {
        let d: Vec<u64> = (1..=8).map(|n| BACKOFF.delay(n).as_secs()).collect();
        assert_eq!(d, [2, 4, 8, 16, 30, 30, 30, 30]);
        assert_eq!(BACKOFF.delay(u32::MAX), BACKOFF.max);
        assert_eq!(BACKOFF.delay(0), BACKOFF.initial);
    }

    /// A fake reconcile that takes `work`, records when it started, and fails while
    /// `failing` is set; it also checks that two never overlap.
    #[derive(Clone, Default)]
    struct Fake {
        starts: Arc<Mutex<Vec<Duration>>>,
        in_flight: Arc<AtomicUsize>,
        most_in_flight: Arc<AtomicUsize>,
        failing: Arc<AtomicBool>,
    }

    impl Fake {
        fn reconcile(
            &self,
            origin: Instant,
            work: Duration,
        ) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<Requeue, String>>>>
        {
            let me = self.clone();
            move || {
                let me = me.clone();
                Box::pin(async move {
                    me.starts.lock().unwrap().push(origin.elapsed());
                    let n = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    me.most_in_flight.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(work).await;
                    me.in_flight.fetch_sub(1, Ordering::SeqCst);
                    if me.failing.load(Ordering::SeqCst) {
                        Err("cloud unavailable".to_string())
                    } else {
                        Ok(Requeue::after(INTERVAL))
                    }
                })
            }
        }

        fn starts(&self) -> Vec<u64> {
            self.starts
                .lock()
                .unwrap()
                .iter()
                .map(|d| d.as_secs())
                .collect()
        }
    }

    fn policy(_: &String, failures: u32) -> Requeue {
        Requeue::after(BACKOFF.delay(failures))
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_triggers_during_a_reconcile_causes_exactly_one_more() {
        let origin = Instant::now();
        let fake = Fake::default();
        let trigger = Arc::new(Trigger::default());
        let (stop, shutdown) = watch::channel(false);
        let t = trigger.clone();
        let burst = async move {
            // The first reconcile runs from 0s to 10s; 50 webhooks arrive during it.
            tokio::time::sleep(Duration::from_secs(1)).await;
            for _ in 0..50 {
                t.request();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Long after: one more webhook, then quiet until the timer.
            tokio::time::sleep(Duration::from_secs(25)).await;
            t.request();
            tokio::time::sleep(Duration::from_secs(200)).await;
            let _ = stop.send(true);
        };
        let wakes = Mutex::new(Vec::new());
        tokio::join!(
            run(
                &trigger,
                shutdown,
                fake.reconcile(origin, Duration::from_secs(10)),
                policy,
                |w| wakes.lock().unwrap().push(w)
            ),
            burst
        );
        // 0: start; 10: the coalesced burst; 31: the late webhook; then every 60s after
        // the last one ended (41 + 60, 161 + 60 would be past the stop at 231).
        assert_eq!(fake.starts(), [0, 10, 31, 101, 171]);
        assert_eq!(fake.most_in_flight.load(Ordering::SeqCst), 1);
        assert_eq!(
            *wakes.lock().unwrap(),
            [
                Wake::Start,
                Wake::Trigger,
                Wake::Trigger,
                Wake::Timer,
                Wake::Timer
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_even_under_a_webhook_storm() {
        let origin = Instant::now();
        let fake = Fake::default();
        fake.failing.store(true, Ordering::SeqCst);
        let trigger = Arc::new(Trigger::default());
        let (stop, shutdown) = watch::channel(false);
        let t = trigger.clone();
        let failing = fake.failing.clone();
        let storm = async move {
            // A webhook every 100ms for 120s: the retries must still wait out the backoff.
            for _ in 0..1200 {
                t.request();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            failing.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(100)).await;
            let _ = stop.send(true);
        };
        tokio::join!(
            run(
                &trigger,
                shutdown,
                fake.reconcile(origin, Duration::from_secs(1)),
                policy,
                |_| {}
            ),
            storm
        );
        // Each attempt takes 1s, then waits 2, 4, 8, 16, 30, 30... The one at 127s
        // succeeds (the storm ended at 120s), and then only the timer runs: 128 + 60.
        assert_eq!(fake.starts(), [0, 3, 8, 17, 34, 65, 96, 127, 188]);
        assert_eq!(fake.most_in_flight.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_the_reconcile_in_progress_and_starts_no_other() {
        let origin = Instant::now();
        let fake = Fake::default();
        let trigger = Arc::new(Trigger::default());
        let (stop, shutdown) = watch::channel(false);
        let t = trigger.clone();
        let stopper = async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            t.request();
            let _ = stop.send(true);
        };
        let finished = tokio::join!(
            async {
                run(
                    &trigger,
                    shutdown,
                    fake.reconcile(origin, Duration::from_secs(20)),
                    policy,
                    |_| {},
                )
                .await;
                origin.elapsed()
            },
            stopper
        )
        .0;
        assert_eq!(fake.starts(), [0], "no reconcile after the stop");
        assert_eq!(
            finished,
            Duration::from_secs(20),
            "the running one finished"
        );
        assert_eq!(fake.in_flight.load(Ordering::SeqCst), 0);
    }
}
