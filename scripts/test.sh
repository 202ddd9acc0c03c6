#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: fetches ONNX Runtime (pinned wheel), sets
# up the small Python environment the model-splitting tool's tests use, then runs the Rust
# tests, the Python tests, the OpenAPI contract test, the docs' HTTP examples against a live
# server, third-party clients (Triton's, KServe's, one generated from openapi.yaml) against a
# live server and the web page in headless Chromium.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup/ort.sh cpu
scripts/setup/python_tools.sh

# fault-injection lets the HTTP tests inject panics and dead workers (test builds only).
cargo test --all-targets --locked --features fault-injection
.venv-tools/bin/python -m pytest -q tests/python
scripts/ci/contract_test.sh
scripts/ci/docs_examples.sh
scripts/ci/client_test.sh
scripts/ci/browser_test.sh
