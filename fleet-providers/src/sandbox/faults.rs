//! Faults on purpose: latency, a seeded share of failed calls (half of them after the
//! effect, like a timeout after the cloud acted), and `crash_after`, which kills the
//! process right after the Nth create or delete took effect.

use rand::Rng;

use fleet_core::cloud::CloudError;

use super::SandboxCloud;

/// When an injected failure strikes.
pub(super) enum Injection {
    None,
    Before,
    After,
}

impl SandboxCloud {
    /// Sleeps the configured latency, then draws whether this call fails and when.
    pub(super) async fn enter(&self, operation: &str) -> Injection {
        if !self.settings.latency.is_zero() {
            tokio::time::sleep(self.settings.latency).await;
        }
        if self.settings.failure_rate <= 0.0 {
            return Injection::None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.gen_bool(self.settings.failure_rate) {
            if rng.gen_bool(0.5) {
                Injection::Before
            } else {
                Injection::After
            }
        } else {
            tracing::trace!(operation, "sandbox call");
            Injection::None
        }
    }

    pub(super) fn injected(&self, operation: &str) -> CloudError {
        self.error(
            operation,
            "InjectedFailure",
            "the sandbox failed this call on purpose (failure_rate)".into(),
            true,
        )
    }

    /// After an effect is saved: die here if this is the call `crash_after` names.
    pub(super) fn maybe_crash(&self, operation: &str) {
        let Some((op, n)) = &self.crash else { return };
        if op != operation {
            return;
        }
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let c = calls.entry(op.clone()).or_default();
        *c += 1;
        if *c == *n {
            tracing::warn!("sandbox crash_after {op}:{n}: killing this process");
            // SAFETY: sending SIGKILL to ourselves; nothing runs after it.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

/// `create:N` or `delete:N`.
pub(super) fn parse_crash(s: &str) -> Option<(String, u64)> {
    let (op, n) = s.split_once(':')?;
    let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
    matches!(op, "create" | "delete").then(|| (op.to_string(), n))
}
