//! Batches for clouds that create one instance per call (Hetzner, the command provider):
//! names the stack already has are reported rather than created again, which makes a
//! retried batch idempotent per name, and the rest are created a few at a time.

use std::collections::BTreeMap;
use std::future::Future;

use futures_util::stream::{self, StreamExt};

use fleet_core::cloud::{CloudError, CreateInstance, CreateOutcome, ObservedInstance};

/// Creates each request of `batch` whose name is not among `existing` (the stack's
/// instances as observed), with at most `concurrency` creates in flight.
pub async fn create_missing<'a, F, Fut>(
    existing: Vec<ObservedInstance>,
    batch: &'a [CreateInstance],
    concurrency: usize,
    create: F,
) -> CreateOutcome
where
    F: Fn(&'a CreateInstance) -> Fut,
    Fut: Future<Output = Result<ObservedInstance, CloudError>>,
{
    let mut existing: BTreeMap<String, ObservedInstance> = existing
        .into_iter()
        .filter(|o| !o.lifecycle.is_gone())
        .map(|o| (o.name.clone(), o))
        .collect();
    let mut out = CreateOutcome::default();
    let mut todo = Vec::new();
    for req in batch {
        match existing.remove(&req.name) {
            Some(o) => out.created.push(o),
            None => todo.push(req),
        }
    }
    // Built before they go into the stream: a closure inside the stream would make the
    // future of an `async_trait` method not general enough over lifetimes.
    let creates: Vec<_> = todo
        .into_iter()
        .map(|req| {
            let made = create(req);
            async move { (req.name.clone(), made.await) }
        })
        .collect();
    let results: Vec<_> = stream::iter(creates)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for (name, r) in results {
        match r {
            Ok(o) => out.created.push(o),
            Err(e) => out.failed.push((name, e)),
        }
    }
    out
}
