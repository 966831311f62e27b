//! Property tests of the stack loader on hostile input: arbitrary text, mutations of the
//! example stacks, random YAML trees over the real key names, and `--set` flags. The only
//! property is that loading answers (a stack or a located error) and never panics.
//!
//! `cargo test` runs a short pass (2,000 cases each); `make fuzz` runs 1,000,000 each in the
//! release profile. PROPTEST_CASES sets the count.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use fleet_core::stack::{load_str, Override};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        // Failures are reported with the shrunk input; no regression files in the tree.
        failure_persistence: None,
        ..Config::default()
    })
}

fn stacks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks")
}

/// Every variable a stack names is set, so loading goes past the secrets.
fn any_env(_: &str) -> Option<String> {
    Some("fuzz-secret".into())
}

fn examples() -> Vec<(PathBuf, String)> {
    ["sandbox.yaml", "aws.yaml", "demand.yaml"]
        .iter()
        .map(|n| {
            let p = stacks_dir().join(n);
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect()
}

/// Loads `text` as if it were at `path`; a panic fails the property.
fn load(path: &Path, text: &str, sets: &[Override]) {
    let _ = load_str(path, text, sets, &any_env);
}

#[test]
fn arbitrary_text_never_panics() {
    let path = stacks_dir().join("fuzz.yaml");
    runner()
        .run(&any::<String>(), |text| {
            load(&path, &text, &[]);
            Ok(())
        })
        .unwrap();
}

/// A mutation of a valid stack's text.
#[derive(Debug, Clone)]
enum Mutation {
    /// Cut the text at a byte offset (rounded down to a char boundary).
    Truncate(usize),
    /// Drop a line.
    DeleteLine(usize),
    /// Repeat a line.
    DuplicateLine(usize),
    /// Replace a line's value part (after `: `) with something else.
    ReplaceValue(usize, String),
    /// Indent or dedent a line.
    Reindent(usize, usize),
    /// Insert arbitrary text at a byte offset.
    Insert(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        Just(String::new()),
        Just("~".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1e400".to_string()),
        Just("0s".to_string()),
        Just("&a [*a]".to_string()),
        Just("!!binary aGVsbG8=".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("[a, {b: c}]".to_string()),
        "[ -~]{0,24}",
        any::<String>(),
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), value).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        (any::<usize>(), 0usize..8).prop_map(|(i, n)| Mutation::Reindent(i, n)),
        (any::<usize>(), "[ -~\n\t:{}\\[\\]&*!|>-]{0,16}")
            .prop_map(|(i, s)| Mutation::Insert(i, s)),
    ]
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let pick = |i: usize, n: usize| if n == 0 { 0 } else { i % n };
    match m {
        Mutation::Truncate(i) => return text[..floor_boundary(text, i % (text.len() + 1))].into(),
        Mutation::Insert(i, s) => {
            let at = floor_boundary(text, i % (text.len() + 1));
            return format!("{}{s}{}", &text[..at], &text[at..]);
        }
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            let i = pick(*i, lines.len());
            lines.remove(i);
        }
        Mutation::DuplicateLine(i) if !lines.is_empty() => {
            let i = pick(*i, lines.len());
            lines.insert(i, lines[i].clone());
        }
        Mutation::ReplaceValue(i, v) if !lines.is_empty() => {
            let i = pick(*i, lines.len());
            if let Some((k, _)) = lines[i].split_once(": ") {
                lines[i] = format!("{k}: {v}");
            }
        }
        Mutation::Reindent(i, n) if !lines.is_empty() => {
            let i = pick(*i, lines.len());
            lines[i] = format!("{}{}", " ".repeat(*n), lines[i].trim_start());
        }
        _ => {}
    }
    lines.join("\n")
}

#[test]
fn mutated_example_stacks_never_panic() {
    let examples = examples();
    let strategy = (
        0..examples.len(),
        proptest::collection::vec(mutation(), 1..4),
    );
    runner()
        .run(&strategy, |(which, muts)| {
            let (path, text) = &examples[which];
            let mut t = text.clone();
            for m in &muts {
                t = apply(&t, m);
            }
            load(path, &t, &[]);
            Ok(())
        })
        .unwrap();
}

/// Random YAML trees whose keys are the stack's own, so decoding and validation (not just
/// the YAML parser) see the odd values.
fn yaml_tree() -> impl Strategy<Value = serde_yaml_ng::Value> {
    use serde_yaml_ng::Value;
    const KEYS: &[&str] = &[
        "name",
        "description",
        "provider",
        "kind",
        "boot_time",
        "latency",
        "failure_rate",
        "instance_types",
        "region",
        "instance",
        "image",
        "types",
        "labels",
        "runner",
        "gitlab_url",
        "tags",
        "run_untagged",
        "token_env",
        "runner_token_env",
        "projects",
        "groups",
        "runner_type",
        "webhook_secret_env",
        "maximum_timeout",
        "drain_timeout",
        "online_timeout",
        "cache",
        "bucket",
        "policy",
        "min_instances",
        "max_instances",
        "capacity_per_instance",
        "idle_count",
        "idle_time",
        "periods",
        "schedule",
        "timezone",
        "billing",
        "stopped_max",
        "state",
        "backend",
        "path",
        "templates",
        "user_data",
        "resources",
        "depends_on",
        "properties",
        "apply",
        "concurrency",
        "batch_size",
        "daemon",
        "interval",
        "listen",
        "retry_initial",
        "retry_max",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| Value::Number(f.into())),
        prop_oneof![
            Just("sandbox"),
            Just("aws"),
            Just("local"),
            Just("5m"),
            Just("0s"),
            Just("127.0.0.1:0"),
            Just("https://gitlab.example.com"),
            Just("* * * * *"),
            Just("../../../../etc/passwd"),
        ]
        .prop_map(|s| Value::String(s.into())),
        "[ -~]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Sequence),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..8).prop_map(
                |kv| {
                    Value::Mapping(
                        kv.into_iter()
                            .map(|(k, v)| (Value::String(k.to_string()), v))
                            .collect(),
                    )
                }
            ),
        ]
    })
}

#[test]
fn random_trees_over_the_stack_keys_never_panic() {
    let path = stacks_dir().join("fuzz.yaml");
    runner()
        .run(&yaml_tree(), |tree| {
            if let Ok(text) = serde_yaml_ng::to_string(&tree) {
                load(&path, &text, &[]);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_set_flags_on_a_valid_stack_never_panic() {
    let (path, text) = examples().swap_remove(0);
    let flag = prop_oneof![
        any::<String>(),
        "(name|policy|runner|daemon|resources|provider)(\\.[a-z_0-9]{1,12}){0,3}=[ -~]{0,16}",
    ];
    runner()
        .run(&proptest::collection::vec(flag, 1..4), |flags| {
            let sets: Vec<Override> = flags
                .iter()
                .filter_map(|f| Override::parse(f).ok())
                .collect();
            load(&path, &text, &sets);
            Ok(())
        })
        .unwrap();
}
