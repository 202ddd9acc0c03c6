#!/usr/bin/env python3
"""Writes tests/fixtures/lanczos/: small one-byte images and Pillow's
`Image.fromarray(a).resize((w, h), Image.LANCZOS)` of them, which the
`pytorch_cnn_visualizations` Score-CAM preset must reproduce byte for byte (the reference
code enlarges its uint8 map that way; `Image.ANTIALIAS` was Pillow's older name of LANCZOS).

Pinned: pillow==13.0.0, numpy (any 2.x). Run with a Python that has them, e.g. the one
scripts/bench/verify_gradient_methods.sh sets up:

    .venv-verify/bin/python scripts/dev/make_lanczos_fixtures.py

Only enlargements (and unchanged sides) are written: the preset never shrinks a map.
"""

import json
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "lanczos"

# (name, source width, height, output width, height, kind)
CASES = [
    ("cam_7x7_to_224", 7, 7, 224, 224, "cam"),
    ("noise_7x7_to_224", 7, 7, 224, 224, "noise"),
    ("cam_14x14_to_224", 14, 14, 224, 224, "cam"),
    ("noise_7x5_to_100x37", 7, 5, 100, 37, "noise"),
    ("steps_3x2_to_31x9", 3, 2, 31, 9, "steps"),
    ("noise_6x1_to_6x13", 6, 1, 6, 13, "noise"),
    ("noise_1x1_to_5x5", 1, 1, 5, 5, "noise"),
]


def source(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "noise":
        return rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    if kind == "steps":
        # Hard 0/255 edges: Lanczos rings past both ends, so clipping is exercised.
        return np.array([[0, 255, 0], [255, 0, 255]], dtype=np.uint8)[:h, :w]
    # A CAM-like blob: ReLU, min-max and truncation to bytes, as the preset makes it.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cam = np.exp(-((xx - w * 0.6) ** 2 + (yy - h * 0.3) ** 2) / (0.1 * w * h)) + 0.3 * rng.random((h, w), dtype=np.float32)
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    return np.uint8(cam * 255)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    manifest = {"pillow": PIL.__version__, "cases": []}
    for name, w, h, ow, oh, kind in CASES:
        src = source(kind, w, h, rng)
        out = np.asarray(Image.fromarray(src).resize((ow, oh), Image.LANCZOS))
        Image.fromarray(src).save(OUT / f"{name}.src.png")
        Image.fromarray(out).save(OUT / f"{name}.out.png")
        manifest["cases"].append({"name": name, "width": w, "height": h, "out_width": ow, "out_height": oh})
    (OUT / "cases.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(CASES)} cases to {OUT} (Pillow {PIL.__version__})")


if __name__ == "__main__":
    main()
