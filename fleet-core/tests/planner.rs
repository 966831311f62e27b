//! Planner scenarios. Each renders the human plan and compares it with a snapshot file in
//! tests/snapshots, so a change in what the planner decides or how it reads is reviewed.

mod common;

use common::*;
use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::Observed;
use fleet_core::plan::{Action, Operation};
use fleet_core::state::{PendingKind, State};

fn three_running() -> (State, Observed) {
    let obs: Vec<_> = (1..=3).map(|i| observed(i, "debian-12")).collect();
    let state = state_with(obs.iter().map(record_of).collect());
    (
        state,
        Observed {
            instances: obs,
            resources: vec![],
            ..Observed::default()
        },
    )
}

#[test]
fn new_stack_creates_resources_before_instances() {
    let state = State::new(STACK, LINEAGE);
    let mut d = desired(3, "debian-12");
    d.resources = vec![key_pair("ops", "ssh-ed25519 AAAA")];
    let plan = run(Operation::Up, &state, &Observed::default(), &d);
    insta::assert_snapshot!(plan.display().to_string());
    assert_eq!(plan.changes[0].kind, "key_pair");
}

#[test]
fn scale_out_names_continue_after_the_highest_index() {
    let (mut state, observed) = three_running();
    state.next_index = 2; // an older state that lagged behind the names in use
    let plan = run(Operation::Up, &state, &observed, &desired(5, "debian-12"));
    insta::assert_snapshot!(plan.display().to_string());
    let names: Vec<_> = plan.changes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["ci-0004", "ci-0005"]);
}

#[test]
fn scale_in_deletes_the_newest_first() {
    let (state, observed) = three_running();
    let plan = run(Operation::Up, &state, &observed, &desired(1, "debian-12"));
    insta::assert_snapshot!(plan.display().to_string());
}

#[test]
fn no_changes_when_the_fleet_matches() {
    let (state, observed) = three_running();
    let plan = run(Operation::Up, &state, &observed, &desired(3, "debian-12"));
    assert!(plan.is_empty());
    insta::assert_snapshot!(plan.display().to_string());
}

#[test]
fn image_change_replaces_and_scale_in_prefers_out_of_date_instances() {
    let (state, observed) = three_running();
    let plan = run(Operation::Up, &state, &observed, &desired(2, "debian-13"));
    insta::assert_snapshot!(plan.display().to_string());
    assert_eq!(plan.summary.replace, 2);
    assert_eq!(plan.summary.delete, 1);
}

#[test]
fn adopt_forget_and_interrupted_operations_are_settled() {
    let obs: Vec<_> = (1..=4).map(|i| observed(i, "debian-12")).collect();
    let mut records = vec![
        record_of(&obs[0]),
        pending(record_of(&obs[1]), PendingKind::Create), // made by the cloud, then a crash
        pending(record_of(&observed(5, "debian-12")), PendingKind::Create), // never made
        pending(record_of(&obs[2]), PendingKind::Delete), // delete interrupted
        record_of(&observed(6, "debian-12")),             // deleted behind our back
    ];
    records[2].name = "ci-0005".into();
    let state = state_with(records);
    let mut foreign = obs[3].clone();
    foreign.lineage = "lineage-old".into();
    let observed = Observed {
        instances: vec![obs[0].clone(), obs[1].clone(), obs[2].clone(), foreign],
        resources: vec![],
        ..Observed::default()
    };
    let plan = run(Operation::Up, &state, &observed, &desired(4, "debian-12"));
    insta::assert_snapshot!(plan.display().to_string());
}

#[test]
fn a_second_cloud_object_with_a_taken_name_is_deleted_not_adopted() {
    let (state, mut observed) = three_running();
    let mut dup = observed.instances[0].clone();
    dup.cloud_id = "i-dup".into();
    observed.instances.push(dup);
    let plan = run(Operation::Up, &state, &observed, &desired(3, "debian-12"));
    insta::assert_snapshot!(plan.display().to_string());
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].cloud_id.as_deref(), Some("i-dup"));
}

