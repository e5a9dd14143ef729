# Sourced by the load scripts that run nginx beside wasmgate: installs nginx and wrk from Debian
# when missing, writes nginx configs under $out, and reads the CPU a server used.

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get install -y -qq nginx wrk >/dev/null
fi
nginx=$(command -v nginx || echo /usr/sbin/nginx)
tick=$(getconf CLK_TCK)
mkdir -p "$out/tmp"

# $out/NAME.conf: one worker, no access log, temporary files under $out, then the `http`
# blocks given.
conf() { # name, then the server blocks
  cat >"$out/$1.conf" <<EOF
worker_processes 1;
pid $out/$1.pid;
error_log $out/$1.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $out/tmp; proxy_temp_path $out/tmp; fastcgi_temp_path $out/tmp;
  uwsgi_temp_path $out/tmp; scgi_temp_path $out/tmp;
  types { application/json json; }
  $2
}
EOF
}

# CPU ticks of the processes listening on `port` (an nginx master and its worker, or wasmgate).
ticks() {
  local pids total=0
  pids=$(ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2)
  for pid in $( (echo "$pids"; for p in $pids; do pgrep -P "$p" || true; done) | sort -u); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
