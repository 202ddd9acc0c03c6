#!/usr/bin/env python3
"""Generate the side-input (skip connection) and detector test packages and their reference
maps (deterministic).

    python scripts/dev/make_side_detect_models.py [--out tests/fixtures/models]

Writes <out>/side/{unet,unet_cls} and <out>/detect/{yolo_v8,yolo_v5,boxes}. Needs onnx,
onnxruntime, numpy and Pillow (Pillow is the definition of the letterbox's resize,
`resize_filter = "pillow_bilinear"`). Opset 17, IR version 8, float32, dynamic batch
dimension `batch`, fixed seeds, deterministic serialisation, single-threaded ONNX Runtime.

Every map is computed here in numpy (float64; ONNX Runtime for the forward passes) from the
DEFINITIONS (docs/presets.md, docs/methods.md, docs/head-kinds.md), not from the service's
code:

side/unet       16×16 RGB (stretch, mean 0.5, std 0.25). Extractor: Conv(3→3, k2, s2) + Relu =
                `skip` [batch,3,8,8]; Conv(3→5, k2, s2) + Relu = `features` [batch,5,4,4]; outputs
                `features` then `skip`. Head (inputs `features`, `skip`): Resize ×2 (linear,
                half-pixel) of features, Concat with skip → [8,8,8], 1×1 Conv(8→4) + Relu, 1×1
                Conv(4→3), Resize ×2 → [batch,3,16,16]; `[head] kind = "segmentation"`.
side/unet_cls   the same extractor; head Concat(Resize ×2 (features), skip) → 1×1 Conv(8→4) + Relu
                → GlobalAveragePool → Gemm(4→3); `[head] kind = "classes"` (softmax).
detect/*        32×32 RGB, resize = "letterbox" (pad 114, pillow_bilinear), mean 0, std 1.
                Extractor Conv(3→4, k8, s8) + Relu → `features` [batch,4,4,4]. Head: 1×1 Conv on
                the features, one proposal per cell a = 4·i + j (row-major), with raw values r:
                x1, x2 = 8j + 4 + tanh(r0) ∓ (3 + 9·σ(r2)) / 2 each clipped to 0..32,
                cx = (x1 + x2) / 2, w = x2 − x1, cy = 8i + 4 + tanh(r1) / 2, h = 3 + 4·σ(r3)
                (input pixels), then
                yolo_v8: [batch, 4 + 2, 16] (cx, cy, w, h, σ(r4), σ(r5)), scores = "probabilities"
                yolo_v5: [batch, 16, 5 + 2] (cx, cy, w, h, r4 objectness logit, r5, r6 class
                         logits), scores = "logits"
                boxes:   `boxes` [batch, 16, 4] (x1, y1, x2, y2) and `scores` [batch, 16, 2] (σ)
detect/torchvision  the post-NMS form torchvision's detectors export (scripts/tools/
                export_torchvision_detector.py), with the batch axis fixed at 1: one graph,
                extractor.onnx, takes [1,3,32,32] and returns `features` [1,4,4,4] (as above)
                and the boxes head's proposals as labelled detections: `boxes` [1,18,4],
                `labels` [1,18] (argmax class, as a float) and `scores` [1,18] (its σ), the 16
                proposals then 2 zero rows (the padding). head.onnx passes boxes, labels and
                scores through (Identity) and does not read `features`: model.toml says
                `head_reads = false`. A proposal's probability of class c is its score when its
                label is c, else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_layout_models import (  # noqa: E402
    check_interp,
    f32s,
    is_constant,
    png_bytes,
    rise_mask,
    save_model,
    save_npy,
    shift_scale,
    softmax,
    test_image,
    upsample,
)

REPO = Path(__file__).resolve().parents[2]
OPSET = 17
IR_VERSION = 8
PRODUCER = "scorecam scripts/dev/make_side_detect_models.py"


def vinfo(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])


def model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER,
                          producer_version="1")
    m.ir_version = IR_VERSION
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m, full_check=True)
    return m


def init(arr, name):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def i64(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def session(m: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def f9(v: float) -> float:
    return float(f"{v:.9g}")


def write_png(path: Path, img: np.ndarray) -> None:
    path.write_bytes(png_bytes(img))
    with Image.open(path) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), img)


def masked(x: np.ndarray, masks) -> np.ndarray:
    return np.stack([x[0] * m[None] for m in masks]).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Score-CAM presets and EigenCAM, on a `score(out)` / `prob(out)` of one image's output
# (docs/presets.md), `outputs(xs)` giving one output per masked input
# ---------------------------------------------------------------------------------------


def cam_official(outputs, prob, x, a, hw):
    ups = [upsample(a_k, hw, False) for a_k in a]
    keep = [k for k in range(len(a)) if not is_constant(a[k])]
    masks = [(ups[k] - ups[k].min()) / (ups[k].max() - ups[k].min()) for k in keep]
    total = np.zeros(hw)
    weights = [None] * len(a)
    for k, o in zip(keep, outputs(masked(x, masks))):
        weights[k] = prob(o)
        total += weights[k] * ups[k]
    total = np.maximum(total, 0.0)
    lo, hi = total.min(), total.max()
    return None, ((total - lo) / (hi - lo) if hi > lo else np.zeros(hw)), weights


def cam_pgc(outputs, score, x, a, hw):
    masks = []
    for a_k in a:
        u = upsample(a_k, hw, True)
        masks.append(np.zeros(hw) if is_constant(a_k) else (u - u.min()) / (u.max() - u.min() + 1e-8))
    s = np.array([score(o) for o in outputs(masked(x, masks))])
    w = softmax(s)
    cam = shift_scale(np.maximum(np.tensordot(w, a, axes=1), 0.0), 1e-7)
    return cam, shift_scale(upsample(cam, hw, False), 1e-7), [float(v) for v in w]


def cam_eigen(a, hw):
    k, h, w = a.shape
    xm = a.astype(np.float32).reshape(k, h * w).T
    xm = xm - xm.mean(axis=0)
    _, _, vt = np.linalg.svd(xm, full_matrices=True)
    proj = (xm @ vt[0]).astype(np.float64)
    cam = shift_scale(np.maximum(proj.reshape(h, w), 0.0), 1e-7)
    return cam, shift_scale(upsample(cam, hw, False), 1e-7), None


def cam_ablation(head_scores, score, f, a, hw):
    """Ablation-CAM: w_k = (y − y^(k)) / y, y^(k) the head on the features with channel k
    zeroed (head_scores takes a batch of features and returns their scores)."""
    y = score
    batch = []
    for k in range(len(a)):
        fk = f.copy()
        fk[k] = 0.0
        batch.append(fk)
    yk = head_scores(np.stack(batch))
    w = (y - yk) / y
    cam = shift_scale(np.maximum(np.tensordot(w, a, axes=1), 0.0), 1e-7)
    return cam, shift_scale(upsample(cam, hw, False), 1e-7), [float(v) for v in w]


def cam_recipro_logit(head_scores, a, hw):
    """Recipro-CAM, kernel cell, score logit: per cell the head on a grid zero but for A[:, i, j]."""
    _, h, w = a.shape
    batch = []
    for i in range(h):
        for j in range(w):
            m = np.zeros_like(a)
            m[:, i, j] = a[:, i, j]
            batch.append(m)
    cam = np.asarray(head_scores(np.stack(batch)), dtype=np.float64).reshape(h, w)
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    return cam, upsample(cam, hw, False), None


def cam_rise(outputs, score, x, hw, masks, grid, keep, seed):
    ms = [rise_mask(i, hw, grid, keep, seed) for i in range(masks)]
    ws = [score(o) for o in outputs(masked(x, ms))]
    sal = sum(w * m for w, m in zip(ws, ms)) / (masks * keep)
    return None, (sal - sal.min()) / (sal.max() - sal.min()), None


# ---------------------------------------------------------------------------------------
# Side inputs
# ---------------------------------------------------------------------------------------

SIDE_HW = (16, 16)
SIDE_MEAN, SIDE_STD = 0.5, 0.25
SIDE_LABELS = ("background", "blob", "edge")


def side_extractor() -> onnx.ModelProto:
    rng = np.random.default_rng(211)
    w1 = rng.standard_normal((3, 3, 2, 2)) * 0.4
    b1 = np.array([0.1, 0.05, 0.0])
    w2 = rng.standard_normal((5, 3, 2, 2)) * 0.4
    b2 = np.array([0.1, 0.0, 0.05, -0.05, 0.1])
    g = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], name="conv1",
                             kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Relu", ["c1"], ["skip"], name="relu1"),
            helper.make_node("Conv", ["skip", "conv2.weight", "conv2.bias"], ["c2"], name="conv2",
                             kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Relu", ["c2"], ["features"], name="relu2"),
        ],
        "unet_extractor", [vinfo("input", [3, 16, 16])], [vinfo("features", [5, 4, 4]), vinfo("skip", [3, 8, 8])],
        initializer=[init(w1, "conv1.weight"), init(b1, "conv1.bias"), init(w2, "conv2.weight"),
                     init(b2, "conv2.bias")],
    )
    return model(g)


def side_head(kind: str) -> onnx.ModelProto:
    rng = np.random.default_rng(223)
    wa = rng.standard_normal((4, 8, 1, 1)) * 0.6
    ba = np.array([0.1, -0.1, 0.2, 0.0])
    wb = rng.standard_normal((3, 4)) * 1.0
    bb = np.array([0.0, 0.4, 0.0])
    inits = [init(wa, "mix.weight"), init(ba, "mix.bias"), init([1, 1, 2, 2], "up.scales")]
    nodes = [
        helper.make_node("Resize", ["features", "", "up.scales"], ["up"], name="up", mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Concat", ["up", "skip"], ["cat"], name="concat", axis=1),
        helper.make_node("Conv", ["cat", "mix.weight", "mix.bias"], ["mix"], name="mix", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["mix"], ["mixr"], name="mix_relu"),
    ]
    if kind == "segmentation":
        inits += [init(wb[:, :, None, None], "cls.weight"), init(bb, "cls.bias")]
        nodes += [
            helper.make_node("Conv", ["mixr", "cls.weight", "cls.bias"], ["low"], name="cls", kernel_shape=[1, 1]),
            helper.make_node("Resize", ["low", "", "up.scales"], ["logits"], name="up2", mode="linear",
                             coordinate_transformation_mode="half_pixel"),
        ]
        out = [3, 16, 16]
    else:
        inits += [init(wb, "fc.weight"), init(bb, "fc.bias")]
        nodes += [
            helper.make_node("GlobalAveragePool", ["mixr"], ["pool4"], name="pool"),
            helper.make_node("Flatten", ["pool4"], ["pooled"], name="flatten", axis=1),
            helper.make_node("Gemm", ["pooled", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
        ]
        out = [3]
    g = helper.make_graph(nodes, f"unet_{kind}_head", [vinfo("features", [5, 4, 4]), vinfo("skip", [3, 8, 8])],
                          [vinfo("logits", out)], initializer=inits)
    return model(g)


def side_toml(kind: str) -> str:
    name = "unet" if kind == "segmentation" else "unet_cls"
    return f"""description = "side/{name}: generated {kind} model whose head reads a skip connection, not a real model"
