//! Plan-time checks: what must hold of a plan before any cloud call, so that a stack that
//! cannot boot fails at preview rather than halfway through an apply.

use crate::cloud::UserDataLimit;
use crate::plan::{Action, Plan, INSTANCE};
use crate::render::{check_hostname, check_user_data_size, RenderError, Renderer, Secrets};

/// Plan-time checks of the instances `plan` creates: every name fits a hostname, and the
/// user data fits the cloud's `limit`. Only the longest name is rendered, since names are
/// the only per-instance input and the token has the same length for all.
pub fn check_plan(
    renderer: &Renderer,
    plan: &Plan,
    limit: Option<UserDataLimit>,
    provider: &str,
) -> Result<(), RenderError> {
    let names: Vec<&str> = plan
        .changes
        .iter()
        .filter(|c| c.kind == INSTANCE)
        .filter_map(|c| match c.action {
            Action::Create => Some(c.name.as_str()),
            Action::Replace => c.replacement.as_deref(),
            _ => None,
        })
        .collect();
    for n in &names {
        check_hostname(n)?;
    }
    let (Some(limit), Some(longest)) = (limit, names.iter().max_by_key(|n| n.len())) else {
        return Ok(());
    };
    if let Some(text) = renderer.user_data(longest, Secrets::Shown)? {
        check_user_data_size(longest, &text, limit, provider)?;
    }
    Ok(())
}
