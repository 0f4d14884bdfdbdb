#!/usr/bin/env bash
# Shellac vs Varnish vs nginx proxy_cache vs the bare origin, end to end, from one command:
#
#   benches/load/load.sh
#
# 1. installs nginx, varnish and wrk with apt-get when missing (idempotent);
# 2. builds Shellac in release mode (cargo build --release) and the bare hyper proxy;
# 3. starts the origin (nginx :8080), the slow counting origin (slow_origin.py :8081),
#    Varnish (:6081), nginx proxy_cache (:6091, :6092 without cache lock),
#    Shellac (:7081, shellac.toml) and the bare hyper proxy (:7281, benches/bare_proxy.rs,
#    pass scenario only: the floor of a tokio + hyper proxy), all from the configs here;
# 4. runs the wrk scenarios interleaved A B C A B C (bench-all.sh: for each round, for
#    each scenario, for each pin mode, every system once), then the coalescing burst
#    (burst.py, interleaved likewise), then on a freshly started Shellac the memory after
#    10,000 keys and the 10,000 idle keep-alive connections (idle_conns.py);
# 5. writes the report (report.py) between the load-report markers of docs/performance.md,
#    keeps the raw CSVs in /tmp/shellac-load/results/<date>/, and stops the servers it ran.
#
# Knobs (env), defaults in brackets:
#   REPS [3] rounds   PINS ["split"] ("split none" for both pin modes; see README.md)
#   DURATION [10] WARM [2] CONNS [64] THREADS [1]  SCENARIOS [all six]   BURST_REPS [3]
#   QUICK=1     one round of 5 s runs, one burst, doc not written (a smoke test, ~5 min)
#   DOC [docs/performance.md]  (DOC= to write nothing)   KEEP=1  leave the servers running
#   SKIP_INSTALL=1 SKIP_BUILD=1
# A full default run takes about 25 minutes on 2 cores (each wrk run is bounded by -d).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
B=/tmp/shellac-load
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$B/results/$STAMP
if [ "${QUICK:-0}" = 1 ]; then
  export REPS=${REPS:-1} DURATION=${DURATION:-5} BURST_REPS=${BURST_REPS:-1} DOC=${DOC-}
fi
export REPS=${REPS:-3} PINS=${PINS:-split} DURATION=${DURATION:-10} WARM=${WARM:-2}
export CONNS=${CONNS:-64} THREADS=${THREADS:-1}
export SCENARIOS=${SCENARIOS:-"hit-1k hit-128k hit-1m pass many-keys conn-churn"}
BURST_REPS=${BURST_REPS:-3}
DOC=${DOC-$REPO/docs/performance.md}
NKEYS=10000
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log() { printf '\n=== %s  %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---- 1. install
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  need=()
  command -v nginx >/dev/null || need+=(nginx)
  command -v varnishd >/dev/null || need+=(varnish)
  command -v wrk >/dev/null || need+=(wrk)
  command -v curl >/dev/null || need+=(curl)
  command -v python3 >/dev/null || need+=(python3)
  command -v taskset >/dev/null || need+=(util-linux)
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
  fi
fi

# ---- 2. build
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release"
  (cd "$REPO" && cargo build --release --bin shellac && cargo bench --bench bare_proxy --no-run)
fi

# ---- 3. start
cleanup() { [ "${KEEP:-0}" = 1 ] || "$HERE/stop.sh" >&2 || true; }
trap cleanup EXIT
log "starting servers"
"$HERE/start.sh" >&2

{
  echo "Run $STAMP (UTC). Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)."
  echo "Software: $("$REPO/target/release/shellac" --version 2>/dev/null) (commit $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ", uncommitted changes")), $(varnishd -V 2>&1 | head -1 | sed 's/varnishd (\(varnish-[0-9.]*\).*/\1/'), $(nginx -v 2>&1 | sed 's/nginx version: //'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)."
  echo "Settings: REPS=$REPS PINS=\"$PINS\" DURATION=${DURATION}s WARM=${WARM}s CONNS=$CONNS THREADS=$THREADS; wrk -t$THREADS -c$CONNS; with PIN=split wrk runs on CPU 0 and every server process tree on CPU 1."
  echo "Command: \`benches/load/load.sh\` (raw CSVs: \`/tmp/shellac-load/results/$STAMP/\`)."
} >"$OUT/meta.txt"

# ---- 4a. wrk scenarios, interleaved
log "wrk scenarios: $REPS rounds x [$PINS] x [$SCENARIOS]"
OUT="$OUT/wrk.csv" "$HERE/bench-all.sh" >"$OUT/summary.md"

# ---- 4b. coalescing burst, interleaved
log "coalescing burst x $BURST_REPS"
echo "system,clients,answered_200,other_status,errors,origin_requests,seconds" >"$OUT/burst.csv"
for _ in $(seq 1 "$BURST_REPS"); do
  for sys in shellac:7081 varnish:6081 nginx:6091; do
    python3 "$HERE/burst.py" "${sys%%:*}" "http://127.0.0.1:${sys#*:}" --clients 1000 | tee -a "$OUT/burst.csv" >&2
    sleep 1
  done
done

# ---- 4c. memory after 10,000 keys and 10,000 idle connections, on a fresh Shellac
log "memory after $NKEYS keys (fresh Shellac)"
"$HERE/stop.sh" shellac >&2
"$HERE/start.sh" shellac >&2
SPID=$(cat $B/run/shellac.pid)
rss() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
sleep 1
rss0=$(rss "$SPID")
curl -s -o /dev/null "http://127.0.0.1:7081/obj/1k?i=[0-$((NKEYS - 1))]"
sleep 2
rss1=$(rss "$SPID")
metric() { curl -s http://127.0.0.1:7082/metrics | awk -v m="$1" '$1==m{printf "%d", $2}'; }
echo "rss_start_kb,rss_after_kb,body_bytes,cache_bytes,objects" >"$OUT/mem.csv"
# wait_port in start.sh fetched /obj/1k once: one more 1 KiB object
echo "$rss0,$rss1,$(( (NKEYS + 1) * 1024 )),$(metric shellac_cache_bytes),$(metric shellac_cache_objects)" | tee -a "$OUT/mem.csv" >&2

log "10,000 idle keep-alive connections"
echo "system,conns_wanted,conns_open,rss_before_kb,rss_open_kb,delta_kb,kb_per_conn" >"$OUT/idle.csv"
python3 "$HERE/idle_conns.py" shellac http://127.0.0.1:7081 "$SPID" --conns 10000 | tee -a "$OUT/idle.csv" >&2

# ---- 5. report
python3 "$HERE/report.py" --wrk "$OUT/wrk.csv" --burst "$OUT/burst.csv" --mem "$OUT/mem.csv" \
  --idle "$OUT/idle.csv" --meta "$OUT/meta.txt" >"$OUT/report.md"
cat "$OUT/report.md"
if [ -n "$DOC" ]; then
  python3 - "$DOC" "$OUT/report.md" <<'EOF'
import sys
doc, rep = sys.argv[1], open(sys.argv[2]).read().strip()
begin, end = "<!-- load-report:begin (written by benches/load/load.sh) -->", "<!-- load-report:end -->"
try:
    text = open(doc).read()
except FileNotFoundError:
    text = ""
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + begin + "\n" + rep + "\n" + end + rest.split(end, 1)[1]
else:
    text = text.rstrip() + "\n\n" + begin + "\n" + rep + "\n" + end + "\n"
open(doc, "w").write(text)
EOF
  log "wrote $DOC"
fi
log "done: $OUT"
