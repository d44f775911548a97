//! The import graph of `node/src`, read with `syn` (by `node/build.rs`; the
//! layer rules that judge it are in `node/tests/layers.rs`).
//!
//! Every file is a module (`cluster/app.rs` is `cluster::app`, a `mod.rs`
//! is its folder's module, `lib.rs` the root), and so is every inline
//! `mod x { .. }`. An edge is a reference from a module to another module
//! of the crate: a `use` of `crate::`, `super::` or `self::` paths (groups
//! and globs included), or such a path written out in code or in a type.
//! Its target is the longest prefix of the path that names a module; a
//! path to an item of the crate root has the root (the empty path) as its
//! target. References inside macro invocations are not seen (syn does not
//! parse macro bodies); none of the node's macros take paths of the crate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use syn::visit_mut::VisitMut;

/// A module path: `["cluster", "app"]`; the root is `[]`.
pub type ModPath = Vec<String>;

/// One reference of `from` to `to`, as written in `file`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: ModPath,
    pub to: ModPath,
    pub file: String,
    pub written: String,
}

/// The sources of a crate: (module path of the file, file name, source).
pub type Sources = Vec<(ModPath, String, String)>;

/// Reads every `.rs` file under `src` (but `main.rs` and `bin/`, which are
/// crates of their own).
pub fn read_dir(src: &Path) -> std::io::Result<Sources> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(src).unwrap_or(&path).to_path_buf();
            if path.is_dir() {
                if rel != Path::new("bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") || rel == Path::new("main.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            out.push((module_of(&rel), rel.display().to_string(), text));
        }
    }
    out.sort();
    Ok(out)
}

/// The module a file under `src` defines.
pub fn module_of(rel: &Path) -> ModPath {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// The edges of a crate's sources; `Err` names a file syn cannot parse.
pub fn edges(sources: &Sources) -> Result<(BTreeSet<ModPath>, Vec<Edge>), String> {
    let mut files = Vec::new();
    for (module, name, text) in sources {
        let file = syn::parse_file(text).map_err(|e| format!("{name}: {e}"))?;
        files.push((module.clone(), name.clone(), file));
    }
    // Every module: the files' and their inline `mod`s.
    let mut modules: BTreeSet<ModPath> = BTreeSet::new();
    for (module, _, file) in &files {
        modules.insert(module.clone());
        inline_modules(module, &file.items, &mut modules);
    }
    let mut out = Vec::new();
    for (module, name, mut file) in files {
        let mut v = Collector { file_module: module.clone(), current: module, name, modules: &modules, out: &mut out };
        v.visit_file_mut(&mut file);
    }
    out.sort();
    out.dedup();
    Ok((modules, out))
}

fn inline_modules(at: &ModPath, items: &[syn::Item], out: &mut BTreeSet<ModPath>) {
    for item in items {
        if let syn::Item::Mod(m) = item {
            let mut path = at.clone();
            path.push(m.ident.to_string());
            if let Some((_, inner)) = &m.content {
                inline_modules(&path, inner, out);
            }
            out.insert(path);
        }
    }
}

struct Collector<'a> {
    /// The file's module: what an edge is from (an inline `mod tests` is
    /// part of its file).
    file_module: ModPath,
    /// Where `self` and `super` resolve from.
    current: ModPath,
    name: String,
    modules: &'a BTreeSet<ModPath>,
    out: &'a mut Vec<Edge>,
}

impl Collector<'_> {
    /// Resolves a path of segments; `None` when it is not the crate's.
    fn resolve(&self, segments: &[String]) -> Option<ModPath> {
        let (mut base, rest) = match segments.first().map(String::as_str) {
            Some("crate") => (Vec::new(), &segments[1..]),
            Some("self") if segments.len() > 1 => (self.current.clone(), &segments[1..]),
            Some("super") => {
                let mut base = self.current.clone();
                let mut rest = segments;
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
                (base, rest)
            }
            _ => return None,
        };
        // The longest prefix that is a module.
        let mut best = base.clone();
        for s in rest {
            base.push(s.clone());
            if self.modules.contains(&base) {
                best = base.clone();
            } else {
                break;
            }
        }
        Some(best)
    }

    fn add(&mut self, segments: &[String]) {
        if let Some(to) = self.resolve(segments) {
            self.out.push(Edge {
                from: self.file_module.clone(),
                to,
                file: self.name.clone(),
                written: segments.join("::"),
            });
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                if name == "self" {
                    self.add(prefix);
                } else {
                    prefix.push(name);
                    self.add(prefix);
                    prefix.pop();
                }
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.add(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.add(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl VisitMut for Collector<'_> {
    fn visit_item_use_mut(&mut self, u: &mut syn::ItemUse) {
        let mut prefix = Vec::new();
        self.use_tree(&mut prefix, &u.tree);
    }

    fn visit_item_mod_mut(&mut self, m: &mut syn::ItemMod) {
        self.current.push(m.ident.to_string());
        syn::visit_mut::visit_item_mod_mut(self, m);
        self.current.pop();
    }

    /// `pub(crate)`, `pub(super)`: who may see an item, not a reference.
    fn visit_visibility_mut(&mut self, _: &mut syn::Visibility) {}

    fn visit_path_mut(&mut self, p: &mut syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.add(&segments);
        syn::visit_mut::visit_path_mut(self, p);
    }
}
