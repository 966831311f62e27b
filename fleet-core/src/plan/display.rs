//! The human rendering of a plan: a `+ ± - ~` diff and a one-line summary.

use std::fmt;

use super::{Action, Operation, Plan};

/// Renders a plan; see [`Plan::display`].
pub struct PlanDisplay<'a> {
    pub(super) plan: &'a Plan,
}

impl fmt::Display for PlanDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.plan;
        let op = match p.operation {
            Operation::Up => "up",
            Operation::Destroy => "destroy",
            Operation::Refresh => "refresh",
        };
        let serial = if p.serial == 0 {
            "no state yet".to_string()
        } else {
            format!("state serial {}", p.serial)
        };
        writeln!(f, "Stack {} ({op}) on {}; {serial}", p.stack, p.cloud)?;
        if let (Some(desired), Some(why)) = (p.desired, &p.decision) {
            writeln!(f, "Desired: {} ({why})", instances(u64::from(desired)))?;
        }
        for note in &p.notes {
            writeln!(f, "Note: {note}")?;
        }
        writeln!(f)?;
        if p.changes.is_empty() {
            return if p.notes.is_empty() {
                writeln!(f, "No changes. The fleet matches the stack.")
            } else {
                writeln!(f, "No changes.")
            };
        }
        let rows: Vec<(&str, &str, String, &str)> = p
            .changes
            .iter()
            .map(|c| {
                let subject = match (&c.replacement, &c.cloud_id) {
                    (Some(new), _) => format!("{} -> {new}", c.name),
                    (None, Some(id)) if c.action != Action::Create => format!("{} ({id})", c.name),
                    _ => c.name.clone(),
                };
                let verb = match c.action {
                    Action::Adopt => "adopt: ",
                    Action::Forget => "forget: ",
                    _ => "",
                };
                (c.action.symbol(), c.kind.as_str(), subject, verb)
            })
            .collect();
        let kind_w = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        let subj_w = rows.iter().map(|r| r.2.chars().count()).max().unwrap_or(0);
        for ((sym, kind, subject, verb), c) in rows.iter().zip(&p.changes) {
            writeln!(
                f,
                "  {sym} {kind:<kind_w$}  {subject:<subj_w$}  {verb}{}",
                c.reason
            )?;
        }
        let s = &p.summary;
        writeln!(f)?;
        write!(
            f,
            "Plan: {} to create, {} to replace, {} to delete, {} to adopt, {} to forget",
            s.create, s.replace, s.delete, s.adopt, s.forget
        )?;
        // Power changes only appear when there are some, so count-only plans read as before.
        if s.start + s.stop > 0 {
            write!(f, ", {} to start, {} to stop", s.start, s.stop)?;
        }
        writeln!(f, ".")
    }
}

/// `1 instance`, `3 instances`.
pub fn instances(n: u64) -> String {
    if n == 1 {
        "1 instance".to_string()
    } else {
        format!("{n} instances")
    }
}
