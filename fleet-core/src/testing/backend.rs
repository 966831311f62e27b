//! The state backend conformance suite.

use crate::autoscale::Phase;
use crate::cloud::Lifecycle;
use crate::state::{InstanceRecord, JobFacts, State, StateBackend, StateError, Warming};

use super::{lock_info, t0};

fn record(i: u64) -> InstanceRecord {
    InstanceRecord {
        name: crate::naming::instance_name("conf", i),
        cloud_id: Some(format!("i-{i:08x}")),
        spec_hash: "0123456789abcdef".into(),
        image: "debian-12".into(),
        instance_type: "small".into(),
        template_hash: None,
        created_at: t0(),
        lifecycle: Lifecycle::Running,
        address: Some("127.0.0.1".into()),
        jobs: JobFacts::default(),
        pending: None,
        started_at: None,
        draining_since: None,
        warming: i.is_multiple_of(2).then(|| Warming::new(Phase::Boot, t0())),
    }
}

/// Runs the contract of [`StateBackend`] against fresh storage. `make` must return
/// backends that share one storage location (two of them contend for one lock).
///
/// Panics (it is a test) with a message naming the broken rule.
pub async fn backend_conformance<B: StateBackend>(make: impl Fn() -> B) {
    let a = make();
    let b = make();

    // Empty storage reads as no state.
    assert!(
        a.read().await.expect("read empty").is_none(),
        "empty storage must read as None"
    );

    // The first write must be serial 1.
    let mut s = State::new("conf", "lineage-1");
    s.serial = 2;
    assert!(
        matches!(a.write(&s).await, Err(StateError::Conflict { .. })),
        "a first write with serial 2 must be refused"
    );
    s.serial = 1;
    for i in 1..=3 {
        s.instances
            .insert(crate::naming::instance_name("conf", i), record(i));
    }
    a.write(&s).await.expect("first write");
    assert_eq!(
        b.read().await.expect("read").as_ref(),
        Some(&s),
        "state must round-trip"
    );

    // Lost updates are detected: a write not based on the stored serial is refused.
    let stale = s.clone();
    s.serial = 2;
    s.instances.remove("conf-0001");
    a.write(&s).await.expect("second write");
    let mut conflicting = stale;
    conflicting.serial = 2;
    assert!(
        matches!(
            b.write(&conflicting).await,
            Err(StateError::Conflict { .. })
        ),
        "a write based on an old serial must be refused"
    );
    assert_eq!(
        a.read().await.expect("read").as_ref(),
        Some(&s),
        "a refused write must change nothing"
    );

    // Another lineage is refused.
    let mut other = State::new("conf", "lineage-2");
    other.serial = 3;
    assert!(
        matches!(
            b.write(&other).await,
            Err(StateError::LineageMismatch { .. })
        ),
        "a write from another lineage must be refused"
    );

    // Locks exclude, name their holder, and release.
    let ia = lock_info("fleet-cli up", 4242);
    a.lock(&ia).await.expect("lock a");
    match b.lock(&lock_info("fleet-cli destroy", 4343)).await {
        Err(StateError::Locked { holder, .. }) => {
            assert_eq!(holder.operation, "fleet-cli up", "the holder must be named");
            assert_eq!(holder.pid, 4242);
            assert_eq!(holder.host, "test-host");
        }
        other => panic!("a second lock must fail with Locked, got {other:?}"),
    }
    a.unlock().await.expect("unlock a");
    b.lock(&lock_info("fleet-cli destroy", 4343))
        .await
        .expect("lock after release");
    b.unlock().await.expect("unlock b");
    b.unlock().await.expect("unlock is harmless when not held");

    // A larger state round-trips.
    let mut big = a.read().await.expect("read").expect("some");
    for i in 10..1010 {
        big.instances
            .insert(crate::naming::instance_name("conf", i), record(i));
    }
    big.serial += 1;
    a.write(&big).await.expect("big write");
    assert_eq!(
        b.read().await.expect("read big").as_ref(),
        Some(&big),
        "1,000 records must round-trip"
    );
}
