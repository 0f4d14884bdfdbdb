#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind (user space only:
# deterministic for one binary and input, whatever else the machine does).
#
#   benches/load/callgrind.sh hit|pass|churn [seconds]      (default 10 s of wrk -c8)
#   BIN=path/to/shellac benches/load/callgrind.sh pass      (another build)
#   BARE=1 benches/load/callgrind.sh pass                   (the bare hyper proxy instead)
#
# Needs the origin (start.sh origin; started here when it is not running),
# valgrind and wrk. Shellac runs from shellac.toml moved to :7181/:7182 so a
# harness run's servers may stay up. glibc's memcpy is kept off `rep movsb`
# (GLIBC_TUNABLES below): callgrind counts that instruction once per byte, so
# a future that grows past glibc's threshold (a few KiB) would look ten times
# dearer to copy than it is. Prints instructions/request, then self cost by
# crate and the top functions (callgrind_self.py).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SCENARIO=${1:?usage: callgrind.sh hit|pass|churn [seconds]}
SECS=${2:-10}
OUT=/tmp/shellac-load/callgrind
mkdir -p "$OUT"
case $SCENARIO in
  hit) PATH_=/obj/1k; HDR=() ;;
  pass) PATH_=/slow; HDR=() ;;
  churn) PATH_=/obj/1k; HDR=(-H "Connection: close") ;;
  *) echo "scenario must be hit, pass or churn" >&2; exit 2 ;;
esac
curl -s -o /dev/null --max-time 2 http://127.0.0.1:8080/health || "$HERE/start.sh" origin >&2
PORT=7181
export GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=1000000000
if [ "${BARE:-0}" = 1 ]; then
  BIN=${BIN:-$(ls -t "$REPO"/target/release/deps/bare_proxy-* | grep -v '\.d$' | head -1)}
  valgrind --tool=callgrind --callgrind-out-file="$OUT/out.%p" "$BIN" \
    --listen 127.0.0.1:$PORT --backend 127.0.0.1:8080 >"$OUT/valgrind.log" 2>&1 &
else
  BIN=${BIN:-$REPO/target/release/shellac}
  sed 's/127.0.0.1:7081/127.0.0.1:7181/; s/127.0.0.1:7082/127.0.0.1:7182/' "$HERE/shellac.toml" >"$OUT/shellac.toml"
  valgrind --tool=callgrind --callgrind-out-file="$OUT/out.%p" "$BIN" \
    --config "$OUT/shellac.toml" >"$OUT/valgrind.log" 2>&1 &
fi
VP=$!
trap 'kill $VP 2>/dev/null || true' EXIT
URL=http://127.0.0.1:$PORT$PATH_
for _ in $(seq 1 120); do curl -s -o /dev/null --max-time 2 "$URL" && break; sleep 0.5; done
curl -s -o /dev/null "$URL"; curl -s -o /dev/null "$URL"
taskset -c 0 wrk -t1 -c8 -d2s "${HDR[@]}" "$URL" >/dev/null            # warm up
callgrind_control -z $VP >/dev/null 2>&1
N=$(taskset -c 0 wrk -t1 -c8 -d"${SECS}s" "${HDR[@]}" "$URL" | awk '/requests in/{print $1}')
callgrind_control -d $VP >/dev/null 2>&1
sleep 1
kill $VP; wait $VP 2>/dev/null || true
echo "$SCENARIO: $N requests in ${SECS}s under callgrind ($BIN)"
python3 "$HERE/callgrind_self.py" "$OUT/out.$VP.1" "$N"
