#!/usr/bin/env bash
# Per-request counts for one server under wrk load, for docs/performance.md:
#
#   tests/load/count.sh NAME PORT PID [PID...]
#
# - user and system CPU of every thread (/proc/PID/task/*/stat) across a 6 s run;
# - voluntary and involuntary context switches (/proc/PID/task/*/status), same run;
# - heap allocations (malloc, calloc, realloc through uprobes on libc; `perf probe`) over a
#   3 s run: uprobes slow the server, so only the per-request figure is comparable;
# - system calls by kind (`strace -c -f`) over a 3 s run, per request, likewise.
#
# wrk runs on core 0 (`-t1 -c50`, keep-alive, /hello); pin the server to core 1 yourself, e.g.
# with `../shared/bench/run.sh start`, which also starts the origins. Needs wrk, perf and
# strace (`apt-get install wrk linux-perf strace`) and root for the probes. PATH_ may name
# another path than /hello.
set -euo pipefail
name=$1 port=$2
shift 2
pids="$*"
path=${PATH_:-/hello}
url="http://127.0.0.1:$port$path"
clk=$(getconf CLK_TCK)

# user system voluntary involuntary, summed over every thread of every pid.
snap() {
  local u=0 s=0 v=0 n=0 a b
  for p in $pids; do
    for t in /proc/"$p"/task/*; do
      read -r a b < <(sed 's/.*) //' "$t/stat" | awk '{print $12, $13}')
      u=$((u + a)) s=$((s + b))
      v=$((v + $(awk '/^voluntary_ctxt_switches/{print $2}' "$t/status")))
      n=$((n + $(awk '/^nonvoluntary_ctxt_switches/{print $2}' "$t/status")))
    done
  done
  echo "$u $s $v $n"
}
requests() { awk '/requests in/{print $1}'; }

taskset -c 0 wrk -t1 -c50 -d2s "$url" > /dev/null
read -r u0 s0 v0 n0 < <(snap)
out=$(taskset -c 0 wrk -t1 -c50 -d6s --latency "$url")
read -r u1 s1 v1 n1 < <(snap)
reqs=$(requests <<< "$out")
rps=$(awk '/Requests\/sec/{print $2}' <<< "$out")
p99=$(awk '$1=="99%"{print $2}' <<< "$out")
awk -v n="$name" -v r="$reqs" -v rps="$rps" -v p99="$p99" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) \
  -v dv=$((v1 - v0)) -v dn=$((n1 - n0)) -v clk="$clk" 'BEGIN {
  printf "%s: %.0f req/s, p99 %s, user %.1f us/req, system %.1f us/req, cs %.3f voluntary + %.3f involuntary /req\n",
    n, rps, p99, du * 1e6 / clk / r, ds * 1e6 / clk / r, dv / r, dn / r }'

libc=$(awk '/libc\.so/{print $NF; exit}' /proc/"${pids%% *}"/maps)
for fn in malloc calloc realloc; do
  perf probe -q -x "$libc" -a "$fn" 2> /dev/null || true
done
events=probe_libc:malloc,probe_libc:calloc,probe_libc:realloc
stat=$(mktemp)
pidlist=$(tr ' ' ',' <<< "$pids")
out=$(perf stat -x, -o "$stat" -e "$events" -p "$pidlist" -- taskset -c 0 wrk -t1 -c50 -d3s "$url")
reqs=$(requests <<< "$out")
awk -F, -v r="$reqs" -v n="$name" '$3 ~ /probe_libc/ { sub("probe_libc:", "", $3); c[$3] = $1; t += $1 }
  END { printf "%s: %.1f allocations/req (malloc %.1f, calloc %.1f, realloc %.1f)\n", n, t / r,
    c["malloc"] / r, c["calloc"] / r, c["realloc"] / r }' "$stat"

args=()
for p in $pids; do args+=(-p "$p"); done
timeout 8 strace -c -f "${args[@]}" -o "$stat" &
tracer=$!
sleep 1
out=$(taskset -c 0 wrk -t1 -c50 -d3s "$url")
kill -INT "$tracer" 2> /dev/null || true
wait "$tracer" 2> /dev/null || true
reqs=$(requests <<< "$out")
echo "$name: system calls per request (strace window, $reqs requests)"
awk -v r="$reqs" 'NR > 2 && $NF != "total" && $4 + 0 > 0 { printf "  %-16s %.2f\n", $NF, $4 / r }' "$stat"
rm -f "$stat"
