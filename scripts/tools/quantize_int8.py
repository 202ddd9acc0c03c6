#!/usr/bin/env python3
"""Make an int8 package beside an fp32 scorecam package, and measure how close its maps are.

    python scripts/tools/quantize_int8.py PACKAGE --calibrate DIR [--out PACKAGE-int8]
        [--calibration 64] [--every 1] [--fidelity 16] [--check DIR] [--preset official]
        [--min-pearson 0.95] [--force] [--binary target/release/scorecam]

PACKAGE is a model package folder (models/NAME: extractor.onnx, head.onnx, labels.txt,
model.toml), for example one split_model.py wrote (`split_model.py ... --int8 --calibrate
DIR` runs this tool on the package it has just written). DIR is a folder of photos like
the ones the model will explain (*.jpg, *.jpeg, *.png, *.webp, *.bmp, *.tif(f), any case;
sorted by name, every --every-th, the first --calibration of those).

1. Calibration tensors: the photos are decoded and preprocessed by the scorecam binary
   itself (`scorecam preprocess --model PACKAGE`), so by the package's model.toml exactly as
   an explanation does (resize mode and filter, crop, letterbox, channels, EXIF orientation,
   mean and std): there is no second preprocessing here to drift from the service's.
2. The extractor is quantised with ONNX Runtime's static quantisation: quant_pre_process,
   then quantize_static with QuantFormat.QDQ, per-channel int8 weights, uint8 activations,
   MinMax calibration on those tensors. The head is copied as it is (fp32: it is cheap next
   to the extractor, and it turns the features into the scores that weigh the maps).
3. Fidelity: the first --fidelity calibration photos (or the photos of --check DIR, which
   the calibration did not see: then the figures say held_out = true) are explained with
   the real scorecam binary, Score-CAM with --preset, once by PACKAGE (its top class) and
   once by the int8 package for the same class, one after the other (so the two packages'
   times are interleaved). The maps (at the model's input size) are compared: Pearson r,
   IoU of the top-20 % pixels, and whether the top-1 classes agree; the worst photo is the
   one with the least r. The real binary rather than a transcription of Score-CAM: the
   figures are those of the maps users get (the preset, the exact savings and the batching
   included), and the tool needs the binary for step 1 anyway.
4. Gate: a mean Pearson r below --min-pearson (default 0.95) is refused (exit status 3: 1 is
   an error) and nothing is
   written, unless --force (then model.toml says forced = true).
5. Written to --out (default: PACKAGE-int8 beside PACKAGE): extractor.onnx (int8 QDQ),
   head.onnx and labels.txt (copied), model.toml (PACKAGE's, its description and source
   saying what was done, and a [quantization] section with the measured figures, which
   GET /models, `scorecam models` and the web page show), and fidelity.csv (per photo: r,
   IoU, classes, both explanation times). The files are made in a temporary folder and
   copied in with model.toml last, so a running server watching the models folder never
   sees the package without its figures.

Needs onnx, onnxruntime, numpy (scripts/setup/requirements_tools.txt) and a built scorecam
binary with ONNX Runtime (scripts/setup/ort.sh; `cargo build --release`). The explanations
cost what any explanation costs (a ResNet-50 or ViT-B/16 Score-CAM map is a minute or two on
two cores): --fidelity sets how many pairs are run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
DEFAULT_MIN_PEARSON = 0.95
FILES = ("extractor.onnx", "head.onnx", "labels.txt", "model.toml")


class QuantizeError(Exception):
    pass


# --------------------------------------------------------------------------- map comparisons


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else float("nan")


def top_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.2) -> float:
    """IoU of the top round(fraction·N) pixels of each map, ranked descending with ties by
    index (the service's `faithfulness::top_iou` takes ceil(fraction·N): one pixel more
    in 10,035 at 224×224)."""
    k = max(1, int(round(fraction * a.size)))
    ta = set(np.argsort(-a.ravel(), kind="stable")[:k].tolist())
    tb = set(np.argsort(-b.ravel(), kind="stable")[:k].tolist())
    return len(ta & tb) / len(ta | tb)


# --------------------------------------------------------------------------- the binary


def default_binary() -> Path:
    if os.environ.get("SCORECAM_BIN"):
        return Path(os.environ["SCORECAM_BIN"])
    built = [p for p in (ROOT / "target" / profile / "scorecam" for profile in ("release", "debug")) if p.exists()]
    # The newer of the two: an older build may predate `scorecam preprocess`.
    return max(built, key=lambda p: p.stat().st_mtime) if built else ROOT / "target" / "release" / "scorecam"


def scorecam(binary: Path, package: Path, *args) -> subprocess.CompletedProcess:
    """Runs the binary over the models folder holding `package`, from the repository root
    (where it finds .ort/ and config/)."""
    cmd = [str(binary), "--models-dir", str(package.resolve().parent), *map(str, args)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise QuantizeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr.strip()[-2000:]}")
    return r


def preprocessed(binary: Path, package: Path, photos: list[Path], out: Path) -> np.ndarray:
    scorecam(binary, package, "preprocess", *photos, "--model", package.name, "-o", out)
    x = np.load(out)
    if x.shape[0] != len(photos) or x.dtype != np.float32:
        raise QuantizeError(f"scorecam preprocess gave {x.dtype} {x.shape} for {len(photos)} photos")
    return x


def explain(binary: Path, package: Path, photo: Path, preset: str, target: int | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "map.json"
        args = ["explain", photo, "--model", package.name, "--method", "scorecam", "--preset", preset,
                "--format", "json", "--resolution", "model", "-o", out]
        if target is not None:
            args += ["--target", target]
        scorecam(binary, package, *args)
        return json.loads(out.read_text())


# --------------------------------------------------------------------------- quantisation


def quantize_extractor(src: Path, dst: Path, tensors: np.ndarray, work: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Tensors(CalibrationDataReader):
        def __init__(self):
            self.items = iter(range(len(tensors)))

        def get_next(self):
            i = next(self.items, None)
            return None if i is None else {"input": tensors[i : i + 1]}

    pre = work / "extractor.pre.onnx"
    # ONNX shape inference and ORT's graph clean-up; no symbolic shape inference (it needs sympy,
    # and the packages declare concrete dims but for the batch).
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(dst), Tensors(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    pre.unlink()


# --------------------------------------------------------------------------- model.toml


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def set_top_level(text: str, key: str, value: str) -> str:
    """Replaces `key = ...` before the first table header (the manifest's description and
    source are one-line strings, as split_model.py and the exporters write them)."""
    head, sep, rest = text.partition("\n[")
    pattern = re.compile(rf"^{key}\s*=.*$", re.M)
    if not pattern.search(head):
        raise QuantizeError(f"model.toml has no top-level {key} line to update")
    return pattern.sub(lambda _: f"{key} = {toml_str(value)}", head, count=1) + sep + rest


def quantization_toml(reference: str, calibration: int, fig: dict, min_pearson: float, forced: bool) -> str:
    return "\n".join([
        "",
        "# An approximate package: its extractor is quantised to int8, so its maps are close to",
        f"# {reference}'s, not equal (figures measured by scripts/tools/quantize_int8.py).",
        "[quantization]",
        'kind = "int8"',
        f"reference = {toml_str(reference)}",
        f"method = {toml_str('extractor: ONNX Runtime static quantisation, QDQ, per-channel int8 weights, uint8 activations, MinMax calibration; head fp32')}",
        f"calibration_photos = {calibration}",
        "",
        "[quantization.fidelity]",
        f"photos = {fig['photos']}",
        f"held_out = {'true' if fig['held_out'] else 'false'}",
        f"preset = {toml_str(fig['preset'])}",
        f"pearson_mean = {fig['pearson_mean']:.4f}",
        f"pearson_min = {fig['pearson_min']:.4f}",
        f"top20_iou_mean = {fig['top20_iou_mean']:.4f}",
        f"top20_iou_min = {fig['top20_iou_min']:.4f}",
        f"worst_photo = {toml_str(fig['worst_photo'])}",
        f"top1_agree = {fig['top1_agree']}",
        f"min_pearson_mean = {min_pearson:g}",
        f"forced = {'true' if forced else 'false'}",
        "",
    ])


def without_engine(text: str) -> str:
    """model.toml without its [engine] section: the batch size and subnormal flush split_model.py
    measured on the fp32 graphs say nothing about the int8 ones (the engine's defaults apply)."""
    return re.sub(r"(?ms)^\[engine\][^\n]*\n.*?(?=^\[|\Z)", "", text)


def int8_manifest(text: str, manifest: dict, reference: str, calibration: int, fig: dict,
                  min_pearson: float, forced: bool) -> str:
    text = without_engine(text)
    text = set_top_level(text, "description", manifest["description"]
                         + f"; extractor quantised to int8 (approximate: maps close to {reference}'s, see [quantization])")
    text = set_top_level(text, "source", manifest["source"]
                         + f"; quantised by scripts/tools/quantize_int8.py (ONNX Runtime static QDQ, per-channel, "
                           f"{calibration} calibration photos)")
    return text.rstrip("\n") + "\n" + quantization_toml(reference, calibration, fig, min_pearson, forced)


# --------------------------------------------------------------------------- fidelity


def rounded(fig: dict) -> dict:
    """The figures as model.toml holds them (4 decimals), so the gate judges what is written."""
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in fig.items()}


