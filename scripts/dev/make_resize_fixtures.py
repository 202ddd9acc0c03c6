#!/usr/bin/env python3
"""Writes tests/fixtures/resize/: small deterministic source images and what Pillow and
OpenCV make of them, for tests/imaging.rs to hold `imaging::preprocess` to.

Pinned (the outputs are these versions' bytes; another version may round differently):
    pillow==13.0.0  opencv-python-headless==5.0.0.93  numpy==2.4.6
Run with any Python 3: without those importable it makes .venv-resize/ (ignored by git),
installs exactly them there and re-runs itself with it.

    python3 scripts/dev/make_resize_fixtures.py

What each filter is (the manifest's `input.resize_filter`):
- pillow_bilinear: `Image.resize((w, h), Image.BILINEAR)`, what torchvision's
  `transforms.Resize` does to a PIL image. shorter_side_crop is torchvision's
  `Resize(crop_from)` (shorter side to crop_from, the other `int(crop_from * long / short)`)
  then `CenterCrop((h, w))` (offsets `int(round((H - h) / 2.0))`, Python's round: half to
  even).
- opencv_linear: `cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)`; for
  shorter_side_crop the same sizes and offsets as above, cut from cv2.resize's output.
The sources are saved as PNG and read back, so the tests start from exactly these bytes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

PINNED = ["pillow==13.0.0", "opencv-python-headless==5.0.0.93", "numpy==2.4.6"]
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "resize"
VENV = ROOT / ".venv-resize"


def ensure_pinned():
    """Re-runs this script in .venv-resize unless the pinned versions are importable."""
    try:
        import cv2
        import numpy
        import PIL

        have = {"pillow": PIL.__version__, "opencv-python-headless": cv2.__version__, "numpy": numpy.__version__}
        want = dict(p.split("==") for p in PINNED)
        # opencv-python's wheel version has a fourth (build) number that cv2 does not report.
        want["opencv-python-headless"] = ".".join(want["opencv-python-headless"].split(".")[:3])
        if have == want:
            return
        if os.environ.get("RESIZE_FIXTURES_REEXEC"):
            sys.exit(f"{VENV} has {have}, not {want}")
    except ImportError:
        if os.environ.get("RESIZE_FIXTURES_REEXEC"):
            raise
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINNED], check=True)
    os.execve(str(python), [str(python), __file__, *sys.argv[1:]], {**os.environ, "RESIZE_FIXTURES_REEXEC": "1"})


ensure_pinned()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def source(w, h, seed):
    """Gradients (every level), sharp edges (a checkerboard, one-pixel lines, a disc) and
    uniform noise in one block: each part stresses a different bit of the arithmetic,
    and only the noise block costs PNG bytes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (x * 255 // max(w - 1, 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(h - 1, 1)).astype(np.uint8)
    img[..., 2] = ((x + y) * 7 % 256).astype(np.uint8)
    # A checkerboard of 3-pixel squares in the top right quarter.
    q = (x >= w // 2) & (y < h // 2)
    board = ((x // 3 + y // 3) % 2 == 0)
    img[q & board] = (255, 255, 255)
    img[q & ~board] = (0, 0, 0)
    # One-pixel lines every 11 pixels in the bottom left quarter.
    lines = (x < w // 2) & (y >= h // 2) & ((x % 11 == 0) | (y % 11 == 0))
    img[lines] = (255, 0, 128)
    # A disc, its edge aliased on purpose.
    disc = (x - w * 0.7) ** 2 + (y - h * 0.7) ** 2 < (min(w, h) * 0.15) ** 2
    img[disc] = (10, 240, 30)
    # Noise in the top left quarter (all of it on small images).
    nw, nh = (w, h) if w * h <= 1200 else (w // 2, h // 2)
    img[:nh, :nw] = rng.integers(0, 256, (nh, nw, 3), dtype=np.uint8)
    return img


def torchvision_crop_geometry(w, h, crop_from, out_w, out_h):
    """torchvision's Resize(int) then CenterCrop: the resized size and the crop's corner."""
    if w <= h:
        rw, rh = crop_from, int(crop_from * h / w)
    else:
        rw, rh = int(crop_from * w / h), crop_from
    left = int(round((rw - out_w) / 2.0))
    top = int(round((rh - out_h) / 2.0))
    return rw, rh, left, top


def pillow(img, w, h):
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def opencv(img, w, h):
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


SOURCES = {
    # name: (width, height, seed)
    "src_300x200": (300, 200, 1),
    "src_20x30": (20, 30, 2),
    "src_257x131": (257, 131, 3),
    "src_300x300": (300, 300, 4),
    "src_128x96": (128, 96, 5),
    "src_200x150": (200, 150, 6),
    "src_131x257": (131, 257, 7),
    "src_90x250": (90, 250, 8),
}

# (case, source, resize, width, height, crop_from)
CASES = [
    ("down_300x200_to_224", "src_300x200", "stretch", 224, 224, None),
    ("down_300x200_to_64x48", "src_300x200", "stretch", 64, 48, None),
    ("up_20x30_to_224", "src_20x30", "stretch", 224, 224, None),
    ("odd_257x131_to_97x53", "src_257x131", "stretch", 97, 53, None),
    ("big_ratio_300_to_16", "src_300x300", "stretch", 16, 16, None),
    # Exactly half each way: OpenCV switches INTER_LINEAR to its 2×2 area average here.
    ("half_128x96_to_64x48", "src_128x96", "stretch", 64, 48, None),
    ("crop_300x200_256_224", "src_300x200", "shorter_side_crop", 224, 224, 256),
    # 341 wide after the resize: the centre crop's left edge is round(58.5) = 58.
    ("crop_200x150_256_224", "src_200x150", "shorter_side_crop", 224, 224, 256),
    # Portrait, 251 high after the resize: the top edge is round(69.5) = 70.
    ("crop_131x257_128_112", "src_131x257", "shorter_side_crop", 112, 112, 128),
    ("crop_257x131_160_97x53", "src_257x131", "shorter_side_crop", 97, 53, 160),
    ("crop_up_20x30_64_56", "src_20x30", "shorter_side_crop", 56, 56, 64),
    # Pillow runs its vertical pass first when it removes more than twice as many rows as
    # the horizontal pass removes columns (each pass rounds to bytes, so order shows).
    ("vfirst_131x257_to_112x96", "src_131x257", "stretch", 112, 96, None),
    # 64×177 after the resize (vertical first again), top edge round(60.5) = 60.
    ("vfirst_crop_90x250_64_56", "src_90x250", "shorter_side_crop", 56, 56, 64),
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.glob("*.png"):
        f.unlink()
    sources = {}
    for name, (w, h, seed) in SOURCES.items():
        Image.fromarray(source(w, h, seed)).save(OUT / f"{name}.png", optimize=True)
        sources[name] = np.asarray(Image.open(OUT / f"{name}.png").convert("RGB"))
    cases = []
    for case, src, resize, w, h, crop_from in CASES:
        img = sources[src]
        sh, sw = img.shape[:2]
        for filt, fn in (("pillow_bilinear", pillow), ("opencv_linear", opencv)):
            if resize == "stretch":
                out = fn(img, w, h)
            else:
                rw, rh, left, top = torchvision_crop_geometry(sw, sh, crop_from, w, h)
                out = fn(img, rw, rh)[top : top + h, left : left + w]
            assert out.shape == (h, w, 3), (case, filt, out.shape)
            expected = f"{case}.{filt}.png"
            Image.fromarray(np.ascontiguousarray(out)).save(OUT / expected, optimize=True)
            entry = {"name": case, "filter": filt, "source": f"{src}.png", "resize": resize, "width": w, "height": h}
            if crop_from is not None:
                entry["crop_from"] = crop_from
            entry["expected"] = expected
            cases.append(entry)
    manifest = {
        "generator": "scripts/dev/make_resize_fixtures.py",
        "versions": dict(p.split("==") for p in PINNED),
        "cases": cases,
    }
    (OUT / "cases.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"{len(cases)} cases, {len(SOURCES)} sources, {total} bytes in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
