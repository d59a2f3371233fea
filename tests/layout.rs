//! The shape of the source tree: no import cycles among the modules of `src/`, every
//! module readable in one sitting, and a thin `main.rs`.
//!
//! Every `crate::a::b` and `super::...` path in a module is an import. A module may use
//! its ancestors and its descendants freely (a folder's `mod.rs` lists its children;
//! children use what their parent shares); between siblings of one folder the imports
//! must form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use petgraph::algo::{kosaraju_scc, toposort};
use petgraph::graph::DiGraph;

/// Most lines of a module before its tests.
const MAX_MODULE_LINES: usize = 400;

/// Most lines of `main.rs`.
const MAX_MAIN_LINES: usize = 350;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The module path of a library file: `src/a/b.rs` and `src/a/b/mod.rs` are `[a, b]`,
/// `src/lib.rs` is `[]`; `None` for the binary.
fn module_of(file: &Path) -> Option<Vec<String>> {
    let relative = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.last().map(String::as_str) {
        Some("main") if parts.len() == 1 => return None,
        Some("lib") if parts.len() == 1 => parts.clear(),
        Some("mod") => {
            parts.pop();
        }
        _ => {}
    }
    Some(parts)
}

/// The code of a file before its `#[cfg(test)]` module.
fn code(text: &str) -> &str {
    text.split("\n#[cfg(test)]").next().unwrap_or(text)
}

/// Every path a module's code names with `crate::` or `super::`, resolved to absolute
/// segments (module names and item names alike).
fn imports(module: &[String], text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code(text).chars().collect();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !word(bytes[i - 1]);
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let (mut path, skip) = if starts_word && rest.starts_with("crate::") {
            (Vec::new(), 7)
        } else if starts_word && rest.starts_with("super::") {
            (module[..module.len().saturating_sub(1)].to_vec(), 7)
        } else {
            i += 1;
            continue;
        };
        i += skip;
        loop {
            let start = i;
            while i < bytes.len() && word(bytes[i]) {
                i += 1;
            }
            let segment: String = bytes[start..i].iter().collect();
            if segment == "super" {
                path.pop();
            } else if !segment.is_empty() {
                path.push(segment);
            }
            if i + 1 < bytes.len() && bytes[i] == ':' && bytes[i + 1] == ':' {
                i += 2;
            } else {
                break;
            }
        }
        out.push(path);
    }
    out
}

#[test]
fn no_import_cycles_among_modules() {
    let modules: BTreeMap<Vec<String>, String> = files(&src())
        .iter()
        .filter_map(|f| Some((module_of(f)?, std::fs::read_to_string(f).unwrap())))
        .collect();
    let known: BTreeSet<&Vec<String>> = modules.keys().collect();
    let mut edges: BTreeSet<(Vec<String>, Vec<String>)> = BTreeSet::new();
    for (module, text) in &modules {
        for mut target in imports(module, text) {
            while !target.is_empty() && !known.contains(&target) {
                target.pop();
            }
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < module.len() && common < target.len() {
                edges.insert((module[..=common].to_vec(), target[..=common].to_vec()));
            }
        }
    }
    let mut graph = DiGraph::<String, ()>::new();
    let mut nodes = BTreeMap::new();
    let mut node = |g: &mut DiGraph<String, ()>, m: &Vec<String>| {
        *nodes
            .entry(m.clone())
            .or_insert_with(|| g.add_node(m.join("::")))
    };
    for (from, to) in &edges {
        let (a, b) = (node(&mut graph, from), node(&mut graph, to));
        graph.add_edge(a, b, ());
    }
    if toposort(&graph, None).is_err() {
        let cycles: Vec<Vec<&String>> = kosaraju_scc(&graph)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| c.into_iter().map(|n| &graph[n]).collect())
            .collect();
        let inside: Vec<String> = edges
            .iter()
            .map(|(a, b)| (a.join("::"), b.join("::")))
            .filter(|(a, b)| cycles.iter().any(|c| c.contains(&a) && c.contains(&b)))
            .map(|(a, b)| format!("{a} -> {b}"))
            .collect();
        panic!("import cycles among {cycles:?}: {inside:?}");
    }
    // The check sees real imports: the driver uses the plan, the plan the rules.
    let edge = |a: &str, b: &str| edges.contains(&(vec![a.into()], vec![b.into()]));
    assert!(edge("rewrite", "plan") && edge("plan", "rules"));
    assert!(!edge("rules", "config"), "rules take Select, not Config");
}

#[test]
fn modules_are_small_and_main_is_thin() {
    for file in files(&src()) {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = code(&text).lines().count();
        let limit = match module_of(&file) {
            None => MAX_MAIN_LINES,
            Some(_) => MAX_MODULE_LINES,
        };
        assert!(
            lines <= limit,
            "{} has {lines} lines before its tests (limit {limit})",
            file.display()
        );
    }
}

#[test]
fn imports_resolve_crate_and_super_paths() {
    let module = vec!["calibrate".to_string(), "gather".to_string()];
    let text = "use super::probe::Probe;\nuse crate::stats::{A, B};\nfn f() { crate::x::y(); }";
    assert_eq!(
        imports(&module, text),
        vec![
            vec!["calibrate", "probe", "Probe"],
            vec!["stats"],
            vec!["x", "y"],
        ]
        .into_iter()
        .map(|p| p.into_iter().map(String::from).collect::<Vec<_>>())
        .collect::<Vec<_>>()
    );
}
