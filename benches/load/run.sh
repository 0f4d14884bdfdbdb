#!/usr/bin/env bash
# Load-test harness for HTTP caching proxies (loopback only, every run bounded in time).
#
#   run.sh NAME URL [PID]
#     NAME  label for the output (varnish | nginx | direct | anything)
#     URL   base URL of the proxy, e.g. http://127.0.0.1:6081 ; the proxy must forward to
#           the origin at http://127.0.0.1:8080 (start.sh origin)
#     PID   main PID of the proxy (its child processes are included). Optional: for
#           NAME=varnish|nginx|direct it is read from /tmp/shellac-load/run/*.pid
#
# Prints one CSV line per scenario (lines starting with '#' are comments):
#   system,scenario,rps,p50_ms,p99_ms,p999_ms,errors,MBps,srv_cpu_us_req,origin_cpu_us_req,rss_kb,pss_kb,cache_dir_kb,cpu_busy_pct,steal_pct,pin
#   srv_cpu_us_req    CPU time (user+sys) of the proxy's process tree per request
#   origin_cpu_us_req same for the origin (about 0 on a real cache hit; '-' for direct)
#   rss_kb/pss_kb     summed over the proxy's process tree after the scenario
#                     (PSS counts shared pages once; prefer it for multi-process servers)
#   cache_dir_kb      du -sk of CACHE_DIR when set (nginx keeps cached bodies in tmpfs, not RSS)
#   cpu_busy_pct      busy % of each CPU during the run, "cpu0/cpu1" (from /proc/stat); with
#                     PIN=split it shows whether the client (cpu0) or the server (cpu1) saturated
#   steal_pct         % of CPU time the hypervisor stole during the run (a noise indicator:
#                     distrust a run whose steal_pct is far above the others)
#
# Environment knobs (defaults):
#   PIN=none         none : every process may run on all CPUs (affinity reset to all);
#                           the default: the more stable mode on this VM (baselines.md)
#                    split: wrk on CPU $CLIENT_CPU, proxy+origin trees on CPU $SERVER_CPU
#                           (diagnostic: shows which side saturates, one core per side)
#   CLIENT_CPU=0 SERVER_CPU=1 DURATION=10 WARM=2 CONNS=64 THREADS=1
#   SCENARIOS="hit-1k hit-128k hit-1m pass many-keys conn-churn"
#   NKEYS=10000      distinct URLs for many-keys
#   ORIGIN_PID       default: /tmp/shellac-load/run/origin.pid
#   CACHE_DIR        directory whose size is reported (default for NAME=nginx: /dev/shm/shellac-load-nginx-cache)
#   HEADER=1         print the header comment lines and CSV header (0 to suppress)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=${1:?usage: run.sh NAME URL [PID]}
URL=${2:?usage: run.sh NAME URL [PID]}
URL=${URL%/}
PID=${3:-}
PIN=${PIN:-none}
CLIENT_CPU=${CLIENT_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
DURATION=${DURATION:-10}
WARM=${WARM:-2}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
NKEYS=${NKEYS:-10000}
SCENARIOS=${SCENARIOS:-"hit-1k hit-128k hit-1m pass many-keys conn-churn"}
HEADER=${HEADER:-1}
RUN=/tmp/shellac-load/run
ORIGIN_PID=${ORIGIN_PID:-$(cat $RUN/origin.pid 2>/dev/null || true)}
ALLCPUS="0-$(( $(nproc --all) - 1 ))"

if [ -z "$PID" ]; then
  case $NAME in
    varnish) PID=$(cat $RUN/varnish.pid 2>/dev/null || true) ;;
    nginx)   PID=$(cat $RUN/nginx-cache.pid 2>/dev/null || true) ;;
    direct)  PID=$ORIGIN_PID ;;
  esac
fi
if [ -z "${CACHE_DIR+x}" ]; then
  case $NAME in nginx) CACHE_DIR=/dev/shm/shellac-load-nginx-cache ;; *) CACHE_DIR= ;; esac
