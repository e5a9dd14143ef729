#!/usr/bin/env bash
# A/B of two gateway builds on the loopback benchmark's origins: CPU µs per request and
# requests/s of each, wrk `-t1 -c50 -d6s /hello` on core 0 against the gateway on core 1,
# rounds in alternating order (the build run second in a round is often a little slower).
#
#   ../shared/bench/run.sh start            # the origins on 127.0.0.1:18080 and :18081
#   git worktree add /tmp/before <commit> && (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target \
#     cargo build --release -p wasmgate) && cp /tmp/before-target/release/wasmgate /tmp/wasmgate-before
#   tests/load/ab.sh /tmp/wasmgate-before target/release/wasmgate [rounds, default 6]
#   ../shared/bench/run.sh stop
#
# Either side may name its config after a colon, to compare two configs of one build:
#   tests/load/ab.sh target/release/wasmgate \
#     target/release/wasmgate:examples/load-balancer/bench-per-request.toml 6
set -euo pipefail
cd "$(dirname "$0")/../.."
before=$1 after=$2 rounds=${3:-6}
default_config=$PWD/examples/load-balancer/bench.toml
url=http://127.0.0.1:18086/hello
tick=$(getconf CLK_TCK)

measure() { # label binary[:config]
  local binary=${2%%:*} config=$default_config
  [[ $2 == *:* ]] && config=${2#*:}
  taskset -c 1 "$binary" run --config "$config" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -fs -o /dev/null "$url" && break; sleep 0.1; done
  taskset -c 0 wrk -t1 -c50 -d1s "$url" >/dev/null
  local cpu0 cpu1 out
  cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(taskset -c 0 wrk -t1 -c50 -d6s "$url")
  cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  local requests rate
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  python3 -c "print('%-6s %5.1f us/req %6.1f k req/s' % ('$1', ($cpu1 - $cpu0) / $tick * 1e6 / $requests, $rate / 1000))"
}

for round in $(seq "$rounds"); do
  if ((round % 2)); then
    measure before "$before"; measure after "$after"
  else
    measure after "$after"; measure before "$before"
  fi
done
