# annals: the two commands are `make demo` and `make test`. Both set the machine up first
# (scripts/setup.sh is idempotent and takes about a second when everything is there).

SHELL := /bin/bash
export CHROMEDRIVER ?= /usr/bin/chromedriver
# wasm-bindgen-test-runner: run in headless Chromium, with the flags in webdriver.json.
export WASM_BINDGEN_TEST_TIMEOUT ?= 120
DEMO_ADDR ?= 127.0.0.1:8080

.PHONY: setup build pkg www demo test lint test-rust test-wasm test-node test-e2e bench clean

setup:
	@scripts/setup.sh

## build: the wasm and the npm package in pkg/ (ready to import), and www/dist.
build: setup pkg www

pkg:
	@scripts/build-pkg.sh

www: pkg
	npm run --workspace www build

## demo: build everything and serve the demo on http://$(DEMO_ADDR)
demo: build
	@echo "annals demo on http://$(DEMO_ADDR)/"
	node www/scripts/serve.mjs www/dist $(DEMO_ADDR)

## test: every test layer.
test: setup lint test-rust test-wasm build test-node test-e2e
	@echo "make test: every layer passed"

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --target wasm32-unknown-unknown --all-targets -- -D warnings

test-rust:
	cargo test

test-wasm:
	cargo test --target wasm32-unknown-unknown --test indexeddb

test-node: pkg
	npm run --workspace pkg test

test-e2e: www
	npm run --workspace www test:e2e

bench: setup
	@echo "no benchmarks yet (see the performance issue)"

clean:
	cargo clean
	rm -rf pkg/dist pkg/wasm www/dist
