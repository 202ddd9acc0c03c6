#!/usr/bin/env bash
# Creates .venv-tools/ with the pinned packages of scripts/requirements-tools.txt (onnx,
# onnxruntime, numpy, pytest): what scripts/split_model.py and its tests need. No torch.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/venv.sh"
ensure_venv "$root/.venv-tools" "$root/scripts/requirements-tools.txt"
