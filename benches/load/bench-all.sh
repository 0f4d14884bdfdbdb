#!/usr/bin/env bash
# Interleaved comparison: for each repetition, for each scenario, for each pinning mode,
# run every system once (A B C A B C ...), so slow drifts of this noisy machine hit all
# systems alike. Raw CSV goes to $OUT, then summarize.py prints medians.
#
#   bench-all.sh                      # shellac, varnish, nginx, direct (+ nginx-nolock and bare-hyper pass), 3 reps, PIN split+none
#   EXTRA="other|http://127.0.0.1:7091|<pid>" bench-all.sh     # add another proxy
#
# SYSTEMS / EXTRA entries: name|url[|pid-or-pidfile[|scenario scenario ...]]
# Knobs: REPS=3  PINS="split none"  SCENARIOS="hit-1k hit-128k hit-1m pass many-keys conn-churn"
#        DURATION/WARM/CONNS/THREADS as in run.sh   OUT=/tmp/shellac-load/results/<date>.csv
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPS=${REPS:-3}
PINS=${PINS:-"split none"}
SCENARIOS=${SCENARIOS:-"hit-1k hit-128k hit-1m pass many-keys conn-churn"}
SYSTEMS=${SYSTEMS:-"shellac|http://127.0.0.1:7081|/tmp/shellac-load/run/shellac.pid
varnish|http://127.0.0.1:6081|/tmp/shellac-load/run/varnish.pid
nginx|http://127.0.0.1:6091|/tmp/shellac-load/run/nginx-cache.pid
nginx-nolock|http://127.0.0.1:6092|/tmp/shellac-load/run/nginx-cache.pid|pass
bare-hyper|http://127.0.0.1:7281|/tmp/shellac-load/run/bare.pid|pass
direct|http://127.0.0.1:8080|/tmp/shellac-load/run/origin.pid"}
EXTRA=${EXTRA:-}
mkdir -p /tmp/shellac-load/results
OUT=${OUT:-/tmp/shellac-load/results/$(date -u +%Y%m%dT%H%M%SZ).csv}
ALL=$(printf '%s\n%s\n' "$SYSTEMS" "$EXTRA" | sed '/^[[:space:]]*$/d')

{
  echo "# bench-all $(date -u +%Y-%m-%dT%H:%M:%SZ) reps=$REPS pins=[$PINS] duration=${DURATION:-10}s warm=${WARM:-2}s conns=${CONNS:-64} threads=${THREADS:-1}"
  echo "# $(wrk -v 2>&1 | head -1 | cut -c1-40); $(varnishd -V 2>&1 | head -1); $(nginx -v 2>&1); kernel $(uname -r); $(nproc) cpus"
  echo "rep,system,scenario,rps,p50_ms,p99_ms,p999_ms,errors,MBps,srv_cpu_us_req,origin_cpu_us_req,rss_kb,pss_kb,cache_dir_kb,cpu_busy_pct,steal_pct,pin"
} >"$OUT"
echo "writing $OUT" >&2

for rep in $(seq 1 "$REPS"); do
  for sc in $SCENARIOS; do
    for pin in $PINS; do
      while IFS='|' read -r name url pid scs; do
        [ -n "$name" ] || continue
        if [ -n "$scs" ] && ! grep -qw -- "$sc" <<<"$scs"; then continue; fi
        [ -n "$pid" ] && [ -f "$pid" ] && pid=$(cat "$pid")
        PIN=$pin HEADER=0 SCENARIOS=$sc "$HERE/run.sh" "$name" "$url" $pid 2>&1 |
          sed "/^#/!s/^/$rep,/" | tee -a "$OUT" >&2
      done <<<"$ALL"
    done
  done
done
echo "done: $OUT" >&2
python3 "$HERE/summarize.py" "$OUT"
