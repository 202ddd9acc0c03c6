#!/usr/bin/env bash
# Makes .venv-verify from scripts/bench/requirements_verify.txt (torch, torchvision, grad-cam 1.5.7, onnx,
# onnxruntime, ...; a large download, once), adds Ultralytics (its model code only: installed with --no-deps,
# see requirements_verify.txt) and runs scripts/bench/verify_detectors.py with the given arguments, e.g.
#   scripts/bench/verify_detectors.sh                                  # every row, both photos
#   scripts/bench/verify_detectors.sh --rows 'yolov8n/*' --photos 224  # the YOLOv8n rows, one photo
#   scripts/bench/verify_detectors.sh --table                          # the cached results as Markdown
# No weights are downloaded (the model is built from its yaml with random weights). The scorecam binary is
# target/release/scorecam (built with `cargo build --release` if missing; --binary PATH for another build).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../setup/venv.sh
source "$root/scripts/setup/venv.sh"
ensure_venv "$root/.venv-verify" "$root/scripts/bench/requirements_verify.txt"
ultralytics=8.4.190
if ! "$root/.venv-verify/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('ultralytics') != '$ultralytics')" 2>/dev/null; then
  # --no-deps: ultralytics requires opencv-python, whose cv2 would replace the pinned opencv-python-headless
  # that verify_architectures.py's opencv_linear reference uses; its other requirements are pinned in
  # requirements_verify.txt.
  "$root/.venv-verify/bin/python" -m pip install --quiet --no-deps "ultralytics==$ultralytics"
fi
exec "$root/.venv-verify/bin/python" "$root/scripts/bench/verify_detectors.py" "$@"