source = "generated by scripts/dev/make_side_detect_models.py (onnx.helper, fixed seeds)"
license = "Apache-2.0 (generated test data, part of this repository)"

[input]
width = 16
height = 16
resize = "stretch"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]

[target_layer]
description = "Conv 3→5 (kernel 2, stride 2) + ReLU on the skip tensor, 5×4×4"

[head]
kind = "{kind}"
activation = "softmax"
"""


class SideRunner:
    def __init__(self, ext, head, kind):
        self.ext, self.head, self.kind = session(ext), session(head), kind

    def extract(self, x):
        f, s = self.ext.run(["features", "skip"], {"input": x.astype(np.float32)})
        return f, s

    def head_out(self, f, s):
        return self.head.run(["logits"], {"features": f.astype(np.float32), "skip": s.astype(np.float32)})[0] \
            .astype(np.float64)

    def outputs(self, xs):
        f, s = self.extract(xs)
        return self.head_out(f, s)


def side_normalise(img):
    v = img.astype(np.float32) / np.float32(255.0)
    x = (v - np.float32(SIDE_MEAN)) / np.float32(SIDE_STD)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def case_entry(name, image, method, preset, query, target, label, score, big, feat, ref: Path, extra=None):
    stem = name.replace("/", ".")
    save_npy(ref / f"{stem}.model.npy", big)
    e = {"name": name, "image": f"../../{image}", "method": method, "preset": preset, "query": query,
         "target": {"index": target, "label": label, "score": f9(score)},
         "model": {"file": f"{stem}.model.npy", "shape": list(big.shape)}}
    if feat is not None:
        save_npy(ref / f"{stem}.feature.npy", feat)
        e["feature"] = {"file": f"{stem}.feature.npy", "shape": list(feat.shape)}
    if extra:
        e.update(extra)
    return e


def build_side(out: Path, kind: str) -> dict:
    name = "unet" if kind == "segmentation" else "unet_cls"
    d = out / "side" / name
    ref = d / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    ext, head = side_extractor(), side_head(kind)
    run = SideRunner(ext, head, kind)
    img_name = "photo_16x16.png"
    img = test_image(16, 16, 31)
    write_png(out / "side" / img_name, img)
    x = side_normalise(img)
    f, s = run.extract(x)
    a = f[0].astype(np.float64)
    for k in range(5):
        assert not is_constant(a[k]), k
    o = run.head_out(f, s)[0]
    # batch 3 with declared shapes
    xs = np.concatenate([x, 0.5 * x, -x]).astype(np.float32)
    assert run.outputs(xs).shape == ((3, 3, 16, 16) if kind == "segmentation" else (3, 3))
    hw = SIDE_HW
    cases = []
    if kind == "segmentation":
        arg = o.argmax(axis=0)
        counts = [int((arg == c).sum()) for c in range(3)]
        assert sorted(counts)[-1] > sorted(counts)[-2] > 0, counts
        c = int(np.argmax(counts))
        region = arg == c

        def score(out_):
            return float(out_[c][region].sum())

        def prob(out_):
            return float(softmax(out_, axis=0)[c][region].mean())

        def head_scores(fb, sb=None):
            sb = np.repeat(s, len(fb), axis=0) if sb is None else np.repeat(sb, len(fb), axis=0)
            return np.array([score(v) for v in run.head_out(fb, sb)])
        extra = {"predicted_pixels": counts}
    else:
        c = int(np.argmax(o))

        def score(out_):
            return float(out_[c])

        def prob(out_):
            return float(softmax(out_)[c])

        def head_scores(fb, sb=None):
            sb = np.repeat(s, len(fb), axis=0) if sb is None else np.repeat(sb, len(fb), axis=0)
            return run.head_out(fb, sb)[:, c]
        extra = {"logits": f32s(o.astype(np.float32))}
    label = SIDE_LABELS[c]
    clean_prob = prob(o)
    q = f"target={c}"
    for preset in ("pytorch_grad_cam", "official"):
        fn = cam_pgc if preset == "pytorch_grad_cam" else cam_official
        feat, big, _ = fn(run.outputs, score if preset == "pytorch_grad_cam" else prob, x, a, hw)
        cases.append(case_entry(f"top/{preset}", img_name, "scorecam", preset, f"{q}&preset={preset}", c, label,
                                clean_prob, big, feat, ref))
    y = score(o)
    feat, big, w = cam_ablation(head_scores, y, a, a, hw)
    cases.append(case_entry("top/ablationcam", img_name, "ablationcam", None, f"{q}&method=ablationcam", c, label,
                            clean_prob, big, feat, ref, {"weights": [f9(v) for v in w]}))
    feat, big, _ = cam_recipro_logit(head_scores, a, hw)
    cases.append(case_entry("top/reciprocam_logit", img_name, "reciprocam", None,
                            f"{q}&method=reciprocam&score=logit", c, label, clean_prob, big, feat, ref))
    feat, big, _ = cam_eigen(a, hw)
    cases.append(case_entry("top/eigencam", img_name, "eigencam", None, f"{q}&method=eigencam", c, label,
                            clean_prob, big, feat, ref))
    # Controls: the head-only methods with the side tensor recomputed from a zero input (what a
    # full pass on an all-zero mask would give) instead of held at its clean value.
    _, s0 = run.extract(np.zeros_like(x))
    sanity = {}
    for m, fn in (("ablationcam", lambda hs: cam_ablation(hs, y, a, a, hw)),
                  ("reciprocam_logit", lambda hs: cam_recipro_logit(hs, a, hw))):
        _, big0, _ = fn(lambda fb: head_scores(fb, s0))
        want = np.load(ref / f"top.{m}.model.npy")
        diff = float(np.abs(big0 - want).max())
        assert diff > 0.01, (name, m, diff)
        save_npy(ref / f"control.{m}.model.npy", big0)
        sanity[f"{m}_zero_skip_max_abs_diff"] = float(f"{diff:.3g}")
    save_model(ext, d / "extractor.onnx")
    save_model(head, d / "head.onnx")
    (d / "labels.txt").write_text("\n".join(SIDE_LABELS), encoding="utf-8")
    (d / "model.toml").write_text(side_toml(kind), encoding="utf-8")
    doc = {"package": name, "kind": kind, "side_inputs": ["skip"], "target": c, **extra, "sanity": sanity,
           "controls": {"ablationcam": "control.ablationcam.model.npy",
                        "reciprocam_logit": "control.reciprocam_logit.model.npy"},
           "cases": cases}
    (ref / "cases.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


# ---------------------------------------------------------------------------------------
# Detectors
# ---------------------------------------------------------------------------------------

DH = DW = 32
C = 2
DET_LABELS = ("cat", "dog")
PHOTO = "photo_40x20.png"  # letterbox: s = 0.8, 32×16 pasted at (0, 8): exact scale both ways
# per package: above the letterbox padding cells' proposals (rows 0 and 3, all alike, off the photo)
SCORE_THRESHOLD = {"yolo_v8": 0.84, "yolo_v5": 0.4, "boxes": 0.69, "torchvision": 0.69}
EXTRACTOR_SEED = 300
IOU_THRESHOLD = 0.45


def det_extractor(seed: int = EXTRACTOR_SEED) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3, 8, 8)) * 0.08
    b = np.array([0.05, 0.1, 0.0, 0.02])
    g = helper.make_graph(
        [helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], name="conv", kernel_shape=[8, 8],
                          strides=[8, 8]),
         helper.make_node("Relu", ["c"], ["features"], name="relu")],
        "det_extractor", [vinfo("input", [3, DH, DW])], [vinfo("features", [4, 4, 4])],
        initializer=[init(w, "conv.weight"), init(b, "conv.bias")])
    return model(g)


def det_head(fmt: str, seed: int) -> onnx.ModelProto:
    n_raw = 5 + C if fmt == "yolo_v5" else 4 + C
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_raw, 4, 1, 1)) * 1.5
    b = rng.standard_normal(n_raw) * 0.3
    jj, ii = np.meshgrid(np.arange(4), np.arange(4))
    cxs = (8 * jj + 4).reshape(1, 1, 16)
    cys = (8 * ii + 4).reshape(1, 1, 16)
    inits = [init(w, "raw.weight"), init(b, "raw.bias"), i64("shape", [0, n_raw, 16]), init(cxs, "cell_x"),
             init(cys, "cell_y"), init([3.0], "three"), init([9.0], "nine"),
             init([4.0], "four"), init([0.5], "half"), init(0.0, "zero"), init(float(DW), "side"),
             i64("split", [1, 1, 1, 1, n_raw - 4])]
    nodes = [
        helper.make_node("Conv", ["features", "raw.weight", "raw.bias"], ["raw4"], name="raw", kernel_shape=[1, 1]),
        helper.make_node("Reshape", ["raw4", "shape"], ["raw"], name="flatten_cells"),
        helper.make_node("Split", ["raw", "split"], ["r0", "r1", "r2", "r3", "rs"], name="split", axis=1),
        # x: centre ± 1, width 3..12, the box cut to 0..32; y: centre ± 0.5, height 3..7
        helper.make_node("Tanh", ["r0"], ["t0"]), helper.make_node("Add", ["t0", "cell_x"], ["cx0"]),
        helper.make_node("Sigmoid", ["r2"], ["s2"]), helper.make_node("Mul", ["s2", "nine"], ["m2"]),
        helper.make_node("Add", ["m2", "three"], ["bw0"]), helper.make_node("Mul", ["bw0", "half"], ["hw0"]),
        helper.make_node("Sub", ["cx0", "hw0"], ["xa"]), helper.make_node("Add", ["cx0", "hw0"], ["xb"]),
        helper.make_node("Clip", ["xa", "zero", "side"], ["xa_c"]),
        helper.make_node("Clip", ["xb", "zero", "side"], ["xb_c"]),
        helper.make_node("Add", ["xa_c", "xb_c"], ["xs"]), helper.make_node("Mul", ["xs", "half"], ["cx"]),
        helper.make_node("Sub", ["xb_c", "xa_c"], ["bw"]),
        helper.make_node("Tanh", ["r1"], ["t1"]), helper.make_node("Mul", ["t1", "half"], ["t1h"]),
        helper.make_node("Add", ["t1h", "cell_y"], ["cy"]),
        helper.make_node("Sigmoid", ["r3"], ["s3"]), helper.make_node("Mul", ["s3", "four"], ["m3"]),
        helper.make_node("Add", ["m3", "three"], ["bh"]),
    ]
    if fmt == "yolo_v8":
        nodes += [helper.make_node("Sigmoid", ["rs"], ["ps"]),
                  helper.make_node("Concat", ["cx", "cy", "bw", "bh", "ps"], ["output0"], axis=1)]
        outs = [vinfo("output0", [4 + C, 16])]
    elif fmt == "yolo_v5":
        nodes += [helper.make_node("Concat", ["cx", "cy", "bw", "bh", "rs"], ["cat"], axis=1),
                  helper.make_node("Transpose", ["cat"], ["output0"], perm=[0, 2, 1])]
        outs = [vinfo("output0", [16, 5 + C])]
    else:
        nodes += [helper.make_node("Mul", ["bw", "half"], ["hw_"]), helper.make_node("Mul", ["bh", "half"], ["hh_"]),
                  helper.make_node("Sub", ["cx", "hw_"], ["x1"]), helper.make_node("Sub", ["cy", "hh_"], ["y1"]),
                  helper.make_node("Add", ["cx", "hw_"], ["x2"]), helper.make_node("Add", ["cy", "hh_"], ["y2"]),
                  helper.make_node("Concat", ["x1", "y1", "x2", "y2"], ["bcat"], axis=1),
                  helper.make_node("Transpose", ["bcat"], ["boxes"], perm=[0, 2, 1]),
                  helper.make_node("Sigmoid", ["rs"], ["ps"]),
                  helper.make_node("Transpose", ["ps"], ["scores"], perm=[0, 2, 1])]
        outs = [vinfo("boxes", [16, 4]), vinfo("scores", [16, C])]
    g = helper.make_graph(nodes, f"{fmt}_head", [vinfo("features", [4, 4, 4])], outs, initializer=inits)
    return model(g)


def det_toml(fmt: str) -> str:
    scores = "logits" if fmt == "yolo_v5" else "probabilities"
    reads = "\nhead_reads = false  # the extractor computes the detections; the head passes them through" \
        if fmt == "torchvision" else ""
    return f"""description = "detect/{fmt}: generated detector (32×32 RGB letterbox, 2 classes, 16 proposals), not a real model"
