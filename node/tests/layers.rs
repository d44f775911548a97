//! The node's layers: imports only go down, and nothing closes a cycle
//! (ARCHITECTURE.md, "The node's layers"). `node/build.rs` reads the import
//! graph of `node/src` with `syn`; this test judges it.
//!
//! The rules, for a reference from module `F` to module `T`:
//! - `T` is `F`, inside `F` or an ancestor of `F` (but the crate root):
//!   allowed (a module uses its own parts, a part uses its parent's items);
//! - `T` is the crate root (an item of `lib.rs`): refused, the root is the
//!   top and only starts things;
//! - otherwise `F` and `T` meet at their first differing ancestors, two
//!   siblings `f` and `t`: at the top, `t`'s layer must be below `f`'s; at
//!   every level, the graph of such sibling edges must have no cycle.

use std::collections::{BTreeMap, BTreeSet};

/// The top-level modules, bottom first. A module may use the ones in
/// earlier rows, never later ones; within a row, none uses another.
const LAYERS: &[&[&str]] =
    &[&["clock", "config"], &["views", "policy"], &["metrics"], &["cluster"], &["worker"], &["api"]];

const NODE: &str = include_str!(concat!(env!("OUT_DIR"), "/imports.txt"));
const FIXTURE: &str = include_str!(concat!(env!("OUT_DIR"), "/fixture.txt"));

type ModPath = Vec<String>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: ModPath,
    to: ModPath,
    file: String,
    written: String,
}

fn path(name: &str) -> ModPath {
    if name == "crate" {
        Vec::new()
    } else {
        name.split("::").map(String::from).collect()
    }
}

fn parse(report: &str) -> (BTreeSet<ModPath>, Vec<Edge>) {
    let mut modules = BTreeSet::new();
    let mut edges = Vec::new();
    for line in report.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["module", m] => {
                modules.insert(path(m));
            }
            ["edge", from, to, file, written] => edges.push(Edge {
                from: path(from),
                to: path(to),
                file: file.to_string(),
                written: written.to_string(),
            }),
            ["error", e] => panic!("node/build.rs could not read the sources: {e}"),
            _ => panic!("unexpected line in the import graph: {line:?}"),
        }
    }
    (modules, edges)
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "the crate root".into()
    } else {
        m.join("::")
    }
}

/// Every breach of the rules, as sentences.
fn violations(layers: &[&[&str]], modules: &BTreeSet<ModPath>, edges: &[Edge]) -> Vec<String> {
    let rank: BTreeMap<&str, usize> =
        layers.iter().enumerate().flat_map(|(i, row)| row.iter().map(move |m| (*m, i))).collect();
    let mut out = Vec::new();
    for m in modules.iter().filter(|m| m.len() == 1) {
        if !rank.contains_key(m[0].as_str()) {
            out.push(format!(
                "module `{}` has no layer: add it to LAYERS in node/tests/layers.rs and to ARCHITECTURE.md",
                m[0]
            ));
        }
    }
    // Sibling edges, by their common parent: parent -> (f, t) -> an edge.
    let mut siblings: BTreeMap<ModPath, BTreeMap<(String, String), &Edge>> = BTreeMap::new();
    for e in edges {
        let common = e.from.iter().zip(&e.to).take_while(|(a, b)| a == b).count();
        if common == e.to.len() {
            if e.to.is_empty() && !e.from.is_empty() {
                out.push(format!(
                    "{}: `{}` uses an item of the crate root (lib.rs only starts things; move the item down)",
                    e.file, e.written
                ));
            }
            continue;
        }
        if common == e.from.len() {
            continue;
        }
        let (f, t) = (&e.from[common], &e.to[common]);
        if common == 0 {
            if let (Some(rf), Some(rt)) = (rank.get(f.as_str()), rank.get(t.as_str())) {
                if rt >= rf {
                    out.push(format!(
                        "{}: `{}` points {} a layer: {f} (layer {rf}) must not use {t} (layer {rt})",
                        e.file,
                        e.written,
                        if rt == rf { "across" } else { "up" }
                    ));
                }
            }
        }
        siblings.entry(e.from[..common].to_vec()).or_default().entry((f.clone(), t.clone())).or_insert(e);
    }
    for (parent, graph) in &siblings {
        for cycle in cycles(graph) {
            let how: Vec<String> = cycle
                .iter()
                .map(|(f, t)| {
                    let e = graph[&(f.clone(), t.clone())];
                    format!("{f} -> {t} ({}: `{}`)", e.file, e.written)
                })
                .collect();
            out.push(format!("a cycle among the modules of {}: {}", name(parent), how.join(", ")));
        }
    }
    out
}

