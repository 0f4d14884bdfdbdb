#!/usr/bin/env bash
# Start the benchmark servers from the configs in this folder.
#   start.sh [origin] [slow] [varnish] [nginx] [shellac] [bare]   (no argument = all six)
# origin  : nginx, 127.0.0.1:8080, pid /tmp/shellac-load/run/origin.pid
# slow    : slow_origin.py, 127.0.0.1:8081 (1 s per /burst/* request, counts them), pid .../slow.pid
# varnish : varnishd, 127.0.0.1:6081 (admin 127.0.0.1:6082), malloc 1G, pid /tmp/shellac-load/run/varnish.pid
# nginx   : nginx proxy_cache, 127.0.0.1:6091 (and :6092 without cache lock), pid .../nginx-cache.pid
# shellac : target/release/shellac --config shellac.toml, 127.0.0.1:7081 (admin :7082),
#           pid .../shellac.pid; SHELLAC_BIN overrides the binary (e.g. an older build)
# bare    : the bare hyper proxy (benches/bare_proxy.rs), 127.0.0.1:7281 -> origin, pid .../bare.pid;
#           the floor of a tokio + hyper proxy, run only in the pass scenario. BARE_BIN overrides the binary.
# Servers start unpinned; run.sh sets CPU affinity at run time (PIN=split|none).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SHELLAC_BIN=${SHELLAC_BIN:-$REPO/target/release/shellac}
# idle_conns.py holds 10,000 client connections: the servers need the file descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
B=/tmp/shellac-load
mkdir -p $B/www/obj $B/run $B/log $B/tmp $B/varnish
chmod 755 $B $B/varnish

make_objects() {
  # deterministic content, generated once
  local n size
  for n in 1k:1024 16k:16384 128k:131072 1m:1048576; do
    size=${n#*:}
    f=$B/www/obj/${n%%:*}
    if [ ! -f "$f" ] || [ "$(stat -c %s "$f")" != "$size" ]; then
      head -c "$size" </dev/zero | tr '\0' 'x' >"$f"
    fi
  done
  [ -f $B/www/slow ] || head -c 1024 </dev/zero | tr '\0' 's' >$B/www/slow
}

wait_port() { # url
  for _ in $(seq 1 100); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  echo "timeout waiting for $1" >&2; return 1
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_origin() {
  make_objects
  if alive $B/run/origin.pid; then echo "origin already running pid $(cat $B/run/origin.pid)"; return; fi
  nginx -c "$HERE/origin/nginx.conf" -e $B/log/origin-error.log
  wait_port http://127.0.0.1:8080/health
  echo "origin  pid $(cat $B/run/origin.pid)  http://127.0.0.1:8080"
}

start_slow() {
  if alive $B/run/slow.pid; then echo "slow    already running pid $(cat $B/run/slow.pid)"; return; fi
  rm -f $B/run/slow.pid
  nohup python3 "$HERE/slow_origin.py" --port 8081 --delay 1 --pidfile $B/run/slow.pid \
    >$B/log/slow.log 2>&1 </dev/null &
  wait_port http://127.0.0.1:8081/health
  echo "slow    pid $(cat $B/run/slow.pid)  http://127.0.0.1:8081"
}

start_shellac() {
  if alive $B/run/shellac.pid; then echo "shellac already running pid $(cat $B/run/shellac.pid)"; return; fi
  [ -x "$SHELLAC_BIN" ] || { echo "no $SHELLAC_BIN: cargo build --release first" >&2; exit 1; }
  # In a session of its own, as varnishd and nginx put themselves when they
  # daemonize. With the kernel's autogroup scheduling (on by default) a
  # session is a CPU-scheduling group: left in the caller's session, Shellac
  # would share a group with wrk, whose busy core lowers the group's weight on
  # the server core, so the origin preempts Shellac more often than it does
  # the daemons (pass: 0.84 vs 0.65 context switches per request, 25.4-27.8k
  # vs 29.4-29.6k req/s in an interleaved A/B). The pid is written by the
  # shell that then becomes Shellac (exec keeps the pid).
  rm -f $B/run/shellac.pid
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' start-shellac "$B/run/shellac.pid" \
    nohup "$SHELLAC_BIN" --config "$HERE/shellac.toml" >$B/log/shellac.log 2>&1 </dev/null &
  for _ in $(seq 1 50); do [ -s $B/run/shellac.pid ] && break; sleep 0.1; done
  wait_port http://127.0.0.1:7081/obj/1k
  echo "shellac pid $(cat $B/run/shellac.pid)  http://127.0.0.1:7081  ($SHELLAC_BIN)"
}

start_bare() {
  if alive $B/run/bare.pid; then echo "bare    already running pid $(cat $B/run/bare.pid)"; return; fi
  # cargo puts bench executables under target/release/deps/ with a hash; ask it which one.
  local bin=${BARE_BIN:-$(cd "$REPO" && cargo bench --bench bare_proxy --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "bare_proxy" and m.get("executable"):
        print(m["executable"])')}
  [ -x "$bin" ] || { echo "no bare_proxy binary: cargo bench --bench bare_proxy --no-run first" >&2; exit 1; }
  rm -f $B/run/bare.pid
  # A session of its own, like Shellac (see start_shellac).
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' start-bare "$B/run/bare.pid" \
    nohup "$bin" --listen 127.0.0.1:7281 --backend 127.0.0.1:8080 >$B/log/bare.log 2>&1 </dev/null &
  for _ in $(seq 1 50); do [ -s $B/run/bare.pid ] && break; sleep 0.1; done
  wait_port http://127.0.0.1:7281/obj/1k
  echo "bare    pid $(cat $B/run/bare.pid)  http://127.0.0.1:7281  ($bin)"
}

start_varnish() {
  if alive $B/run/varnish.pid; then echo "varnish already running pid $(cat $B/run/varnish.pid)"; return; fi
  varnishd -n $B/varnish -a 127.0.0.1:6081 -T 127.0.0.1:6082 \
           -f "$HERE/varnish/default.vcl" -s malloc,1G -P $B/run/varnish.pid
  wait_port http://127.0.0.1:6081/health
  echo "varnish pid $(cat $B/run/varnish.pid)  http://127.0.0.1:6081"
}

start_nginx() {
  if alive $B/run/nginx-cache.pid; then echo "nginx-cache already running pid $(cat $B/run/nginx-cache.pid)"; return; fi
  rm -rf /dev/shm/shellac-load-nginx-cache /dev/shm/shellac-load-nginx-cache-tmp
  nginx -c "$HERE/nginx-cache/nginx.conf" -e $B/log/nginx-cache-error.log
  wait_port http://127.0.0.1:6091/health
  echo "nginx   pid $(cat $B/run/nginx-cache.pid)  http://127.0.0.1:6091"
}

[ $# -eq 0 ] && set -- origin slow varnish nginx shellac bare
for s in "$@"; do
  case $s in
    origin) start_origin ;;
    slow) start_slow ;;
    shellac) start_shellac ;;
    bare) start_bare ;;
    varnish) start_varnish ;;
    nginx) start_nginx ;;
    *) echo "unknown server $s" >&2; exit 2 ;;
  esac
done
