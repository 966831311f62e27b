//! The cloud provider conformance suite.

use std::collections::BTreeMap;

use crate::apply::object_tags;
use crate::cloud::{Cloud, CreateInstance, Scope};
use crate::plan::{Action, Operation};
use crate::planner::{plan, Desired, PlanInput};
use crate::resource::ResourceSpec;
use crate::spec::InstanceSpec;
use crate::state::State;

use super::t0;

/// Runs the contract of [`Cloud`] against a provider. `stack` should be unique to the run;
/// `instance_type` and `image` must be valid for the provider.
///
/// Panics (it is a test) with a message naming the broken rule.
pub async fn cloud_conformance(cloud: &dyn Cloud, stack: &str, image: &str, instance_type: &str) {
    let scope = Scope {
        stack: stack.to_string(),
        lineage: "conformance-lineage".into(),
    };
    let other = Scope {
        stack: format!("{stack}-other"),
        lineage: "conformance-lineage".into(),
    };
    let spec = InstanceSpec {
        image: image.into(),
        instance_types: vec![instance_type.into()],
        template_hash: None,
        labels: BTreeMap::new(),
    };
    let request = |i: u64| {
        let name = crate::naming::instance_name(stack, i);
        CreateInstance {
            tags: object_tags(&scope, &name, &spec.hash(), None),
            name,
            spec: spec.clone(),
            user_data: None,
        }
    };

    let before = cloud.observe(&scope).await.expect("observe");
    assert!(
        before.instances.is_empty(),
        "a new stack must observe no instances"
    );

    // One call creates a batch, tagged.
    let batch: Vec<CreateInstance> = (1..=3).map(request).collect();
    let names: Vec<&str> = batch.iter().map(|r| r.name.as_str()).collect();
    let token = crate::naming::batch_token(&names);
    let out = cloud
        .create_instances(&scope, &token, &batch)
        .await
        .expect("create batch");
    assert!(out.failed.is_empty(), "create failed: {:?}", out.failed);
    assert_eq!(out.created.len(), 3, "all three must be created");
    let seen = cloud.observe(&scope).await.expect("observe");
    let mut names: Vec<&str> = seen.instances.iter().map(|o| o.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            batch[0].name.as_str(),
            batch[1].name.as_str(),
            batch[2].name.as_str()
        ]
    );
    for o in &seen.instances {
        assert_eq!(o.lineage, scope.lineage, "lineage tag must be reported");
        assert_eq!(o.spec_hash, spec.hash(), "spec tag must be reported");
        assert_eq!(o.image, image);
        assert!(!o.lifecycle.is_gone());
    }

    // Retrying the same batch (same token, same names) is idempotent.
    let again = cloud
        .create_instances(&scope, &token, &batch)
        .await
        .expect("retry create");
    let ids = |o: &crate::cloud::CreateOutcome| {
        let mut v: Vec<(String, String)> = o
            .created
            .iter()
            .map(|i| (i.name.clone(), i.cloud_id.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&again),
        ids(&out),
        "a retried create must return the same instances under the same names"
    );
    assert_eq!(
        cloud
            .observe(&scope)
            .await
            .expect("observe")
            .instances
            .len(),
        3,
        "a retried create must not duplicate"
    );

    // Other stacks do not see them.
    assert!(
        cloud
            .observe(&other)
            .await
            .expect("observe other")
            .instances
            .is_empty(),
        "observe must filter by stack"
    );

    // What a crash right after create leaves behind is adopted by the next plan.
    let state = State::new(stack, "new-lineage");
    let observed = cloud.observe(&scope).await.expect("observe");
    let desired = Desired::nothing(spec.clone());
    let adopt = plan(&PlanInput {
        stack,
        cloud: "conformance",
        operation: Operation::Refresh,
        state: &state,
        observed: &observed,
        desired: &desired,
        now: t0(),
    });
    assert_eq!(
        adopt
            .changes
            .iter()
            .filter(|c| c.action == Action::Adopt)
            .count(),
        3,
        "tagged instances missing from state must be adopted:\n{}",
        adopt.display()
    );

    // describe_instance finds one by id.
    let one = &out.created[0];
    let found = cloud
        .describe_instance(&one.cloud_id)
        .await
        .expect("describe");
    assert_eq!(found.map(|o| o.name), Some(one.name.clone()));

    // Delete, twice: the second time the id is already gone and still counts as deleted.
    let id = one.cloud_id.clone();
    let del = cloud
        .delete_instances(&scope, std::slice::from_ref(&id))
        .await
        .expect("delete");
    assert_eq!(del.deleted, vec![id.clone()]);
    let del = cloud
        .delete_instances(&scope, std::slice::from_ref(&id))
        .await
        .expect("delete again");
    assert_eq!(
        del.deleted,
        vec![id.clone()],
        "deleting a gone instance must count as deleted"
    );
    let left: Vec<_> = cloud
        .observe(&scope)
        .await
        .expect("observe")
        .instances
        .into_iter()
        .filter(|o| !o.lifecycle.is_gone())
        .collect();
    assert_eq!(left.len(), 2);

    // Supporting resources, when the provider has any.
    if let Some(kind) = cloud.resource_kinds().first() {
        let r = ResourceSpec {
            kind: kind.to_string(),
            name: "conf".into(),
            properties: conformance_properties(kind),
            depends_on: Vec::new(),
        };
        let tags = object_tags(&scope, &r.name, &r.hash(), Some(kind));
        let made = cloud
            .create_resource(&scope, &r, &tags)
            .await
            .expect("create resource");
        let again = cloud
            .create_resource(&scope, &r, &tags)
            .await
            .expect("create resource again");
        assert_eq!(
            made.cloud_id, again.cloud_id,
            "resource create must be idempotent"
        );
        let seen = cloud.observe(&scope).await.expect("observe");
        assert_eq!(seen.resources.len(), 1);
        assert_eq!(seen.resources[0].name, "conf");
        assert_eq!(seen.resources[0].spec_hash, r.hash());
        cloud
            .delete_resource(&scope, kind, &made.cloud_id)
            .await
            .expect("delete resource");
        cloud
            .delete_resource(&scope, kind, &made.cloud_id)
            .await
            .expect("delete resource again");
        let left = cloud.observe(&scope).await.expect("observe").resources;
        assert!(left.is_empty(), "resources left after delete: {left:?}");
    }

    let rest: Vec<String> = left.into_iter().map(|o| o.cloud_id).collect();
    cloud
        .delete_instances(&scope, &rest)
        .await
        .expect("cleanup");
}

