#!/usr/bin/env bash
# Hit ratio on browser-shaped traffic: Shellac without rules, Shellac with
# the shipped example rules, Varnish with the usual VCL for the same, and
# Varnish with its builtin VCL, each fresh (empty cache) against the same
# origin with the same requests. Prints a markdown table (docs/caching.md,
# "Hit ratio on browser-shaped traffic").
#
#   benches/replay/run.sh
#
# Environment knobs (defaults):
#   REQUESTS=20000     requests per configuration (bounded: at most 200000)
#   SEED=18            the replay's seed; the same for every configuration
#   CONCURRENCY=1      replay threads (1: the figures are exactly reproducible)
#   PROFILE=debug      Shellac build: debug (already built, the hit ratio does
#                      not depend on speed) or release
#   SHELLAC_BIN=       use this binary instead of building one
#   ORIGIN_GZIP=0      1: the origin compresses html/css/js for gzip clients
#   CONFIGS="shellac-norules shellac-rules varnish varnish-builtin"
#   RUN_TIMEOUT=120    seconds one replay may take before it is stopped
#
# Loopback only: origin 127.0.0.1:18180, Shellac :18181, Varnish :18182.
# Every process started here is stopped on exit (by its PID).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REQUESTS=${REQUESTS:-20000}
SEED=${SEED:-18}
CONCURRENCY=${CONCURRENCY:-1}
PROFILE=${PROFILE:-debug}
SHELLAC_BIN=${SHELLAC_BIN:-}
ORIGIN_GZIP=${ORIGIN_GZIP:-0}
CONFIGS=${CONFIGS:-"shellac-norules shellac-rules varnish varnish-builtin"}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
ORIGIN_PORT=18180
SHELLAC_PORT=18181
VARNISH_PORT=18182

if [ "$REQUESTS" -gt 200000 ]; then
  echo "run.sh: REQUESTS=$REQUESTS is more than 200000" >&2
  exit 2
fi

WORK=$(mktemp -d /tmp/shellac-replay.XXXXXX)
chmod 755 "$WORK"   # varnishd's worker (user vcache) reads its VCL copy here
RESULTS=$WORK/results.jsonl
PIDS=()

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

for port in $ORIGIN_PORT $SHELLAC_PORT $VARNISH_PORT; do
  if ! port_free "$port"; then
    echo "run.sh: 127.0.0.1:$port is in use; stop what holds it first" >&2
    exit 1
  fi
done

# Waits until URL answers (any status), at most 30 s.
wait_for() {
  local url=$1 _
  for _ in $(seq 1 300); do
    if curl -s -o /dev/null --max-time 1 "$url"; then
      return 0
    fi
    sleep 0.1
  done
  echo "run.sh: $url did not answer within 30 s" >&2
  return 1
}

# Stops the last process started (the proxy of one configuration).
stop_last() {
  local pid=${PIDS[-1]}
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset 'PIDS[-1]'
}

# Shellac: built from this tree, then copied, so that another build into the
# shared target dir cannot swap the binary under a run.
SHELLAC_GIVEN=$SHELLAC_BIN
if [[ " $CONFIGS " == *" shellac-"* ]]; then
  if [ -z "$SHELLAC_BIN" ]; then
    target=${CARGO_TARGET_DIR:-$ROOT/target}
    flag=()
    [ "$PROFILE" = release ] && flag=(--release)
    echo "# building shellac ($PROFILE) into $target" >&2
    (cd "$ROOT" && CARGO_TARGET_DIR=$target cargo build "${flag[@]}" --bin shellac >&2)
    cp "$target/$PROFILE/shellac" "$WORK/shellac"
    SHELLAC_BIN=$WORK/shellac
  fi
fi

origin_flags=()
[ "$ORIGIN_GZIP" = 1 ] && origin_flags=(--gzip)
python3 "$HERE/origin.py" --port "$ORIGIN_PORT" "${origin_flags[@]}" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$ORIGIN_PORT/__count"

failed=0
touch "$RESULTS"
for config in $CONFIGS; do
  case $config in
    shellac-norules | shellac-rules)
      "$SHELLAC_BIN" --config "$HERE/$config.toml" >"$WORK/$config.log" 2>&1 &
      PIDS+=($!)
      url=http://127.0.0.1:$SHELLAC_PORT
      ;;
    varnish | varnish-builtin)
      if ! command -v varnishd >/dev/null; then
        echo "# $config skipped: no varnishd (apt-get install -y varnish)" >&2
        continue
      fi
      mkdir -p "$WORK/$config"
      varnishd -F -n "$WORK/$config" -a "127.0.0.1:$VARNISH_PORT" -T none \
        -f "$HERE/$config.vcl" -s malloc,256m >"$WORK/$config.log" 2>&1 &
      PIDS+=($!)
      url=http://127.0.0.1:$VARNISH_PORT
      ;;
    *)
      echo "run.sh: unknown configuration $config" >&2
      exit 2
      ;;
  esac
  if ! wait_for "$url/__count"; then
    cat "$WORK/$config.log" >&2
    exit 1
  fi
  if ! timeout "$RUN_TIMEOUT" python3 "$HERE/replay.py" --url "$url" \
    --origin "http://127.0.0.1:$ORIGIN_PORT" --requests "$REQUESTS" --seed "$SEED" \
    --concurrency "$CONCURRENCY" --label "$config" --json "$RESULTS"; then
    echo "# $config: failed requests, wrong bodies or over ${RUN_TIMEOUT}s (see above)" >&2
    failed=1
  fi
  stop_last
done

if [ -n "${SHELLAC_GIVEN:-}" ]; then
  shellac_version="$SHELLAC_GIVEN (SHELLAC_BIN)"
else
  shellac_version=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
fi
varnish_version=$(varnishd -V 2>&1 | sed -n 's/^varnishd (\(varnish-[^ ]*\).*/\1/p' || true)
python3 - "$RESULTS" "$REQUESTS" "$SEED" "$CONCURRENCY" "$ORIGIN_GZIP" "$shellac_version" "${varnish_version:-none}" "$PROFILE" <<'EOF'
import json
import sys

path, requests, seed, concurrency, gzip, shellac, varnish, profile = sys.argv[1:]
names = {
    "shellac-norules": "Shellac, no rules (`shellac-norules.toml`)",
    "shellac-rules": "Shellac, the shipped example rules (`shellac-rules.toml`)",
    "varnish": "Varnish, the usual VCL (`varnish.vcl`)",
    "varnish-builtin": "Varnish, builtin VCL only (`varnish-builtin.vcl`)",
}
print()
print(f"{requests} requests, seed {seed}, concurrency {concurrency}, origin gzip "
      f"{'on' if gzip == '1' else 'off'}; Shellac {shellac} ({profile}), {varnish}")
print()
print("| configuration | requests | origin requests (pages + static) | hit ratio | X-Cache HIT | wrong bodies |")
print("|---|---:|---:|---:|---:|---:|")
with open(path, encoding="utf-8") as lines:
    for line in lines:
        r = json.loads(line)
        print(f"| {names.get(r['label'], r['label'])} | {r['requests']:,} | "
              f"{r['origin_requests']:,} ({r['origin_pages']:,} + {r['origin_static']:,}) | "
              f"{r['hit_ratio']:.1%} | {r['hit_share']:.1%} | {r['wrong_bodies']} |")
EOF
exit "$failed"
