//! What an instance should look like, and how to tell that a running one no longer does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The desired shape of every runner VM, derived from the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Image to boot.
    pub image: String,
    /// Acceptable instance types, most preferred first.
    pub instance_types: Vec<String>,
    /// Hash of the rendered-template inputs; a change replaces instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,
    /// Extra labels put on every VM.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl InstanceSpec {
    /// Hash of what makes two instances interchangeable: the image and the templates.
    /// Instance types are compared by membership instead, so reordering the list or
    /// adding a fallback type does not replace the fleet.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.image.as_bytes());
        h.update([0]);
        h.update(self.template_hash.as_deref().unwrap_or("").as_bytes());
        hex16(&h.finalize())
    }

    /// Why an instance built as `image` / `instance_type` / `template_hash` must be
    /// replaced to match this spec, or `None` when it still matches.
    pub fn mismatch(
        &self,
        image: &str,
        instance_type: &str,
        template_hash: Option<&str>,
    ) -> Option<String> {
        let mut reasons = Vec::new();
        if image != self.image {
            reasons.push(format!("image changed ({image} -> {})", self.image));
        }
        if !instance_type.is_empty() && !self.instance_types.iter().any(|t| t == instance_type) {
            reasons.push(format!(
                "instance type {instance_type} is no longer in [{}]",
                self.instance_types.join(", ")
            ));
        }
        if template_hash != self.template_hash.as_deref() {
            reasons.push("templates changed".to_string());
        }
        if reasons.is_empty() {
            None
        } else {
            Some(reasons.join("; "))
        }
    }
}

/// First 16 hex digits of a digest: short enough for tags, long enough not to collide in a
/// fleet.
pub fn hex16(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Short SHA-256 of arbitrary bytes.
pub fn short_hash(bytes: &[u8]) -> String {
    hex16(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            image: "debian-12".into(),
            instance_types: vec!["small".into(), "medium".into()],
            template_hash: Some("abc".into()),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn matching_instances_are_not_out_of_date() {
        assert_eq!(spec().mismatch("debian-12", "medium", Some("abc")), None);
    }

    #[test]
    fn each_kind_of_mismatch_is_named() {
        let s = spec();
        assert_eq!(
            s.mismatch("debian-11", "small", Some("abc")).unwrap(),
            "image changed (debian-11 -> debian-12)"
        );
        assert!(s
            .mismatch("debian-12", "huge", Some("abc"))
            .unwrap()
            .contains("huge"));
        assert_eq!(
            s.mismatch("debian-12", "small", None).unwrap(),
            "templates changed"
        );
    }

    #[test]
    fn hash_ignores_type_order_but_not_image() {
        let mut other = spec();
        other.instance_types.reverse();
        assert_eq!(spec().hash(), other.hash());
        other.image = "debian-13".into();
        assert_ne!(spec().hash(), other.hash());
    }
}
