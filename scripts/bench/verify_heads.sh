#!/usr/bin/env bash
# Makes .venv-verify from scripts/bench/requirements_verify.txt (torch, torchvision, grad-cam 1.5.7,
# segmentation-models-pytorch, onnx, onnxruntime; a large download, once) and runs
# scripts/bench/verify_heads.py with the given arguments, e.g.
#   scripts/bench/verify_heads.sh                                   # every row, both photos
#   scripts/bench/verify_heads.sh --rows deeplabv3/box --photos 224 # one row, one photo
#   scripts/bench/verify_heads.sh --rows 'eigencam/*'               # the EigenCAM rows
#   scripts/bench/verify_heads.sh --table                           # the cached results as Markdown
# The scorecam binary is target/release/scorecam (built with `cargo build --release` if missing;
# --binary PATH for another build).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../setup/venv.sh
source "$root/scripts/setup/venv.sh"
ensure_venv "$root/.venv-verify" "$root/scripts/bench/requirements_verify.txt"
exec "$root/.venv-verify/bin/python" "$root/scripts/bench/verify_heads.py" "$@"
