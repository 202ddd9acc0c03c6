"""Checks scorecam's `pytorch_cnn_visualizations` Score-CAM preset against
utkuozbulak/pytorch-cnn-visualizations' Score-CAM (`src/scorecam.py`), written again here in
PyTorch + NumPy + Pillow with that code's arithmetic, on real photos. Not part of the test
suite.

    scripts/bench/verify_cnn_visualizations.sh [--images a.jpg …] [--models efficientnet-lite0 resnet18]
    scripts/bench/verify_cnn_visualizations.sh --write-fixtures   # the tests' reference maps

What the reference code does (and this transcription does the same):
- the clean pass gives the target layer's activations A (K×h×w) and the class (argmax);
- cam = np.ones((h, w), float32); for each channel k in order: upsample A_k to the input
  size with F.interpolate(bilinear, align_corners=False); skip it if constant; min-max it
  into a mask; w_k = softmax(model(x ⊙ mask))[class]; cam += w_k · A_k (float32, at h×w);
- ReLU, min-max, np.uint8(cam · 255), Image.fromarray(..).resize(input size,
  Image.ANTIALIAS = LANCZOS), np.uint8(..) / 255.
The original runs one masked input per forward pass; here they run in batches of 64, which
changes the probabilities in the last float bits only. Its resize passes (H, W) where Pillow
wants (W, H); with the square inputs used here that makes no difference.

Each photo is resized once to 224×224 with Pillow's bilinear filter and given to both as that
image. Compared: scorecam's map at the model's resolution (224×224) as bytes (round(v·255)):
the share of pixels whose byte differs, the largest difference in steps, and whether the
maps are exactly equal where the bytes agree. Pass: no pixel more than one step apart.
`--write-fixtures` writes tests/fixtures/reference/NAME.pytorch_cnn_visualizations.npy for
the four reference cases (224×224 PNGs already, so used as they are).
"""
import argparse
import json
import pathlib
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import verify_architectures as va  # noqa: E402
from verify_gradient_methods import efficientnet, library_input, resnet18, scorecam  # noqa: E402

ROOT = va.ROOT
FIXTURES = ROOT / "tests" / "fixtures" / "reference"
CASES = ["chelsea", "goldfish", "golden_retriever", "airliner"]


def reference_map(extractor, head, x, cls=None, batch=64):
    """pytorch-cnn-visualizations' Score-CAM on a split model; returns (map, class)."""
    with torch.no_grad():
        target = extractor(x)[0]
        if cls is None:
            cls = int(head(target[None]).argmax())
        size = tuple(x.shape[2:])
        masks, keep = [], []
        for k in range(target.shape[0]):
            s = F.interpolate(target[k][None, None], size=size, mode="bilinear", align_corners=False)
            if s.max() == s.min():
                continue
            masks.append((s - s.min()) / (s.max() - s.min()))
            keep.append(k)
        weights = []
        for i in range(0, len(masks), batch):
            m = torch.cat(masks[i:i + batch])
            weights.append(F.softmax(head(extractor(x * m)), dim=1)[:, cls])
        weights = torch.cat(weights).numpy() if weights else np.zeros(0, np.float32)
        a = target.numpy()
    cam = np.ones(a.shape[1:], dtype=np.float32)
    for k, w in zip(keep, weights):
        cam += w * a[k]
    cam = np.maximum(cam, 0)
    cam = (cam - np.min(cam)) / (np.max(cam) - np.min(cam))
    cam = np.uint8(cam * 255)
    # (W, H): the original passes (H, W); equal for square inputs.
    cam = np.uint8(Image.fromarray(cam).resize((x.shape[3], x.shape[2]), Image.LANCZOS)) / 255
    return cam, cls


def compare(ours, ref):
    ob, rb = np.rint(ours * 255).astype(int), np.rint(ref * 255).astype(int)
    differ = ob != rb
    same = ~differ
    exact = bool(np.array_equal(ours[same].astype(np.float32), ref[same].astype(np.float32)))
    return dict(max_steps=int(np.abs(ob - rb).max()), differ_pct=100.0 * differ.mean(), exact_where_equal=exact)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", default=[str(ROOT / "samples" / "chelsea.png")])
    ap.add_argument("--models", nargs="+", default=["efficientnet-lite0", "resnet18"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "target" / "release" / "scorecam")
    ap.add_argument("--json", type=pathlib.Path, help="write the rows here")
    ap.add_argument("--write-fixtures", action="store_true", help="write the four reference cases' maps and stop")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.write_fixtures:
        extractor, head, _, _ = efficientnet()
        for case in CASES:
            x = library_input(FIXTURES / f"{case}.png")
            cam, cls = reference_map(extractor, head, x)
            np.save(FIXTURES / f"{case}.pytorch_cnn_visualizations.npy", cam.astype(np.float32))
            print(f"{case}: class {cls}, wrote {case}.pytorch_cnn_visualizations.npy", flush=True)
        return 0
    va.CACHE.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="verify-cnnvis-"))
    photos = []
    for p in args.images:
        out = tmp / (pathlib.Path(p).stem + "_224.png")
        Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR).save(out)
        photos.append(out)
    rows, ok = [], True
    for name in args.models:
        extractor, head, models_dir, package = efficientnet() if name == "efficientnet-lite0" else resnet18(args.threads)
        for photo in photos:
            x = library_input(photo)
            ref, cls = reference_map(extractor, head, x)
            ours, doc = scorecam(args.binary, models_dir, package, photo, cls, "scorecam",
                                 {"preset": "pytorch_cnn_visualizations"}, "model")
            row = dict(model=name, photo=photo.name, cls=cls, **compare(ours, ref),
                       passes=doc["stats"]["forward_passes"])
            row["ok"] = row["max_steps"] <= 1 and row["exact_where_equal"]
            ok &= row["ok"]
            rows.append(row)
            print(f"{name:18} {photo.name:28} class {cls:4}  bytes differ {row['differ_pct']:.3f} %  "
                  f"max {row['max_steps']} step(s)  exact elsewhere: {row['exact_where_equal']}  "
                  f"{'PASS' if row['ok'] else 'FAIL'}  ({row['passes']} passes)", flush=True)
    print("\n| model | photo | class | pixels whose byte differs | largest difference | equal elsewhere | result |")
    print("|---|---|---|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['photo']} | {r['cls']} | {r['differ_pct']:.3f} % | {r['max_steps']} step(s) | "
              f"{'yes' if r['exact_where_equal'] else 'NO'} | {'pass' if r['ok'] else 'FAIL'} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
