#!/usr/bin/env bash
# Response compression, CPU per request: a 64 KiB JSON document from an nginx origin, through
# nginx with `gzip on` (level 6) and through wasmgate with `compress` (gzip 6, zstd 3), wrk
# `-t1 -c16 -d6s` with `Accept-Encoding: gzip` or `zstd` on core 0, every server on core 1.
# CPU µs per request is the proxy's own (user + system, from /proc/PID/stat), rounds in
# alternating order. Installs nginx and wrk from Debian when missing.
#
#   cargo build --release -p wasmgate && tests/load/compress.sh [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
out=${BENCH_OUT:-/tmp/wasmgate-compress}
. tests/load/nginx.sh
mkdir -p "$out/www"
python3 -c "
import json
records, text = [], ''
while len(text) < 65536:
    records.append({'id': len(records), 'name': 'item %d' % len(records), 'in_stock': len(records) % 3 == 0})
    text = json.dumps(records)
open('$out/www/doc.json', 'w').write(text)"

# The origin and the nginx under test are separate instances, so that the CPU counted is the
# proxy's own.
conf origin "server { listen 127.0.0.1:18180; root $out/www; etag off; }"
conf proxy "upstream origin { server 127.0.0.1:18180; keepalive 32; }
  server {
    listen 127.0.0.1:18182;
    gzip on; gzip_comp_level 6; gzip_types application/json; gzip_proxied any; gzip_min_length 256;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"
cat >"$out/gateway.toml" <<EOF
[[listeners]]
address = "127.0.0.1:18186"

[upstreams.origin]
backends = ["127.0.0.1:18180"]

[[routes]]
upstream = "origin"
compress = { gzip_level = 6, zstd_level = 3 }
EOF

taskset -c 1 "$nginx" -c "$out/origin.conf"
taskset -c 1 "$nginx" -c "$out/proxy.conf"
trap 'kill "$(cat "$out/origin.pid")" "$(cat "$out/proxy.pid")" 2>/dev/null || true' EXIT
sleep 0.5

measure() { # label port encoding
  local url="http://127.0.0.1:$2/doc.json" t0 t1 report
  taskset -c 0 wrk -t1 -c16 -d1s -H "Accept-Encoding: $3" "$url" >/dev/null
  t0=$(ticks "$2")
  report=$(taskset -c 0 wrk -t1 -c16 -d6s -H "Accept-Encoding: $3" "$url")
  t1=$(ticks "$2")
  local size
  size=$(curl -s -H "Accept-Encoding: $3" "$url" | wc -c)
  REPORT=$report python3 - "$1" "$3" "$size" "$((t1 - t0))" "$tick" <<'PY'
import os, re, sys
label, coding, size, ticks, tick = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
report = os.environ['REPORT']
requests = int(re.search(r'(\d+) requests in', report).group(1))
rate = float(re.search(r'Requests/sec:\s+([\d.]+)', report).group(1))
print('%-20s %-5s %7d B  %8.1f req/s  %6.1f us/req' % (label, coding, size, rate, ticks / tick * 1e6 / requests))
PY
}

direct=$(curl -s "http://127.0.0.1:18180/doc.json" | wc -c)
echo "document: $direct bytes"
for round in $(seq "$rounds"); do
  taskset -c 1 target/release/wasmgate run --config "$out/gateway.toml" >/dev/null 2>&1 &
  gw=$!
  for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:18186/doc.json && break; sleep 0.1; done
  if ((round % 2)); then
    measure "nginx gzip on" 18182 gzip; measure wasmgate 18186 gzip; measure wasmgate 18186 zstd
  else
    measure wasmgate 18186 zstd; measure wasmgate 18186 gzip; measure "nginx gzip on" 18182 gzip
  fi
  kill "$gw"; wait "$gw" 2>/dev/null || true
done
