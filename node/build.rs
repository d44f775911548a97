//! Writes the import graph of `node/src` into `$OUT_DIR/imports.txt` for
//! the layer test (`node/tests/layers.rs`), which judges it against the
//! layers ARCHITECTURE.md states. The graph is read here, with `syn` as a
//! build-dependency, because a dev-dependency on `syn` would resolve other
//! features for the tests than for the binaries, and one build would no
//! longer serve both (scripts/check-one-build.py).
//!
//! It also writes the graph of a small fixture crate (`fixture.txt`), so
//! the test can check the reader itself against edges it knows.

#[path = "build/imports.rs"]
mod imports;

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=build");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let sources = imports::read_dir(Path::new("src")).expect("reading node/src");
    write(&Path::new(&out).join("imports.txt"), &sources);
    write(&Path::new(&out).join("fixture.txt"), &fixture());
}

/// One line per module (`module\tPATH`), then one per edge
/// (`edge\tFROM\tTO\tFILE\tWRITTEN`, `crate` for the root); or one
/// `error\t...` line when a file does not parse (the test then fails).
fn write(path: &Path, sources: &imports::Sources) {
    let name = |m: &imports::ModPath| if m.is_empty() { "crate".to_string() } else { m.join("::") };
    let mut text = String::new();
    match imports::edges(sources) {
        Ok((modules, edges)) => {
            for m in &modules {
                let _ = writeln!(text, "module\t{}", name(m));
            }
            for e in &edges {
                let _ = writeln!(text, "edge\t{}\t{}\t{}\t{}", name(&e.from), name(&e.to), e.file, e.written);
            }
        }
        Err(e) => {
            let _ = writeln!(text, "error\t{e}");
        }
    }
    std::fs::write(path, text).expect("writing the import graph");
}

/// A crate with one of each kind of reference the reader must see.
fn fixture() -> imports::Sources {
    let file = |m: &str, text: &str| {
        let module: imports::ModPath = if m.is_empty() { vec![] } else { m.split("::").map(String::from).collect() };
        (module, format!("{m}.rs"), text.to_string())
    };
    vec![
        file("", "pub mod low; pub mod high; pub fn root_item() {}"),
        file("low", "pub mod inner; pub struct L;"),
        file("low::inner", "use super::L; pub fn f() -> super::super::high::H { todo!() }"),
        file(
            "high",
            "use crate::{low::{self, inner::f}, root_item}; \
             pub struct H; \
             fn g() { crate::low::inner::f(); let _ = self::H; } \
             mod tests { use super::*; }",
        ),
    ]
}