/// The error half of the contract: a create the cloud refuses (`refused` is a spec this
/// provider's cloud does not accept, such as an unknown instance type or image) fails, per
/// name or as a whole, with an error that names the provider, and leaves nothing behind.
///
/// Separate from [`cloud_conformance`] because what a cloud refuses differs by cloud, and an
/// emulator may accept what the real cloud refuses (moto launches any AMI and type).
pub async fn cloud_refusal_conformance(cloud: &dyn Cloud, stack: &str, refused: InstanceSpec) {
    let scope = Scope {
        stack: stack.to_string(),
        lineage: "conformance-lineage".into(),
    };
    let name = crate::naming::instance_name(stack, 1);
    let request = CreateInstance {
        tags: object_tags(&scope, &name, &refused.hash(), None),
        name,
        spec: refused,
        user_data: None,
    };
    let error = match cloud
        .create_instances(&scope, "fb-conformance-refused", &[request])
        .await
    {
        Ok(o) => {
            assert!(
                o.created.is_empty(),
                "a refused spec must not create: {:?}",
                o.created
            );
            assert_eq!(
                o.failed.len(),
                1,
                "the refused name must be reported as failed"
            );
            o.failed[0].1.to_string()
        }
        Err(e) => e.to_string(),
    };
    assert!(
        error.starts_with(cloud.name()),
        "a cloud error names the provider: {error}"
    );
    let left = cloud.observe(&scope).await.expect("observe").instances;
    assert!(left.is_empty(), "a refused create left {left:?}");
}

fn conformance_properties(kind: &str) -> BTreeMap<String, serde_json::Value> {
    let mut p = BTreeMap::new();
    if kind == "key_pair" {
        p.insert(
            "public_key".into(),
            serde_json::Value::String(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILSnIB5sGNgIyDHVu6UUljZ3x1dRau02y55F6tZFY94x conformance@fleet".into(),
            ),
        );
    }
    p
}