fi
[ -n "$PID" ] && ! kill -0 "$PID" 2>/dev/null && { echo "pid $PID not running" >&2; exit 1; }
curl -s -o /dev/null --max-time 2 "$URL/obj/1k" || { echo "$URL/obj/1k not reachable" >&2; exit 1; }

tree() { # pid -> pid and all its descendants
  local p=$1 c
  [ -n "$p" ] || return 0
  echo "$p"
  for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do tree "$c"; done
}
cpu_busy() { # per-CPU "busy idle steal" jiffies from /proc/stat, one line per cpu
  awk '/^cpu[0-9]/{print $2+$3+$4+$7+$8, $5+$6, $9}' /proc/stat
}
busy_pct() { # before after -> "cpu0%/cpu1%/..."  (busy share of the non-stolen time)
  paste -d' ' <(echo "$1") <(echo "$2") | awk '{db=$4-$1; di=$5-$2; t=db+di; printf "%s%.0f", (NR>1?"/":""), (t>0?100*db/t:0)}'
}
steal_pct() { # before after -> % of all CPU time the hypervisor stole during the run
  paste -d' ' <(echo "$1") <(echo "$2") | awk '{db+=$4-$1; di+=$5-$2; ds+=$6-$3} END{t=db+di+ds; printf "%.1f", (t>0?100*ds/t:0)}'
}
cpu_ticks() { # sum of utime+stime (clock ticks) over the given pids
  local t=0 p f
  for p in "$@"; do
    f=$(sed 's/^.*) //' /proc/$p/stat 2>/dev/null) || continue
    set -- $f
    t=$(( t + ${12} + ${13} ))
  done
  echo $t
}
tree_ticks() { [ -n "$1" ] && cpu_ticks $(tree "$1") || echo 0; }
mem_kb() { # rss pss over the tree
  local rss=0 pss=0 p r s
  for p in $(tree "$1"); do
    r=$(ps -o rss= -p "$p" 2>/dev/null | tr -d ' ')
    s=$(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup 2>/dev/null)
    rss=$(( rss + ${r:-0} )); pss=$(( pss + ${s:-0} ))
  done
  echo "$rss $pss"
}
set_affinity() { # cpus pid...  (all threads of the process trees)
  local cpus=$1 p; shift
  for p in "$@"; do
    [ -n "$p" ] || continue
    for q in $(tree "$p"); do taskset -a -p -c "$cpus" "$q" >/dev/null 2>&1; done
  done
}

TICK=$(getconf CLK_TCK)
case $PIN in
  split)
    set_affinity "$SERVER_CPU" "$PID" "$ORIGIN_PID"
    WRK="taskset -c $CLIENT_CPU wrk"
    PINDESC="split:wrk@cpu$CLIENT_CPU/srv@cpu$SERVER_CPU" ;;
  none)
    set_affinity "$ALLCPUS" "$PID" "$ORIGIN_PID"
    WRK="wrk"
    PINDESC="none" ;;
  *) echo "PIN must be split or none" >&2; exit 2 ;;
esac

if [ "$HEADER" = 1 ]; then
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) system=$NAME url=$URL pid=${PID:-?} origin_pid=${ORIGIN_PID:-?} $(nproc) cpus, $(uname -r)"
  echo "# wrk -t$THREADS -c$CONNS -d${DURATION}s (warm ${WARM}s), pinning: $PINDESC"
  if [ "$PIN" = split ]; then
    echo "#   wrk: taskset -c $CLIENT_CPU; proxy+origin process trees: taskset -a -p -c $SERVER_CPU"
  fi
  echo "system,scenario,rps,p50_ms,p99_ms,p999_ms,errors,MBps,srv_cpu_us_req,origin_cpu_us_req,rss_kb,pss_kb,cache_dir_kb,cpu_busy_pct,steal_pct,pin"
fi

LUA=$HERE/lua/bench.lua

wrk_run() { # duration extra-args... ; prints RESULT line
  local d=$1; shift
  $WRK -t"$THREADS" -c"$CONNS" -d"${d}s" -s "$LUA" "$@" 2>&1 | grep '^RESULT'
}

