#!/usr/bin/env bash
# Takes a PNG screenshot of Shellac's admin status page with headless
# Chromium (Debian's `chromium` package). It starts nothing itself: Shellac
# must already be running with an `[admin] listen` address.
#
#   docs/screenshot-status.sh [ADMIN_URL] [OUTPUT.png]
#
#   ADMIN_URL   default http://127.0.0.1:6082/
#   OUTPUT.png  default docs/status-page.png (next to this script)
#
# When SHELLAC_ADMIN_TOKEN is set, it is passed as `?token=...` (the page
# sends it on to /status.json as a Bearer token). The page polls every 2 s;
# Chromium's virtual time budget lets its first refresh run before the shot.
set -euo pipefail

url="${1:-http://127.0.0.1:6082/}"
out="${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/status-page.png}"

browser=""
for candidate in chromium chromium-browser google-chrome; do
  if command -v "$candidate" >/dev/null 2>&1; then
    browser="$candidate"
    break
  fi
done
if [ -z "$browser" ]; then
  echo "screenshot-status.sh: no chromium found (Debian: apt-get install chromium)" >&2
  exit 1
fi

if [ -n "${SHELLAC_ADMIN_TOKEN:-}" ]; then
  case "$url" in
    *\?*) url="${url}&token=${SHELLAC_ADMIN_TOKEN}" ;;
    *) url="${url}?token=${SHELLAC_ADMIN_TOKEN}" ;;
  esac
fi

# Fail early, with a clear message, when the admin listener is not there.
if command -v curl >/dev/null 2>&1; then
  status="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" || true)"
  if [ "$status" != "200" ]; then
    echo "screenshot-status.sh: $url answered HTTP ${status:-nothing} (is Shellac running with [admin] listen? token needed?)" >&2
    exit 1
  fi
fi

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT

"$browser" \
  --headless \
  --no-sandbox \
  --disable-gpu \
  --disable-quic \
  --no-first-run \
  --disable-background-networking \
  --disable-component-update \
  --disable-sync \
  --virtual-time-budget=3000 \
  --window-size=1100,700 \
  --screenshot="$out" \
  --user-data-dir="$profile" \
  "$url" >/dev/null 2>&1

if [ ! -s "$out" ]; then
  echo "screenshot-status.sh: chromium wrote no screenshot to $out" >&2
  exit 1
fi
echo "$out"
