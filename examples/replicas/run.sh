#!/usr/bin/env bash
# Two wasmgate replicas sharing their plugins' store in Redis, on a fresh clone: installs the
# wasm32-wasip2 target and Debian's redis-server if missing, builds, starts Redis on :6380, an
# origin on :9003 and two gateways (:8081 and :8082) with one rate-limit bucket between them,
# and prints what to try. Ctrl-C stops everything. `--smoke` runs the checks itself and exits.
set -euo pipefail
cd "$(dirname "$0")/../.."

rustup target add wasm32-wasip2
tests/setup/redis-server.sh
(cd plugins && cargo build --release --target wasm32-wasip2)
cargo build --release -p wasmgate -p wasmgate-example-origin

pids=()
dir=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

redis-server --bind 127.0.0.1 --port 6380 --save "" --appendonly no >/dev/null & pids+=($!)
target/release/origin --name origin --listen 127.0.0.1:9003 --expect-host one.one.one.one & pids+=($!)
for n in 1 2; do
  sed -e "s/LISTEN_PORT/808$n/" -e "s/ADMIN_PORT/991$n/" -e "s#PLUGINS#$PWD/plugins/target/wasm32-wasip2/release#" \
    examples/replicas/replica.toml > "$dir/replica-$n.toml"
  target/release/wasmgate run --config "$dir/replica-$n.toml" & pids+=($!)
done
# Ready once both admin listeners answer (asking the routes would spend the bucket's tokens).
for port in 9911 9912; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
done

cat <<'TRY'

Two replicas: http://127.0.0.1:8081 and http://127.0.0.1:8082, one rate-limit bucket in Redis
(:6380) for both. Try:
  for i in $(seq 8); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:808$((i % 2 + 1))/; done; echo
                                           # 5 answers of 200 in all, then 429, whichever replica
  curl -s http://127.0.0.1:9911/metrics | grep wasmgate_store_duration_seconds_count
Ctrl-C stops everything.
TRY

if [[ "${1:-}" == "--smoke" ]]; then
  codes=$(for i in $(seq 10); do curl -s -o /dev/null -w '%{http_code} ' "http://127.0.0.1:808$((i % 2 + 1))/"; done)
  echo "statuses: $codes"
  [[ $(grep -o 200 <<<"$codes" | wc -l) == 5 && $(grep -o 429 <<<"$codes" | wc -l) == 5 ]] \
    || { echo "the replicas did not share one bucket" >&2; exit 1; }
  echo "smoke test passed"
  exit 0
fi
wait