/// Cycles of a graph given as its edges, as lists of edges: at least one
/// for every group of nodes that reach each other.
fn cycles<V>(graph: &BTreeMap<(String, String), V>) -> Vec<Vec<(String, String)>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (f, t) in graph.keys() {
        next.entry(f).or_default().push(t);
    }
    let mut found = Vec::new();
    let mut in_a_cycle: BTreeSet<&str> = BTreeSet::new();
    for start in next.keys() {
        if in_a_cycle.contains(start) {
            continue;
        }
        // Depth-first from `start`, looking for a way back to it.
        let mut stack = vec![(*start, vec![*start])];
        let mut visited = BTreeSet::new();
        'search: while let Some((at, trail)) = stack.pop() {
            for n in next.get(at).into_iter().flatten() {
                if n == start {
                    let mut cycle: Vec<(String, String)> =
                        trail.windows(2).map(|w| (w[0].to_string(), w[1].to_string())).collect();
                    cycle.push((at.to_string(), start.to_string()));
                    in_a_cycle.extend(trail.iter().copied());
                    found.push(cycle);
                    break 'search;
                }
                if visited.insert(*n) {
                    let mut t = trail.clone();
                    t.push(n);
                    stack.push((n, t));
                }
            }
        }
    }
    found
}

#[test]
fn node_imports_only_go_down() {
    let (modules, edges) = parse(NODE);
    assert!(modules.len() > 10 && edges.len() > 20, "the graph looks empty: {modules:?}");
    let bad = violations(LAYERS, &modules, &edges);
    assert!(bad.is_empty(), "node/src breaks its layers (ARCHITECTURE.md, \"The node's layers\"):\n{}", bad.join("\n"));
}

#[test]
fn nothing_imports_the_api() {
    let (_, edges) = parse(NODE);
    let users: Vec<String> = edges
        .iter()
        .filter(|e| e.to.first().map(String::as_str) == Some("api"))
        .filter(|e| e.from.first().map(String::as_str) != Some("api") && !e.from.is_empty())
        .map(|e| format!("{}: {}", e.file, e.written))
        .collect();
    assert!(users.is_empty(), "{users:?}");
}

#[test]
fn the_reader_sees_every_kind_of_reference() {
    let (modules, edges) = parse(FIXTURE);
    let want_modules: BTreeSet<ModPath> =
        ["crate", "low", "low::inner", "high", "high::tests"].iter().map(|m| path(m)).collect();
    assert_eq!(modules, want_modules);
    let got: BTreeSet<(String, String, String)> =
        edges.iter().map(|e| (name(&e.from), name(&e.to), e.written.clone())).collect();
    let want: BTreeSet<(String, String, String)> = [
        ("low::inner", "low", "super::L"),
        ("low::inner", "high", "super::super::high::H"),
        ("high", "low", "crate::low"),
        ("high", "low::inner", "crate::low::inner::f"),
        ("high", "the crate root", "crate::root_item"),
        ("high", "high", "self::H"),
        ("high", "high", "super"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn the_rules_refuse_up_imports_root_items_and_cycles() {
    let (modules, edges) = parse(FIXTURE);
    let bad = violations(&[&["low"], &["high"]], &modules, &edges);
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(
        bad.iter().any(|b| b.contains(
            "low::inner.rs: `super::super::high::H` points up a layer: low (layer 0) must not use high (layer 1)"
        )),
        "{bad:#?}"
    );
    assert!(bad.iter().any(|b| b.contains("`crate::root_item` uses an item of the crate root")), "{bad:#?}");
    assert!(bad.iter().any(|b| b.starts_with("a cycle among the modules of the crate root:")), "{bad:#?}");
    // A module no layer names is refused too.
    let bad = violations(&[&["low"]], &modules, &edges);
    assert!(bad.iter().any(|b| b.starts_with("module `high` has no layer")), "{bad:#?}");
}

#[test]
fn cycles_are_found_among_siblings_at_any_depth() {
    let e = |f: &str, t: &str| Edge { from: path(f), to: path(t), file: format!("{f}.rs"), written: t.into() };
    let modules: BTreeSet<ModPath> = ["a", "a::x", "a::y", "a::z"].iter().map(|m| path(m)).collect();
    // x -> y -> z -> x inside `a`: one cycle of three.
    let edges = vec![e("a::x", "a::y"), e("a::y", "a::z"), e("a::z", "a::x")];
    let bad = violations(&[&["a"]], &modules, &edges);
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert!(bad[0].starts_with("a cycle among the modules of a: "), "{bad:#?}");
    // A chain is fine; a child using its parent, and a parent its child, too.
    let edges = vec![e("a::x", "a::y"), e("a::y", "a::z"), e("a::x", "a"), e("a", "a::z")];
    assert!(violations(&[&["a"]], &modules, &edges).is_empty());
}
