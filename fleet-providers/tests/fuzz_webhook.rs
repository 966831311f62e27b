//! Property tests of the webhook check on hostile requests: arbitrary headers and bodies,
//! and byte-level mutations of GitLab's own job hook example. `verify` and
//! `parse_job_event` must answer without panicking, and the answers must keep their order
//! of checks: a wrong token is 401 whatever the body, then size, then payload.
//!
//! `cargo test` runs a short pass (2,000 cases each); `make fuzz` runs 1,000,000 each in the
//! release profile. PROPTEST_CASES sets the count.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use fleet_core::secret::Secret;
use fleet_providers::gitlab::webhook::{
    parse_job_event, parse_timestamp, Accepted, Rejection, WebhookVerifier,
};

const SECRET: &str = "a-long-random-secret";
const LIMIT: usize = 4096;
const FIXTURE: &str = include_str!("fixtures/gitlab/job-hook.json");

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn verifier() -> WebhookVerifier {
    WebhookVerifier::new(Secret::new(SECRET), LIMIT).unwrap()
}

fn header() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        Just("Job Hook".to_string()),
        Just(SECRET.to_string()),
        Just(format!("{SECRET}\0")),
        Just(SECRET[..SECRET.len() - 1].to_string()),
        any::<String>(),
    ])
}

#[test]
fn arbitrary_requests_get_a_defined_answer() {
    let v = verifier();
    let strategy = (
        header(),
        header(),
        proptest::collection::vec(any::<u8>(), 0..LIMIT * 2),
    );
    runner()
        .run(&strategy, |(event, token, body)| {
            let r = v.verify(event.as_deref(), token.as_deref(), &body);
            if token.as_deref() != Some(SECRET) {
                prop_assert_eq!(r, Err(Rejection::Unauthorized));
            } else if body.len() > LIMIT {
                let too_large = matches!(r, Err(Rejection::TooLarge { .. }));
                prop_assert!(too_large);
            } else if let Err(e) = r {
                prop_assert_eq!(e.status(), 400);
            }
            let _ = parse_job_event(&body);
            Ok(())
        })
        .unwrap();
}

/// A byte-level change to the example payload.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = prop_oneof![
        Just(b"null".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"1e309".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        Just(b"\"\\ud800\"".to_vec()),
        Just(b"{".to_vec()),
        Just(b"[[[[[[[[".to_vec()),
        Just(b"\"2023-13-45 25:61:61 UTC\"".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), token).prop_map(|(i, t)| Edit::Insert(i, t)),
        (any::<usize>(), 0usize..32).prop_map(|(i, n)| Edit::Remove(i, n)),
    ]
}

fn mutate(body: &mut Vec<u8>, e: &Edit) {
    let at = |i: usize, len: usize| i % (len + 1);
    match e {
        Edit::Flip(i, b) if !body.is_empty() => {
            let i = i % body.len();
            body[i] ^= (*b).max(1);
        }
        Edit::Truncate(i) => body.truncate(at(*i, body.len())),
        Edit::Insert(i, t) => {
            let i = at(*i, body.len());
            body.splice(i..i, t.iter().copied());
        }
        Edit::Remove(i, n) => {
            let i = at(*i, body.len());
            let end = (i + n).min(body.len());
            body.drain(i..end);
        }
        _ => {}
    }
}

#[test]
fn mutations_of_gitlabs_example_never_panic() {
    let v = WebhookVerifier::new(Secret::new(SECRET), 1 << 20).unwrap();
    // Unmutated, the example is a job event.
    let ok = v.verify(Some("Job Hook"), Some(SECRET), FIXTURE.as_bytes());
    assert!(matches!(ok, Ok(Accepted::Job(_))), "{ok:?}");
    runner()
        .run(&proptest::collection::vec(edit(), 1..6), |edits| {
            let mut body = FIXTURE.as_bytes().to_vec();
            for e in &edits {
                mutate(&mut body, e);
            }
            match v.verify(Some("Job Hook"), Some(SECRET), &body) {
                Ok(Accepted::Job(_)) | Err(Rejection::BadRequest { .. }) => {}
                other => prop_assert!(false, "unexpected answer {:?}", other),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_timestamps_never_panic() {
    let text = prop_oneof![
        any::<String>(),
        "[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}[ T][0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}(\\.[0-9]{0,12})?( UTC|Z|[+-][0-9]{2}:?[0-9]{2})?",
    ];
    runner()
        .run(&text, |t| {
            let _ = parse_timestamp(&t);
            Ok(())
        })
        .unwrap();
}
