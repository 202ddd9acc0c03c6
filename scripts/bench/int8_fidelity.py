"""Fidelity of the int8 model's Score-CAM maps to the fp32 model's, on the sample photos
that calibration did not see. Not part of the test suite (it needs a folder of sample
photos, which the repository does not ship: docs/sample-images.md).

    python scripts/bench/int8_fidelity.py --images DIR [--limit N] [--preset official] [--out docs/int8]

Without --images the SCORECAM_IMAGES environment variable names the folder.

For each photo: `scorecam explain` with the fp32 model (its top class), then with the int8
model for the same class. Per photo it records Pearson r and top-20 % IoU between the two
224×224 maps, whether the top-1 classes agree, both models' top-1 correctness (index.tsv)
and both explanation times. Writes OUT/fidelity.csv and OUT/summary.md. Needs numpy.
"""
import argparse
import csv
import json
import os
import pathlib
import subprocess
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
FP32, INT8 = "efficientnet-lite0", "efficientnet-lite0-int8"


def explain(binary, image, model, preset, target=None):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [str(binary), "explain", str(image), "--model", model, "--preset", preset, "--format", "json",
               "--resolution", "model", "-o", out.name]
        if target is not None:
            cmd += ["--target", str(target)]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        return json.loads(pathlib.Path(out.name).read_text())


def top_iou(a, b, fraction=0.2):
    """IoU of the top round(fraction·N) pixels of each map, ranked descending with ties by
    index (the service's `faithfulness::top_iou` takes ceil(fraction·N): one pixel more
    in 10,035 at 224×224)."""
    k = int(round(fraction * a.size))
    ta = set(np.argsort(-a, kind="stable")[:k].tolist())
    tb = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(ta & tb) / len(ta | tb)


def pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=os.environ.get("SCORECAM_IMAGES"),
                    help="folder of sample photos, *.JPEG, with an optional index.tsv (default: $SCORECAM_IMAGES)")
    ap.add_argument("--calibration", type=int, default=64, help="as given to quantize_int8.py: those photos are left out")
    ap.add_argument("--limit", type=int, default=0, help="at most this many photos (0: all)")
    ap.add_argument("--preset", default="official")
    ap.add_argument("--out", default=str(ROOT / "docs/int8"))
    ap.add_argument("--binary", default=str(ROOT / "target/release/scorecam"))
    args = ap.parse_args()
    if not args.images:
        ap.error("no photo folder: pass --images DIR or set SCORECAM_IMAGES (see docs/sample-images.md)")

    images = pathlib.Path(args.images)
    photos = sorted(images.glob("*.JPEG"))
    if not photos:
        ap.error(f"no *.JPEG photos in {images}")
    calibration = set(photos[: 2 * args.calibration : 2])
    photos = [p for p in photos if p not in calibration]
    if args.limit:
        photos = photos[: args.limit]
    labels = {}
    if (images / "index.tsv").exists():
        for row in csv.DictReader((images / "index.tsv").open(), delimiter="\t"):
            labels[row["file"]] = int(row["class_index"])

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, photo in enumerate(photos, 1):
        ref = explain(args.binary, photo, FP32, args.preset)
        cls = ref["explanations"][0]["target"]["index"]
        q = explain(args.binary, photo, INT8, args.preset, target=cls)
        a = np.array(ref["explanations"][0]["saliency"]["data"], np.float64)
        b = np.array(q["explanations"][0]["saliency"]["data"], np.float64)
        truth = labels.get(photo.name)
        row = {
            "file": photo.name,
            "class": cls,
            "pearson": pearson(a, b),
            "top20_iou": top_iou(a, b),
            "top1_agree": int(q["predictions"][0]["index"] == cls),
            "fp32_correct": "" if truth is None else int(cls == truth),
            "int8_correct": "" if truth is None else int(q["predictions"][0]["index"] == truth),
            "fp32_s": ref["timings_ms"]["total_ms"] / 1e3,
            "int8_s": q["timings_ms"]["total_ms"] / 1e3,
            "fp32_passes": ref["stats"]["forward_passes"],
            "int8_passes": q["stats"]["forward_passes"],
        }
        rows.append(row)
        print(f"[{i}/{len(photos)}] {photo.name}: r {row['pearson']:.4f}, IoU {row['top20_iou']:.3f},"
              f" {row['fp32_s']:.2f} s vs {row['int8_s']:.2f} s", flush=True)
        with (out / "fidelity.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    col = lambda k: np.array([r[k] for r in rows], np.float64)  # noqa: E731
    r, iou = col("pearson"), col("top20_iou")
    fp32_s, int8_s = col("fp32_s"), col("int8_s")
    lines = [
        f"# int8 vs fp32 Score-CAM (`{args.preset}`), {len(rows)} photos not used for calibration",
        "",
        "| | mean | median | 5th percentile | min |",
        "|---|---:|---:|---:|---:|",
        f"| Pearson r | {r.mean():.4f} | {np.median(r):.4f} | {np.percentile(r, 5):.4f} | {r.min():.4f} |",
        f"| top-20 % IoU | {iou.mean():.4f} | {np.median(iou):.4f} | {np.percentile(iou, 5):.4f} | {iou.min():.4f} |",
        "",
        f"- top-1 class agrees with fp32 on {int(col('top1_agree').sum())} of {len(rows)} photos",
    ]
    labelled = [row for row in rows if row["fp32_correct"] != ""]
    if labelled:
        lines.append(
            f"- top-1 accuracy on these photos: fp32 {sum(r['fp32_correct'] for r in labelled)}/{len(labelled)},"
            f" int8 {sum(r['int8_correct'] for r in labelled)}/{len(labelled)}"
        )
    lines.append(
        f"- explanation time, mean: fp32 {fp32_s.mean():.2f} s, int8 {int8_s.mean():.2f} s"
        f" ({fp32_s.sum() / int8_s.sum():.2f}× by total time; passes {col('fp32_passes').mean():.0f} vs"
        f" {col('int8_passes').mean():.0f})"
    )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
