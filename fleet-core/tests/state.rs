//! The state format and the local backend.

use std::os::unix::fs::PermissionsExt;

use fleet_core::state::{
    format, FormatError, LocalBackend, PendingKind, State, StateBackend, StateError,
};
use fleet_core::testing::{backend_conformance, lock_info};

const FIXTURE: &str = include_str!("fixtures/state-v1.json");

#[test]
fn version_1_fixture_round_trips_byte_for_byte() {
    let state = format::decode(FIXTURE.as_bytes()).unwrap();
    assert_eq!(state.serial, 12);
    assert_eq!(state.instances["sandbox-0001"].jobs.runner_id, Some(901));
    assert_eq!(
        state.instances["sandbox-0003"].pending.as_ref().unwrap().op,
        PendingKind::Create
    );
    assert_eq!(String::from_utf8(format::encode(&state)).unwrap(), FIXTURE);
}

#[test]
fn newer_versions_are_refused_with_the_version_named() {
    let text = FIXTURE.replace("\"format_version\": 1", "\"format_version\": 9");
    let e = format::decode(text.as_bytes()).unwrap_err();
    assert!(matches!(e, FormatError::TooNew { found: 9 }));
    assert_eq!(
        e.to_string(),
        "format_version 9 is newer than this build understands (1)"
    );
}

#[test]
fn documents_without_a_version_are_refused() {
    assert!(matches!(
        format::decode(b"{\"serial\": 1}"),
        Err(FormatError::NoVersion)
    ));
}

#[test]
fn schema_errors_name_the_field() {
    let text = FIXTURE.replace("\"lifecycle\": \"running\"", "\"lifecycle\": \"dancing\"");
    let e = format::decode(text.as_bytes()).unwrap_err();
    let FormatError::Schema { source, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        source.path().to_string(),
        "instances.sandbox-0001.lifecycle"
    );
}

#[tokio::test]
async fn local_backend_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/state.json");
    backend_conformance(|| LocalBackend::new(path.clone())).await;
}

#[tokio::test]
async fn writes_keep_a_backup_and_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(dir.path().join("state.json"));
    let mut s = State::new("st", "lin");
    s.serial = 1;
    b.write(&s).await.unwrap();
    assert!(
        !b.backup_path().exists(),
        "nothing to back up on the first write"
    );
    s.serial = 2;
    s.next_index = 9;
    b.write(&s).await.unwrap();
    let backup = format::decode(&std::fs::read(b.backup_path()).unwrap()).unwrap();
    assert_eq!(backup.serial, 1, "the backup is the version replaced");
    for p in [b.path().to_path_buf(), b.backup_path()] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", p.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Every way a state file can be broken gives a `Format` error that names the backup and
/// says what is wrong; neither the read nor a refused write touches the backup.
#[tokio::test]
async fn malformed_state_files_name_the_problem_and_never_touch_the_backup() {
    let valid = FIXTURE.to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty file", String::new(), "not valid JSON at line 1 column 0"),
        ("truncated", valid[..valid.len() / 2].to_string(), "not valid JSON"),
        (
            "cut after a key",
            "{\"format_version\": 1, \"serial\": ".into(),
            "not valid JSON at line 1 column",
        ),
        ("not an object", "[1, 2, 3]".into(), "no `format_version`"),
        (
            "no version",
            valid.replace("\"format_version\": 1,", ""),
            "no `format_version`",
        ),
        (
            "version as a string",
            valid.replace("\"format_version\": 1", "\"format_version\": \"1\""),
            "no `format_version`",
        ),
        (
            "version from the future",
            valid.replace("\"format_version\": 1", "\"format_version\": 99"),
            "format_version 99 is newer than this build understands (1)",
        ),
        (
            "serial of the wrong type",
            valid.replacen("\"serial\": ", "\"serial\": \"seven\", \"x\": ", 1),
            "serial",
        ),
        (
            "instances as a list",
            r#"{"format_version": 1, "serial": 1, "lineage": "l", "stack": "st", "next_index": 0, "instances": [], "resources": {}}"#.into(),
            "instances",
        ),
        ("binary garbage", "\u{0}\u{1}\u{7f}garbage".into(), "not valid JSON"),
    ];
    for (what, text, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("state.json"));
        let mut s = State::new("st", "lin");
        s.serial = 1;
        b.write(&s).await.unwrap();
        s.serial = 2;
        b.write(&s).await.unwrap();
        let backup_before = std::fs::read(b.backup_path()).unwrap();
        std::fs::write(b.path(), &text).unwrap();

        let e = b.read().await.unwrap_err();
        let chain = fleet_core::apply::error_chain(&e);
        assert!(matches!(e, StateError::Format { .. }), "{what}: {chain}");
        assert!(chain.contains("is unreadable"), "{what}: {chain}");
        assert!(
            chain.contains("state.json.backup"),
            "{what}: the message must name the backup: {chain}"
        );
        assert!(
            chain.contains(expect),
            "{what}: expected `{expect}` in {chain}"
        );
        s.serial = 3;
        assert!(
            b.write(&s).await.is_err(),
            "{what}: a write over it is refused"
        );
        assert_eq!(
            std::fs::read(b.backup_path()).unwrap(),
            backup_before,
            "{what}: the backup changed"
        );
        assert_eq!(std::fs::read(b.path()).unwrap(), text.as_bytes(), "{what}");
    }
}

#[tokio::test]
async fn a_lock_left_by_a_dead_process_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(dir.path().join("state.json"));
    // What a SIGKILLed holder leaves: its name in the lock file, but no OS lock.
    let dead = lock_info("fleet-cli up", 99_999_999);
    std::fs::write(b.lock_path(), serde_json::to_vec(&dead).unwrap()).unwrap();
    b.lock(&lock_info("fleet-cli up", std::process::id()))
        .await
        .unwrap();
    b.unlock().await.unwrap();
}

#[tokio::test]
async fn the_lock_error_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let a = LocalBackend::new(&path);
    let b = LocalBackend::new(&path);
    a.lock(&lock_info("fleet-cli up", 4242)).await.unwrap();
    let e = b
        .lock(&lock_info("fleet-cli destroy", 1))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "state at {} is locked by `fleet-cli up` (pid 4242 on test-host, user tester) since 2026-11-01 12:00:00 UTC",
            path.display()
        )
    );
}

/// A holder writes its name just after taking the lock; a locker refused in that moment
/// waits for the name instead of reporting an unknown holder (a CI failure of
/// `ten_ups_at_once_end_at_exactly_the_desired_fleet` came from that window).
#[tokio::test]
async fn a_lock_refused_before_the_holder_wrote_its_name_still_names_it() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let b = LocalBackend::new(&path);
    let mut held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(b.lock_path())
        .unwrap();
    held.lock().unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let name = serde_json::to_vec(&lock_info("fleet-cli up", 4242)).unwrap();
        held.write_all(&name).unwrap();
        held.sync_all().unwrap();
        held // keep the OS lock until the assertion below has run
    });
    let e = b
        .lock(&lock_info("fleet-cli destroy", 1))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("is locked by `fleet-cli up` (pid 4242"),
        "{e}"
    );
    drop(writer.join().unwrap());
}
