//! The Hetzner provider against a test double of the Hetzner Cloud API on 127.0.0.1
//! (`hetzner_double`), whose answers are the API documentation's examples: the shared
//! cloud conformance suite, then create, list, delete, pagination, rate limits and error
//! bodies one by one.

mod hetzner_double;

use axum::http::{Method, StatusCode};
use serde_json::json;

use fleet_core::apply::error_chain;
use fleet_core::cloud::{Cloud, CloudError, CreateInstance, Scope};
use fleet_core::secret::Secret;
use fleet_core::spec::InstanceSpec;
use fleet_core::testing::{cloud_conformance, cloud_refusal_conformance};
use fleet_providers::hetzner::{models, HetznerCloud, HetznerSettings};
use hetzner_double::{fixture, Double, Fault, TOKEN};

fn settings(url: &str) -> HetznerSettings {
    serde_yaml_ng::from_str(&format!(
        "{{endpoint: '{url}', poll_interval: 10ms, retry_backoff: 10ms, rate_limit_max_wait: 5s, max_attempts: 3}}"
    ))
    .unwrap()
}

fn cloud(d: &Double) -> HetznerCloud {
    HetznerCloud::new(settings(&d.url), Secret::new(TOKEN)).unwrap()
}

fn scope(stack: &str) -> Scope {
    Scope {
        stack: stack.into(),
        lineage: "lin-1".into(),
    }
}

fn requests(scope: &Scope, n: u64, types: &[&str], image: &str) -> Vec<CreateInstance> {
    let spec = InstanceSpec {
        image: image.into(),
        instance_types: types.iter().map(|t| t.to_string()).collect(),
        template_hash: None,
        labels: [("team".to_string(), "ci".to_string())].into(),
    };
    (1..=n)
        .map(|i| {
            let name = fleet_core::naming::instance_name(&scope.stack, i);
            CreateInstance {
                tags: fleet_core::apply::object_tags(scope, &name, &spec.hash(), None),
                name,
                spec: spec.clone(),
                user_data: Some(Secret::new("#cloud-config\nruncmd: [echo glrt-secret]\n")),
            }
        })
        .collect()
}

fn code(e: &CloudError) -> &str {
    e.code().unwrap_or("")
}

#[tokio::test]
async fn hetzner_passes_the_cloud_conformance_suite() {
    let d = Double::start().await;
    cloud_conformance(&cloud(&d), "conformance", "ubuntu-24.04", "cpx11").await;
    let unknown_image = InstanceSpec {
        image: "no-such-image".into(),
        instance_types: vec!["cpx11".into()],
        template_hash: None,
        labels: Default::default(),
    };
    cloud_refusal_conformance(&cloud(&d), "refused", unknown_image).await;
}

