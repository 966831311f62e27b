//! Batches: how many objects one cloud call takes, and how a batch call's answer becomes
//! one result per object. Every phase that calls the cloud in batches (create, delete,
//! stop, start) goes through here, so they agree on what an unreported object means.

use std::collections::HashMap;

use crate::cloud::{CloudError, Detail};

use super::Executor;

/// A batch call's answer: the objects it reports done (by key, with a value) and those it
/// reports failed; or the error of the whole call.
pub(super) type BatchAnswer<T> = Result<(Vec<(String, T)>, Vec<(String, CloudError)>), CloudError>;

impl Executor<'_> {
    /// Objects per cloud call: `apply.batch_size`, capped by the provider's own limit.
    pub(super) fn batch_size(&self) -> usize {
        self.options.batch_size.min(self.cloud.max_batch()).max(1)
    }

    /// One result per key of a batch call, in the order of `keys`: what the cloud reported
    /// done (`done`, with its value) or failed; an error of the whole call fails every key,
    /// and a key the cloud did not report at all is an ambiguous failure (it may have
    /// happened), so the next plan settles it.
    pub(super) fn per_object<T>(
        &self,
        operation: &str,
        keys: &[&str],
        answer: BatchAnswer<T>,
    ) -> Vec<Result<T, CloudError>> {
        let (done, failed) = match answer {
            Ok(a) => a,
            Err(e) => {
                return keys.iter().map(|_| Err(e.clone())).collect();
            }
        };
        let mut done: HashMap<String, T> = done.into_iter().collect();
        let mut failed: HashMap<String, CloudError> = failed.into_iter().collect();
        keys.iter()
            .map(|k| match done.remove(*k) {
                Some(v) => Ok(v),
                None => Err(failed
                    .remove(*k)
                    .unwrap_or_else(|| self.no_result(operation, k))),
            })
            .collect()
    }

    fn no_result(&self, operation: &str, what: &str) -> CloudError {
        CloudError::Transient {
            provider: self.cloud.name().to_string(),
            operation: operation.into(),
            code: "NoResult".into(),
            detail: Detail(format!("the cloud did not report instance {what}")),
        }
    }
}

/// `items` in groups of at most `size`.
pub(super) fn chunk<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(size).collect());
    }
    out
}
