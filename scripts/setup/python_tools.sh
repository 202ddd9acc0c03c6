#!/usr/bin/env bash
# Creates .venv-tools/ with the pinned packages of scripts/setup/requirements_tools.txt (onnx,
# onnxruntime, numpy, pytest): what scripts/tools/split_model.py and its tests need. No torch.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/scripts/setup/venv.sh"
ensure_venv "$root/.venv-tools" "$root/scripts/setup/requirements_tools.txt"
