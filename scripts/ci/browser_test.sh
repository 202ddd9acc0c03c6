#!/usr/bin/env bash
# End-to-end test of the page served at GET / in a real headless browser: Debian's Chromium
# driven by playwright-core (pinned in tests/browser/package-lock.json; no browser download),
# against the real server with the default model on a free loopback port.
#
# Screenshots go to $ARTIFACT_DIR (default target/browser-artifacts/).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

if ! command -v chromium >/dev/null; then
  echo "== installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing Debian's nodejs and npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

echo "== npm ci (tests/browser)"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

scripts/setup/ort.sh cpu
cargo build --locked --quiet --bin scorecam

artifacts=${ARTIFACT_DIR:-$root/target/browser-artifacts}
mkdir -p "$artifacts"
log="$artifacts/server.log"
source scripts/ci/serve_lib.sh
start_server "$log"
for _ in $(seq 1 600); do
  curl -sf "$url/readyz" >/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$log"; echo "server exited" >&2; exit 1; }
  sleep 0.2
done
curl -sf "$url/readyz" >/dev/null || { cat "$log"; echo "server never became ready" >&2; exit 1; }
echo "== browser test against $url"

status=0
(cd tests/browser && SCORECAM_URL="$url" ARTIFACT_DIR="$artifacts" CHROMIUM="$(command -v chromium)" \
  node --test --test-reporter=spec page.test.mjs) || status=$?
echo "screenshots: $artifacts/page.png $artifacts/page-360.png (server log: $log)"
exit $status
