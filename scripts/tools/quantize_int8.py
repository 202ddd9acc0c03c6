"""Makes models/efficientnet-lite0-int8/: the default model's extractor quantised to int8
(ONNX Runtime static quantisation, QDQ, per-channel weights, calibrated on sample photos),
with the fp32 head, labels and manifest copied. Needs onnx, onnxruntime, numpy, pillow.

    python scripts/tools/quantize_int8.py --images DIR [--calibration 64]

DIR is a folder of sample photos (*.JPEG); the shipped model was calibrated on 64 of the
200 ImageNet photos that docs/sample-images.md describes. Without --images the
SCORECAM_IMAGES environment variable names the folder.
"""
import argparse
import os
import pathlib
import shutil
import tomllib

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[2]
SRC = ROOT / "models/efficientnet-lite0"
DST = ROOT / "models/efficientnet-lite0-int8"


class Photos(CalibrationDataReader):
    def __init__(self, paths, mean, std):
        self.items = iter(paths)
        self.mean, self.std = np.array(mean, np.float32), np.array(std, np.float32)

    def get_next(self):
        path = next(self.items, None)
        if path is None:
            return None
        img = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
        x = (np.asarray(img, np.float32) / 255.0 - self.mean) / self.std
        return {"input": x.transpose(2, 0, 1)[None].astype(np.float32)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=os.environ.get("SCORECAM_IMAGES"),
                    help="folder of sample photos, *.JPEG (default: $SCORECAM_IMAGES)")
    ap.add_argument("--calibration", type=int, default=64, help="photos used for calibration")
    args = ap.parse_args()
    if not args.images:
        ap.error("no photo folder: pass --images DIR or set SCORECAM_IMAGES (see docs/sample-images.md)")
    manifest = tomllib.loads((SRC / "model.toml").read_text())
    # Every other photo from the first 2·N, so calibration and the fidelity check (which
    # uses the odd ones) do not share images.
    photos = sorted(pathlib.Path(args.images).glob("*.JPEG"))[: 2 * args.calibration : 2]
    if not photos:
        ap.error(f"no *.JPEG photos in {args.images}")
    DST.mkdir(exist_ok=True)
    pre = DST / "extractor.pre.onnx"
    quant_pre_process(str(SRC / "extractor.onnx"), str(pre))
    quantize_static(
        str(pre),
        str(DST / "extractor.onnx"),
        Photos(photos, manifest["input"]["mean"], manifest["input"]["std"]),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    pre.unlink()
    shutil.copy(SRC / "head.onnx", DST / "head.onnx")
    shutil.copy(SRC / "labels.txt", DST / "labels.txt")
    text = (SRC / "model.toml").read_text()
    text = text.replace(
        manifest["description"],
        manifest["description"] + "; extractor quantised to int8 (approximate: see its README for fidelity)",
    )
    text = text.replace(
        manifest["source"],
        manifest["source"] + f"; quantised by scripts/tools/quantize_int8.py (ONNX Runtime static QDQ, per-channel, {len(photos)} calibration photos)",
    )
    (DST / "model.toml").write_text(text)
    print("wrote", DST, [p.name for p in DST.iterdir()])


if __name__ == "__main__":
    main()
