#!/usr/bin/env bash
# Contract test: runs schemathesis against the real server (default model) on loopback and
# fails on any response that openapi.yaml does not describe (status, headers, content type,
# body schema) or any server error.
#
# `positive_data_acceptance` is left out on purpose: some schema-valid combinations are
# refused with a documented 422 (target with top_k, resolution=feature with official, a
# class index past the model's label count), which a schema cannot express.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

venv=.venv-contract
req=scripts/requirements-contract.txt
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -f "$venv/.stamp" || "$(cat "$venv/.stamp")" != "$want" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet -r "$req"
  echo "$want" > "$venv/.stamp"
fi

cargo build --locked --quiet
log=$(mktemp)
target/debug/scorecam serve --bind 127.0.0.1:0 --log-format json --max-queued-jobs 64 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
url=""
for _ in $(seq 1 600); do
  url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's/listening on //') || true
  [[ -n "$url" ]] && break
  kill -0 $server 2>/dev/null || { cat "$log"; echo "server exited" >&2; exit 1; }
  sleep 0.2
done
[[ -n "$url" ]] || { cat "$log"; echo "server did not start" >&2; exit 1; }
echo "contract test against $url"
"$venv/bin/schemathesis" run openapi.yaml --url "$url" --checks all \
  --exclude-checks positive_data_acceptance --max-examples 20 --workers 1 --seed 1
