"""Recipro-CAM against OpenVINO XAI's own (openvino-xai 1.1.0, white-box ReciproCAM, CNN
version: logits per cell, scaled to uint8 per class) on a full ONNX classifier, and
`scorecam explain --method reciprocam --score logit --resolution feature` on the same
model's split package. Not part of the test suite; needs its own environment (openvino-xai
pins numpy 1.x):

    python3 -m venv .venv-ovxai && .venv-ovxai/bin/pip install openvino-xai==1.1.0
    .venv-ovxai/bin/python scripts/bench/compare_openvino_xai.py --onnx FULL.onnx \
        --target-layer NODE --models-dir DIR --model NAME IMAGE_224.png …

The images must already be at the model's input size (224×224 RGB), so that resizing is
not compared. OpenVINO runs in f32 (its CPU plugin otherwise uses bf16 where the CPU has
it). Pass: every cell within one uint8 step of OpenVINO XAI's value.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import openvino as ov
import openvino_xai as xai
from openvino_xai.explainer.explainer import ExplainMode

ROOT = pathlib.Path(__file__).resolve().parents[2]
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)

_compile = ov.Core.compile_model


def _compile_f32(self, model, device_name=None, config=None):
    return _compile(self, model, device_name, {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"})


ov.Core.compile_model = _compile_f32


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+")
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--target-layer", required=True, help="OpenVINO node after which ReciproCAM inserts its branch")
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "scorecam"))
    args = ap.parse_args()
    model = ov.Core().read_model(args.onnx)
    compiled = ov.Core().compile_model(model, "CPU")
    explainer = xai.Explainer(model=model, task=xai.Task.CLASSIFICATION, explain_mode=ExplainMode.WHITEBOX,
                              explain_method=xai.Method.RECIPROCAM, target_layer=args.target_layer, embed_scaling=True)
    ok = True
    for path in args.images:
        img = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB).astype(np.float32) / np.float32(255)
        x = ((img - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)[None]
        cls = int(np.argmax(compiled(x)[0]))
        theirs = explainer(x, targets=[cls], resize=False, colormap=False).saliency_map[cls].astype(np.int64)
        r = subprocess.run([args.binary, "--models-dir", args.models_dir, "explain", path, "--model", args.model,
                            "--method", "reciprocam", "--score", "logit", "--resolution", "feature",
                            "--target", str(cls), "--format", "json", "-o", "-"],
                           capture_output=True, env=dict(os.environ), check=True)
        s = json.loads(r.stdout)["explanations"][0]["saliency"]
        ours = np.asarray(s["data"], np.float64).reshape(s["height"], s["width"]) * 255
        d = float(np.abs(ours - theirs).max())
        same = float((np.floor(ours + 1e-6).astype(np.int64) == theirs).mean())
        ok &= d <= 1.0
        print(f"{pathlib.Path(path).name:36} class {cls:4}  max |Δ| {d:.3f} uint8 steps, "
              f"{same:.0%} of cells equal after truncation  {'PASS' if d <= 1.0 else 'FAIL'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
