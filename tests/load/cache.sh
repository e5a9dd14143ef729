#!/usr/bin/env bash
# Cache hits, CPU per request: a 1 KiB and a 64 KiB document (`Cache-Control: max-age=3600`)
# from an nginx origin, read directly, through nginx `proxy_cache` and through wasmgate with
# `cache`, every request a hit after the first; wrk `-t1 -c16 -d6s --latency` on core 0, every
# server on core 1. CPU µs per request is the server's own (user + system, from
# /proc/PID/stat); rounds in alternating order. Two more rows say what a compressed hit costs:
# wasmgate storing the plain document and compressing it with the route's `compress` (once per
# coding: the copy is kept with the entry), and wasmgate storing the origin's own gzip variant
# (`Vary: Accept-Encoding`).
# Installs nginx and wrk from Debian when missing.
#
#   cargo build --release -p wasmgate && tests/load/cache.sh [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
out=${BENCH_OUT:-/tmp/wasmgate-cache}
. tests/load/nginx.sh
rm -rf "$out/cache"
mkdir -p "$out/www/gz" "$out/cache"
python3 -c "
import json
for name, size in (('1k', 1024), ('64k', 65536)):
    records, text = [], ''
    while len(text) < size:
        records.append({'id': len(records), 'name': 'item %d' % len(records)})
        text = json.dumps(records)
    for path in ('$out/www/%s.json' % name, '$out/www/gz/%s.json' % name):
        open(path, 'w').write(text[:size])"

# /gz/ answers gzip to whoever accepts it, with `Vary: Accept-Encoding`.
conf origin "server {
    listen 127.0.0.1:18190; root $out/www; expires 1h;
    location /gz/ { gzip on; gzip_comp_level 6; gzip_types application/json; gzip_vary on; gzip_proxied any; }
  }"
conf proxy "proxy_cache_path $out/cache levels=1:2 keys_zone=hits:10m max_size=256m inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:18190; keepalive 32; }
  server {
    listen 127.0.0.1:18192;
    location / {
      proxy_cache hits; proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\";
      add_header X-Cache \$upstream_cache_status;
    }
  }"
cat >"$out/gateway.toml" <<EOF
[[listeners]]
address = "127.0.0.1:18196"

[upstreams.origin]
backends = ["127.0.0.1:18190"]

[[routes]]
path_prefix = "/c/"
upstream = "origin"
rewrite = { prefix = "/" }
cache = { max_size = "256MiB" }
compress = { algorithms = ["gzip"], gzip_level = 6 }

[[routes]]
upstream = "origin"
cache = { max_size = "256MiB" }
EOF

taskset -c 1 "$nginx" -c "$out/origin.conf"
taskset -c 1 "$nginx" -c "$out/proxy.conf"
trap 'kill "$(cat "$out/origin.pid")" "$(cat "$out/proxy.pid")" 2>/dev/null || true' EXIT
sleep 0.5

measure() { # label port path [accept-encoding]
  local url="http://127.0.0.1:$2$3" t0 t1 report accept=${4:-identity}
  taskset -c 0 wrk -t1 -c16 -d1s -H "Accept-Encoding: $accept" "$url" >/dev/null
  t0=$(ticks "$2")
  report=$(taskset -c 0 wrk -t1 -c16 -d6s --latency -H "Accept-Encoding: $accept" "$url")
  t1=$(ticks "$2")
  local status
  status=$(curl -s -o /dev/null -D - -H "Accept-Encoding: $accept" "$url" | grep -iE '^(x-cache|cache-status):' | tr -d '\r' | tr '\n' ' ' || true)
  REPORT=$report python3 - "$1" "$3" "$((t1 - t0))" "$tick" "$status" <<'PY'
import os, re, sys
label, path, ticks, tick, status = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
report = os.environ['REPORT']
requests = int(re.search(r'(\d+) requests in', report).group(1))
rate = float(re.search(r'Requests/sec:\s+([\d.]+)', report).group(1))
p99 = re.search(r'99%\s+([\d.]+)(us|ms|s)', report)
p99_ms = float(p99.group(1)) * {'us': 1e-3, 'ms': 1, 's': 1e3}[p99.group(2)]
print('%-24s %-14s %9.1f req/s  p99 %6.2f ms  %6.1f us/req  %s' % (label, path, rate, p99_ms, ticks / tick * 1e6 / requests, status))
PY
}

for round in $(seq "$rounds"); do
  taskset -c 1 target/release/wasmgate run --config "$out/gateway.toml" >/dev/null 2>&1 &
  gw=$!
  for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:18196/1k.json && break; sleep 0.1; done
  rows=(
    "origin (direct)|18190|/1k.json" "nginx proxy_cache|18192|/1k.json" "wasmgate cache|18196|/1k.json"
    "origin (direct)|18190|/64k.json" "nginx proxy_cache|18192|/64k.json" "wasmgate cache|18196|/64k.json"
    "wasmgate, own gzip kept|18196|/c/64k.json|gzip" "wasmgate, origin gzip|18196|/gz/64k.json|gzip"
  )
  if ! ((round % 2)); then
    mapfile -t rows < <(printf '%s\n' "${rows[@]}" | tac)
  fi
  for row in "${rows[@]}"; do
    IFS='|' read -r label port path accept <<<"$row"
    measure "$label" "$port" "$path" "$accept"
  done
  kill "$gw"; wait "$gw" 2>/dev/null || true
done
