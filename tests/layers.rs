//! The layers of `src/` are a fact, not a convention: every top-level module refers only to
//! modules before it in [`ORDER`] (the order `src/lib.rs` describes), so the core never
//! reaches up into an adapter, the binding or the server, and no two modules import each
//! other. A new module goes into the list where it belongs; a reference upwards fails here.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// Bottom first: the core, then the adapters, the binding and the server.
const ORDER: &[&str] = &[
    // core
    "json",
    "version",
    "error_code",
    "error",
    "event",
    "codec",
    "erasure",
    "clock",
    "storage",
    "retention",
    "positions",
    "id_index",
    "log",
    "protocol",
    "outbox",
    "append",
    "engine",
    "checkpoints",
    "fingerprint",
    "upcast",
    "projection",
    "command_plan",
    "command",
    "push",
    // adapters (the storage backends live in storage/ beside the trait)
    "sync",
    "testing",
    // binding
    "contract",
    "wasm",
    // server
    "server",
];

/// The top-level modules `path` (a file or folder under src/) refers to as `crate::name`,
/// outside comments.
fn references(path: &Path, found: &mut BTreeSet<String>) {
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("src/ is readable") {
            references(&entry.expect("a directory entry").path(), found);
        }
        return;
    }
    if path.extension().is_none_or(|e| e != "rs") {
        return;
    }
    let text = fs::read_to_string(path).expect("a source file is UTF-8");
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
}

fn module_path(name: &str) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let folder = src.join(name);
    if folder.is_dir() {
        folder
    } else {
        src.join(format!("{name}.rs"))
    }
}

#[test]
fn every_top_level_module_is_in_the_layer_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in fs::read_dir(&src).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a module name")
            .to_owned();
        if name == "lib" || name == "bin" {
            continue;
        }
        assert!(
            ORDER.contains(&name.as_str()),
            "src/{name} is not in tests/layers.rs ORDER: add it at its layer"
        );
    }
}

#[test]
fn each_module_refers_only_to_modules_below_it() {
    for (index, name) in ORDER.iter().enumerate() {
        let mut found = BTreeSet::new();
        references(&module_path(name), &mut found);
        found.remove(*name);
        for used in &found {
            let position = ORDER.iter().position(|m| m == used);
            assert!(
                position.is_some_and(|p| p < index),
                "`{name}` refers to `crate::{used}`, which is not below it in the layer order \
                 ({}): move the shared piece down, or the module up",
                ORDER.join(" < ")
            );
        }
    }
}
