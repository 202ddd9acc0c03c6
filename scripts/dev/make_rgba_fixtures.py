#!/usr/bin/env python3
"""Writes tests/fixtures/rgba/: an RGBA photo with varying alpha and what the reference
pipelines feed a 4-channel (RGBA) model from it, for tests/imaging.rs.

    .venv-verify/bin/python scripts/dev/make_rgba_fixtures.py   # Pillow 13.0.0, opencv-python-headless

- pillow_bilinear: `Image.open(p).convert("RGBA").resize((w, h), Image.BILINEAR)` (Pillow
  premultiplies the colours by alpha for the resize: "RGBa"); shorter_side_crop is
  torchvision's Resize(crop_from) + CenterCrop; letterbox resizes to the inner size and
  pastes onto a canvas of pad_value in all four channels.
- opencv_linear: `cv2.resize(rgba, (w, h), interpolation=cv2.INTER_LINEAR)` (no
  premultiplication).
Each output is saved as an RGBA PNG; cases.json lists them.
"""

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "rgba"


def photo() -> Image.Image:
    """37×29 RGBA: colour ramps and noise; alpha 0 in a band, 255 in another, a ramp between."""
    rng = np.random.default_rng(7)
    h, w = 29, 37
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([30 + 200 * xx / (w - 1), 220 - 180 * yy / (h - 1), 90 + 60 * np.sin(xx / 3)], -1)
    rgb = np.clip(np.round(rgb + rng.normal(0, 20, rgb.shape)), 0, 255)
    alpha = np.clip(np.round(255 * (xx - 5) / (w - 12)), 0, 255)
    alpha[:, :5] = 0
    alpha[:4, :] = 255
    return Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8), "RGBA")


def letterbox(img: Image.Image, size: int, pad: int) -> Image.Image:
    w, h = img.size
    s = min(size / w, size / h)
    nw, nh = max(1, min(size, round(w * s))), max(1, min(size, round(h * s)))
    canvas = Image.new("RGBA", (size, size), (pad,) * 4)
    canvas.paste(img.resize((nw, nh), Image.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    return canvas


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    src = photo()
    src.save(OUT / "photo.png")
    img = Image.open(OUT / "photo.png").convert("RGBA")
    w, h = img.size
    # torchvision Resize(20) + CenterCrop(16): shorter side 29 -> 20, longer int(20 * 37 / 29) = 25.
    resized = img.resize((int(20 * w / h), 20), Image.BILINEAR)
    left, top = int(round((resized.width - 16) / 2.0)), int(round((resized.height - 16) / 2.0))
    cases = {
        "stretch_16x12.pillow_bilinear": (dict(resize="stretch", width=16, height=12), img.resize((16, 12), Image.BILINEAR)),
        "stretch_same.pillow_bilinear": (dict(resize="stretch", width=w, height=h), img.resize((w, h), Image.BILINEAR)),
        "crop_20_16.pillow_bilinear": (dict(resize="shorter_side_crop", crop_from=20, width=16, height=16),
                                       resized.crop((left, top, left + 16, top + 16))),
        "letterbox_24.pillow_bilinear": (dict(resize="letterbox", width=24, height=24, pad_value=114), letterbox(img, 24, 114)),
        "stretch_16x12.opencv_linear": (dict(resize="stretch", width=16, height=12),
                                        Image.fromarray(cv2.resize(np.asarray(img), (16, 12), interpolation=cv2.INTER_LINEAR), "RGBA")),
    }
    listing = []
    for name, (spec, out) in cases.items():
        out.save(OUT / f"{name}.png")
        listing.append(dict(name=name, filter=name.split(".")[1], **spec))
    (OUT / "cases.json").write_text(json.dumps(listing, indent=1) + "\n")
    print(f"wrote {len(listing)} cases to {OUT}")


if __name__ == "__main__":
    main()
