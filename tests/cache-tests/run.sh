#!/usr/bin/env bash
# tests/cache-tests/run.sh: run the HTTP caching test suite (npm package
# `http-cache-tests`, https://cache-tests.fyi, github.com/http-tests/cache-tests)
# against a Shellac binary with its SHIPPED DEFAULTS, and summarise.
#
#   tests/cache-tests/run.sh [SHELLAC_BINARY]     # default: target/release/shellac
#
# (from the repository root; a relative binary path is taken from the
# current directory). About 10 s; the client is killed after
# CACHE_TESTS_TIMEOUT seconds.
#
# It builds nothing. It installs http-cache-tests (pinned, see
# CACHE_TESTS_VERSION) with npm into CACHE_TESTS_DIR if it is not there yet,
# picks two free loopback ports, starts the suite's origin server (bound to
# 127.0.0.1 only) and Shellac in front of it with a config holding only
# `[server] listen` and one `[[backend]]` (the defaults are the point), runs
# the suite's command-line client through Shellac, and writes to CACHE_TESTS_OUT
# (default: a new mktemp -d directory):
#   results.json   the client's JSON results (as `npm run --silent cli` prints)
#   uuids.json     test id -> the UUID in its URLs (to name the test of a request)
#   shellac.log    Shellac's stderr; RUST_LOG defaults to
#                  "warn,shellac::access=debug": every `backend fetch failed`
#                  and ejection line, plus one trace line per request
#   summary.json   per-test results and the synthetic-503 analysis
# and prints a breakdown, then the one-line summary
#   N passed, M failed, K setup failures; 503s from Shellac: X
# (passed = ✅ and check "yes"; failed = ⛔️ and ⚠️; setup failures = 🔹, ⁉️, ↻;
# X = responses Shellac made up itself with status 503, `cache=synth`).
#
# Environment: CACHE_TESTS_DIR (npm install dir, default
# ${TMPDIR:-/tmp}/shellac-cache-tests), CACHE_TESTS_VERSION (default 0.4.5, the
# registry's release; its layout is server/, client/, tests/ at the top),
# CACHE_TESTS_OUT, CACHE_TESTS_TIMEOUT (seconds for the client, default 600),
# RUST_LOG. Needs bash, node, npm (only to install) and coreutils `timeout`.
#
# Exit status: 0 when Shellac made no 503 other than `invalid_response`; 1
# when it did (e.g. `no_healthy_backend`); 2 when the harness could not run.
# (The suite's origin closes connections on purpose in the stale-* tests; with
# nothing stale to serve, a 503 `invalid_response` there is an honest answer.)
#
# NOT part of CI. The suite is informational: "passing all of the tests
# currently means nothing" (its README); many results are matters of policy,
# and they vary a little from run to run (tests run 100 at a time). So the
# pass/fail counts are for reading, not for gating. But any other synthetic
# 503 during it is a Shellac bug: the origin is up the whole time, and only
# its deliberate 5xx answers and closed connections (stale-*, status-5xx,
# heuristic-5xx) can make Shellac think it is not.
set -u

SHELLAC=${1:-target/release/shellac}
VERSION=${CACHE_TESTS_VERSION:-0.4.5}
DIR=${CACHE_TESTS_DIR:-${TMPDIR:-/tmp}/shellac-cache-tests}
TIMEOUT=${CACHE_TESTS_TIMEOUT:-600}
export RUST_LOG=${RUST_LOG:-warn,shellac::access=debug}

die() { echo "run.sh: $*" >&2; exit 2; }
[ -x "$SHELLAC" ] || die "no executable Shellac binary at $SHELLAC (build it: cargo build --release)"
SHELLAC=$(cd "$(dirname "$SHELLAC")" && pwd)/$(basename "$SHELLAC")
command -v node >/dev/null || die "node not found"
command -v timeout >/dev/null || die "timeout (coreutils) not found"
OUT=${CACHE_TESTS_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/cache-tests-run.XXXXXX")}
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)

