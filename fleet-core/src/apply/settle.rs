//! Phase 1: state-only changes (adopt, forget) and the observed facts, in one state write.

use crate::cloud::Observed;
use crate::plan::{Action, Plan};
use crate::state::{facts, State};

use super::{ApplyError, ApplyReport, Executor};

impl Executor<'_> {
    /// Adopt and forget: state-only, one write.
    pub(super) async fn ensure_settled(
        &self,
        plan: &Plan,
        state: &mut State,
        observed: Option<&Observed>,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let now = (self.clock)();
        let mut any = false;
        for c in plan
            .changes
            .iter()
            .filter(|c| matches!(c.action, Action::Adopt | Action::Forget))
        {
            any = true;
            if !self.options.dry_run {
                facts::settle(c, state, now);
            }
            self.done(c, report);
        }
        if let Some(obs) = observed {
            if !self.options.dry_run && facts::refresh(state, obs, now) {
                any = true;
            }
        }
        if any {
            self.commit(state).await?;
        }
        Ok(())
    }
}
