//! The master's modules form a DAG: no module reaches, through `crate::`
//! paths, back to itself, and the core never reaches the layers above it
//! (auth, the API adapters, the REPL, the wiring). Read from the sources, so a
//! change that adds a cycle fails here with the cycle spelled out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`core::tasks`) → the production source of that file.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let module = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}::{name}")
            };
            if path.is_dir() {
                walk(&path, &module, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs")
                || name.ends_with("_tests")
                || name.starts_with("test_")
            {
                continue;
            }
            let module = match name.as_str() {
                "lib" | "main" => "crate".to_string(),
                "mod" => prefix.to_string(),
                _ => module,
            };
            let source = std::fs::read_to_string(&path).unwrap();
            // Unit tests may reach anywhere; only production code counts.
            let production = match source.find("#[cfg(test)]\nmod tests") {
                Some(end) => source[..end].to_string(),
                None => source,
            };
            out.insert(module, production);
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut out,
    );
    out
}

/// Every module a source names through a `crate::` or `super::` path
/// (`crate::a::{b, c::d}` names `a::b` and `a::c::d`).
fn references(module: &str, source: &str, modules: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut paths = Vec::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent(module))] {
        for (at, _) in source.match_indices(prefix) {
            // `crate::` inside `super::`-free text only; skip `xsuper::`.
            if at > 0 && source[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &source[at + prefix.len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let path = path.trim_end_matches(':');
            let full = if base.is_empty() {
                path.to_string()
            } else {
                format!("{base}::{path}")
            };
            let after = &rest[path.len()..].trim_start_matches(':');
            if let Some(group) = after.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let item = item.split_whitespace().next().unwrap_or_default();
                    if !item.is_empty() && item != "self" {
                        paths.push(format!("{full}::{item}"));
                    }
                }
            }
            paths.push(full);
        }
    }
    paths
        .iter()
        .filter_map(|path| {
            let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            // The longest prefix that is a module.
            (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|m| modules.contains_key(m))
        })
        .collect()
}

/// The module a `super::` in `module` names (`""` for the crate root).
fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_string())
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    modules
        .iter()
        .map(|(module, source)| {
            let mut deps = references(module, source, &modules);
            // A module naming its own children or itself is not a dependency.
            deps.retain(|d| d != module && !d.starts_with(&format!("{module}::")));
            deps.retain(|d| !module.starts_with(&format!("{d}::")));
            (module.clone(), deps)
        })
        .collect()
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|p| p == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn modules_form_a_dag() {
    let graph = graph();
    assert!(graph.contains_key("core::lifecycle"), "sources not found");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_core_reaches_no_layer_above_it() {
    for (module, deps) in graph() {
        if !module.starts_with("core") {
            continue;
        }
        for dep in deps {
            let top = dep.split("::").next().unwrap_or_default();
            assert!(
                ["core", "store", "error"].contains(&top),
                "{module} uses {dep}: the core may use only the store and the error type"
            );
        }
    }
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
