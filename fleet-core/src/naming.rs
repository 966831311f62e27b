//! Names the fleet gives to cloud objects, and the tags that mark them as ours.
//!
//! Names double as hostnames, so they follow RFC 1123 labels: lowercase letters, digits
//! and hyphens, at most 63 characters.

/// Longest DNS label, and the longest name most clouds accept.
pub const MAX_NAME_LEN: usize = 63;

/// Widest instance index suffix the fleet reserves room for (`-` plus six digits).
pub const INSTANCE_SUFFIX_LEN: usize = 7;

/// Tag keys written on every cloud object at creation, so a crash right after the call
/// still leaves objects that the next plan can adopt.
pub mod tags {
    /// The stack's name.
    pub const STACK: &str = "fleet:stack";
    /// The object's name inside the stack.
    pub const NAME: &str = "fleet:name";
    /// The lineage of the state that created the object.
    pub const LINEAGE: &str = "fleet:lineage";
    /// The instance spec hash at creation.
    pub const SPEC: &str = "fleet:spec";
    /// The resource kind, for supporting resources.
    pub const KIND: &str = "fleet:kind";
    /// The create batch an instance came from. Clouds that create a batch in one call
    /// with identical tags (EC2) cannot tag names at creation; the batch tag lets the next
    /// plan match such instances to the pending records of that batch.
    pub const BATCH: &str = "fleet:batch";
}

/// Name of the instance with the given index: `<stack>-0007`.
pub fn instance_name(stack: &str, index: u64) -> String {
    format!("{stack}-{index:04}")
}

/// The index in an instance name made by [`instance_name`], if it is one of ours.
pub fn instance_index(stack: &str, name: &str) -> Option<u64> {
    let rest = name.strip_prefix(stack)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The token of a create batch: a hash of its instance names, so the same batch always
/// gets the same token (clouds use it as their idempotency token).
pub fn batch_token(names: &[&str]) -> String {
    format!(
        "fb-{}",
        crate::spec::short_hash(names.join("\n").as_bytes())
    )
}

/// Cloud-side name of a supporting resource: `<stack>-<name>`.
pub fn resource_name(stack: &str, name: &str) -> String {
    format!("{stack}-{name}")
}

/// Why `name` is not a valid DNS label, if it is not.
pub fn label_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "is {} characters long, more than {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "contains `{c}`; use lowercase letters, digits and hyphens"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("starts or ends with a hyphen".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_round_trip_their_index() {
        assert_eq!(instance_name("ci", 7), "ci-0007");
        assert_eq!(instance_index("ci", "ci-0007"), Some(7));
        assert_eq!(instance_index("ci", "ci-123456"), Some(123456));
        assert_eq!(instance_index("ci", "cix-0007"), None);
        assert_eq!(instance_index("ci", "ci-build-1"), None);
        assert_eq!(instance_index("ci", "ci-"), None);
    }

    #[test]
    fn labels_are_checked() {
        assert_eq!(label_problem("ok-name-1"), None);
        assert!(label_problem("Bad").unwrap().contains("`B`"));
        assert!(label_problem(&"a".repeat(64)).unwrap().contains("64"));
        assert!(label_problem("-x").is_some());
    }
}
