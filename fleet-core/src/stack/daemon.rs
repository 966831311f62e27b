//! `daemon:`: how `fleet-cli serve` runs the reconcile loop and where it listens, with the
//! checks that make a bad value fail at load with its location.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration_serde, LoadedStack, StackError};

/// `daemon:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Time between reconciles when no webhook asks for one sooner.
    #[serde(default = "default_interval", with = "duration_serde")]
    pub interval: Duration,
    /// `ip:port` of the webhook, metrics and health endpoints. Plain HTTP: put a reverse
    /// proxy in front for TLS.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Time between reconciles while a VM boots or starts, when shorter than `interval`:
    /// boots and resumes are timed to about this (see docs/policy.md) and a late one is
    /// noticed soon.
    #[serde(default = "default_warming_interval", with = "duration_serde")]
    pub warming_interval: Duration,
    /// Wait before the first retry of a failed reconcile; each further failure doubles it.
    #[serde(default = "default_retry_initial", with = "duration_serde")]
    pub retry_initial: Duration,
    /// Longest wait between retries of failed reconciles.
    #[serde(default = "default_retry_max", with = "duration_serde")]
    pub retry_max: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            interval: default_interval(),
            listen: default_listen(),
            warming_interval: default_warming_interval(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
        }
    }
}

impl DaemonConfig {
    /// When to reconcile next after a reconcile that left VMs on their way to ready
    /// (`warming`) or not.
    pub fn requeue_after(&self, warming: bool) -> Duration {
        if warming {
            self.interval.min(self.warming_interval)
        } else {
            self.interval
        }
    }

    /// The listen address; [`validate`] has checked that it parses.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.trim().parse().ok()
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_warming_interval() -> Duration {
    Duration::from_secs(10)
}
/// Not 9252: that is gitlab-runner's own metrics port, and a runner may share the host.
fn default_listen() -> String {
    "127.0.0.1:9253".into()
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(5 * 60)
}

pub(super) fn validate(l: &LoadedStack) -> Result<(), StackError> {
    let d = &l.stack.daemon;
    if d.interval < Duration::from_secs(1) {
        return Err(l.error_at(
            "daemon.interval",
            format!(
                "daemon.interval is {}ms; the loop needs at least 1s between reconciles",
                d.interval.as_millis()
            ),
            "use something like 60s; webhooks trigger reconciles in between",
        ));
    }
    if d.warming_interval < Duration::from_secs(1) {
        return Err(l.error_at(
            "daemon.warming_interval",
            format!(
                "daemon.warming_interval is {}ms; the loop needs at least 1s between reconciles",
                d.warming_interval.as_millis()
            ),
            "use something like 10s",
        ));
    }
    if d.listen_addr().is_none() {
        return Err(l.error_at(
            "daemon.listen",
            format!("daemon.listen `{}` is not an ip:port address", d.listen),
            "write it like 127.0.0.1:9253, or 0.0.0.0:9253 behind a firewall",
        ));
    }
    if d.retry_initial.is_zero() {
        return Err(l.error_at(
            "daemon.retry_initial",
            "daemon.retry_initial is 0, which would retry failed reconciles in a tight loop",
            "use something like 2s",
        ));
    }
    if d.retry_max < d.retry_initial {
        return Err(l.error_at(
            "daemon.retry_max",
            format!(
                "daemon.retry_max ({}ms) is shorter than daemon.retry_initial ({}ms)",
                d.retry_max.as_millis(),
                d.retry_initial.as_millis()
            ),
            "raise retry_max, like 5m",
        ));
    }
    Ok(())
}