# --- Install the suite if missing.
PKG=$DIR/node_modules/http-cache-tests
if [ ! -f "$PKG/package.json" ]; then
  command -v npm >/dev/null || die "npm not found"
  mkdir -p "$DIR" || die "cannot create $DIR"
  echo "installing http-cache-tests@$VERSION into $DIR" >&2
  # A package.json of its own, so npm does not install into a parent
  # directory's project.
  [ -f "$DIR/package.json" ] || echo '{"private": true}' > "$DIR/package.json"
  (cd "$DIR" && npm i --prefix "$DIR" --no-audit --no-fund --silent "http-cache-tests@$VERSION" >&2) \
    || die "npm install failed"
fi
[ -f "$PKG/server/server.mjs" ] && [ -f "$PKG/client/runner.mjs" ] \
  || die "$PKG does not have the 0.4.x layout (server/, client/); set CACHE_TESTS_VERSION=0.4.5"

# --- Processes we start, stopped on any exit.
PIDS=""
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null; done
  for p in $PIDS; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 2' INT TERM HUP

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
wait_port() { # port pid: up to 10 s for a TCP listener, while pid lives
  local i
  for i in $(seq 1 100); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

ORIGIN_PORT=$(free_port) && SHELLAC_PORT=$(free_port) || die "cannot pick free ports"
[ "$ORIGIN_PORT" != "$SHELLAC_PORT" ] || SHELLAC_PORT=$(free_port)

# --- Helpers written next to the results (not into the package).
# origin.mjs: the suite's server, but listening on 127.0.0.1 only (it calls
# server.listen(port), which would bind every interface).
cat > "$OUT/origin.mjs" <<'EOF'
import net from 'net'
import { pathToFileURL } from 'url'
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (args.length === 1 && ['number', 'string'].includes(typeof args[0])) {
    return listen.call(this, Number(args[0]), '127.0.0.1')
  }
  return listen.apply(this, args)
}
await import(pathToFileURL(process.argv[2]).href)
EOF
# client.mjs: the package's cli.mjs for a full run, plus the test UUIDs.
cat > "$OUT/client.mjs" <<'EOF'
import fs from 'fs'
import { createRequire } from 'module'
import { pathToFileURL } from 'url'
const pkg = process.argv[2]
const imp = p => import(pathToFileURL(`${pkg}/${p}`).href)
const { runTests, getResults } = await imp('client/runner.mjs')
const { testUUIDs } = await imp('client/test.mjs')
const fetch = (await import(pathToFileURL(createRequire(`${pkg}/package.json`).resolve('node-fetch')).href)).default
const tests = (await imp('tests/index.mjs')).default
tests.push((await imp('tests/surrogate-control.mjs')).default) // as cli.mjs does
await runTests(tests, fetch, false, process.argv[3])
fs.writeFileSync(process.argv[4], JSON.stringify(testUUIDs, null, 2))
console.log(JSON.stringify(getResults(), null, 2))
EOF
# summarise.mjs: results as lib/display.mjs determineTestResult classifies
# them, and which tests Shellac's synthetic 503s hit.
cat > "$OUT/summarise.mjs" <<'EOF'
import fs from 'fs'
import { pathToFileURL } from 'url'
const [pkg, out] = process.argv.slice(2)
const suites = (await import(pathToFileURL(`${pkg}/tests/index.mjs`).href)).default
suites.push((await import(pathToFileURL(`${pkg}/tests/surrogate-control.mjs`).href)).default)
const results = JSON.parse(fs.readFileSync(`${out}/results.json`, 'utf8'))
const uuids = JSON.parse(fs.readFileSync(`${out}/uuids.json`, 'utf8'))
const log = fs.readFileSync(`${out}/shellac.log`, 'utf8').split('\n')
const byId = {}; const order = []
for (const s of suites) for (const t of s.tests) { byId[t.id] = t; order.push(t.id) }
const testOf = {}; for (const [id, u] of Object.entries(uuids)) testOf[u] = id
function kind (id, deps = true) { // lib/display.mjs determineTestResult
  const t = byId[id]; const r = results[id]
  if (r === undefined) return 'untested'
  if (deps && t.depends_on) for (const d of t.depends_on) if (!['pass', 'yes'].includes(kind(d))) return 'dependency_fail'
  if (r[0] === 'Setup') return r[1] === 'retry' ? 'retry' : 'setup_fail'
  if (r === false) return 'harness_fail'
  const k = t.kind || 'required'
  if (k === 'required') return r === true ? 'pass' : 'fail'
  if (k === 'optimal') return r === true ? 'pass' : 'optional_fail'
  if (k === 'check') return r === true ? 'yes' : 'no'
  return 'harness_fail'
}
const field = (l, k) => { const m = new RegExp(`\\b${k}=("([^"]*)"|\\S+)`).exec(l); return m ? (m[2] ?? m[1]) : undefined }
const testOfUrl = u => { const m = /\/(?:test|config|state)\/([^/?]+)/.exec(u || ''); return m ? (testOf[m[1]] || `?${m[1]}`) : '-' }
// Access trace lines (xid -> request) and the events in log order.
const access = {}; const events = []
for (const l of log) {
  if (l.includes('shellac::access')) {
    const a = { xid: field(l, 'xid'), method: field(l, 'method'), url: field(l, 'url'), status: +field(l, 'status'), cache: field(l, 'cache'), error: field(l, 'error'), retries: +field(l, 'retries'), tried: field(l, 'tried'), duration: +field(l, 'duration_ms'), time: l.split(' ')[0] }
    a.test = testOfUrl(a.url); access[a.xid] = a; events.push(['access', a])
  } else if (l.includes('backend fetch failed')) events.push(['failed', { xid: field(l, 'xid'), reason: field(l, 'reason'), time: l.split(' ')[0] }])
  else if (l.includes('backend ejected')) events.push(['ejected', { line: l }])
}
const failedReasons = {}
for (const [k, e] of events) if (k === 'failed') failedReasons[e.reason] = (failedReasons[e.reason] || 0) + 1
const synth = Object.values(access).filter(a => a.status === 503 && a.cache === 'synth')
const synthReasons = {}; for (const a of synth) synthReasons[a.error] = (synthReasons[a.error] || 0) + 1
const synthTests = {}; for (const a of synth) synthTests[a.test] = (synthTests[a.test] || 0) + 1
// What led to each ejection: the requests that reached the backend and failed
// there (transport errors, 5xx answers, retries included) and were in flight
// in the 100 ms before it (a trace line is written when a response ends; its
// start is its time less duration_ms). Approximate: requests run 100 at once.
const ms = t => Date.parse(t)
const failures = []
for (const [k, e] of events) {
  if (k === 'access' && e.tried !== '-' && ((e.cache !== 'synth' && e.status >= 500 && e.status <= 599) || (e.cache === 'synth' && e.error !== 'no_healthy_backend') || e.retries > 0)) {
    const what = e.cache === 'synth' ? e.error : `origin ${e.status}`
    failures.push({ start: ms(e.time) - e.duration, end: ms(e.time), xid: e.xid, test: e.test, reason: e.retries > 0 ? `${e.retries} retries, then ${what}` : what })
  }
  if (k === 'failed' && e.reason !== 'no_healthy_backend' && !access[e.xid]) {
    // No trace line of its own: a background revalidation, whose XID follows
    // the client request's that was answered stale (grace).
    const b = access[+e.xid - 1] || {}
    const test = b.cache === 'hit_stale' ? `${b.test} [background]` : '?'
    failures.push({ start: ms(e.time), end: ms(e.time), xid: e.xid, test, reason: e.reason })
  }
}
const ejections = events.filter(([k]) => k === 'ejected').map(([, e]) => {
  const t = ms(e.line.split(' ')[0])
  return { line: e.line, around: failures.filter(f => f.start <= t && f.end >= t - 100).sort((x, y) => x.start - y.start) }
})
const rows = order.map(id => {
  const r = results[id]
  return { id, result: kind(id), message: r === true || r === undefined ? '' : r[1], synthetic_503s: synthTests[id] || 0 }
})
const counts = {}; for (const r of rows) counts[r.result] = (counts[r.result] || 0) + 1
const n = ks => ks.reduce((s, k) => s + (counts[k] || 0), 0)
const hit = rows.filter(r => r.synthetic_503s > 0)
const byTime = synth.sort((a, b) => ms(a.time) - ms(b.time))
const firstSynth = byTime[0]
const firstNoBackend = byTime.find(a => a.error === 'no_healthy_backend')
const summary = { counts, backend_fetch_failed: failedReasons, synthetic_503s: synth.length, synthetic_503_reasons: synthReasons, tests_with_synthetic_503: hit.length, tests_with_synthetic_503_not_passed: hit.filter(r => !['pass', 'yes'].includes(r.result)).length, first_synthetic_503: firstSynth, first_no_healthy_backend: firstNoBackend, ejections, rows }
fs.writeFileSync(`${out}/summary.json`, JSON.stringify(summary, null, 2))
const tested = rows.length - (counts.untested || 0)
console.log(`results: ${JSON.stringify(counts)} (${tested} tested, ${counts.untested || 0} browser-only/untested)`)
console.log(`backend fetch failed: ${JSON.stringify(failedReasons)}; synthetic 503s: ${JSON.stringify(synthReasons)}`)
console.log(`tests that got a synthetic 503: ${hit.length} (not passed: ${summary.tests_with_synthetic_503_not_passed})`)
for (const e of ejections) console.log(`ejection (${e.line.split(' ')[0]}), backend failures around it: ${e.around.map(f => `${f.test} (${f.reason})`).join(', ') || '?'}`)
for (const [what, a] of [['first synthetic 503', firstSynth], ['first no_healthy_backend', firstNoBackend]]) {
  if (a) console.log(`${what}: ${a.time} xid ${a.xid}, ${a.error}, ${a.method} ${a.url} (${a.test})`)
}
console.log(`${n(['pass', 'yes'])} passed, ${n(['fail', 'optional_fail'])} failed, ${n(['setup_fail', 'harness_fail', 'retry'])} setup failures; 503s from Shellac: ${synth.length}`)
// invalid_response: the suite's origin closed the connection on purpose
// (`disconnect`, tests stale-*) and nothing stale could stand in: an honest
// answer. Any other synthetic 503 (no_healthy_backend above all) is a bug.
process.exitCode = synth.some(a => a.error !== 'invalid_response') ? 1 : 0
EOF