def measure(binary: Path, fp32: Path, int8: Path, photos: list[Path], preset: str, held_out: bool,
            log=print) -> tuple[dict, list[dict]]:
    rows = []
    for i, photo in enumerate(photos, 1):
        ref = explain(binary, fp32, photo, preset)
        cls = ref["explanations"][0]["target"]["index"]
        q = explain(binary, int8, photo, preset, target=cls)
        a = np.array(ref["explanations"][0]["saliency"]["data"], np.float64)
        b = np.array(q["explanations"][0]["saliency"]["data"], np.float64)
        row = {
            "photo": photo.name,
            "class": cls,
            "int8_top1": q["predictions"][0]["index"],
            "pearson": pearson(a, b),
            "top20_iou": top_iou(a, b),
            "fp32_s": ref["timings_ms"]["total_ms"] / 1e3,
            "int8_s": q["timings_ms"]["total_ms"] / 1e3,
            "fp32_passes": ref["stats"]["forward_passes"],
            "int8_passes": q["stats"]["forward_passes"],
        }
        if not np.isfinite(row["pearson"]):
            row["pearson"] = 1.0 if np.array_equal(a, b) else 0.0  # a flat map: equal or not
        rows.append(row)
        log(f"  [{i}/{len(photos)}] {photo.name}: class {cls}, r {row['pearson']:.4f}, IoU {row['top20_iou']:.3f}, "
            f"fp32 {row['fp32_s']:.2f} s, int8 {row['int8_s']:.2f} s")
    r = np.array([x["pearson"] for x in rows])
    iou = np.array([x["top20_iou"] for x in rows])
    worst = rows[int(np.argmin(r))]
    fig = {
        "photos": len(rows),
        "held_out": held_out,
        "preset": preset,
        "pearson_mean": float(r.mean()),
        "pearson_min": float(r.min()),
        "top20_iou_mean": float(iou.mean()),
        "top20_iou_min": float(iou.min()),
        "worst_photo": Path(worst["photo"]).stem,
        "top1_agree": sum(x["int8_top1"] == x["class"] for x in rows),
    }
    return rounded(fig), rows


