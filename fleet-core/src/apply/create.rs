//! Phase 3: instance creates (and the new half of each replace). Each instance's runner is
//! registered first when the CI system manages runners, and its token rendered into that
//! instance's user data; every create is recorded pending (with its batch token and
//! runner) in one write before the first call; batches go out with bounded concurrency.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};

use crate::autoscale::Phase;
use crate::ci::NewRunner;
use crate::cloud::{CreateInstance, Lifecycle};
use crate::naming;
use crate::plan::{Action, Change, Plan};
use crate::render::{RenderError, Secrets};
use crate::secret::Secret;
use crate::spec::InstanceSpec;
use crate::state::{InstanceRecord, JobFacts, PendingKind, PendingOp, State, Warming};

use super::batch::chunk;
use super::{object_tags, ApplyError, ApplyReport, Executor};

impl Executor<'_> {
    /// Creates every new instance (creates and the new half of replaces). Returns the old
    /// names of replaces whose replacement now exists.
    ///
    /// When the CI system manages runners, each instance's runner is registered first and
    /// its token rendered into the user data; a crash after that leaves runners that no
    /// record names, which the next plan deletes.
    pub(super) async fn ensure_instances_created(
        &self,
        plan: &Plan,
        state: &mut State,
        report: &mut ApplyReport,
    ) -> Result<HashSet<String>, ApplyError> {
        let todo: Vec<&Change> = plan
            .changes
            .iter()
            .filter(|c| c.is_instance() && matches!(c.action, Action::Create | Action::Replace))
            .collect();
        let mut replaced = HashSet::new();
        if todo.is_empty() {
            return Ok(replaced);
        }
        if self.options.dry_run {
            for c in &todo {
                self.done(c, report);
                if c.action == Action::Replace {
                    replaced.insert(c.name.clone());
                }
            }
            return Ok(replaced);
        }
        let new_name = |c: &Change| c.replacement.clone().unwrap_or_else(|| c.name.clone());
        let mut runners = self.ensure_runners_registered(&todo, report).await;
        let mut ready: Vec<(&Change, String, Option<Secret>, Option<u64>)> = Vec::new();
        for c in &todo {
            let name = new_name(c);
            if self.ci.manages_runners() && !runners.contains_key(&name) {
                continue; // its registration failed and was reported
            }
            let runner = runners.remove(&name);
            match self.user_data(&name, runner.as_ref().map(|r| &r.token)) {
                Ok(user_data) => ready.push((c, name, user_data, runner.map(|r| r.id))),
                Err(e) => {
                    self.failed(c, &e, report);
                    self.discard_runner(runner.map(|r| r.id)).await;
                }
            }
        }

        // Split into batches first: each batch's token is recorded with its pending
        // records, so the next plan can match instances a cloud made without names.
        let now = (self.clock)();
        let size = self.batch_size();
        let mut batches: Vec<(String, Vec<Launch<'_>>)> = Vec::new();
        for group in chunk(ready, size) {
            let names: Vec<&str> = group.iter().map(|(_, n, _, _)| n.as_str()).collect();
            let token = naming::batch_token(&names);
            let mut requests = Vec::with_capacity(group.len());
            for (c, name, user_data, runner) in group {
                let spec = c.instance.clone().unwrap_or_else(|| InstanceSpec {
                    image: String::new(),
                    instance_types: Vec::new(),
                    template_hash: None,
                    labels: BTreeMap::new(),
                });
                let mut record = pending_record(&name, &spec, now, &token);
                record.jobs.runner_id = runner;
                state.instances.insert(name.clone(), record);
                if let Some(i) = naming::instance_index(&self.scope.stack, &name) {
                    state.next_index = state.next_index.max(i + 1);
                }
                let mut t = object_tags(&self.scope, &name, &spec.hash(), None);
                t.extend(spec.labels.clone());
                requests.push((
                    CreateInstance {
                        name,
                        spec,
                        tags: t,
                        user_data,
                    },
                    c,
                    runner,
                ));
            }
            batches.push((token, requests));
        }
        if batches.is_empty() {
            return Ok(replaced);
        }
        // Record every create (and its runner) as pending in one write before the first call.
        self.commit(state).await?;

        let mut calls = stream::iter(batches.into_iter().map(|(token, batch)| async move {
            let reqs: Vec<CreateInstance> = batch.iter().map(|(r, _, _)| r.clone()).collect();
            let result = self
                .cloud
                .create_instances(&self.scope, &token, &reqs)
                .await;
            (batch, result)
        }))
        .buffer_unordered(self.options.concurrency.max(1));

        while let Some((batch, result)) = calls.next().await {
            let names: Vec<&str> = batch.iter().map(|(r, _, _)| r.name.as_str()).collect();
            let answer = result.map(|o| {
                let created = o.created.into_iter().map(|i| (i.name.clone(), i)).collect();
                (created, o.failed)
            });
            let results = self.per_object("create", &names, answer);
            let started = (self.clock)();
            for ((req, c, runner), result) in batch.iter().zip(results) {
                if let Ok(o) = &result {
                    if let Some(rec) = state.instances.get_mut(&req.name) {
                        rec.cloud_id = Some(o.cloud_id.clone());
                        rec.instance_type = o.instance_type.clone();
                        rec.lifecycle = o.lifecycle;
                        rec.address = o.address.clone();
                        rec.pending = None;
                        rec.started_at = Some(started);
                    }
                    if c.action == Action::Replace {
                        replaced.insert(c.name.clone());
                    }
                    self.done(c, report);
                } else if let Err(err) = result {
                    // A definite refusal made nothing: drop the pending record and the
                    // runner. An ambiguous failure may have made it: keep both for the next
                    // plan to settle.
                    if !err.is_ambiguous() {
                        state.instances.remove(&req.name);
                        self.discard_runner(*runner).await;
                    }
                    self.failed(c, &err, report);
                }
            }
            self.commit(state).await?;
        }
        Ok(replaced)
    }

    /// Registers one runner per new instance, when the CI system manages runners. A failed
    /// registration fails its instance's create.
    async fn ensure_runners_registered(
        &self,
        todo: &[&Change],
        report: &mut ApplyReport,
    ) -> HashMap<String, NewRunner> {
        let mut out = HashMap::new();
        if !self.ci.manages_runners() {
            return out;
        }
        let mut calls = stream::iter(todo.iter().map(|c| async move {
            let name = c.replacement.clone().unwrap_or_else(|| c.name.clone());
            let result = self.ci.create_runner(&name).await;
            (*c, name, result)
        }))
        .buffer_unordered(self.options.concurrency.max(1));
        while let Some((c, name, result)) = calls.next().await {
            match result {
                Ok(r) => {
                    out.insert(name, r);
                }
                Err(e) => self.failed(c, &e, report),
            }
        }
        out
    }

    /// The user data `name` boots with: the stack's templates, with the instance's own
    /// runner token when it has one.
    fn user_data(&self, name: &str, token: Option<&Secret>) -> Result<Option<Secret>, RenderError> {
        let Some(r) = &self.renderer else {
            return Ok(None);
        };
        let text = match token {
            Some(t) => r
                .clone()
                .with_token(t.clone())
                .user_data(name, Secrets::Shown)?,
            None => r.user_data(name, Secrets::Shown)?,
        };
        Ok(text.map(Secret::new))
    }
}

/// One instance of a create batch: the request, its plan change, and its runner id.
type Launch<'c> = (CreateInstance, &'c Change, Option<u64>);

fn pending_record(
    name: &str,
    spec: &InstanceSpec,
    now: DateTime<Utc>,
    batch: &str,
) -> InstanceRecord {
    InstanceRecord {
        name: name.to_string(),
        cloud_id: None,
        spec_hash: spec.hash(),
        image: spec.image.clone(),
        instance_type: String::new(),
        template_hash: spec.template_hash.clone(),
        created_at: now,
        lifecycle: Lifecycle::Unknown,
        address: None,
        jobs: JobFacts::default(),
        pending: Some(PendingOp {
            op: PendingKind::Create,
            since: now,
            batch: Some(batch.to_string()),
        }),
        started_at: None,
        draining_since: None,
        warming: Some(Warming::new(Phase::Boot, now)),
    }
}
