# annals: the two commands are `make demo` and `make test`. Both set the machine up first
# (scripts/setup.sh is idempotent: about a second when everything is there).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export CHROMEDRIVER ?= /usr/bin/chromedriver
export WASM_BINDGEN_TEST_TIMEOUT ?= 120
DEMO_ADDR ?= 127.0.0.1:8080
DEMO_TOKEN ?= dev
NATIVE_FEATURES := server,http-client
SERVER_BIN := $(or $(CARGO_TARGET_DIR),target)/debug/annals-server
# The optimised build of the benchmarks (see [profile.perf] in Cargo.toml).
BENCH_SERVER_BIN := $(or $(CARGO_TARGET_DIR),target)/perf/annals-server

.PHONY: setup build pkg pack www server demo test lint typecheck test-rust test-wasm test-node test-pack test-smoke test-e2e docs bench soak clean

setup:
	@scripts/setup.sh

## build: the wasm and the npm package in pkg/ (ready to import), its tarball as npm
## publish would make it (target/pkg/annals-<version>.tgz), www/dist, and the server.
build: setup pkg pack www server

pkg:
	@scripts/build-pkg.sh

pack: pkg
	@scripts/pack.sh

www: pkg
	npm run --workspace www build

server:
	cargo build --features server --bin annals-server

## demo: the todo app and its sync server (SQLite in data/) on http://$(DEMO_ADDR)
demo: build
	@echo "annals demo on http://$(DEMO_ADDR)/  (sync token: $(DEMO_TOKEN))"
	$(SERVER_BIN) --listen $(DEMO_ADDR) --database sqlite://data/annals.db --www www/dist --dev-token $(DEMO_TOKEN)

## test: every layer: lints, Rust (core, server on SQLite and PostgreSQL), the browser
## (IndexedDB in headless Chromium), the npm package from Node, and Playwright.
test: setup lint test-rust test-wasm build typecheck test-node test-pack test-smoke test-e2e
	@echo "make test: every layer passed"

lint:
	cargo fmt --all -- --check
	cargo clippy --features $(NATIVE_FEATURES) --all-targets -- -D warnings
	cargo clippy --target wasm32-unknown-unknown --lib --tests -- -D warnings

typecheck: pkg
	npx tsc --noEmit -p pkg
	npx tsc --noEmit -p www

# PostgreSQL: the one on 127.0.0.1:5432, or a throwaway one for this run.
test-rust:
	url=$$(scripts/ensure-postgres.sh $$$$); \
	ANNALS_TEST_PG_URL=$$url cargo test --features $(NATIVE_FEATURES)

test-wasm:
	cargo test --target wasm32-unknown-unknown --test indexeddb --test indexeddb_sync --test indexeddb_crash

test-node: pkg server
	ANNALS_SERVER_BIN=$(abspath $(SERVER_BIN)) npm run --workspace pkg test

# The tarball's files, and `npm publish --dry-run` (never a real publish).
test-pack: pack
	node --test scripts/pack.test.mjs

# The smoke matrix: the tarball installed into fresh apps under target/smoke/ (Vite 7 and 8
# dev and build, a worker, webpack 5, esbuild, Node, Vitest; see README "Works with"), and
# the tutorial's app syncing through the server. Installs come from the npm cache once warm.
test-smoke: pack server
	ANNALS_SERVER_BIN=$(abspath $(SERVER_BIN)) node --test smoke/*.test.mjs

test-e2e: www server
	ANNALS_SERVER_BIN=$(abspath $(SERVER_BIN)) npm run --workspace www test:e2e

## bench: native criterion benchmarks, server append throughput beside a raw batched INSERT
## on SQLite and PostgreSQL, and the browser suite in headless Chromium (annals beside a
## per-record IndexedDB baseline and the raw chunked limit, and a pull of 100k events from
## an annals-server built optimised). Tables and JSON in target/bench/.
bench: setup pkg
	cargo bench --profile perf --bench native
	node bench/native-report.mjs
	url=$$(scripts/ensure-postgres.sh $$$$); \
	ANNALS_TEST_PG_URL=$$url cargo bench --profile perf --features $(NATIVE_FEATURES) --bench server_throughput
	cargo build --profile perf --features server --bin annals-server
	ANNALS_SERVER_BIN=$(abspath $(BENCH_SERVER_BIN)) node bench/run.mjs

## soak: the long reliability runs, with their figures: the deterministic simulation on
## SOAK_SEEDS seeds (make test runs SIM_SEEDS=1000 of them), then the model-based tests of
## the log and the fuzz targets with SOAK_CASES cases each (make test: 256).
SOAK_SEEDS ?= 10000
SOAK_CASES ?= 20000
soak:
	SIM_SEEDS=$(SOAK_SEEDS) cargo test --test simulation -- seeds --exact --nocapture
	PROPTEST_CASES=$(SOAK_CASES) cargo test --features server --test model --test fuzz

clean:
	cargo clean
	rm -rf pkg/dist pkg/wasm www/dist
