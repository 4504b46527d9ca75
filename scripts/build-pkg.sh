#!/usr/bin/env bash
# Builds the npm package in pkg/: the wasm core (release), its wasm-bindgen glue
# (--target web, in pkg/wasm/), the TypeScript declarations generated from the Rust
# contract (pkg/src/generated/) and the TypeScript wrapper (pkg/dist/).
# Idempotent: cargo and tsc skip what is up to date. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
WASM="$TARGET_DIR/wasm32-unknown-unknown/release/annals.wasm"
OUT=pkg/wasm

log() { printf '[build-pkg] %s\n' "$*"; }

command -v wasm-bindgen >/dev/null || { log "wasm-bindgen is missing: run scripts/setup.sh"; exit 1; }

log "cargo build --release --target wasm32-unknown-unknown --lib"
cargo build --release --target wasm32-unknown-unknown --lib

# WASM_OPT_FLAGS: extra wasm-opt flags, e.g. "-g" to keep function names for CPU profiles
# (bench/profile.mjs); the package is built without.
WASM_OPT_FLAGS="${WASM_OPT_FLAGS:-}"
# Regenerate the glue only when the wasm or the flags changed (or the output is missing).
if [ ! -f "$OUT/annals_bg.wasm" ] || [ ! -f "$OUT/.stamp" ] || [ "$WASM" -nt "$OUT/.stamp" ] \
  || [ "$(cat "$OUT/.stamp")" != "$WASM_OPT_FLAGS" ]; then
  log "wasm-bindgen --target web -> $OUT"
  TMP="$TARGET_DIR/annals-pkg-wasm"
  rm -rf "$TMP"
  wasm-bindgen --target web --out-dir "$TMP" --out-name annals "$WASM"
  # wasm-opt is optional: WASM_OPT, else the one on PATH, else the npm package `binaryen`
  # (a root dev dependency). Versions before 116 corrupt wasm-bindgen's externref table, so
  # older ones (Debian bookworm ships 108) are skipped.
  WASM_OPT="${WASM_OPT:-$(command -v wasm-opt || true)}"
  if [ -z "$WASM_OPT" ] && [ -x node_modules/.bin/wasm-opt ]; then WASM_OPT=node_modules/.bin/wasm-opt; fi
  WASM_OPT_VERSION=
  if [ -n "$WASM_OPT" ]; then
    WASM_OPT_VERSION=$("$WASM_OPT" --version 2>/dev/null | sed -n 's/.*version \([0-9]*\).*/\1/p' | head -n1 || true)
  fi
  if [ -n "$WASM_OPT" ] && [ "${WASM_OPT_VERSION:-0}" -lt 116 ]; then
    log "skipping wasm-opt: version ${WASM_OPT_VERSION:-unknown} is older than 116"
  elif [ -n "$WASM_OPT" ]; then
    log "wasm-opt -Oz --converge --low-memory-unused $WASM_OPT_FLAGS (version $WASM_OPT_VERSION)"
    # --converge: repeat -Oz until the module stops shrinking (-0.5 KB). --low-memory-unused:
    # rustc puts the 1 MiB stack first (data from 1 MiB up), so the lowest 1 KiB is only
    # the bottom of a nearly overflowed stack; wasm-opt may then fold added constants into
    # load and store offsets (-1.7 KB brotli).
    # shellcheck disable=SC2086 # the flags are words
    "$WASM_OPT" -Oz --converge --low-memory-unused $WASM_OPT_FLAGS --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
      --enable-mutable-globals --enable-reference-types --enable-multivalue \
      "$TMP/annals_bg.wasm" -o "$TMP/annals_bg.opt.wasm"
    mv "$TMP/annals_bg.opt.wasm" "$TMP/annals_bg.wasm"
  fi
  rm -rf "$OUT"
  mv "$TMP" "$OUT"
  printf '%s' "$WASM_OPT_FLAGS" > "$OUT/.stamp"
fi
log "$(wc -c < "$OUT/annals_bg.wasm") bytes: $OUT/annals_bg.wasm"

# The wasm contract's TS declarations, from the Rust types (src/contract.rs,
# src/error_code.rs): a native build with the `ts` feature (ts-rs); files whose content is
# current are left alone, so tsc stays up to date.
log "annals-contract-ts -> pkg/src/generated"
cargo run --quiet --features ts --bin annals-contract-ts -- pkg/src/generated

TSC=node_modules/.bin/tsc
[ -x "$TSC" ] || { log "TypeScript is missing: run npm install at the repository root"; exit 1; }
log "tsc -p pkg"
"$TSC" -p pkg
log "done"
