//! Phases 2 and 7: supporting resources, created (or replaced: deleted, then created under
//! the same cloud name) before the instances that use them, and deleted after them.

use chrono::{DateTime, Utc};

use crate::plan::{Action, Change};
use crate::resource::ResourceSpec;
use crate::state::{PendingKind, PendingOp, ResourceRecord, State};

use super::{object_tags, ApplyError, ApplyReport, Executor};

impl Executor<'_> {
    pub(super) async fn ensure_resource(
        &self,
        c: &Change,
        state: &mut State,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        if self.options.dry_run {
            self.done(c, report);
            return Ok(());
        }
        let Some(spec) = &c.resource else {
            return Ok(());
        };
        let key = spec.key();
        if c.action == Action::Replace {
            if let Some(id) = &c.cloud_id {
                mark(
                    state.resources.get_mut(&key).map(|r| &mut r.pending),
                    PendingKind::Delete,
                    (self.clock)(),
                );
                self.commit(state).await?;
                if let Err(e) = self
                    .cloud
                    .delete_resource(&self.scope, &spec.kind, id)
                    .await
                {
                    self.failed(c, &e, report);
                    return Ok(());
                }
                state.resources.remove(&key);
                self.commit(state).await?;
            }
        }
        state.resources.insert(
            key.clone(),
            resource_record(spec, None, (self.clock)(), true),
        );
        self.commit(state).await?;
        let tags = object_tags(&self.scope, &spec.name, &spec.hash(), Some(&spec.kind));
        match self.cloud.create_resource(&self.scope, spec, &tags).await {
            Ok(o) => {
                state.resources.insert(
                    key,
                    resource_record(spec, Some(o.cloud_id), (self.clock)(), false),
                );
                self.commit(state).await?;
                self.done(c, report);
            }
            Err(e) => {
                if !e.is_ambiguous() {
                    state.resources.remove(&key);
                    self.commit(state).await?;
                }
                self.failed(c, &e, report);
            }
        }
        Ok(())
    }

    pub(super) async fn ensure_resource_deleted(
        &self,
        c: &Change,
        state: &mut State,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        if self.options.dry_run {
            self.done(c, report);
            return Ok(());
        }
        let key = crate::resource::resource_key(&c.kind, &c.name);
        let Some(id) = &c.cloud_id else { return Ok(()) };
        mark(
            state.resources.get_mut(&key).map(|r| &mut r.pending),
            PendingKind::Delete,
            (self.clock)(),
        );
        self.commit(state).await?;
        match self.cloud.delete_resource(&self.scope, &c.kind, id).await {
            Ok(()) => {
                state.resources.remove(&key);
                self.commit(state).await?;
                self.done(c, report);
            }
            Err(e) => self.failed(c, &e, report),
        }
        Ok(())
    }
}

fn mark(pending: Option<&mut Option<PendingOp>>, op: PendingKind, since: DateTime<Utc>) {
    if let Some(p) = pending {
        *p = Some(PendingOp {
            op,
            since,
            batch: None,
        });
    }
}

fn resource_record(
    spec: &ResourceSpec,
    cloud_id: Option<String>,
    now: DateTime<Utc>,
    pending: bool,
) -> ResourceRecord {
    ResourceRecord {
        kind: spec.kind.clone(),
        name: spec.name.clone(),
        cloud_id,
        spec_hash: spec.hash(),
        depends_on: spec.depends_on.clone(),
        created_at: now,
        pending: pending.then_some(PendingOp {
            op: PendingKind::Create,
            since: now,
            batch: None,
        }),
    }
}
