#!/usr/bin/env bash
# Runs the load-balancer example on a fresh clone: installs the wasm32-wasip2 target, builds
# the plugins, the gateway and the example origin, starts two origins and the gateway, and
# prints what to try. Ctrl-C stops everything. `--smoke` runs the checks itself and exits.
set -euo pipefail
cd "$(dirname "$0")/../.."

rustup target add wasm32-wasip2
(cd plugins && cargo build --release --target wasm32-wasip2)
cargo build --release -p wasmgate -p wasmgate-example-origin

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

target/release/origin --name one --listen 127.0.0.1:9001 --expect-host one.one.one.one & pids+=($!)
target/release/origin --name two --listen 127.0.0.1:9002 --expect-host one.one.one.one & pids+=($!)
config=examples/load-balancer/gateway.toml
target/release/wasmgate check --config "$config"
target/release/wasmgate run --config "$config" & pids+=($!)

for _ in $(seq 50); do
  curl -s -o /dev/null http://127.0.0.1:6188/ && break
  sleep 0.1
done

cat <<'TRY'

wasmgate is listening on http://127.0.0.1:6188 in front of origins "one" (:9001) and "two" (:9002).
Try:
  curl -i http://127.0.0.1:6188/           # answered by one, then two, then one... (round-robin)
  curl -i http://127.0.0.1:9001/           # the origin alone refuses: Host is not one.one.one.one
  curl --http2-prior-knowledge -i http://127.0.0.1:6188/    # HTTP/2 (h2c) works too
  curl http://127.0.0.1:9901/metrics       # requests by route and status, latencies, backend health
  curl http://127.0.0.1:9901/upstreams     # the backends as the gateway sees them
Open http://127.0.0.1:9901/ in a browser: the dashboard (routes, backends, plugins, live).
Stop origin "two" (kill the process listening on :9002) and within ~2 s every request goes to "one".
Ctrl-C stops everything.
TRY

if [[ "${1:-}" == "--smoke" ]]; then
  a=$(curl -sf http://127.0.0.1:6188/); b=$(curl -sf http://127.0.0.1:6188/)
  echo "first: $a"; echo "second: $b"
  [[ "$a" != "$b" ]] || { echo "round robin did not alternate" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9001/)
  [[ "$code" == 403 ]] || { echo "origin accepted a foreign Host ($code)" >&2; exit 1; }
  id=$(curl -s -D - -o /dev/null http://127.0.0.1:6188/ | tr -d '\r' | sed -n 's/^x-request-id: //p')
  [[ ${#id} == 36 ]] || { echo "no request id on the response ($id)" >&2; exit 1; }
  metrics=$(curl -sf http://127.0.0.1:9901/metrics)
  grep -q '^wasmgate_requests_total{route="route-0",method="GET",status="200"} [1-9]' <<<"$metrics" \
    || { echo "the metrics do not count the requests" >&2; exit 1; }
  curl -sf http://127.0.0.1:9901/ | grep -q '<title>wasmgate</title>' \
    || { echo "the admin listener does not serve the dashboard" >&2; exit 1; }
  # Past a few health-check intervals, both origins are still in and still answer.
  sleep 3
  upstreams=$(curl -sf http://127.0.0.1:9901/upstreams)
  [[ $(grep -o '"healthy":true' <<<"$upstreams" | wc -l) == 2 ]] \
    || { echo "the health check took an origin out: $upstreams" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:6188/)
  [[ "$code" == 200 ]] || { echo "the gateway answered $code after the health checks ran" >&2; exit 1; }
  echo "smoke test passed"
  exit 0
fi
wait
