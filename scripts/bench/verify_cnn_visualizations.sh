#!/usr/bin/env bash
# Makes .venv-verify from scripts/bench/requirements_verify.txt (torch, torchvision, grad-cam 1.5.7,
# onnx, onnxruntime; a large download, once) and runs scripts/bench/verify_cnn_visualizations.py with the
# given arguments, e.g.
#   scripts/bench/verify_cnn_visualizations.sh --images a.jpg b.jpg
#   scripts/bench/verify_cnn_visualizations.sh --write-fixtures
# The scorecam binary is target/release/scorecam (built with `cargo build --release` if missing).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../setup/venv.sh
source "$root/scripts/setup/venv.sh"
ensure_venv "$root/.venv-verify" "$root/scripts/bench/requirements_verify.txt"
exec "$root/.venv-verify/bin/python" "$root/scripts/bench/verify_cnn_visualizations.py" "$@"
