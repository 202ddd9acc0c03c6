#!/usr/bin/env bash
# Third-party clients against the real server (default model) on loopback, used as their
# users would, unmodified: Triton's `tritonclient.http` at its defaults (binary tensor data
# on), KServe's `InferenceRESTClient` (V1 and v2), and a Python client generated from
# openapi.yaml by openapi-python-client (into target/, never committed). Their answers are
# checked against the server's own /predict and /explain (tests/clients).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

source scripts/setup/venv.sh
venv=.venv-clients
ensure_venv "$venv" scripts/ci/requirements_clients.txt

generated=target/generated-client
rm -rf "$generated"
mkdir -p "$generated"
"$venv/bin/openapi-python-client" generate --path openapi.yaml --meta none \
  --output-path "$generated/scorecam_client" > "$generated/generate.log" 2>&1 ||
  { cat "$generated/generate.log"; exit 1; }
# The generator may skip only what it cannot type by design: GET /openapi.yaml's
# application/yaml answer. Any other skipped body or answer is a contract it cannot use.
if grep '^WARNING' "$generated/generate.log" | grep -v '^WARNING parsing GET /openapi.yaml within'; then
  cat "$generated/generate.log"
  echo "openapi-python-client skipped parts of openapi.yaml (above)" >&2
  exit 1
fi

cargo build --locked --quiet
source scripts/ci/serve_lib.sh
start_server target/client-test-server.log
echo "client tests against $url"
SCORECAM_URL=$url SCORECAM_GENERATED_CLIENT=$root/$generated \
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/clients
