#!/usr/bin/env bash
# Makes .venv-verify from scripts/bench/requirements_verify.txt (torch, torchvision, grad-cam 1.5.7,
# onnx, onnxruntime; a large download, once) and runs scripts/bench/verify_architectures.py with the
# given arguments, e.g.
#   scripts/bench/verify_architectures.sh                    # every architecture, both photos
#   scripts/bench/verify_architectures.sh --arch vit_b_16    # one row
#   scripts/bench/verify_architectures.sh --arch resnet18 resnet50 inception_v3 --photos jpeg   # the four JPEG photos
# The scorecam binary is target/release/scorecam (built with `cargo build --release` if missing).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../setup/venv.sh
source "$root/scripts/setup/venv.sh"
ensure_venv "$root/.venv-verify" "$root/scripts/bench/requirements_verify.txt"
exec "$root/.venv-verify/bin/python" "$root/scripts/bench/verify_architectures.py" "$@"
