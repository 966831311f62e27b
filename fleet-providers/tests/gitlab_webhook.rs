//! Job webhook checks: wrong or missing secret 401, oversized 413, bad JSON 400, both
//! timestamp formats, no default secret, and no panic on any body or header.

use fleet_core::secret::Secret;
use fleet_providers::gitlab::webhook::{
    Accepted, Rejection, WebhookConfigError, WebhookVerifier, DEFAULT_MAX_BODY,
};
use proptest::prelude::*;

fn verifier() -> WebhookVerifier {
    WebhookVerifier::new(Secret::new("a-long-random-secret"), 4096).unwrap()
}

fn body(created: &str) -> String {
    format!(
        r#"{{"object_kind":"build","build_id":5,"build_status":"pending","project_id":9,"build_created_at":"{created}","build_started_at":null,"build_finished_at":null}}"#
    )
}

#[test]
fn there_is_no_default_secret() {
    assert_eq!(
        WebhookVerifier::new(Secret::new(""), DEFAULT_MAX_BODY).unwrap_err(),
        WebhookConfigError::EmptySecret
    );
}

#[test]
fn a_wrong_or_missing_token_is_401() {
    let v = verifier();
    let b = body("2023-01-10 13:50:02 UTC");
    for token in [
        None,
        Some(""),
        Some("a-long-random-secreT"),
        Some("a-long-random-secret "),
    ] {
        let e = v.verify(Some("Job Hook"), token, b.as_bytes()).unwrap_err();
        assert_eq!(e, Rejection::Unauthorized, "token {token:?}");
        assert_eq!(e.status(), 401);
    }
}

#[test]
fn an_oversized_body_is_413_and_checked_after_the_token() {
    let v = verifier();
    let big = vec![b' '; 4097];
    let e = v
        .verify(Some("Job Hook"), Some("a-long-random-secret"), &big)
        .unwrap_err();
    assert_eq!(e.status(), 413);
    assert_eq!(
        v.verify(Some("Job Hook"), Some("nope"), &big)
            .unwrap_err()
            .status(),
        401,
        "strangers learn nothing about the limit"
    );
}

#[test]
fn bad_json_or_a_non_job_payload_is_400() {
    let v = verifier();
    for b in [
        "not json",
        "{}",
        "[]",
        r#"{"object_kind":"pipeline","build_id":1,"build_status":"x","project_id":1}"#,
        r#"{"object_kind":"build","build_id":-1,"build_status":"x","project_id":1}"#,
        &body("2023-13-45 99:00:00 UTC"),
    ] {
        let e = v
            .verify(Some("Job Hook"), Some("a-long-random-secret"), b.as_bytes())
            .unwrap_err();
        assert_eq!(e.status(), 400, "{b}: {e}");
    }
}

#[test]
fn both_timestamp_formats_are_accepted() {
    let v = verifier();
    let mut seen = Vec::new();
    for t in [
        "2023-01-10 13:50:02 UTC",
        "2023-01-10T13:50:02Z",
        "2023-01-10T13:50:02.000Z",
        "2023-01-10T15:50:02+02:00",
    ] {
        match v
            .verify(
                Some("Job Hook"),
                Some("a-long-random-secret"),
                body(t).as_bytes(),
            )
            .unwrap()
        {
            Accepted::Job(e) => seen.push(e.created_at.unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}

#[test]
fn other_events_are_accepted_and_ignored() {
    let v = verifier();
    let r = v
        .verify(Some("Push Hook"), Some("a-long-random-secret"), b"{}")
        .unwrap();
    assert_eq!(
        r,
        Accepted::Ignored {
            event: "Push Hook".into()
        }
    );
}

proptest! {
    #[test]
    fn no_body_or_header_makes_it_panic(
        body in proptest::collection::vec(any::<u8>(), 0..6000),
        token in proptest::option::of(".{0,40}"),
        event in proptest::option::of(".{0,20}"),
    ) {
        let v = verifier();
        let r = v.verify(event.as_deref(), token.as_deref(), &body);
        if let Err(e) = r {
            prop_assert!([400, 401, 413].contains(&e.status()));
        }
    }

    #[test]
    fn json_shaped_bodies_with_the_right_token_never_panic(
        kind in "build|pipeline|.{0,8}",
        id in any::<i64>(),
        status in ".{0,12}",
        created in ".{0,30}",
    ) {
        let v = verifier();
        let b = serde_json::json!({
            "object_kind": kind, "build_id": id, "build_status": status,
            "project_id": 1, "build_created_at": created,
        })
        .to_string();
        let _ = v.verify(Some("Job Hook"), Some("a-long-random-secret"), b.as_bytes());
    }
}