#[test]
fn terminated_instances_do_not_count() {
    let (state, mut observed) = three_running();
    observed.instances[2].lifecycle = Lifecycle::Terminated;
    let plan = run(Operation::Up, &state, &observed, &desired(3, "debian-12"));
    let actions: Vec<_> = plan.changes.iter().map(|c| c.action).collect();
    assert_eq!(actions, vec![Action::Forget, Action::Create]);
}

#[test]
fn unknown_demand_never_scales_in_and_says_so() {
    let (state, observed) = three_running();
    let mut d = desired(1, "debian-12");
    d.may_scale_in = false;
    let plan = run(Operation::Up, &state, &observed, &d);
    assert!(plan.changes.iter().all(|c| c.action != Action::Delete));
    insta::assert_snapshot!(plan.display().to_string());
}

#[test]
fn destroy_is_a_plan_against_nothing() {
    let (mut state, mut observed) = three_running();
    let kp = key_pair("ops", "ssh-ed25519 AAAA");
    state
        .resources
        .insert(kp.key(), resource_record(&kp, "key-1"));
    observed.resources.push(observed_resource(&kp, "key-1"));
    let d = fleet_core::planner::Desired::nothing(spec("debian-12"));
    let plan = run(Operation::Destroy, &state, &observed, &d);
    insta::assert_snapshot!(plan.display().to_string());
    assert_eq!(
        plan.changes.last().unwrap().kind,
        "key_pair",
        "resources go after the instances using them"
    );
}

#[test]
fn resource_property_changes_replace_the_resource() {
    let (mut state, mut observed) = three_running();
    let old = key_pair("ops", "ssh-ed25519 OLD");
    state
        .resources
        .insert(old.key(), resource_record(&old, "key-1"));
    observed.resources.push(observed_resource(&old, "key-1"));
    let mut d = desired(3, "debian-12");
    d.resources = vec![key_pair("ops", "ssh-ed25519 NEW")];
    let plan = run(Operation::Up, &state, &observed, &d);
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].action, Action::Replace);
}

#[test]
fn refresh_only_settles_state() {
    let (state, mut observed) = three_running();
    observed.instances.remove(0);
    let plan = run(
        Operation::Refresh,
        &state,
        &observed,
        &desired(10, "debian-13"),
    );
    let actions: Vec<_> = plan.changes.iter().map(|c| c.action).collect();
    assert_eq!(actions, vec![Action::Forget]);
}

#[test]
fn plans_round_trip_through_json() {
    let (state, observed) = three_running();
    let plan = run(Operation::Up, &state, &observed, &desired(5, "debian-13"));
    let text = serde_json::to_string(&plan).unwrap();
    let back: fleet_core::Plan = serde_json::from_str(&text).unwrap();
    assert_eq!(back, plan);
}

/// Clouds that launch a batch with one set of tags (EC2) name instances after the call; a
/// crash in between leaves unnamed instances carrying only the batch token.
#[test]
fn unnamed_batch_members_are_matched_to_their_pending_records_by_batch() {
    let mut made = observed(1, "debian-12");
    made.name = String::new();
    made.batch = Some("fb-1".into());
    let mut orphan = observed(9, "debian-12");
    orphan.name = String::new();
    orphan.batch = Some("fb-gone".into());
    let mut rec = pending(record_of(&observed(1, "debian-12")), PendingKind::Create);
    rec.pending.as_mut().unwrap().batch = Some("fb-1".into());
    let mut never = pending(record_of(&observed(2, "debian-12")), PendingKind::Create);
    never.pending.as_mut().unwrap().batch = Some("fb-1".into());
    let state = state_with(vec![rec, never]);
    let observed = Observed {
        instances: vec![made, orphan],
        resources: vec![],
        ..Observed::default()
    };
    let plan = run(Operation::Up, &state, &observed, &desired(2, "debian-12"));
    insta::assert_snapshot!(plan.display().to_string());
    let adopted: Vec<_> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Adopt)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        adopted,
        vec!["ci-0001", "ci-0003"],
        "the batch member keeps its record's name; the orphan gets a new one"
    );
}