# --------------------------------------------------------------------------- command line


def photo_list(folder: Path, every: int, limit: int) -> list[Path]:
    if not folder.is_dir():
        raise QuantizeError(f"{folder} is not a folder of photos")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS)
    photos = photos[::every][:limit] if limit else photos[::every]
    if not photos:
        raise QuantizeError(f"no photos ({', '.join(sorted(PHOTO_EXTENSIONS))}) in {folder}")
    return photos


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package", type=Path, metavar="PACKAGE", help="the fp32 model package folder (models/NAME)")
    ap.add_argument("--calibrate", type=Path, required=True, metavar="DIR", help="folder of calibration photos")
    ap.add_argument("--out", type=Path, metavar="DIR", help="the int8 package folder (default: PACKAGE-int8 beside it)")
    ap.add_argument("--calibration", type=int, default=64, metavar="N",
                    help="calibrate on at most N photos (default: %(default)s; 0 = all)")
    ap.add_argument("--every", type=int, default=1, metavar="K", help="take every K-th photo of DIR by name (default: 1)")
    ap.add_argument("--fidelity", type=int, default=16, metavar="N",
                    help="compare the maps on N photos: the first N calibration photos, or of --check "
                         "(default: %(default)s; each costs two Score-CAM explanations)")
    ap.add_argument("--check", type=Path, metavar="DIR",
                    help="compare the maps on these photos instead (not seen by the calibration: held_out = true)")
    ap.add_argument("--preset", default="official", choices=["official", "pytorch_grad_cam", "torchcam"],
                    help="the Score-CAM preset of the compared maps (default: %(default)s)")
    ap.add_argument("--min-pearson", type=float, default=DEFAULT_MIN_PEARSON, metavar="R",
                    help="refuse an int8 package whose mean Pearson r to the fp32 maps is below R (default: %(default)s)")
    ap.add_argument("--force", action="store_true",
                    help="write the package even below --min-pearson (model.toml then says forced = true), "
                         "and replace the files of an existing --out")
    ap.add_argument("--binary", type=Path, default=None,
                    help="the scorecam binary (default: $SCORECAM_BIN, else the newer of target/release/scorecam and target/debug/scorecam)")
    args = ap.parse_args(argv)
    if args.calibration < 0 or args.every < 1 or args.fidelity < 1:
        ap.error("--calibration must be >= 0, --every and --fidelity >= 1")
    if not -1.0 <= args.min_pearson <= 1.0:
        ap.error("--min-pearson must be between -1 and 1")
    args.package = args.package.resolve()
    args.out = (args.out or args.package.with_name(args.package.name + "-int8")).resolve()
    args.binary = (args.binary or default_binary()).resolve()
    return args


