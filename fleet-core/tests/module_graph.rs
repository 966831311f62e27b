//! The crate's structure, as the build can check it: no two modules of fleet-core import
//! each other (directly or around a circle), and the crate docs and docs/design.md name
//! every module. A circle means a word lives in the wrong module: move it to its owner.
//!
//! Modules are read as text: a file's `crate::a::b` paths (also inside `use crate::{...}`)
//! and `super::b` paths give its edges, with comments and `#[cfg(test)]` modules left out.
//! Edges are taken between top-level modules (`planner` -> `state`) and between the files
//! of one folder (`autoscale/decide` -> `autoscale/learn`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`, as its module path (`["autoscale", "decide"]`).
fn modules(dir: &Path, prefix: &[String], out: &mut Vec<(Vec<String>, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            let mut next = prefix.to_vec();
            next.push(name);
            modules(&p, &next, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let mut m = prefix.to_vec();
            if name != "mod" {
                m.push(name);
            }
            out.push((m, p));
        }
    }
}

/// The text of a file without comments and without its test module (by this crate's
/// convention the last item of a file: `#[cfg(test)] mod tests` to the end).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        if line.trim() == "#[cfg(test)]" {
            let next = lines.peek().map(|l| l.trim()).unwrap_or_default();
            if next.starts_with("mod tests") || next.starts_with("pub(crate) mod tests") {
                break;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Identifier paths that follow `prefix` (`crate::`, `super::`), including the items of
/// a braced group: `crate::{a, b::c}` gives `a` and `b::c`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.push(ident_path(item.trim()));
            }
        } else {
            out.push(ident_path(rest));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

fn ident_path(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        parts.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) if !r.starts_with('{') => rest = r,
            _ => break,
        }
    }
    parts
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    modules(&src(), &[], &mut files);
    let known: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, path) in &files {
        // The crate root, the test-only conformance suites and test files are not part of
        // the layering.
        if m.is_empty() || m[0] == "testing" || m.last().is_some_and(|n| n == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("source file");
        let code = code(&text);
        let mut targets: Vec<Vec<String>> = paths_after(&code, "crate::");
        // `super::x` inside `a/b.rs` is `a::x`.
        if m.len() >= 2 {
            for p in paths_after(&code, "super::") {
                let mut full = m[..m.len() - 1].to_vec();
                full.extend(p);
                targets.push(full);
            }
        }
        let top = &m[0];
        for t in targets {
            let Some(first) = t.first() else { continue };
            if !known.contains(&vec![first.clone()]) {
                continue;
            }
            if first != top {
                edges.entry(top.clone()).or_default().insert(first.clone());
            } else if m.len() >= 2 && t.len() >= 2 {
                let sibling = vec![first.clone(), t[1].clone()];
                if known.contains(&sibling) && sibling[1] != m[1] {
                    edges
                        .entry(format!("{}/{}", m[0], m[1]))
                        .or_default()
                        .insert(format!("{}/{}", sibling[0], sibling[1]));
                }
            }
        }
    }
    edges
}

/// A circle through `start`, if there is one.
fn circle_from(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in edges.get(&node).into_iter().flatten() {
            if next == start {
                return Some(path.clone());
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn no_two_modules_import_each_other() {
    let edges = graph();
    let mut circles = Vec::new();
    for node in edges.keys() {
        if let Some(c) = circle_from(&edges, node) {
            circles.push(format!("{} -> {node}", c.join(" -> ")));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles in fleet-core (move the shared word to the module that owns it):\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_circle_check_finds_a_circle() {
    // The check itself: a made-up graph with a circle is caught, one without is not.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(circle_from(&edges, "a"), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        circle_from(&edges, "a"),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
    // And the reader sees through comments, groups and test modules.
    let text = "use crate::{plan::Plan, state};\n// crate::engine\n#[cfg(test)]\nmod tests {\n    use crate::apply;\n}\n";
    let found: Vec<String> = paths_after(&code(text), "crate::")
        .into_iter()
        .map(|p| p[0].clone())
        .collect();
    assert_eq!(found, vec!["plan".to_string(), "state".to_string()]);
}

#[test]
fn the_crate_docs_and_the_design_map_name_every_module() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let design =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/design.md"))
            .expect("docs/design.md");
    let mut files = Vec::new();
    modules(&src(), &[], &mut files);
    let tops: BTreeSet<String> = files
        .iter()
        .filter(|(m, _)| m.len() == 1 && m[0] != "lib")
        .map(|(m, _)| m[0].clone())
        .collect();
    let mut missing = Vec::new();
    for t in &tops {
        if !lib.contains(&format!("pub mod {t};")) {
            missing.push(format!("lib.rs does not declare `pub mod {t};`"));
        }
        // `testing` is behind a feature, so rustdoc cannot link it: named in plain code.
        let named = if t == "testing" {
            lib.contains("`testing`")
        } else {
            lib.contains(&format!("[`{t}`]"))
        };
        if !named {
            missing.push(format!("lib.rs's module list does not name [`{t}`]"));
        }
        if !design.contains(&format!("`{t}")) {
            missing.push(format!("docs/design.md does not name `{t}`"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
