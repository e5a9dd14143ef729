#!/usr/bin/env bash
# Reloads and binary upgrades under load, for docs/performance.md:
#
#   tests/load/rollout.sh [RELOADS] [UPGRADES]     # default 20 10
#
# Builds the release gateway and tests/src/bin/rollout-bench.rs, which starts a local origin
# and the gateway, puts 32 keep-alive connections of load on it, performs the reloads
# (alternately SIGHUP and POST /reload) and then the upgrades (`wasmgate run --upgrade`), and
# prints requests, failures, reconnects and p50/p99 during the operations against steady state.
set -euo pipefail
cd "$(dirname "$0")/../.."
rustup target add wasm32-wasip2 >/dev/null
cargo build --release --quiet -p wasmgate --bin wasmgate
cargo build --release --quiet -p wasmgate-tests --bin rollout-bench
exec target/release/rollout-bench "${1:-20}" "${2:-10}" 2>/dev/null
