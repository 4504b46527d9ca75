//! Writes the TypeScript declarations of the wasm contract, generated from the Rust types:
//! `<dir>/contract.ts` (src/contract.rs) and `<dir>/error-codes.ts` (src/error_code.rs).
//! `scripts/build-pkg.sh` runs it before `tsc -p pkg` with `pkg/src/generated`. A file
//! whose content is current is not rewritten, so tsc's up-to-date check holds.
//!
//! Usage: `cargo run --features ts --bin annals-contract-ts -- [DIR]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What starts every generated TypeScript file.
const GENERATED_HEADER: &str =
    "// Generated from the Rust types in src/contract.rs and src/error_code.rs by\n\
// `cargo run --features ts --bin annals-contract-ts` (scripts/build-pkg.sh). Do not edit.\n\n";

fn write_if_changed(path: &Path, content: &str) -> std::io::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    std::fs::write(path, content)?;
    Ok(true)
}

fn main() -> ExitCode {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "pkg/src/generated".into()),
    );
    let files = [
        ("contract.ts", annals::contract::typescript_module()),
        ("error-codes.ts", annals::error_code::typescript_module()),
    ];
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("annals-contract-ts: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, body) in files {
        let content = format!("{GENERATED_HEADER}{body}");
        let path = dir.join(name);
        match write_if_changed(&path, &content) {
            Ok(true) => eprintln!("annals-contract-ts: wrote {}", path.display()),
            Ok(false) => {}
            Err(e) => {
                eprintln!("annals-contract-ts: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