def run(args, log=print) -> int:
    pkg, out = args.package, args.out
    for name in FILES:
        if not (pkg / name).is_file():
            raise QuantizeError(f"{pkg} is not a model package: {name} is missing")
    text = (pkg / "model.toml").read_text(encoding="utf-8")
    manifest = tomllib.loads(text)
    if "quantization" in manifest:
        raise QuantizeError(f"{pkg} is already quantised ([quantization] in its model.toml): give the fp32 package")
    if out == pkg:
        raise QuantizeError("--out must differ from PACKAGE")
    if out.exists() and any((out / n).exists() for n in FILES) and not args.force:
        raise QuantizeError(f"{out} already holds a package (--force replaces it)")
    if not args.binary.exists():
        raise QuantizeError(f"no scorecam binary at {args.binary}: build it (cargo build --release) or give --binary")

    calibration = photo_list(args.calibrate, args.every, args.calibration)
    checked = photo_list(args.check, 1, args.fidelity) if args.check else calibration[: args.fidelity]
    with tempfile.TemporaryDirectory(prefix="quantize_int8-") as tmp:
        work = Path(tmp)
        # The staged package has the output's name (so the binary serves it under that
        # name) in a models folder of its own.
        stage = work / "models" / out.name
        stage.mkdir(parents=True)
        log(f"preprocessing {len(calibration)} calibration photos from {args.calibrate} with {args.binary.name} "
            f"(by {pkg.name}/model.toml)")
        tensors = preprocessed(args.binary, pkg, calibration, work / "calibration.npy")
        log(f"quantising {pkg.name}/extractor.onnx: static QDQ, per-channel int8 weights, uint8 activations, "
            f"{len(calibration)} × {'×'.join(map(str, tensors.shape[1:]))} calibration tensors")
        quantize_extractor(pkg / "extractor.onnx", stage / "extractor.onnx", tensors, work)
        for name in ("head.onnx", "labels.txt", "model.toml"):
            shutil.copy(pkg / name, stage / name)

        log(f"comparing Score-CAM maps ({args.preset}) of {pkg.name} and the int8 package on {len(checked)} "
            f"{'held-out' if args.check else 'calibration'} photos (the scorecam binary, one pair at a time)")
        fig, rows = measure(args.binary, pkg, stage, checked, args.preset, held_out=args.check is not None, log=log)
        fp32_s, int8_s = sum(r["fp32_s"] for r in rows), sum(r["int8_s"] for r in rows)
        log(f"fidelity: Pearson r mean {fig['pearson_mean']:.4f} (least {fig['pearson_min']:.4f}, "
            f"{fig['worst_photo']}), top-20 % IoU mean {fig['top20_iou_mean']:.4f} (least {fig['top20_iou_min']:.4f}), "
            f"top-1 agrees on {fig['top1_agree']}/{fig['photos']}")
        log(f"explanation time, interleaved: fp32 {fp32_s:.2f} s, int8 {int8_s:.2f} s in all "
            f"({fp32_s / int8_s:.2f}× by total time)")
        below = fig["pearson_mean"] < args.min_pearson
        if below and not args.force:
            log(f"refused: mean Pearson r {fig['pearson_mean']:.4f} is below --min-pearson {args.min_pearson:g}; "
                f"nothing written (--force writes it anyway, marked forced)")
            return 3
        if below:
            log(f"warning: mean Pearson r {fig['pearson_mean']:.4f} is below --min-pearson {args.min_pearson:g}; "
                "written because of --force (model.toml says forced = true)")
        (stage / "model.toml").write_text(
            int8_manifest(text, manifest, pkg.name, len(calibration), fig, args.min_pearson, below), encoding="utf-8")
        with (stage / "fidelity.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("extractor.onnx", "head.onnx", "labels.txt", "fidelity.csv", "model.toml"):  # model.toml last
            shutil.copy(stage / name, out / name)
    log(f"wrote {out} (extractor.onnx {os.path.getsize(out / 'extractor.onnx') / 1e6:.1f} MB int8, was "
        f"{os.path.getsize(pkg / 'extractor.onnx') / 1e6:.1f} MB)")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except QuantizeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
