//! `--set path=value` overrides, applied to the YAML tree before it is decoded (like
//! `terraform -var`).

use serde_yaml_ng::{Mapping, Value};

use super::error::{StackError, StackErrorKind};

/// One `--set path=value` flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Dotted key path; sequence items by index (`resources.0.name`).
    pub path: String,
    /// The value, parsed as YAML (`3` is a number, `[a, b]` a list, `"3"` a string).
    pub value: Value,
    /// The flag as given, for messages.
    pub text: String,
}

impl Override {
    /// Parses `path=value`.
    pub fn parse(text: &str) -> Result<Override, StackError> {
        let origin = format!("--set {text}");
        let bad = |message: &str| {
            StackError::new(
                origin.clone(),
                StackErrorKind::BadOverride {
                    message: message.to_string(),
                },
            )
        };
        let (path, raw) = text.split_once('=').ok_or_else(|| {
            bad("expected `path=value`, for example `--set policy.min_instances=3`")
        })?;
        let path = path.trim();
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(bad("the key path is empty or has an empty segment"));
        }
        let value = if raw.trim().is_empty() {
            Value::String(String::new())
        } else {
            serde_yaml_ng::from_str(raw)
                .map_err(|e| bad(&format!("the value is not valid YAML ({e}); quote it")))?
        };
        Ok(Override {
            path: path.to_string(),
            value,
            text: text.to_string(),
        })
    }

    /// The same path in the form serde and the source map use (`resources[0].name`).
    pub fn canonical_path(&self) -> String {
        canonical(&self.path)
    }

    /// Writes the value into `root`, creating maps on the way.
    pub fn apply(&self, root: &mut Value) -> Result<(), StackError> {
        let origin = format!("--set {}", self.text);
        let mut node = root;
        let segments: Vec<&str> = self.path.split('.').collect();
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            if node.is_null() {
                *node = Value::Mapping(Mapping::new());
            }
            node = match node {
                Value::Mapping(map) => {
                    let key = Value::String(seg.to_string());
                    if last {
                        map.insert(key, self.value.clone());
                        return Ok(());
                    }
                    map.entry(key).or_insert(Value::Null)
                }
                Value::Sequence(items) => {
                    let len = items.len();
                    let idx: usize = seg.parse().ok().filter(|i| *i < len).ok_or_else(|| {
                        StackError::new(
                            origin.clone(),
                            StackErrorKind::BadOverride {
                                message: format!(
                                    "`{seg}` is not an index of the list at `{}` (it has {len} items)",
                                    segments[..i].join(".")
                                ),
                            },
                        )
                    })?;
                    if last {
                        items[idx] = self.value.clone();
                        return Ok(());
                    }
                    &mut items[idx]
                }
                _ => {
                    return Err(StackError::new(
                        origin,
                        StackErrorKind::BadOverride {
                            message: format!(
                                "`{}` is a single value, so it has no key `{seg}`",
                                segments[..i].join(".")
                            ),
                        },
                    ))
                }
            };
        }
        Ok(())
    }
}

/// `a.0.b` to `a[0].b`.
pub(crate) fn canonical(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('.') {
        if !out.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_parsed_as_yaml() {
        let o = Override::parse("policy.min_instances=5").unwrap();
        assert_eq!(o.value, Value::Number(5.into()));
        let o = Override::parse("runner.tags=[a, b]").unwrap();
        assert!(o.value.is_sequence());
        let o = Override::parse("name=\"007\"").unwrap();
        assert_eq!(o.value, Value::String("007".into()));
    }

    #[test]
    fn nested_maps_are_created_and_lists_indexed() {
        let mut root: Value = serde_yaml_ng::from_str("a: {b: 1}\nl: [{n: x}]").unwrap();
        Override::parse("a.c.d=2")
            .unwrap()
            .apply(&mut root)
            .unwrap();
        Override::parse("l.0.n=y")
            .unwrap()
            .apply(&mut root)
            .unwrap();
        assert_eq!(root["a"]["c"]["d"], Value::Number(2.into()));
        assert_eq!(root["l"][0]["n"], Value::String("y".into()));
        let err = Override::parse("l.3.n=y")
            .unwrap()
            .apply(&mut root)
            .unwrap_err();
        assert!(err.to_string().contains("not an index"), "{err}");
        let err = Override::parse("a.b.c=1")
            .unwrap()
            .apply(&mut root)
            .unwrap_err();
        assert!(err.to_string().contains("single value"), "{err}");
    }

    #[test]
    fn malformed_flags_say_what_is_expected() {
        let err = Override::parse("policy.min_instances").unwrap_err();
        assert!(err.to_string().contains("path=value"), "{err}");
        assert!(Override::parse("=3").is_err());
        assert!(Override::parse("a..b=3").is_err());
    }

    #[test]
    fn canonical_paths_use_brackets_for_indexes() {
        assert_eq!(canonical("resources.0.name"), "resources[0].name");
        assert_eq!(canonical("policy.min_instances"), "policy.min_instances");
    }
}
