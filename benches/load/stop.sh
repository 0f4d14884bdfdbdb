#!/usr/bin/env bash
# Stop the servers started by start.sh, by the PIDs in /tmp/shellac-load/run (never by name).
#   stop.sh [shellac] [bare] [varnish] [nginx] [slow] [origin]      (no argument = all six)
B=/tmp/shellac-load
stop_pidfile() { # name pidfile
  local f=$2 pid
  [ -f "$f" ] || { echo "$1: no pid file"; return 0; }
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "$1: pid $pid still alive after 5s"; return 1; fi
    echo "$1: stopped pid $pid"
  else
    echo "$1: pid $pid not running"
  fi
  rm -f "$f"
}
[ $# -eq 0 ] && set -- shellac bare varnish nginx slow origin
for s in "$@"; do
  case $s in
    origin) stop_pidfile origin $B/run/origin.pid ;;
    slow) stop_pidfile slow $B/run/slow.pid ;;
    shellac) stop_pidfile shellac $B/run/shellac.pid ;;
    bare) stop_pidfile bare $B/run/bare.pid ;;
    varnish) stop_pidfile varnish $B/run/varnish.pid ;;
    nginx) stop_pidfile nginx-cache $B/run/nginx-cache.pid ;;
    *) echo "unknown server $s" >&2; exit 2 ;;
  esac
done