# --- The origin.
(cd "$PKG" && exec env npm_config_protocol=http npm_config_port="$ORIGIN_PORT" \
  npm_config_pidfile="$OUT/origin.pid" node "$OUT/origin.mjs" "$PKG/server/server.mjs") \
  > "$OUT/origin.log" 2>&1 &
PIDS="$PIDS $!"
wait_port "$ORIGIN_PORT" "$!" || { cat "$OUT/origin.log" >&2; die "the suite's server did not start"; }

# --- Shellac, shipped defaults: only the listener and the one backend.
cat > "$OUT/shellac.toml" <<EOF
[server]
listen = "127.0.0.1:$SHELLAC_PORT"

[[backend]]
name = "origin"
address = "127.0.0.1:$ORIGIN_PORT"
EOF
"$SHELLAC" --config "$OUT/shellac.toml" > "$OUT/shellac.stdout" 2> "$OUT/shellac.log" &
PIDS="$PIDS $!"
# A TCP connect only: no request through Shellac before the suite's own.
wait_port "$SHELLAC_PORT" "$!" || { cat "$OUT/shellac.log" >&2; die "Shellac did not start"; }

# --- The client, bounded.
echo "origin 127.0.0.1:$ORIGIN_PORT, Shellac 127.0.0.1:$SHELLAC_PORT, output $OUT" >&2
(cd "$PKG" && exec timeout "$TIMEOUT" node --no-warnings "$OUT/client.mjs" "$PKG" \
  "http://127.0.0.1:$SHELLAC_PORT" "$OUT/uuids.json") > "$OUT/results.json" 2> "$OUT/client.log" &
CLIENT=$!
PIDS="$PIDS $CLIENT"
wait "$CLIENT" || { cat "$OUT/client.log" >&2; die "the client failed (or ran over ${TIMEOUT}s)"; }
sleep 0.5 # let Shellac's log writer drain

node "$OUT/summarise.mjs" "$PKG" "$OUT"
