//! Reading, overriding, decoding and checking a stack file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::error::{StackError, StackErrorKind};
use super::overrides::Override;
use super::source_map::SourceMap;
use super::{LoadedStack, Settings, Stack, Templates};
use crate::naming;
use crate::resource::ResourceSpec;
use crate::secret::Secret;

/// Looks up an environment variable; a parameter so loading stays testable.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Loads the stack at `path`, applies `overrides`, and checks it.
pub fn load(
    path: &Path,
    overrides: &[Override],
    env: EnvLookup,
) -> Result<LoadedStack, StackError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        StackError::new(path.display().to_string(), StackErrorKind::Read { source })
    })?;
    load_str(path, &text, overrides, env)
}

/// Like [`load`], for a stack whose text is already in memory (`path` is used in messages
/// and to resolve relative paths).
pub fn load_str(
    path: &Path,
    text: &str,
    overrides: &[Override],
    env: EnvLookup,
) -> Result<LoadedStack, StackError> {
    let file = path.display().to_string();
    let mut root: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let origin = match e.location() {
            Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
            None => file.clone(),
        };
        StackError::new(
            origin,
            StackErrorKind::Syntax {
                message: strip_location(&e.to_string()),
            },
        )
    })?;
    if root.is_null() {
        return Err(StackError::new(
            file,
            StackErrorKind::Invalid {
                message: "the stack file is empty".into(),
                hint: "start from stacks/sandbox.yaml".into(),
            },
        ));
    }
    let source_map = SourceMap::build(text);
    for o in overrides {
        o.apply(&mut root)?;
    }
    let stack: Stack = decode(path, &source_map, overrides, root, "")?;
    let mut loaded = LoadedStack {
        stack,
        path: path.to_path_buf(),
        source_map,
        overrides: overrides.to_vec(),
        secrets: BTreeMap::new(),
        policy: Settings::default(),
        templates: Templates::default(),
    };
    validate(&loaded)?;
    loaded.compile_policy()?;
    let templates = Templates::read(&loaded.stack.templates, loaded.dir(), |key| {
        loaded.origin(key)
    })?;
    loaded.templates = templates;
    let named = [
        ("runner.token_env", loaded.stack.runner.token_env.clone()),
        (
            "runner.runner_token_env",
            loaded.stack.runner.runner_token_env.clone(),
        ),
        (
            "runner.webhook_secret_env",
            loaded.stack.runner.webhook_secret_env.clone(),
        ),
    ];
    for (key, var) in named {
        let Some(var) = var else { continue };
        match env(&var) {
            Some(v) if !v.is_empty() => {
                loaded.secrets.insert(var, Secret::new(v));
            }
            _ => {
                return Err(StackError::new(
                    loaded.origin(key),
                    StackErrorKind::MissingEnv {
                        var,
                        key: key.into(),
                    },
                ))
            }
        }
    }
    Ok(loaded)
}

/// Where the value at `path` came from: the `--set` flag that wrote it, or its position in
/// the file.
pub(crate) fn origin(file: &Path, map: &SourceMap, overrides: &[Override], path: &str) -> String {
    let hit = overrides.iter().rev().find(|o| {
        let p = o.canonical_path();
        path == p || path.starts_with(&format!("{p}.")) || path.starts_with(&format!("{p}["))
    });
    if let Some(o) = hit {
        return format!("--set {}", o.text);
    }
    match map.locate(path) {
        Some(loc) => format!("{}:{loc}", file.display()),
        None => file.display().to_string(),
    }
}

/// Decodes `value` (found at `prefix` in the document) into `T`, turning serde's error into
/// a located one.
fn decode<T: DeserializeOwned>(
    file: &Path,
    map: &SourceMap,
    overrides: &[Override],
    value: Value,
    prefix: &str,
) -> Result<T, StackError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = strip_location(&e.inner().to_string());
        let rel = e.path().to_string();
        let full = match (prefix.is_empty(), rel.as_str()) {
            (true, _) => rel.clone(),
            (false, ".") | (false, "") => prefix.to_string(),
            (false, _) => format!("{prefix}.{rel}"),
        };
        let full = full.trim_start_matches('.').to_string();
        let at = origin(file, map, overrides, &full);
        let kind = match parse_unknown(&inner) {
            Some((key, expected)) => StackErrorKind::UnknownKey {
                suggestion: closest(&key, &expected),
                key,
                expected,
            },
            None => StackErrorKind::Decode {
                message: if full.is_empty() {
                    inner
                } else {
                    format!("`{full}`: {inner}")
                },
            },
        };
        StackError::new(at, kind)
    })
}

