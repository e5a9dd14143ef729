#!/usr/bin/env bash
# Whether a server's memory grows under steady load, for docs/performance.md:
#
#   tests/load/steady-rss.sh PORT PID [SECONDS]
#
# Runs wrk (`-t1 -c50`, keep-alive, /hello, on core 0) for SECONDS (60) and prints the server's
# VmRSS every 10 s; a server that keeps nothing per request ends where it stood after the
# first 10 s.
set -euo pipefail
port=$1 pid=$2 seconds=${3:-60}
rss() { awk '/^VmRSS/{printf "%.1f MiB", $2 / 1024}' /proc/"$pid"/status; }
echo "0 s: $(rss)"
taskset -c 0 wrk -t1 -c50 -d"${seconds}s" "http://127.0.0.1:$port/hello" > /tmp/steady-rss-wrk.$$ &
load=$!
for ((t = 10; t <= seconds; t += 10)); do
  sleep 10
  echo "$t s: $(rss)"
done
wait "$load"
awk '/Requests\/sec/{print "wrk: " $2 " req/s"}' /tmp/steady-rss-wrk.$$
rm -f /tmp/steady-rss-wrk.$$
