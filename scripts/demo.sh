#!/usr/bin/env bash
# Run the Portcullis demo (the README's `make demo`): the OIDC provider, the sidecar, Envoy
# with the filter and an upstream app, supervised by one process (target/release/
# portcullis-demo). Ctrl-C stops everything it started.
#
# Usage: scripts/demo.sh [config.yaml]   (default examples/demo/config.yaml; a config with
# `databroker_storage_type: redis` also gets a redis-server on 127.0.0.1:6379)
# Expects `make build` and `make deps` to have run (the `demo` make target does both).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="${1:-$root/examples/demo/config.yaml}"
export PORTCULLIS_BIN_DIR="${PORTCULLIS_BIN_DIR_DEMO:-$root/target/release}"
export PORTCULLIS_WASM="${PORTCULLIS_WASM:-$root/target/wasm32-wasip1/release/filter.wasm}"
export PORTCULLIS_ENVOY="${PORTCULLIS_ENVOY:-$root/.venv/bin/envoy}"
export PORTCULLIS_IDP_DIR="${PORTCULLIS_IDP_DIR:-$root/tests/idp}"
args=(--config "$config")
if grep -Eq '^databroker_storage_type:[[:space:]]*redis' "$config"; then
  args+=(--redis)
fi
for bin in portcullis-demo sidecar envoy-config; do
  if [[ ! -x "$PORTCULLIS_BIN_DIR/$bin" ]]; then
    echo "demo: $PORTCULLIS_BIN_DIR/$bin is missing; run 'make build' first" >&2
    exit 1
  fi
done
exec "$PORTCULLIS_BIN_DIR/portcullis-demo" "${args[@]}"