#[test]
fn the_documented_examples_decode_into_the_provider_models() {
    let create: models::CreateServerResponse =
        serde_json::from_value(fixture("create_server")).unwrap();
    assert_eq!(create.server.status, "initializing");
    assert_eq!(create.action.command, "create_server");
    assert_eq!(create.next_actions.len(), 1);
    let list: models::ListServersResponse =
        serde_json::from_value(fixture("list_servers")).unwrap();
    assert_eq!(list.meta.unwrap().pagination.last_page, Some(1));
    let server = &list.servers[0];
    assert_eq!(server.server_type.name, "cpx11");
    assert_eq!(
        server
            .public_net
            .as_ref()
            .unwrap()
            .ipv4
            .as_ref()
            .unwrap()
            .ip,
        "1.2.3.4"
    );
    let _: models::ServerResponse = serde_json::from_value(fixture("get_server")).unwrap();
    let deleted: models::ActionResponse = serde_json::from_value(fixture("delete_server")).unwrap();
    assert_eq!(deleted.action.command, "delete_server");
    let failed: models::ActionResponse = serde_json::from_value(fixture("action_error")).unwrap();
    assert_eq!(failed.action.error.unwrap().code, "action_failed");
    for name in [
        "error_invalid_input",
        "error_uniqueness",
        "error_rate_limit",
        "error_unauthorized",
        "error_resource_unavailable",
        "error_not_found",
        "error_server_error",
    ] {
        let e: models::ErrorResponse = serde_json::from_value(fixture(name)).unwrap();
        assert!(!e.error.code.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn creates_send_labels_user_data_and_wait_for_the_action() {
    let d = Double::start().await;
    let c = cloud(&d);
    let s = scope("web");
    let reqs = requests(&s, 2, &["cpx11"], "ubuntu-24.04");
    let out = c.create_instances(&s, "fb-abc", &reqs).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.created.len(), 2);
    let w = d.world();
    let posts: Vec<_> = w.seen.iter().filter(|r| r.method == Method::POST).collect();
    assert_eq!(posts.len(), 2, "one POST /servers per instance");
    let body = posts[0].body.as_ref().unwrap();
    assert_eq!(
        body["user_data"],
        "#cloud-config\nruncmd: [echo glrt-secret]\n"
    );
    assert_eq!(body["labels"]["fleet-stack"], "web");
    assert_eq!(body["labels"]["fleet-batch"], "fb-abc");
    assert_eq!(body["labels"]["fleet-lineage"], "lin-1");
    assert_eq!(body["labels"]["team"], "ci");
    assert!(
        w.seen.iter().any(|r| r.uri.starts_with("/v1/actions/")),
        "the create action is polled until it finishes"
    );
    // The user data is a Secret: masked wherever the request is printed.
    assert!(!format!("{:?}", reqs[0]).contains("glrt-secret"));
}

#[tokio::test]
async fn observe_reads_every_page_by_label_selector() {
    let d = Double::start().await;
    for i in 0..60 {
        d.seed(
            &format!("big-{i:04}"),
            json!({"fleet-stack": "big", "fleet-name": format!("big-{i:04}")}),
        );
    }
    d.seed("other-0001", json!({"fleet-stack": "other"}));
    let seen = cloud(&d).observe(&scope("big")).await.unwrap();
    assert_eq!(seen.instances.len(), 60);
    let lists: Vec<String> = d
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /v1/servers?"))
        .collect();
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert!(
        lists[0].contains("label_selector=fleet-stack%3Dbig"),
        "{lists:?}"
    );
    assert!(lists[1].contains("page=2"), "{lists:?}");
}

#[tokio::test]
async fn server_types_fall_back_along_the_list_when_one_is_unavailable() {
    let d = Double::start().await;
    d.world().unavailable.insert("cpx11".into());
    let c = cloud(&d);
    let s = scope("fb");
    let out = c
        .create_instances(
            &s,
            "fb-1",
            &requests(&s, 1, &["cpx11", "cpx21"], "ubuntu-24.04"),
        )
        .await
        .unwrap();
    assert_eq!(out.created[0].instance_type, "cpx21");

    d.world().unavailable.insert("cpx21".into());
    let reqs = requests(&scope("fb2"), 1, &["cpx11", "cpx21"], "ubuntu-24.04");
    let out = c
        .create_instances(&scope("fb2"), "fb-2", &reqs)
        .await
        .unwrap();
    let (_, e) = &out.failed[0];
    assert_eq!(code(e), "resource_unavailable");
    assert!(!e.is_ambiguous());
    assert!(
        error_chain(e).contains("add fallback types to instance.types"),
        "{}",
        error_chain(e)
    );
}

#[tokio::test]
async fn a_name_taken_outside_the_stack_is_refused_with_what_to_do() {
    let d = Double::start().await;
    d.seed("taken-0001", json!({"owner": "someone-else"}));
    let s = scope("taken");
    let out = cloud(&d)
        .create_instances(&s, "fb-1", &requests(&s, 1, &["cpx11"], "ubuntu-24.04"))
        .await
        .unwrap();
    let (name, e) = &out.failed[0];
    assert_eq!(name, "taken-0001");
    assert_eq!(
        error_chain(e),
        "hetzner refused create (uniqueness_error): server name is already used; a server of that name exists outside this stack; rename or delete it, or rename the stack"
    );
}

#[tokio::test]
async fn invalid_input_and_failed_actions_are_reported_per_instance() {
    let d = Double::start().await;
    let c = cloud(&d);
    let s = scope("bad");
    let out = c
        .create_instances(&s, "fb-1", &requests(&s, 1, &["cpx11"], "no-such-image"))
        .await
        .unwrap();
    let (_, e) = &out.failed[0];
    assert_eq!(code(e), "invalid_input");
    assert!(
        error_chain(e).contains("check instance.image"),
        "{}",
        error_chain(e)
    );

    d.world().fail_actions = true;
    let out = c
        .create_instances(&s, "fb-2", &requests(&s, 1, &["cpx11"], "ubuntu-24.04"))
        .await
        .unwrap();
    let (_, e) = &out.failed[0];
    assert_eq!(code(e), "action_failed");
    assert!(
        error_chain(e).contains("(create_server): Action failed"),
        "{}",
        error_chain(e)
    );
}

#[tokio::test]
async fn deleting_a_server_that_is_gone_counts_as_deleted() {
    let d = Double::start().await;
    let id = d.seed("gone-0001", json!({"fleet-stack": "gone"}));
    let c = cloud(&d);
    let ids = vec![id.to_string(), "999999".to_string()];
    let out = c.delete_instances(&scope("gone"), &ids).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.deleted.len(), 2);
    assert!(d.world().servers.is_empty());
    let out = c
        .delete_instances(&scope("gone"), &["not-a-number".to_string()])
        .await
        .unwrap();
    assert!(error_chain(&out.failed[0].1).contains("not a Hetzner server id"));
}

#[tokio::test]
async fn a_429_is_retried_after_the_reset_and_gives_up_with_advice() {
    let d = Double::start().await;
    let limited = || Fault {
        method: Method::GET,
        path: "/v1/servers".into(),
        status: StatusCode::TOO_MANY_REQUESTS,
        body: fixture("error_rate_limit"),
        reset_in: Some(0),
    };
    d.world().faults.push_back(limited());
    let c = cloud(&d);
    c.observe(&scope("rl"))
        .await
        .expect("retried after the 429");
    assert_eq!(d.requests().len(), 2);

    for _ in 0..3 {
        d.world().faults.push_back(limited());
    }
    let e = c.observe(&scope("rl")).await.unwrap_err();
    assert!(e.is_ambiguous(), "a rate limit may pass: {e:?}");
    assert_eq!(
        error_chain(&e),
        "hetzner list_servers failed transiently (rate_limit_exceeded): limit of 3600 requests per hour reached; Hetzner's rate limit is used up; the next run retries (lower apply.concurrency to spread calls)"
    );
}

#[tokio::test]
async fn a_used_up_window_holds_the_next_request_until_its_reset() {
    let d = Double::start().await;
    d.world().faults.push_back(Fault {
        method: Method::GET,
        path: "/v1/servers".into(),
        status: StatusCode::OK,
        body: fixture("list_servers"),
        reset_in: Some(2),
    });
    let c = cloud(&d);
    c.observe(&scope("win")).await.unwrap();
    c.observe(&scope("win")).await.unwrap();
    let w = d.world();
    let (first, second) = (w.seen[0].at, w.seen[1].at);
    assert!(
        second.timestamp() >= first.timestamp() + 2,
        "the second request waited for RateLimit-Reset: {first} -> {second}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_and_then_reported_as_transient() {
    let d = Double::start().await;
    for _ in 0..3 {
        d.world().faults.push_back(Fault {
            method: Method::GET,
            path: "/v1/servers".into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: fixture("error_server_error"),
            reset_in: None,
        });
    }
    let e = cloud(&d).observe(&scope("5xx")).await.unwrap_err();
    assert_eq!(code(&e), "server_error");
    assert!(e.is_ambiguous());
    assert_eq!(d.requests().len(), 3, "max_attempts: 3");
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_never_printed() {
    let d = Double::start().await;
    let c = HetznerCloud::new(settings(&d.url), Secret::new("wrong-token-9d2e")).unwrap();
    let e = c.observe(&scope("auth")).await.unwrap_err();
    assert_eq!(code(&e), "unauthorized");
    assert!(!e.is_ambiguous());
    let text = format!("{} {e:?} {c:?}", error_chain(&e));
    assert!(text.contains("check the API token"), "{text}");
    assert!(!text.contains("wrong-token-9d2e"), "{text}");
}

#[tokio::test]
async fn an_unreachable_endpoint_says_so() {
    let mut s = settings("http://127.0.0.1:9/v1");
    s.max_attempts = 1;
    let c = HetznerCloud::new(s, Secret::new(TOKEN)).unwrap();
    let e = c.observe(&scope("down")).await.unwrap_err();
    assert_eq!(code(&e), "request_failed");
    assert!(
        error_chain(&e).contains("check provider.endpoint"),
        "{}",
        error_chain(&e)
    );
}

#[tokio::test]
async fn describe_finds_a_server_by_id_and_none_for_unknown_ids() {
    let d = Double::start().await;
    let id = d.seed(
        "one-0001",
        json!({"fleet-stack": "one", "fleet-name": "one-0001"}),
    );
    let c = cloud(&d);
    let found = c.describe_instance(&id.to_string()).await.unwrap().unwrap();
    assert_eq!(found.name, "one-0001");
    assert_eq!(found.address.as_deref(), Some("1.2.3.4"));
    assert!(c.describe_instance("424242").await.unwrap().is_none());
    assert!(c.describe_instance("i-123").await.unwrap().is_none());
}