pub(crate) fn decode_section<T: DeserializeOwned>(
    loaded: &LoadedStack,
    section: &str,
    settings: &BTreeMap<String, Value>,
) -> Result<T, StackError> {
    let map: serde_yaml_ng::Mapping = settings
        .iter()
        .map(|(k, v)| (Value::String(k.clone()), v.clone()))
        .collect();
    decode(
        &loaded.path,
        &loaded.source_map,
        &loaded.overrides,
        Value::Mapping(map),
        section,
    )
}

/// serde_yaml_ng appends ` at line L column C`; the location is reported separately.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

/// `unknown field `x`, expected one of `a`, `b`` (and `unknown variant`) to the key and the
/// valid keys.
fn parse_unknown(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg
        .strip_prefix("unknown field `")
        .or_else(|| msg.strip_prefix("unknown variant `"))?;
    let (key, tail) = rest.split_once('`')?;
    let expected = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((key.to_string(), expected))
}

/// The valid key closest to a misspelt one, if any is close enough to be a likely typo.
fn closest(key: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(key, c), c))
        .filter(|(d, c)| *d <= (c.len().max(key.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn validate(l: &LoadedStack) -> Result<(), StackError> {
    let s = &l.stack;
    let invalid = |path: &str, message: String, hint: &str| Err(l.error_at(path, message, hint));

    if let Some(problem) = naming::label_problem(&s.name) {
        return invalid(
            "name",
            format!("stack name `{}` {problem}", s.name),
            "instance names and hostnames are built from it",
        );
    }
    let longest = s.name.len() + naming::INSTANCE_SUFFIX_LEN;
    if longest > naming::MAX_NAME_LEN {
        return invalid(
            "name",
            format!(
                "stack name `{}` is too long: instance names would reach {longest} characters, clouds and hostnames allow {}",
                s.name,
                naming::MAX_NAME_LEN
            ),
            &format!("use at most {} characters", naming::MAX_NAME_LEN - naming::INSTANCE_SUFFIX_LEN),
        );
    }
    if s.provider.kind.trim().is_empty() {
        return invalid(
            "provider.kind",
            "provider kind is empty".into(),
            "set it to `sandbox`, `aws`, ...",
        );
    }
    if s.instance.image.trim().is_empty() {
        return invalid(
            "instance.image",
            "instance image is empty".into(),
            "name the image every VM boots from",
        );
    }
    if s.instance.types.is_empty() {
        return invalid(
            "instance.types",
            "instance type list is empty".into(),
            "list at least one instance type",
        );
    }
    if let Some(i) = s.instance.types.iter().position(|t| t.trim().is_empty()) {
        return invalid(
            &format!("instance.types[{i}]"),
            "instance type is empty".into(),
            "remove it or name a type",
        );
    }
    if let Some(k) = s.instance.labels.keys().find(|k| k.starts_with("fleet:")) {
        return invalid(
            &format!("instance.labels.{k}"),
            format!("label `{k}` uses the `fleet:` prefix, which the engine's own tags use"),
            "pick another prefix",
        );
    }
    let p = &s.policy;
    if p.min_instances > p.max_instances {
        return invalid(
            "policy.min_instances",
            format!(
                "policy.min_instances ({}) is greater than policy.max_instances ({})",
                p.min_instances, p.max_instances
            ),
            "lower min_instances or raise max_instances",
        );
    }
    if p.capacity_per_instance == 0 {
        return invalid(
            "policy.capacity_per_instance",
            "capacity_per_instance is 0".into(),
            "a VM must run at least one job",
        );
    }
    if s.apply.concurrency == 0 {
        return invalid(
            "apply.concurrency",
            "apply.concurrency is 0".into(),
            "allow at least one cloud call at a time",
        );
    }
    if s.apply.batch_size == 0 {
        return invalid(
            "apply.batch_size",
            "apply.batch_size is 0".into(),
            "use at least 1",
        );
    }
    if let Some(i) = s.runner.tags.iter().position(|t| t.trim().is_empty()) {
        return invalid(
            &format!("runner.tags[{i}]"),
            "runner tag is empty".into(),
            "remove it",
        );
    }
    validate_runner(l)?;
    super::bootstrap::validate(l)?;
    super::daemon::validate(l)?;
    validate_resources(l)
}

/// GitLab's own lower bound for a runner's maximum job timeout.
const MIN_MAXIMUM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

fn validate_runner(l: &LoadedStack) -> Result<(), StackError> {
    use super::{GitLabRef, RunnerType};
    let r = &l.stack.runner;
    if let Some(url) = &r.gitlab_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(l.error_at(
                "runner.gitlab_url",
                format!("runner.gitlab_url `{url}` is not an http:// or https:// URL"),
                "write GitLab's base URL, like https://gitlab.example.com",
            ));
        }
    }
    for (list, refs) in [("projects", &r.projects), ("groups", &r.groups)] {
        for (i, g) in refs.iter().enumerate() {
            if let GitLabRef::Path(p) = g {
                if p.trim().is_empty() || p.starts_with('/') || p.ends_with('/') {
                    return Err(l.error_at(
                        &format!("runner.{list}[{i}]"),
                        format!("`{p}` is not a GitLab path"),
                        "write a numeric id or a full path like `group/sub/name`",
                    ));
                }
            }
        }
        if !refs.is_empty() && r.gitlab_url.is_none() {
            return Err(l.error_at(
                &format!("runner.{list}"),
                format!("runner.{list} is set but runner.gitlab_url is not"),
                "set runner.gitlab_url to the GitLab these belong to",
            ));
        }
    }
    match r.runner_type {
        RunnerType::GroupType if r.groups.is_empty() => {
            return Err(l.error_at(
                "runner.runner_type",
                "runner_type `group_type` needs a group to create runners in",
                "list it first in runner.groups",
            ))
        }
        RunnerType::ProjectType if r.projects.is_empty() => {
            return Err(l.error_at(
                "runner.runner_type",
                "runner_type `project_type` needs a project to create runners in",
                "list it first in runner.projects; the runners are assigned to the others too",
            ))
        }
        _ => {}
    }
    if let Some(t) = r.maximum_timeout {
        if t < MIN_MAXIMUM_TIMEOUT {
            return Err(l.error_at(
                "runner.maximum_timeout",
                format!(
                    "runner.maximum_timeout is {}s; GitLab needs at least 600s",
                    t.as_secs()
                ),
                "use 10m or more, or leave it out for no limit",
            ));
        }
    }
    if r.drain_timeout.is_zero() {
        return Err(l.error_at(
            "runner.drain_timeout",
            "runner.drain_timeout is 0",
            "give running jobs time to finish before their VM is deleted, like 30m",
        ));
    }
    if r.online_timeout.is_zero() {
        return Err(l.error_at(
            "runner.online_timeout",
            "runner.online_timeout is 0",
            "give a new VM time to boot and register its runner, like 10m",
        ));
    }
    Ok(())
}

fn validate_resources(l: &LoadedStack) -> Result<(), StackError> {
    let s = &l.stack;
    let mut seen = BTreeSet::new();
    for (i, r) in s.resources.iter().enumerate() {
        let at = format!("resources[{i}]");
        if r.kind.trim().is_empty() {
            return Err(l.error_at(
                &format!("{at}.kind"),
                "resource kind is empty",
                "name a kind the provider supports",
            ));
        }
        let cloud_name = naming::resource_name(&s.name, &r.name);
        if let Some(problem) =
            naming::label_problem(&r.name).or_else(|| naming::label_problem(&cloud_name))
        {
            return Err(l.error_at(
                &format!("{at}.name"),
                format!(
                    "resource name `{}` (in the cloud `{cloud_name}`) {problem}",
                    r.name
                ),
                "use a short lowercase name",
            ));
        }
        if !seen.insert(format!("{}/{}", r.kind, r.name)) {
            return Err(l.error_at(
                &format!("{at}.name"),
                format!("resource `{}/{}` is declared twice", r.kind, r.name),
                "give each resource its own name",
            ));
        }
    }
    for (i, r) in s.resources.iter().enumerate() {
        for (j, dep) in r.depends_on.iter().enumerate() {
            if !seen.contains(dep) {
                return Err(l.error_at(
                    &format!("resources[{i}].depends_on[{j}]"),
                    format!("`{dep}` is not a resource of this stack"),
                    "write dependencies as `kind/name` of a declared resource",
                ));
            }
        }
    }
    let specs: Vec<ResourceSpec> = s.resources.iter().map(ResourceSpec::from).collect();
    if let Err(cycle) = crate::resource::dependency_order(&specs) {
        return Err(l.error_at(
            "resources",
            format!("resources depend on each other in a cycle ({cycle})"),
            "remove one of the depends_on entries",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_messages_are_split_into_key_and_candidates() {
        let (k, e) = parse_unknown(
            "unknown field `max_instance`, expected one of `min_instances`, `max_instances`",
        )
        .unwrap();
        assert_eq!(k, "max_instance");
        assert_eq!(e, vec!["min_instances", "max_instances"]);
        assert_eq!(closest(&k, &e).as_deref(), Some("max_instances"));
        assert_eq!(closest("zzzzzz", &e), None);
    }

    #[test]
    fn location_suffixes_are_stripped() {
        assert_eq!(strip_location("bad thing at line 3 column 4"), "bad thing");
        assert_eq!(strip_location("plain"), "plain");
    }
}
