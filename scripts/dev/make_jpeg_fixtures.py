#!/usr/bin/env python3
"""Writes tests/fixtures/jpeg/: small JPEGs of every kind uploads come in, saved by Pillow,
and beside each what Pillow decodes it to, for tests/jpeg.rs to hold `imaging::decode` to
byte for byte.

Pinned (the expected bytes are this Pillow's, i.e. its bundled libjpeg-turbo's):
    pillow==13.0.0  numpy==2.4.6
Run with any Python 3: without those importable it makes .venv-jpeg/ (ignored by git),
installs exactly them there and re-runs itself with it.

    python3 scripts/dev/make_jpeg_fixtures.py

Each case is NAME.jpg and NAME.png, the PNG holding `Image.open(NAME.jpg).convert("RGB")`:
the exact pixels a torchvision pipeline starts from. For the case with an EXIF orientation
the PNG is `ImageOps.exif_transpose(im).convert("RGB")` instead (`exif_transposed` in
cases.json), since `imaging::decode` applies the orientation. Sizes are odd on purpose:
partial MCUs at the right and bottom edges are where chroma upsampling differs between
decoders.
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

PINNED = ["pillow==13.0.0", "numpy==2.4.6"]
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "jpeg"
VENV = ROOT / ".venv-jpeg"


def ensure_pinned():
    """Re-runs this script in .venv-jpeg unless the pinned versions are importable."""
    try:
        import numpy
        import PIL

        have = {"pillow": PIL.__version__, "numpy": numpy.__version__}
        if have == dict(p.split("==") for p in PINNED):
            return
        if os.environ.get("JPEG_FIXTURES_REEXEC"):
            sys.exit(f"{VENV} has {have}, not {PINNED}")
    except ImportError:
        if os.environ.get("JPEG_FIXTURES_REEXEC"):
            raise
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINNED], check=True)
    os.execve(str(python), [str(python), __file__, *sys.argv[1:]], {**os.environ, "JPEG_FIXTURES_REEXEC": "1"})


ensure_pinned()

import numpy as np  # noqa: E402
from PIL import Image, ImageOps, features  # noqa: E402


def photo(w, h, seed):
    """Something like a photo at thumbnail size: smooth gradients, a sharp-edged disc and
    bars of saturated colour (chroma edges are where upsampling shows), and a noisy patch
    (high frequencies, so the IDCT's rounding matters)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (40 + x * 200 // max(w - 1, 1)).astype(np.uint8)
    img[..., 1] = (220 - y * 180 // max(h - 1, 1)).astype(np.uint8)
    img[..., 2] = (128 + 100 * np.sin((x + 2 * y) / 5.0)).astype(np.uint8)
    disc = (x - w * 0.65) ** 2 + (y - h * 0.6) ** 2 < (min(w, h) * 0.25) ** 2
    img[disc] = (230, 20, 40)
    bars = (y >= h * 3 // 4) & (x < w // 2)
    img[bars & (x % 4 < 2)] = (0, 40, 255)
    img[bars & (x % 4 >= 2)] = (255, 255, 0)
    nw, nh = max(w // 3, 1), max(h // 3, 1)
    img[:nh, :nw] = rng.integers(0, 256, (nh, nw, 3), dtype=np.uint8)
    return img


def cmyk(w, h, seed):
    """CMYK with every channel varying (a CMYK made by convert("CMYK") has K = 0, which
    would leave half of the CMYK→RGB formula untested)."""
    rgb = photo(w, h, seed)
    k = (np.mgrid[0:h, 0:w][1] * 255 // max(w - 1, 1)).astype(np.uint8)
    return np.dstack([255 - rgb, k])


def exif_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


# name: (width, height, seed, Pillow mode, save options)
CASES = {
    "baseline_420_37x29": (37, 29, 1, "RGB", {"quality": 90, "subsampling": "4:2:0"}),
    "baseline_420_64x48": (64, 48, 2, "RGB", {"quality": 90, "subsampling": "4:2:0"}),
    "baseline_420_5x3": (5, 3, 3, "RGB", {"quality": 90, "subsampling": "4:2:0"}),
    # Low quality: large coefficients, so values overshoot 0..255 and the clamping shows.
    "baseline_420_q20_37x29": (37, 29, 4, "RGB", {"quality": 20, "subsampling": "4:2:0"}),
    "baseline_422_37x29": (37, 29, 5, "RGB", {"quality": 90, "subsampling": "4:2:2"}),
    "baseline_444_37x29": (37, 29, 6, "RGB", {"quality": 90, "subsampling": "4:4:4"}),
    "progressive_420_37x29": (37, 29, 7, "RGB", {"quality": 90, "subsampling": "4:2:0", "progressive": True}),
    "progressive_444_64x48": (64, 48, 8, "RGB", {"quality": 75, "subsampling": "4:4:4", "progressive": True}),
    "restart_420_64x48": (64, 48, 9, "RGB", {"quality": 90, "subsampling": "4:2:0", "restart_marker_blocks": 2}),
    "gray_37x29": (37, 29, 10, "L", {"quality": 90}),
    "gray_progressive_64x48": (64, 48, 11, "L", {"quality": 90, "progressive": True}),
    # Pillow writes CMYK inverted, with an Adobe marker, as Photoshop does.
    "cmyk_37x29": (37, 29, 12, "CMYK", {"quality": 90}),
    # Stored 37 wide and 29 high; orientation 6 (rotate 90° clockwise to view): 29×37.
    "exif_orientation6_420_37x29": (
        37,
        29,
        13,
        "RGB",
        {"quality": 90, "subsampling": "4:2:0", "exif": exif_orientation(6)},
    ),
}


def source(w, h, seed, mode):
    if mode == "CMYK":
        return Image.fromarray(cmyk(w, h, seed), "CMYK")
    img = Image.fromarray(photo(w, h, seed))
    return img.convert("L") if mode == "L" else img


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for f in [*OUT.glob("*.jpg"), *OUT.glob("*.png")]:
        f.unlink()
    cases = []
    for name, (w, h, seed, mode, options) in CASES.items():
        buf = io.BytesIO()
        source(w, h, seed, mode).save(buf, "JPEG", **options)
        (OUT / f"{name}.jpg").write_bytes(buf.getvalue())
        with Image.open(OUT / f"{name}.jpg") as im:
            assert im.mode == mode, (name, im.mode)
            transposed = "exif" in options
            decoded = (ImageOps.exif_transpose(im) if transposed else im).convert("RGB")
        decoded.save(OUT / f"{name}.png", optimize=True)
        cases.append(
            {
                "name": name,
                "jpeg": f"{name}.jpg",
                "expected": f"{name}.png",
                "mode": mode,
                "width": decoded.width,
                "height": decoded.height,
                "exif_transposed": transposed,
                "save_options": {k: v for k, v in options.items() if k != "exif"},
            }
        )
    manifest = {
        "generator": "scripts/dev/make_jpeg_fixtures.py",
        "expected_is": 'Image.open(jpeg).convert("RGB"), after ImageOps.exif_transpose where exif_transposed',
        "versions": {
            **dict(p.split("==") for p in PINNED),
            "libjpeg_turbo": features.version_feature("libjpeg_turbo"),
            "jpeglib": features.version("jpg"),
        },
        "cases": cases,
    }
    (OUT / "cases.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"{len(cases)} cases, {total} bytes in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
