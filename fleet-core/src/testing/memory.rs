//! An in-memory cloud for the engine's own tests. Each test stubs only the failures it
//! needs through optional hooks.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::cloud::Lifecycle;
use crate::cloud::{
    Cloud, CloudError, CreateInstance, CreateOutcome, DeleteOutcome, Detail, Observed,
    ObservedInstance, ObservedResource, Scope,
};
use crate::naming::tags;
use crate::resource::ResourceSpec;

use super::t0;

type Hook = Box<dyn Fn(&str) -> Option<CloudError> + Send + Sync>;

#[derive(Debug, Clone)]
struct Stored {
    observed: ObservedInstance,
    stack: String,
}

/// An in-memory cloud.
#[derive(Default)]
pub struct MemoryCloud {
    instances: Mutex<Vec<Stored>>,
    resources: Mutex<Vec<(String, ObservedResource)>>,
    calls: Mutex<BTreeMap<String, usize>>,
    /// Called with the instance name before each create; `Some` fails that instance.
    pub fail_create: Option<Hook>,
    /// Called with the cloud id before each delete; `Some` fails it.
    pub fail_delete: Option<Hook>,
}

impl MemoryCloud {
    /// An empty cloud.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many calls of `operation` were made.
    pub fn calls(&self, operation: &str) -> usize {
        self.calls
            .lock()
            .expect("lock")
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Instances alive in the cloud for `stack`.
    pub fn alive(&self, stack: &str) -> Vec<ObservedInstance> {
        self.instances
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.stack == stack && !s.observed.lifecycle.is_gone())
            .map(|s| s.observed.clone())
            .collect()
    }

    /// Puts an instance in the cloud directly (as if made by an apply that crashed).
    pub fn insert(&self, stack: &str, observed: ObservedInstance) {
        self.instances.lock().expect("lock").push(Stored {
            observed,
            stack: stack.to_string(),
        });
    }

    fn count(&self, op: &str) {
        *self
            .calls
            .lock()
            .expect("lock")
            .entry(op.to_string())
            .or_default() += 1;
    }
}

/// A transient failure, as injected by tests.
pub fn injected(operation: &str) -> CloudError {
    CloudError::Transient {
        provider: "memory".into(),
        operation: operation.into(),
        code: "Injected".into(),
        detail: Detail("injected failure".into()),
    }
}

#[async_trait]
impl Cloud for MemoryCloud {
    fn name(&self) -> &str {
        "memory"
    }

    fn label(&self) -> String {
        "memory cloud (tests)".into()
    }

    fn max_batch(&self) -> usize {
        50
    }

    fn resource_kinds(&self) -> &[&str] {
        &["key_pair"]
    }

    async fn observe(&self, scope: &Scope) -> Result<Observed, CloudError> {
        self.count("observe");
        Ok(Observed {
            instances: self.alive(&scope.stack),
            resources: self
                .resources
                .lock()
                .expect("lock")
                .iter()
                .filter(|(s, _)| *s == scope.stack)
                .map(|(_, r)| r.clone())
                .collect(),
            ..Observed::default()
        })
    }

    async fn create_instances(
        &self,
        scope: &Scope,
        token: &str,
        batch: &[CreateInstance],
    ) -> Result<CreateOutcome, CloudError> {
        self.count("create");
        let mut out = CreateOutcome::default();
        let mut all = self.instances.lock().expect("lock");
        for req in batch {
            if let Some(e) = self.fail_create.as_ref().and_then(|h| h(&req.name)) {
                out.failed.push((req.name.clone(), e));
                continue;
            }
            if let Some(s) = all.iter().find(|s| {
                s.stack == scope.stack
                    && s.observed.name == req.name
                    && !s.observed.lifecycle.is_gone()
            }) {
                out.created.push(s.observed.clone());
                continue;
            }
            let o = ObservedInstance {
                cloud_id: format!("mem-{:06}", all.len() + 1),
                name: req.name.clone(),
                lineage: req.tags.get(tags::LINEAGE).cloned().unwrap_or_default(),
                image: req.spec.image.clone(),
                instance_type: req.spec.instance_types.first().cloned().unwrap_or_default(),
                spec_hash: req.tags.get(tags::SPEC).cloned().unwrap_or_default(),
                lifecycle: Lifecycle::Running,
                address: None,
                launched_at: t0(),
                batch: Some(token.to_string()),
            };
            all.push(Stored {
                observed: o.clone(),
                stack: scope.stack.clone(),
            });
            out.created.push(o);
        }
        Ok(out)
    }

    async fn delete_instances(
        &self,
        _scope: &Scope,
        ids: &[String],
    ) -> Result<DeleteOutcome, CloudError> {
        self.count("delete");
        let mut out = DeleteOutcome::default();
        let mut all = self.instances.lock().expect("lock");
        for id in ids {
            if let Some(e) = self.fail_delete.as_ref().and_then(|h| h(id)) {
                out.failed.push((id.clone(), e));
                continue;
            }
            for s in all.iter_mut().filter(|s| &s.observed.cloud_id == id) {
                s.observed.lifecycle = Lifecycle::Terminated;
            }
            out.deleted.push(id.clone());
        }
        Ok(out)
    }

    async fn create_resource(
        &self,
        scope: &Scope,
        spec: &ResourceSpec,
        tags_: &BTreeMap<String, String>,
    ) -> Result<ObservedResource, CloudError> {
        self.count("create_resource");
        let mut all = self.resources.lock().expect("lock");
        if let Some((_, r)) = all
            .iter()
            .find(|(s, r)| *s == scope.stack && r.kind == spec.kind && r.name == spec.name)
        {
            return Ok(r.clone());
        }
        let r = ObservedResource {
            cloud_id: format!("res-{:04}", all.len() + 1),
            kind: spec.kind.clone(),
            name: spec.name.clone(),
            spec_hash: tags_.get(tags::SPEC).cloned().unwrap_or_default(),
        };
        all.push((scope.stack.clone(), r.clone()));
        Ok(r)
    }

    async fn delete_resource(
        &self,
        _scope: &Scope,
        _kind: &str,
        cloud_id: &str,
    ) -> Result<(), CloudError> {
        self.count("delete_resource");
        self.resources
            .lock()
            .expect("lock")
            .retain(|(_, r)| r.cloud_id != cloud_id);
        Ok(())
    }

    async fn describe_instance(
        &self,
        cloud_id: &str,
    ) -> Result<Option<ObservedInstance>, CloudError> {
        Ok(self
            .instances
            .lock()
            .expect("lock")
            .iter()
            .find(|s| s.observed.cloud_id == cloud_id)
            .map(|s| s.observed.clone()))
    }
}