scenario() { # name path keys extra-wrk-args...
  local sc=$1 path=$2 keys=$3; shift 3
  # ---- warm
  if [ "$keys" -gt 0 ]; then
    curl -s "$URL$path?i=[0-$((keys-1))]" >/dev/null
  else
    curl -s -o /dev/null "$URL$path"; curl -s -o /dev/null "$URL$path"
  fi
  KEYS=$keys wrk_run "$WARM" "$@" "$URL$path" >/dev/null
  sleep 0.5
  # ---- measure
  local s0 o0 s1 o1 res
  local b0 b1
  s0=$(tree_ticks "$PID"); o0=$(tree_ticks "$ORIGIN_PID"); b0=$(cpu_busy)
  res=$(KEYS=$keys wrk_run "$DURATION" "$@" "$URL$path")
  s1=$(tree_ticks "$PID"); o1=$(tree_ticks "$ORIGIN_PID"); b1=$(cpu_busy)
  local mem rss pss cdir="-"
  if [ -n "$PID" ]; then mem=$(mem_kb "$PID"); rss=${mem% *}; pss=${mem#* }; else rss="-"; pss="-"; fi
  [ -n "$CACHE_DIR" ] && [ -d "$CACHE_DIR" ] && cdir=$(du -sk "$CACHE_DIR" | cut -f1)
  if [ -z "$res" ]; then
    echo "$NAME,$sc,FAILED,-,-,-,-,-,-,-,$rss,$pss,$cdir,-,-,$PINDESC"; return
  fi
  # shellcheck disable=SC2086
  eval "$(echo "${res#RESULT }" | tr ' ' '\n' | sed 's/^/local /')"
  awk -v n="$NAME" -v sc="$sc" -v req="$requests" -v dur="$duration_us" -v by="$bytes" \
      -v e="$((err_connect+err_read+err_write+err_status+err_timeout))" \
      -v p50="$p50_us" -v p99="$p99_us" -v p999="$p999_us" \
      -v sd="$((s1-s0))" -v od="$((o1-o0))" -v tick="$TICK" -v haspid="${PID:+1}" \
      -v same="$([ "$PID" = "$ORIGIN_PID" ] && echo 1 || echo 0)" \
      -v rss="$rss" -v pss="$pss" -v cdir="$cdir" -v busy="$(busy_pct "$b0" "$b1")" -v steal="$(steal_pct "$b0" "$b1")" -v pin="$PINDESC" 'BEGIN{
        rps = req / (dur / 1e6)
        scpu = haspid ? sprintf("%.1f", sd / tick * 1e6 / req) : "-"
        ocpu = same ? "-" : sprintf("%.1f", od / tick * 1e6 / req)
        printf "%s,%s,%.0f,%.3f,%.3f,%.3f,%d,%.1f,%s,%s,%s,%s,%s,%s,%s,%s\n", n, sc, rps, p50/1000, p99/1000, p999/1000,
               e, by / (dur / 1e6) / 1048576, scpu, ocpu, rss, pss, cdir, busy, steal, pin }'
  if [ $((err_connect+err_read+err_write+err_status+err_timeout)) -gt 0 ]; then
    echo "#   $NAME $sc errors: connect=$err_connect read=$err_read write=$err_write status=$err_status timeout=$err_timeout"
  fi
  sleep 1
}

for sc in $SCENARIOS; do
  case $sc in
    hit-1k)     scenario hit-1k /obj/1k 0 ;;
    hit-16k)    scenario hit-16k /obj/16k 0 ;;
    hit-128k)   scenario hit-128k /obj/128k 0 ;;
    hit-1m)     scenario hit-1m /obj/1m 0 ;;
    pass)       scenario pass /slow 0 ;;
    many-keys)  scenario many-keys /obj/1k "$NKEYS" ;;
    conn-churn) scenario conn-churn /obj/1k 0 -H "Connection: close" ;;
    *) echo "# unknown scenario $sc" ;;
  esac
done
