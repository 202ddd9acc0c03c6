#!/usr/bin/env bash
# Creates .venv-tools/ with the pinned packages of scripts/requirements-tools.txt (onnx,
# onnxruntime, numpy, pytest): what scripts/split_model.py and its tests need. No torch.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv-tools"
req="$root/scripts/requirements-tools.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$req"
echo "$want" > "$stamp"