source = "generated by scripts/dev/make_side_detect_models.py (onnx.helper, fixed seeds)"
license = "Apache-2.0 (generated test data, part of this repository)"

[input]
width = 32
height = 32
resize = "letterbox"
pad_value = 114
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]

[target_layer]
description = "Conv 3→4 (kernel 8, stride 8) + ReLU, 4×4×4"{reads}

[head]
kind = "detection"
format = "{fmt}"
scores = "{scores}"
score_threshold = {SCORE_THRESHOLD[fmt]}
iou_threshold = {IOU_THRESHOLD}
"""


def letterbox(img: np.ndarray):
    h0, w0 = img.shape[:2]
    s = min(DW / w0, DH / h0)
    nw = min(max(int(round(w0 * s)), 1), DW)
    nh = min(max(int(round(h0 * s)), 1), DH)
    x0, y0 = (DW - nw) // 2, (DH - nh) // 2
    canvas = np.full((DH, DW, 3), 114, np.uint8)
    canvas[y0:y0 + nh, x0:x0 + nw] = np.asarray(Image.fromarray(img, "RGB").resize((nw, nh),
                                                                                   Image.Resampling.BILINEAR))
    v = canvas.astype(np.float32) / np.float32(255.0)  # mean 0, std 1
    return v.transpose(2, 0, 1)[None].astype(np.float32), (s, x0, y0, nw, nh)


class Proposals:
    """One image's raw proposals as the definitions read them: boxes x1y1x2y2 (input
    pixels), class probabilities p [A, C], objectness [A] (1 without one)."""

    def __init__(self, fmt: str, outs):
        if fmt == "torchvision":  # labelled: a detection's probability of its own class only
            self.boxes = outs[0].astype(np.float64)
            self.p = np.zeros((len(self.boxes), C))
            for j, (label, score) in enumerate(zip(outs[1], outs[2])):
                if score > 0:
                    self.p[j, int(label)] = score
            self.obj = np.ones(len(self.boxes))
            return
        if fmt == "boxes":
            self.boxes = outs[0].astype(np.float64)
            self.p = outs[1].astype(np.float64)
            self.obj = np.ones(len(self.boxes))
            return
        t = outs[0].astype(np.float64)
        if fmt == "yolo_v8":
            t = t.T  # [A, 4 + C]
            self.p, self.obj = t[:, 4:], np.ones(len(t))
        else:
            self.p, self.obj = sigmoid(t[:, 5:]), sigmoid(t[:, 4])
        cx, cy, w, h = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
        self.boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def d_rise(p: Proposals, box, c) -> float:
    return float(max(iou(box, p.boxes[j]) * p.p[j, c] * p.obj[j] for j in range(len(p.boxes))))


def box_score(p: Proposals, box, c, thr=0.5) -> float:
    ious = [iou(box, p.boxes[j]) for j in range(len(p.boxes))]
    j = int(np.argmax(ious))  # first on ties
    best = int(np.argmax(p.p[j] * p.obj[j]))
    return float(ious[j] + p.p[j, c]) if ious[j] > thr and best == c else 0.0


def nms(p: Proposals, score_thr, iou_thr):
    cand = []
    for j in range(len(p.boxes)):
        sc = p.p[j] * p.obj[j]
        c = int(np.argmax(sc))
        if sc[c] >= score_thr:
            cand.append((float(sc[c]), j, c))
    cand.sort(key=lambda t: -t[0])
    scores = [t[0] for t in cand]
    assert len(set(scores)) == len(scores), "tied scores make the order ambiguous"
    kept = []
    for sc, j, c in cand:
        if all(not (kc == c and iou(p.boxes[j], p.boxes[kj]) > iou_thr) for _, kj, kc in kept):
            kept.append((sc, j, c))
    return kept


class DetRunner:
    def __init__(self, fmt, ext, head):
        self.fmt, self.ext, self.head = fmt, session(ext), session(head)
        self.names = ["boxes", "scores"] if fmt == "boxes" else ["output0"]

    def features(self, x):
        if self.fmt == "torchvision":  # one image per run
            return np.concatenate([self.ext.run(["features"], {"input": xi[None]})[0] for xi in x.astype(np.float32)])
        return self.ext.run(["features"], {"input": x.astype(np.float32)})[0]

    def outputs(self, xs):
        if self.fmt == "torchvision":
            names = ["boxes_out", "labels", "scores_out"]
            return [Proposals(self.fmt, [o[0] for o in self.ext.run(names, {"input": xi[None]})])
                    for xi in xs.astype(np.float32)]
        outs = self.head.run(self.names, {"features": self.features(xs)})
        return [Proposals(self.fmt, [o[n] for o in outs]) for n in range(len(xs))]


TV_PAD = 2  # zero rows after the 16 proposals, as a padded post-NMS output has


def tv_extractor(seed: int) -> onnx.ModelProto:
    """The extractor and the boxes head in one graph, batch 1, outputs features and labelled detections."""
    ext, head = det_extractor(), det_head("boxes", seed)
    g = helper.make_graph(
        list(ext.graph.node) + list(head.graph.node) + [
            helper.make_node("ArgMax", ["scores"], ["label_i"], axis=2, keepdims=0),
            helper.make_node("Cast", ["label_i"], ["label_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMax", ["scores"], ["score_f"], axes=[2], keepdims=0),
            helper.make_node("Concat", ["boxes", "pad_boxes"], ["boxes_out"], axis=1),
            helper.make_node("Concat", ["label_f", "pad_row"], ["labels"], axis=1),
            helper.make_node("Concat", ["score_f", "pad_row"], ["scores_out"], axis=1)],
        "torchvision_like",
        [fixed_one(vinfo("input", [3, DH, DW]))],
        [fixed_one(vinfo("features", [4, 4, 4])), fixed_one(vinfo("boxes_out", [16 + TV_PAD, 4])),
         fixed_one(vinfo("labels", [16 + TV_PAD])), fixed_one(vinfo("scores_out", [16 + TV_PAD]))],
        initializer=list(ext.graph.initializer) + list(head.graph.initializer)
        + [init(np.zeros((1, TV_PAD, 4)), "pad_boxes"), init(np.zeros((1, TV_PAD)), "pad_row")])
    return model(g)


def fixed_one(vi):
    vi.type.tensor_type.shape.dim[0].Clear()
    vi.type.tensor_type.shape.dim[0].dim_value = 1
    return vi


def tv_head() -> onnx.ModelProto:
    names = ["boxes_out", "labels", "scores_out"]
    shapes = [[16 + TV_PAD, 4], [16 + TV_PAD], [16 + TV_PAD]]
    g = helper.make_graph(
        [helper.make_node("Identity", [n], [f"{n}_"]) for n in names], "passthrough_head",
        [fixed_one(vinfo("features", [4, 4, 4]))] + [fixed_one(vinfo(n, sh)) for n, sh in zip(names, shapes)],
        [fixed_one(vinfo(f"{n}_", sh)) for n, sh in zip(names, shapes)])
    return model(g)


def build_detect(out: Path, fmt: str, seed: int, photo: np.ndarray) -> dict:
    d = out / "detect" / fmt
    ref = d / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    ext, head = (tv_extractor(seed), tv_head()) if fmt == "torchvision" else (det_extractor(), det_head(fmt, seed))
    run = DetRunner(fmt, ext, head)
    x, (s, x0, y0, nw, nh) = letterbox(photo)
    assert (s, x0, y0, nw, nh) == (0.8, 0, 8, 32, 16)
    f = run.features(x)
    a = f[0].astype(np.float64)
    for k in range(4):
        assert not is_constant(a[k]), (fmt, k)
    clean = run.outputs(x)[0]
    assert run.outputs(np.concatenate([x, x * 0.5, x])).__len__() == 3

    def to_photo(b):
        return [(b[0] - x0) / s, (b[1] - y0) / s, (b[2] - x0) / s, (b[3] - y0) / s]

    def to_input(b):
        return [x0 + b[0] * s, y0 + b[1] * s, x0 + b[2] * s, y0 + b[3] * s]

    h0, w0 = photo.shape[:2]

    def predict(score_thr, iou_thr):
        kept = nms(clean, score_thr, iou_thr)
        dets = []
        for sc, j, c in kept:
            pb = to_photo(clean.boxes[j])
            assert -1e-3 <= pb[0] and pb[2] <= w0 + 1e-3 and -1e-3 <= pb[1] and pb[3] <= h0 + 1e-3, (fmt, pb)
            dets.append({"index": c, "label": DET_LABELS[c], "score": f9(sc), "box": [f9(v) for v in pb],
                         "proposal": j})
        return dets

    dets = predict(SCORE_THRESHOLD[fmt], IOU_THRESHOLD)
    assert len(dets) >= 2, (fmt, dets, [float((clean.p[j] * clean.obj[j]).max()) for j in range(16)])
    loose = predict(SCORE_THRESHOLD[fmt], 0.05)
    hw = (DH, DW)
    cases = []

    def add(name, query, box_in, c, rule, methods, photo_box):
        def score(p):
            return d_rise(p, box_in, c) if rule == "d_rise" else box_score(p, box_in, c)
        clean_score = score(clean)
        assert clean_score > 0.05, (fmt, name, clean_score)
        for m in methods:
            if m == "pytorch_grad_cam":
                feat, big, w = cam_pgc(run.outputs, score, x, a, hw)
                meth, preset, q = "scorecam", m, f"{query}&preset={m}"
            elif m == "official":
                feat, big, w = cam_official(run.outputs, score, x, a, hw)
                meth, preset, q = "scorecam", m, f"{query}&preset={m}"
            elif m == "eigencam":
                feat, big, w = cam_eigen(a, hw)
                meth, preset, q = m, None, f"{query}&method=eigencam"
            elif m == "rise":
                feat, big, w = cam_rise(run.outputs, score, x, hw, masks=50, grid=3, keep=0.5, seed=1)
                meth, preset, q = m, None, f"{query}&method=rise&masks=50&grid=3&keep=0.5&seed=1"
            assert big.max() > 0.5, (fmt, name, m)
            cases.append(case_entry(f"{name}/{m}", PHOTO, meth, preset, q, c, DET_LABELS[c], clean_score, big, feat,
                                    ref, {"box": [f9(v) for v in photo_box], "box_score": rule}))

    # a box near the top detection (photo pixels, rounded to 0.5), with its class
    top = dets[0]
    pbox = [round(v * 2) / 2 for v in top["box"]]
    pbox = [pbox[0] + 0.5, pbox[1], pbox[2], pbox[3] - 0.5]
    q = "box=" + ",".join(f"{v:g}" for v in pbox) + f"&target={top['index']}"
    add("box", q, to_input(pbox), top["index"], "d_rise", ["pytorch_grad_cam", "official", "rise"], pbox)
    # detection=0: the top detection's own box (input pixels, as the clean pass gave it)
    j0 = top["proposal"]
    add("detection0", "detection=0", list(clean.boxes[j0]), top["index"], "d_rise", ["pytorch_grad_cam", "eigencam"],
        top["box"])
    extra = {}
    if fmt == "yolo_v8":  # a score threshold where NMS drops overlapping detections at IoU 0.1 but not at 0.45
        extra["predict_overlap"] = [{"score_threshold": 0.82, "iou_threshold": t, "detections": predict(0.82, t)}
                                    for t in (0.45, 0.1)]
        assert len(extra["predict_overlap"][0]["detections"]) > len(extra["predict_overlap"][1]["detections"])
    if fmt != "yolo_v5":  # box_score's "its score of C" is unambiguous without objectness
        add("box_score", q + "&box_score=box_score", to_input(pbox), top["index"], "box_score",
            ["pytorch_grad_cam", "official"], pbox)
    # a box of the other class on the second detection of that class, if any
    other = next((t for t in dets if t["index"] != top["index"]), None)
    if other is not None:
        ob = [round(v * 2) / 2 for v in other["box"]]
        q2 = "box=" + ",".join(f"{v:g}" for v in ob) + f"&target={other['index']}"
        add("other", q2, to_input(ob), other["index"], "d_rise", ["pytorch_grad_cam"], ob)
    save_model(ext, d / "extractor.onnx")
    save_model(head, d / "head.onnx")
    (d / "labels.txt").write_text("\n".join(DET_LABELS), encoding="utf-8")
    (d / "model.toml").write_text(det_toml(fmt), encoding="utf-8")
    doc = {"package": fmt, "photo": f"../../{PHOTO}", "letterbox": {"scale": s, "x": x0, "y": y0, "width": nw,
                                                                    "height": nh},
           "predict": {"score_threshold": SCORE_THRESHOLD[fmt], "iou_threshold": IOU_THRESHOLD, "detections": dets},
           "predict_iou_0.05": {"score_threshold": SCORE_THRESHOLD[fmt], "iou_threshold": 0.05, "detections": loose},
           **extra, "cases": cases}
    (ref / "cases.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "models", help="default: %(default)s")
    out: Path = ap.parse_args().out
    check_interp()
    (out / "side").mkdir(parents=True, exist_ok=True)
    (out / "detect").mkdir(parents=True, exist_ok=True)
    for kind in ("segmentation", "classes"):
        doc = build_side(out, kind)
        print(f"side/{doc['package']}: target {doc['target']}; {doc['sanity']}")
    photo = test_image(40, 20, 41)
    write_png(out / "detect" / PHOTO, photo)
    for fmt, seed in (("yolo_v8", 401), ("yolo_v5", 409), ("boxes", 419), ("torchvision", 419)):
        doc = build_detect(out, fmt, seed, photo)
        print(f"detect/{fmt}: {len(doc['predict']['detections'])} detections "
              f"({len(doc['predict_iou_0.05']['detections'])} at iou 0.05); "
              + "; ".join(f"{c['name']} {c['target']['score']}" for c in doc["cases"]))


if __name__ == "__main__":
    main()
