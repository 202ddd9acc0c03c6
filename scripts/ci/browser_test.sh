#!/usr/bin/env bash
# End-to-end test of the page served at GET / in a real headless browser: Debian's Chromium
# driven by playwright-core (pinned in tests/browser/package-lock.json; no browser download),
# against the real server with the default model on a free loopback port
# (tests/browser/page.test.mjs), then against a second server with the head-kind test packages
# of tests/fixtures/models/heads (tests/browser/heads.test.mjs; skipped, saying so, while those
# packages are not there).
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
source scripts/ci/serve_lib.sh

wait_ready() { # URL PID LOG
  for _ in $(seq 1 600); do
    curl -sf "$1/readyz" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3"; echo "server exited" >&2; exit 1; }
    sleep 0.2
  done
  cat "$3"
  echo "server never became ready" >&2
  exit 1
}

# The head-kind packages, when the folder has them (another change generates them).
heads=tests/fixtures/models/heads
heads_url=""
heads_server=""
if [[ -f $heads/segmentation/model.toml && -f $heads/embedding/model.toml ]]; then
  heads_log="$artifacts/server-heads.log"
  start_server "$heads_log" --models-dir "$heads"
  heads_url=$url
  heads_server=$server
fi

log="$artifacts/server.log"
start_server "$log"
# start_server's trap stops only the last server: stop both.
trap 'for p in $server $heads_server; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done' EXIT
wait_ready "$url" "$server" "$log"
[[ -z $heads_url ]] || wait_ready "$heads_url" "$heads_server" "$heads_log"

status=0
echo "== browser test against $url"
(cd tests/browser && SCORECAM_URL="$url" ARTIFACT_DIR="$artifacts" CHROMIUM="$(command -v chromium)" \
  node --test --test-reporter=spec page.test.mjs) || status=$?

if [[ -n $heads_url ]]; then
  echo "== head-kind browser test against $heads_url ($heads)"
else
  echo "== head-kind browser test: SKIPPED ($heads has no segmentation/ and embedding/ packages yet)"
fi
(cd tests/browser && SCORECAM_HEADS_URL="$heads_url" ARTIFACT_DIR="$artifacts" CHROMIUM="$(command -v chromium)" \
  node --test --test-reporter=spec heads.test.mjs) || status=$?

echo "screenshots: $artifacts/page.png $artifacts/page-360.png $artifacts/heads-*.png (server logs: $artifacts/server*.log)"
exit $status
