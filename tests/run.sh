#!/usr/bin/env bash
# Runs the whole test suite on a fresh clone: installs the wasm32-wasip2 target (the tests
# build the plugins and test guests themselves), Debian's redis-server (the shared store's
# tests run a real one), chromium with chromium-driver (the dashboard's tests drive it) and the
# Python and JavaScript plugin tools (the example plugins' tests build them) when missing, then
# every test of the workspace, then the
# plugins' and test guests' own unit tests, natively (their workspaces build for wasm32 by
# default).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
tests/setup/redis-server.sh
tests/setup/chromium.sh
tests/setup/plugin-tools.sh
cargo test --workspace "$@"
host=$(rustc -vV | sed -n 's/^host: //p')
(cd plugins && cargo test --target "$host")
(cd tests/guests && cargo test --target "$host")
