//! Conversions between the EC2 SDK's types and fleet-core's: instances into observed
//! instances, tags into maps, a scope into a tag filter, user data into what EC2 takes.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName, Tag};
use chrono::{DateTime, Utc};

use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::{ObservedInstance, Scope};
use fleet_core::naming::tags;

/// Instance states that count as present (terminated ones are gone).
pub(super) const LIVE_STATES: [&str; 5] =
    ["pending", "running", "stopping", "stopped", "shutting-down"];

/// Tags as a map from key to value.
pub(crate) fn tag_map(tags_: &[Tag]) -> BTreeMap<&str, &str> {
    tags_
        .iter()
        .filter_map(|t| Some((t.key()?, t.value().unwrap_or(""))))
        .collect()
}

/// Fleet tags as EC2 tags.
pub(crate) fn ec2_tags(tags_: &BTreeMap<String, String>) -> Vec<Tag> {
    tags_
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn lifecycle(i: &Instance) -> Lifecycle {
    match i.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Pending) => Lifecycle::Booting,
        Some(InstanceStateName::Running) => Lifecycle::Running,
        Some(InstanceStateName::Stopping) => Lifecycle::Stopping,
        Some(InstanceStateName::Stopped) => Lifecycle::Stopped,
        Some(InstanceStateName::ShuttingDown) => Lifecycle::Terminating,
        Some(InstanceStateName::Terminated) => Lifecycle::Terminated,
        _ => Lifecycle::Unknown,
    }
}

/// An EC2 instance as fleet-core sees it, read from its tags and state.
pub(super) fn observed(i: &Instance) -> ObservedInstance {
    let t = tag_map(i.tags());
    let get = |k: &str| t.get(k).map(|v| v.to_string()).unwrap_or_default();
    ObservedInstance {
        cloud_id: i.instance_id().unwrap_or_default().to_string(),
        name: get(tags::NAME),
        lineage: get(tags::LINEAGE),
        image: i.image_id().unwrap_or_default().to_string(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        spec_hash: get(tags::SPEC),
        lifecycle: lifecycle(i),
        address: i.private_ip_address().map(str::to_string),
        launched_at: i
            .launch_time()
            .and_then(|d| DateTime::<Utc>::from_timestamp(d.secs(), d.subsec_nanos()))
            .unwrap_or(DateTime::UNIX_EPOCH),
        batch: t.get(tags::BATCH).map(|v| v.to_string()),
    }
}

/// The filter that selects the scope's stack by its tag.
pub(crate) fn stack_filter(scope: &Scope) -> Filter {
    Filter::builder()
        .name(format!("tag:{}", tags::STACK))
        .values(&scope.stack)
        .build()
}

/// The filter that selects live instances (see [`LIVE_STATES`]).
pub(super) fn live_filter() -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .set_values(Some(LIVE_STATES.map(String::from).to_vec()))
        .build()
}

/// User data as `RunInstances` takes it: gzipped, then base64.
pub(super) fn encode_user_data(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(fleet_core::render::gzip(text))
}
