//! Counts the API calls the SDK sends, per operation, with an SDK interceptor: every
//! attempt that reaches the wire is counted, retries included.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Calls per operation (`RunInstances`, `DescribeInstances`, ...), shared by all clients.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl CallCounter {
    /// Calls so far, by operation name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "fleet-call-counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            tracing::debug!(service = m.service(), operation = m.name(), "aws call");
            *self
                .counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(m.name().to_string())
                .or_default() += 1;
        }
        Ok(())
    }
}
