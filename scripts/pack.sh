#!/usr/bin/env bash
# Packs the npm package in pkg/ exactly as `npm publish` would (npm pack) into
# target/pkg/annals-<version>.tgz: the file to install from a path
# (`npm install ./target/pkg/annals-0.1.0.tgz`), which copies the package into
# node_modules instead of linking it. Needs the built package (scripts/build-pkg.sh).
# Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[pack] %s\n' "$*"; }

for built in pkg/dist/index.js pkg/wasm/annals_bg.wasm; do
  [ -f "$built" ] || { log "$built is missing: build the package first (make pkg)"; exit 1; }
done

OUT="${CARGO_TARGET_DIR:-target}/pkg"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# Only this version's tarball is current.
rm -f "$OUT"/annals-*.tgz
NAME=$(cd pkg && npm pack --silent --pack-destination "$OUT")
log "$OUT/$NAME ($(wc -c < "$OUT/$NAME") bytes)"
