"""Issue #30: exact Score-CAM on ViT-B/16 and Swin-T, scorecam against pytorch-grad-cam 1.5.7 on
the same threads, interleaved (A B C, A B C, ...) so that a shared machine's load falls on all
three alike. Not part of the test suite.

Per architecture (scripts/bench/verify_architectures.py's rows: random weights under seed 0,
exported, split by scripts/tools/split_model.py, whose package now carries a measured
model.toml [engine]: max_batch_size and flush_denormals), each round runs

  library   pytorch-grad-cam 1.5.7 ScoreCAM (batch 16, torch.set_num_threads(T)), timed afresh,
  measured  `scorecam explain --preset pytorch_grad_cam` on the package as the split tool wrote it,
  default   the same package without its [engine] section (the engine's defaults: batch 4,
            subnormals kept: what scorecam did before),

both scorecam runs with T workers of one thread (its CPU layout), and compares each scorecam map
with that round's library map (Pearson r >= 0.9999, max |Δ| <= 1e-3). Prints per round and
the medians of the per-round ratios library / scorecam.

    .venv-verify/bin/python scripts/bench/transformer_speed.py --arch swin_t vit_b_16 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
import verify_architectures as va  # noqa: E402
from quantize_int8 import without_engine as manifest_without_engine  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def without_engine(models_dir: pathlib.Path, variant: str) -> str:
    """A copy of package `variant` (the same graphs, linked) whose model.toml has no [engine]."""
    src, name = models_dir / variant, variant + "-default"
    d = models_dir / name
    d.mkdir(exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.toml" and not (d / f.name).exists():
            (d / f.name).symlink_to(f.resolve())
    text = manifest_without_engine((src / "model.toml").read_text())
    assert "[engine]" not in text
    (d / "model.toml").write_text(text)
    return name


def library_map(name, model, x, cls, threads, batch):
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    a = va.ARCHS[name]
    cam = ScoreCAM(model=model, target_layers=[va.resolve_module(model, a["module"])], reshape_transform=a["reshape"])
    cam.batch_size = batch
    t = time.perf_counter()
    m = cam(input_tensor=x, targets=[ClassifierOutputTarget(cls)])[0]
    return m, time.perf_counter() - t


def compare(ours, ref):
    r = float(np.corrcoef(ours.ravel().astype(np.float64), ref.ravel().astype(np.float64))[0, 1])
    d = float(np.abs(ours.astype(np.float64) - ref).max())
    return r, d, bool(r >= va.R_MIN and d <= va.DELTA_MAX)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["swin_t", "vit_b_16"], choices=list(va.ARCHS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16, help="pytorch-grad-cam's ScoreCAM batch (its default)")
    ap.add_argument("--binary", type=pathlib.Path, default=va.ROOT / "target" / "release" / "scorecam")
    ap.add_argument("--out", type=pathlib.Path, default=va.CACHE / "transformer_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    image = va.ROOT / "samples" / "chelsea.png"
    results = []
    ok = True
    for name in args.arch:
        model = va.make_model(name, 0)
        full = va.CACHE / "onnx" / f"{name}.onnx"
        va.export(name, model, full)
        pkg = va.CACHE / "packages" / name
        va.split(name, full, pkg, va.find_tensor(full, va.ARCHS[name]["onnx"]))
        engine = re.search(r"^\[engine\].*?(?=^\[|\Z)", (pkg / "model.toml").read_text(), re.M | re.S)
        print(f"{name}: package {engine.group(0).strip() if engine else 'has no [engine] section'}", flush=True)
        models_dir = va.CACHE / "models"
        measured = va.package_variant(name, pkg, models_dir, pillow=False)
        default = without_engine(models_dir, measured)
        x = va.library_input(name, image)
        with torch.no_grad():
            cls = int(model(x).argmax())
        for rnd in range(args.rounds):
            row = dict(arch=name, round=rnd, cls=cls, load_before=round(os.getloadavg()[0], 2))
            ref, row["library_s"] = library_map(name, model, x, cls, args.threads, args.batch_size)
            for key, variant in (("measured", measured), ("default", default)):
                ours, wall, doc = va.run_scorecam(args.binary, models_dir, variant, image, cls, args.threads)
                r, d, good = compare(ours, ref)
                row[key] = dict(s=round(doc["timings_ms"]["total_ms"] / 1e3, 2), process_s=round(wall, 2),
                                passes=doc["stats"].get("forward_passes"), pearson=r, max_delta=d, ok=good)
                ok &= good
            row["load_after"] = round(os.getloadavg()[0], 2)
            row["speedup_measured"] = row["library_s"] / row["measured"]["s"]
            row["speedup_default"] = row["library_s"] / row["default"]["s"]
            row["measured_vs_default"] = row["default"]["s"] / row["measured"]["s"]
            results.append(row)
            print(f"{name} round {rnd}: library {row['library_s']:.1f} s | scorecam measured {row['measured']['s']:.1f} s "
                  f"(r={row['measured']['pearson']:.8f}, max|Δ|={row['measured']['max_delta']:.1e}, "
                  f"{row['measured']['passes']} passes) | default {row['default']['s']:.1f} s "
                  f"(r={row['default']['pearson']:.8f}, max|Δ|={row['default']['max_delta']:.1e}) | "
                  f"library/measured {row['speedup_measured']:.2f}x, library/default {row['speedup_default']:.2f}x, "
                  f"default/measured {row['measured_vs_default']:.2f}x | load {row['load_before']}-{row['load_after']}",
                  flush=True)
            args.out.write_text(json.dumps(results, indent=1))
        rows = [r for r in results if r["arch"] == name]
        print(f"{name}: median library/measured {np.median([r['speedup_measured'] for r in rows]):.2f}x, "
              f"library/default {np.median([r['speedup_default'] for r in rows]):.2f}x, "
              f"default/measured {np.median([r['measured_vs_default'] for r in rows]):.2f}x over {len(rows)} rounds",
              flush=True)
        del model
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
