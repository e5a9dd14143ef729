#!/usr/bin/env bash
# Runs the whole test suite on a fresh clone: installs the wasm32-wasip2 target (the tests
# build the plugins and test guests themselves), then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
cargo test --workspace "$@"
