//! Conformance suites every implementation of a core trait runs in its own tests, and a
//! small in-memory cloud for the engine's tests. Enabled by the `testing` feature.

mod backend;
mod cloud;
mod memory;

pub use backend::backend_conformance;
pub use cloud::{cloud_conformance, cloud_refusal_conformance};
pub use memory::{injected, MemoryCloud};

use chrono::{DateTime, TimeZone, Utc};

use crate::state::LockInfo;

/// A fixed instant for tests.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("valid date")
}

/// A lock holder for tests.
pub fn lock_info(operation: &str, pid: u32) -> LockInfo {
    LockInfo {
        id: format!("{operation}-{pid}"),
        who: "tester".into(),
        host: "test-host".into(),
        pid,
        operation: operation.into(),
        since: t0(),
        lease_until: None,
    }
}
