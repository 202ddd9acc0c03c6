#!/usr/bin/env python3
"""Generate the feature-layout test packages and their reference maps (deterministic).

    python scripts/dev/make_layout_models.py [--out tests/fixtures/models/layouts]

Needs onnx, onnxruntime and numpy (scripts/setup/python_tools.sh); pillow, when installed,
is used only to check that the written PNGs decode to the intended pixels. Opset 17, IR
version 8, float32, dynamic batch dimension `batch`, concrete non-batch dimensions. Fixed
seeds, deterministic serialisation and single-threaded ONNX Runtime, so re-running gives
byte-identical files on the same machine.

image_16x16.png            test image for nhwc/ and tokens1/ (16 wide, 16 high, RGB8)
image_12x16.png            test image for tokens2/ (12 wide, 16 high, RGB8)
nhwc/                      features [batch,4,4,6] (channels last); head ReduceMean(1,2) -> Gemm
tokens1/                   ViT-like: features [batch,1+16,6], class token then a 4x4 grid;
                           head reads the class token and the mean of the grid tokens
tokens2/                   DeiT-like: features [batch,2+12,6], two prefix tokens then a 4x3
                           grid (4 high, 3 wide); head reads both prefix tokens and the grid
<pkg>/reference/           maps computed here in numpy (ONNX Runtime for every forward pass):
                           Score-CAM official / pytorch_grad_cam / torchcam and Ablation-CAM,
                           for the clean pass's top-1 class; cases.json describes them

The reference pipeline below is written from the method definitions (the presets as the
reference libraries compute them, Ablation-CAM as pytorch-grad-cam defines it), not from
the service's code: every channel gets its own pass, no pass is shared, sums are taken
where the definitions take them, in float64.
"""

from __future__ import annotations

import argparse
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
OPSET = 17
IR_VERSION = 8
PRODUCER = "scorecam scripts/dev/make_layout_models.py"
K, STRIDE, CHANNELS, CLASSES = 4, 4, 6, 5
LABELS = ["zero", "one", "two", "three", "four"]
MEAN, STD = 0.5, 0.25


# ---------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    name: str
    layout: str  # "nhwc" | "tokens" (and "nchw" for the in-memory twin of nhwc)
    height: int  # input H
    width: int  # input W
    prefix: int  # leading non-grid tokens (tokens only)
    conv_seed: int
    conv_bias: tuple[float, ...]
    # channel -> bias of a channel with all-zero weights (relu(bias) is its constant value)
    constant: dict[int, float] = field(default_factory=dict)
    head_seed: int = 0
    # learned constants added to the prefix tokens (tokens only), one seed each
    prefix_seeds: tuple[int, ...] = ()
    image: str = ""
    description: str = ""
    target_description: str = ""

    @property
    def grid(self) -> tuple[int, int]:
        return self.height // STRIDE, self.width // STRIDE

    @property
    def tokens(self) -> int:
        h, w = self.grid
        return self.prefix + h * w

    def feature_shape(self) -> list[int]:
        h, w = self.grid
        if self.layout == "nhwc":
            return [h, w, CHANNELS]
        if self.layout == "nchw":
            return [CHANNELS, h, w]
        return [self.tokens, CHANNELS]


PACKAGES = [
    Package(
        name="nhwc", layout="nhwc", height=16, width=16, prefix=0, conv_seed=41,
        conv_bias=(0.1, 0.05, -0.05, 0.2, 0.0, 0.0), constant={4: -1.0, 5: 0.5}, head_seed=51,
        image="image_16x16.png",
        description="layouts/nhwc: generated test model (16×16 RGB in, features channels-last "
                    "4×4×6, 5 classes), not a real classifier",
        target_description="Conv 3→6 (kernel 4, stride 4) + ReLU, transposed to channels-last 4×4×6; "
                           "channel 4 constant 0, channel 5 constant 0.5",
    ),
    Package(
        name="tokens1", layout="tokens", height=16, width=16, prefix=1, conv_seed=43,
        conv_bias=(0.1, 0.0, 0.05, -0.05, 0.15, 0.0), constant={5: 0.5}, head_seed=53,
        prefix_seeds=(61,), image="image_16x16.png",
        description="layouts/tokens1: generated ViT-like test model (16×16 RGB in, 1 class token + "
                    "4×4 patch tokens of 6 channels, 5 classes), not a real classifier",
        target_description="patch Conv 3→6 (kernel 4, stride 4) + ReLU as 16 tokens (row-major) after "
                           "1 class token (learned constant + mean of the patch tokens); "
                           "channel 5 constant 0.5 on the grid",
    ),
    Package(
        name="tokens2", layout="tokens", height=16, width=12, prefix=2, conv_seed=59,
        conv_bias=(0.05, 0.1, -0.05, 0.0, 0.0, 0.15), constant={4: -1.0}, head_seed=73,
        prefix_seeds=(67, 71), image="image_12x16.png",
        description="layouts/tokens2: generated DeiT-like test model (12 wide × 16 high RGB in, class "
                    "and distillation tokens + 4×3 patch tokens of 6 channels, 5 classes), not a real "
                    "classifier",
        target_description="patch Conv 3→6 (kernel 4, stride 4) + ReLU as 12 tokens (4 rows of 3, "
                           "row-major) after 2 prefix tokens (learned constant + mean, learned constant "
                           "+ max of the patch tokens); channel 4 constant 0 on the grid",
    ),
]


# ---------------------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------------------


def conv_params(pkg: Package) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(pkg.conv_seed)
    w = (rng.standard_normal((CHANNELS, 3, K, K)) * 0.1).astype(np.float32)
    b = np.array(pkg.conv_bias, dtype=np.float32)
    for c, bias in pkg.constant.items():
        w[c] = 0.0
        b[c] = bias
    return w, b


def gemm_params(seed: int, inputs: int = CHANNELS, classes: int = CLASSES) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((classes, inputs)).astype(np.float32)
    b = (rng.standard_normal(classes) * 0.1).astype(np.float32)
    return w, b


def prefix_constant(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((1, 1, CHANNELS)) * 0.5).astype(np.float32)


def tensor(name, shape, batch="batch"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, *shape])


def model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER,
                          producer_version="1")
    m.ir_version = IR_VERSION
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m, full_check=True)
    return m


def i64(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def make_extractor(pkg: Package) -> onnx.ModelProto:
    w, b = conv_params(pkg)
    h, gw = pkg.grid
    inits = [numpy_helper.from_array(w, "conv.weight"), numpy_helper.from_array(b, "conv.bias")]
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["conv_out"], name="conv",
                         kernel_shape=[K, K], strides=[STRIDE, STRIDE], pads=[0, 0, 0, 0]),
    ]
    if pkg.layout == "nchw":
        nodes.append(helper.make_node("Relu", ["conv_out"], ["features"], name="relu"))
    elif pkg.layout == "nhwc":
        nodes += [
            helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
            helper.make_node("Transpose", ["relu_out"], ["features"], name="to_nhwc", perm=[0, 2, 3, 1]),
        ]
    else:
        # [N,C,h,w] -> [N,C,h*w] -> [N,h*w,C]: token t = y*w + x (row-major), as ViT patchifies.
        inits.append(i64("patches.shape", [0, CHANNELS, h * gw]))
        nodes += [
            helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
            helper.make_node("Reshape", ["relu_out", "patches.shape"], ["patches_cl"], name="flatten_patches"),
            helper.make_node("Transpose", ["patches_cl"], ["patch_tokens"], name="to_tokens", perm=[0, 2, 1]),
        ]
        prefix_names = []
        reducers = ["ReduceMean", "ReduceMax"]
        for i, seed in enumerate(pkg.prefix_seeds):
            const = f"prefix{i}.constant"
            inits.append(numpy_helper.from_array(prefix_constant(seed), const))
            nodes += [
                helper.make_node(reducers[i], ["patch_tokens"], [f"prefix{i}_pool"], name=f"prefix{i}_pool",
                                 axes=[1], keepdims=1),
                helper.make_node("Add", [f"prefix{i}_pool", const], [f"prefix{i}"], name=f"prefix{i}"),
            ]
            prefix_names.append(f"prefix{i}")
        nodes.append(helper.make_node("Concat", [*prefix_names, "patch_tokens"], ["features"], name="concat",
                                      axis=1))
    g = helper.make_graph(nodes, f"{pkg.name}_extractor", [tensor("input", [3, pkg.height, pkg.width])],
                          [tensor("features", pkg.feature_shape())], initializer=inits)
    return model(g)


def make_head(pkg: Package) -> onnx.ModelProto:
    inits, nodes = [], []

    def gemm(inp: str, seed: int, out: str, tag: str):
        w, b = gemm_params(seed)
        inits.extend([numpy_helper.from_array(w, f"{tag}.weight"), numpy_helper.from_array(b, f"{tag}.bias")])
        nodes.append(helper.make_node("Gemm", [inp, f"{tag}.weight", f"{tag}.bias"], [out], name=tag, transB=1))

    if pkg.layout == "nchw":
        nodes += [
            helper.make_node("GlobalAveragePool", ["features"], ["pooled4"], name="pool"),
            helper.make_node("Flatten", ["pooled4"], ["pooled"], name="flatten", axis=1),
        ]
        gemm("pooled", pkg.head_seed, "logits", "fc")
    elif pkg.layout == "nhwc":
        nodes.append(helper.make_node("ReduceMean", ["features"], ["pooled"], name="pool", axes=[1, 2], keepdims=0))
        gemm("pooled", pkg.head_seed, "logits", "fc")
    else:
        parts = []
        for i in range(pkg.prefix):
            inits.append(i64(f"prefix{i}.index", i))
            nodes.append(helper.make_node("Gather", ["features", f"prefix{i}.index"], [f"prefix{i}"],
                                          name=f"take_prefix{i}", axis=1))
            gemm(f"prefix{i}", pkg.head_seed + 1 + i, f"logits_prefix{i}", f"fc_prefix{i}")
            parts.append(f"logits_prefix{i}")
        inits += [i64("grid.starts", [pkg.prefix]), i64("grid.ends", [pkg.tokens]), i64("grid.axes", [1])]
        nodes += [
            helper.make_node("Slice", ["features", "grid.starts", "grid.ends", "grid.axes"], ["grid_tokens"],
                             name="take_grid"),
            helper.make_node("ReduceMean", ["grid_tokens"], ["grid_mean"], name="grid_pool", axes=[1], keepdims=0),
        ]
        gemm("grid_mean", pkg.head_seed, "logits_grid", "fc_grid")
        parts.append("logits_grid")
        nodes.append(helper.make_node("Sum", parts, ["logits"], name="sum"))
    g = helper.make_graph(nodes, f"{pkg.name}_head", [tensor("features", pkg.feature_shape())],
                          [tensor("logits", [CLASSES])], initializer=inits)
    return model(g)


def model_toml(pkg: Package) -> str:
    h, w = pkg.grid
    layout = f'layout = "{pkg.layout}"\n'
    if pkg.layout == "tokens":
        layout += f"grid = [{h}, {w}]                 # rows, columns of the patch grid\n"
        layout += f"prefix_tokens = {pkg.prefix}             # leading tokens that are not grid cells\n"
    return f"""description = "{pkg.description}"
source = "generated by scripts/dev/make_layout_models.py (onnx.helper, fixed seeds)"
license = "Apache-2.0 (generated test data, part of this repository)"

[input]
width = {pkg.width}
height = {pkg.height}
resize = "stretch"            # "stretch" (whole image to width×height) or "shorter_side_crop"
mean = [{MEAN}, {MEAN}, {MEAN}]        # applied after scaling pixels to 0..1
std = [{STD}, {STD}, {STD}]

[target_layer]
description = "{pkg.target_description}"
{layout}"""


# ---------------------------------------------------------------------------------------
# Test images (PNG written by hand: 8-bit RGB, no ancillary chunks, fixed zlib level)
# ---------------------------------------------------------------------------------------


def test_image(width: int, height: int, seed: int) -> np.ndarray:
    """H×W×3 uint8: a horizontal ramp in red, a bright off-centre blob in green, a diagonal
    ramp in blue, plus seeded noise; enough structure for the maps to differ per channel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 40 + 180 * xx / (width - 1)
    blob = np.exp(-(((yy - 0.7 * height) / 2.5) ** 2 + ((xx - 0.3 * width) / 2.5) ** 2))
    g = 30 + 210 * blob
    b = 220 - 160 * (xx + yy) / (width + height - 2)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def png_bytes(img: np.ndarray) -> bytes:
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def preprocess(img: np.ndarray) -> np.ndarray:
    """[1,3,H,W] float32: pixels / 255, then (v - mean) / std, in float32 as the service does."""
    v = img.astype(np.float32) / np.float32(255.0)
    x = (v - np.float32(MEAN)) / np.float32(STD)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


# ---------------------------------------------------------------------------------------
# Reference pipeline (numpy, float64; ONNX Runtime for the forward passes)
# ---------------------------------------------------------------------------------------


class Runner:
    """The package's two graphs in ONNX Runtime, single-threaded (deterministic)."""

    def __init__(self, extractor: onnx.ModelProto, head: onnx.ModelProto):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        mk = lambda m: ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])  # noqa: E731
        self.ext, self.head_sess = mk(extractor), mk(head)

    def features(self, x: np.ndarray) -> np.ndarray:
        return self.ext.run(["features"], {"input": x.astype(np.float32)})[0]

    def head(self, f: np.ndarray) -> np.ndarray:
        return self.head_sess.run(["logits"], {"features": f.astype(np.float32)})[0].astype(np.float64)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.head(self.features(x))


def read_grid(f: np.ndarray, pkg: Package) -> np.ndarray:
    """One image's features (no batch axis) in the package's layout -> A [K, h, w]."""
    h, w = pkg.grid
    if pkg.layout == "nchw":
        return f.copy()
    if pkg.layout == "nhwc":
        return f.transpose(2, 0, 1).copy()  # A_k[y][x] = F[y, x, k]
    g = f[pkg.prefix:pkg.prefix + h * w]  # [h*w, C], token prefix + y*w + x
    return g.reshape(h, w, CHANNELS).transpose(2, 0, 1).copy()


def write_grid(f_clean: np.ndarray, a: np.ndarray, pkg: Package) -> np.ndarray:
    """The clean features with their grid replaced by A [K, h, w]; prefix tokens untouched."""
    h, w = pkg.grid
    f = f_clean.copy()
    if pkg.layout == "nchw":
        f[...] = a
    elif pkg.layout == "nhwc":
        f[...] = a.transpose(1, 2, 0)
    else:
        f[pkg.prefix:pkg.prefix + h * w] = a.transpose(1, 2, 0).reshape(h * w, CHANNELS)
    return f


def interp_matrix(n_in: int, n_out: int, align_corners: bool) -> np.ndarray:
    """R [n_out, n_in] with out = R @ in: 1-D linear interpolation.

    align_corners=False: output pixel d samples input coordinate (d + 0.5) * n_in/n_out - 0.5,
    clamped below at 0 (half-pixel centres, PyTorch `F.interpolate` / OpenCV INTER_LINEAR).
    align_corners=True: d samples d * (n_in - 1)/(n_out - 1) (first and last pixels coincide).
    Beyond the last input pixel the value is held (edge clamp)."""
    r = np.zeros((n_out, n_in))
    for d in range(n_out):
        if align_corners:
            s = d * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            s = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(s)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = s - i0 if i1 != i0 else 0.0
        r[d, i0] += 1.0 - frac
        r[d, i1] += frac
    return r


def upsample(a: np.ndarray, hw: tuple[int, int], align_corners: bool) -> np.ndarray:
    """Bilinear resize of a 2-D map (separable: rows, then columns)."""
    ry = interp_matrix(a.shape[0], hw[0], align_corners)
    rx = interp_matrix(a.shape[1], hw[1], align_corners)
    return ry @ a @ rx.T


def softmax(v: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def is_constant(a: np.ndarray) -> bool:
    return bool(a.max() == a.min())


def shift_scale(m: np.ndarray, eps: float) -> np.ndarray:
    m = m - m.min()
    return m / (m.max() + eps)


def masked_inputs(x: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """X * M_k for each mask (broadcast over the colour channels), stacked as a batch."""
    if not masks:
        return np.zeros((0, *x.shape[1:]), np.float32)
    return np.stack([x[0] * m[None] for m in masks]).astype(np.float32)


def cam_official(run: Runner, x: np.ndarray, a: np.ndarray, c: int, hw):
    ups = [upsample(a_k, hw, False) for a_k in a]
    keep = [k for k in range(len(a)) if not is_constant(a[k])]  # U_k constant <=> A_k constant
    masks = [(ups[k] - ups[k].min()) / (ups[k].max() - ups[k].min()) for k in keep]
    probs = softmax(run.logits(masked_inputs(x, masks)))[:, c] if keep else np.zeros(0)
    weights: list[float | None] = [None] * len(a)
    total = np.zeros(hw)
    for k, p in zip(keep, probs):
        weights[k] = float(p)
        total += p * ups[k]
    total = np.maximum(total, 0.0)
    lo, hi = total.min(), total.max()
    out = (total - lo) / (hi - lo) if hi > lo else np.zeros(hw)
    return None, out, weights


def cam_pytorch_grad_cam(run: Runner, x: np.ndarray, a: np.ndarray, c: int, hw):
    masks = []
    for a_k in a:
        u = upsample(a_k, hw, True)
        masks.append(np.zeros(hw) if is_constant(a_k) else (u - u.min()) / (u.max() - u.min() + 1e-8))
    scores = run.logits(masked_inputs(x, masks))[:, c]
    w = softmax(scores)
    cam = np.maximum(np.tensordot(w, a, axes=1), 0.0)
    cam = shift_scale(cam, 1e-7)
    big = shift_scale(upsample(cam, hw, False), 1e-7)
    return cam, big, [float(v) for v in w]


def cam_torchcam(run: Runner, x: np.ndarray, a: np.ndarray, c: int, hw, clean_logit: float):
    masks = [upsample(shift_scale(a_k, 1e-8), hw, False) for a_k in a]
    scores = run.logits(masked_inputs(x, masks))[:, c] - clean_logit
    w = softmax(scores)
    cam = np.maximum(np.tensordot(w, a, axes=1), 0.0)
    cam = shift_scale(cam, 1e-8)
    return cam, upsample(cam, hw, False), [float(v) for v in w]


def cam_ablation(run: Runner, f: np.ndarray, a: np.ndarray, c: int, hw, pkg: Package, zero_prefix: bool = False):
    """Ablation-CAM: w_k = (y_c - y_c^(k)) / y_c, y^(k) the head's logits with channel k of the
    feature grid set to 0 (prefix tokens as in the clean pass unless `zero_prefix`, which
    exists only to show that the fixtures tell the two apart)."""
    y = run.head(f[None])[0, c]
    batch = []
    for k in range(len(a)):
        ablated = a.copy()
        ablated[k] = 0.0
        fk = write_grid(f, ablated, pkg)
        if zero_prefix and pkg.layout == "tokens":
            fk[:pkg.prefix, k] = 0.0
        batch.append(fk)
    yk = run.head(np.stack(batch))[:, c]
    w = (y - yk) / y
    cam = np.maximum(np.tensordot(w, a, axes=1), 0.0)
    cam = shift_scale(cam, 1e-7)
    big = shift_scale(upsample(cam, hw, False), 1e-7)
    return cam, big, [float(v) for v in w]


def head_gradient(pkg: Package, a: np.ndarray, c: int) -> np.ndarray | None:
    """d logit_c / d A [K, h, w] for the heads that are a mean over the grid followed by a
    Gemm (nchw, nhwc): the Gemm's row W[c] divided by the cells, at every cell. None for the
    token heads, which read the prefix tokens too."""
    if pkg.layout not in ("nchw", "nhwc"):
        return None
    w, _ = gemm_params(pkg.head_seed)
    n = a.shape[1] * a.shape[2]
    return np.broadcast_to((w[c].astype(np.float64) / n)[:, None, None], a.shape).copy()


def check_gradient(run: Runner, f: np.ndarray, a: np.ndarray, c: int, pkg: Package, grads: np.ndarray) -> float:
    """Central differences through ONNX Runtime against `head_gradient`, on every cell of two
    channels: the closed form is the head's."""
    worst, step = 0.0, 1e-2
    for k in (0, 2):
        for y in range(a.shape[1]):
            for x in range(a.shape[2]):
                up, down = a.copy(), a.copy()
                up[k, y, x] += step
                down[k, y, x] -= step
                z = run.head(np.stack([write_grid(f, up, pkg), write_grid(f, down, pkg)]))[:, c]
                worst = max(worst, abs((z[0] - z[1]) / (2 * step) - grads[k, y, x]))
    assert worst < 1e-3, f"{pkg.name}: the head's gradient is not W[c] / cells (max |Δ| {worst})"
    return worst


def cam_gradient(kind: str, a: np.ndarray, grads: np.ndarray, hw):
    """pytorch-grad-cam 1.5.7's GradCAM, GradCAMPlusPlus, XGradCAM and LayerCAM on given
    activations and gradients ([K, h, w]), then its ReLU and scale_cam_image (normalise,
    resize, normalise)."""
    spatial = (1, 2)
    if kind == "gradcam":
        cam = np.tensordot(grads.mean(axis=spatial), a, axes=1)
    elif kind == "gradcampp":
        g2 = grads ** 2
        g3 = g2 * grads
        s = a.sum(axis=spatial)[:, None, None]
        aij = g2 / (2 * g2 + s * g3 + 0.000001)
        aij = np.where(grads != 0, aij, 0)
        cam = np.tensordot((np.maximum(grads, 0) * aij).sum(axis=spatial), a, axes=1)
    elif kind == "xgradcam":
        s = a.sum(axis=spatial)[:, None, None]
        cam = np.tensordot((grads * a / (s + 1e-7)).sum(axis=spatial), a, axes=1)
    elif kind == "layercam":
        cam = (np.maximum(grads, 0) * a).sum(axis=0)
    else:
        raise ValueError(kind)
    cam = shift_scale(np.maximum(cam, 0.0), 1e-7)
    return cam, shift_scale(upsample(cam, hw, False), 1e-7), None


GAUSSIAN = np.array([[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]])


def cam_recipro(run: Runner, f: np.ndarray, a: np.ndarray, c: int, hw, pkg: Package, gaussian: bool, logit: bool):
    """Recipro-CAM (the authors' code, sybyun/ReciproCAM): one head pass per cell (i, j) on a
    grid that is zero but for A[:, i, j] at (i, j), or A[:, i, j] times the 3×3 Gaussian
    around it (cut at the edges); prefix tokens as the clean pass made them (ViT-ReciproCAM's
    use_cls_token). The map is the target's probability (or logit) per cell, min-max
    normalised, upsampled bilinearly."""
    _, h, w = a.shape
    batch = []
    for i in range(h):
        for j in range(w):
            m = np.zeros_like(a)
            if gaussian:
                for di in range(3):
                    for dj in range(3):
                        y, x = i + di - 1, j + dj - 1
                        if 0 <= y < h and 0 <= x < w:
                            m[:, y, x] = a[:, i, j] * GAUSSIAN[di, dj]
            else:
                m[:, i, j] = a[:, i, j]
            batch.append(write_grid(f, m, pkg))
    out = run.head(np.stack(batch))
    scores = out[:, c] if logit else softmax(out)[:, c]
    cam = scores.reshape(h, w)
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    return cam, upsample(cam, hw, False), None


M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


class SplitMix64:
    """The service's counter-based generator: SplitMix64 started at seed ^ (stream + 1)·φ."""

    def __init__(self, seed: int, stream: int):
        self.state = (seed ^ (((stream + 1) * GOLDEN) & M64)) & M64

    def next(self) -> int:
        self.state = (self.state + GOLDEN) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        return (self.next() >> 11) / float(1 << 53)

    def below(self, n: int) -> int:
        return self.next() % n


RISE = {"masks": 64, "grid": 3, "keep": 0.5, "seed": 7}


def rise_mask(i: int, hw, grid: int, keep: float, seed: int) -> np.ndarray:
    """RISE's mask i (Petsiuk et al.): a grid×grid of cells kept with probability `keep`,
    upsampled bilinearly to (grid + 1) cells of ceil(H / grid) × ceil(W / grid) pixels, cropped
    at a random shift within one cell; the draws from the service's generator, in its order
    (cells row-major, then the row shift, then the column shift)."""
    rng = SplitMix64(seed, i)
    cells = np.array([1.0 if rng.uniform() < keep else 0.0 for _ in range(grid * grid)]).reshape(grid, grid)
    ch, cw = -(-hw[0] // grid), -(-hw[1] // grid)
    dy, dx = rng.below(ch), rng.below(cw)
    up = upsample(cells, ((grid + 1) * ch, (grid + 1) * cw), False)
    return up[dy:dy + hw[0], dx:dx + hw[1]]


def cam_rise(run: Runner, x: np.ndarray, c: int, hw, masks: int, grid: int, keep: float, seed: int):
    """RISE: Σ_i P(c | X ⊙ M_i) M_i / (N · keep), min-max normalised."""
    ms = [rise_mask(i, hw, grid, keep, seed) for i in range(masks)]
    probs = softmax(run.logits(masked_inputs(x, ms)))[:, c]
    sal = sum(p * m for p, m in zip(probs, ms)) / (masks * keep)
    return None, (sal - sal.min()) / (sal.max() - sal.min()), None


METHODS = ["official", "pytorch_grad_cam", "torchcam", "ablationcam"]
GRADIENT_METHODS = ["gradcam", "gradcampp", "xgradcam", "layercam"]
RECIPRO = {
    "reciprocam": {"kernel": "cell", "score": "probability"},
    "reciprocam_gaussian": {"kernel": "gaussian", "score": "probability"},
    "reciprocam_logit": {"kernel": "cell", "score": "logit"},
}


def explain(run: Runner, pkg: Package, x: np.ndarray) -> dict:
    f = run.features(x)[0]
    a = read_grid(f, pkg).astype(np.float64)
    logits = run.head(f[None])[0]
    c = int(np.argmax(logits))
    hw = (pkg.height, pkg.width)
    maps = {
        "official": cam_official(run, x, a, c, hw),
        "pytorch_grad_cam": cam_pytorch_grad_cam(run, x, a, c, hw),
        "torchcam": cam_torchcam(run, x, a, c, hw, float(logits[c])),
        "ablationcam": cam_ablation(run, f, a, c, hw, pkg),
    }
    for name, params in RECIPRO.items():
        maps[name] = cam_recipro(run, f, a, c, hw, pkg, params["kernel"] == "gaussian", params["score"] == "logit")
    maps["rise"] = cam_rise(run, x, c, hw, **RISE)
    grads = head_gradient(pkg, a, c)
    if grads is not None:
        check_gradient(run, f, a, c, pkg, grads)
        for kind in GRADIENT_METHODS:
            maps[kind] = cam_gradient(kind, a, grads, hw)
    return {"features": f, "activations": a, "logits": logits, "class": c, "maps": maps}


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


def max_diff(p, q) -> float:
    if p is None and q is None:
        return 0.0
    return float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).max())


def check_interp() -> None:
    """The resampler against values worked out by hand."""
    assert np.allclose(upsample(np.array([[0.0, 4.0]]), (1, 4), False), [[0, 1, 3, 4]])
    assert np.allclose(upsample(np.array([[0.0, 3.0]]), (1, 4), True), [[0, 1, 2, 3]])
    assert np.allclose(upsample(np.array([[0.0, 4.0], [8.0, 12.0]]), (4, 4), False),
                       [[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]])
    assert np.allclose(upsample(np.array([[0.0, 2.0, 4.0, 6.0]]), (1, 2), False), [[1, 5]])
    assert np.allclose(upsample(np.full((3, 4), 0.5), (12, 16), True), 0.5)


def check_runner(pkg: Package, run: Runner, ext: onnx.ModelProto) -> None:
    """Dynamic batch, concrete feature dims, the constant channels, and (tokens) that the
    grid tokens are the conv output in row-major order and the prefix is what it claims."""
    out = ext.graph.output[0].type.tensor_type.shape.dim
    assert out[0].dim_param == "batch" and [d.dim_value for d in out[1:]] == pkg.feature_shape()
    x = np.random.default_rng(0).standard_normal((3, 3, pkg.height, pkg.width)).astype(np.float32)
    f = run.features(x)
    assert list(f.shape) == [3, *pkg.feature_shape()], f.shape
    assert run.head(f).shape == (3, CLASSES)
    twin = Package(name=f"{pkg.name}_nchw", layout="nchw", height=pkg.height, width=pkg.width, prefix=0,
                   conv_seed=pkg.conv_seed, conv_bias=pkg.conv_bias, constant=pkg.constant)
    conv = Runner(make_extractor(twin), make_head(twin)).features(x)
    for n in range(3):
        a = read_grid(f[n], pkg)
        assert np.array_equal(a, conv[n]), f"{pkg.name}: grid is not the conv output in row-major order"
        assert np.array_equal(write_grid(f[n], a, pkg), f[n])
        for ch, bias in pkg.constant.items():
            assert np.all(a[ch] == max(bias, 0.0)), (pkg.name, ch)
        for ch in set(range(CHANNELS)) - set(pkg.constant):
            assert not is_constant(a[ch]), (pkg.name, ch)
        if pkg.layout == "tokens":
            grid = f[n, pkg.prefix:]
            want = [grid.mean(0), grid.max(0)]
            for i, seed in enumerate(pkg.prefix_seeds):
                assert np.allclose(f[n, i], want[i] + prefix_constant(seed)[0, 0], atol=1e-6)


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------


def save_model(m: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(m.SerializeToString(deterministic=True))


def save_npy(path: Path, arr: np.ndarray) -> None:
    np.save(path, np.ascontiguousarray(arr, dtype="<f4"), allow_pickle=False)


def f32s(v) -> list[float]:
    """float32 values as JSON numbers (shortest repr of the float32 value)."""
    return [float(np.format_float_positional(np.float32(x), unique=True, trim="-")) for x in v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "models" / "layouts",
                    help="default: %(default)s")
    out: Path = ap.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    check_interp()

    images = {}
    for name, (w, h, seed) in {"image_16x16.png": (16, 16, 5), "image_12x16.png": (12, 16, 7)}.items():
        img = test_image(w, h, seed)
        (out / name).write_bytes(png_bytes(img))
        try:
            from PIL import Image
            with Image.open(out / name) as im:
                assert im.mode == "RGB" and im.size == (w, h) and np.array_equal(np.asarray(im), img)
        except ImportError:
            pass
        images[name] = img

    summary = {}
    for pkg in PACKAGES:
        d = out / pkg.name
        ext, head = make_extractor(pkg), make_head(pkg)
        save_model(ext, d / "extractor.onnx")
        save_model(head, d / "head.onnx")
        (d / "labels.txt").write_text("\n".join(LABELS), encoding="utf-8")
        (d / "model.toml").write_text(model_toml(pkg), encoding="utf-8")

        run = Runner(ext, head)
        check_runner(pkg, run, ext)
        x = preprocess(images[pkg.image])
        res = explain(run, pkg, x)
        c, logits, a, f = res["class"], res["logits"], res["activations"], res["features"]
        assert logits[c] > 0.5, f"{pkg.name}: Ablation-CAM divides by the logit; keep it clear of 0"
        assert np.allclose(run.logits(x)[0], logits)

        sanity = {}
        if pkg.layout == "nhwc":
            # The same model with channels-first features gives the same maps.
            twin = Package(**{**pkg.__dict__, "name": "nchw_twin", "layout": "nchw"})
            twin_res = explain(Runner(make_extractor(twin), make_head(twin)), twin, x)
            assert twin_res["class"] == c and np.allclose(twin_res["logits"], logits, atol=1e-6)
            assert np.array_equal(twin_res["activations"], a)
            worst = 0.0
            for m in res["maps"]:
                for i in range(2):
                    worst = max(worst, max_diff(res["maps"][m][i], twin_res["maps"][m][i]))
            assert worst < 1e-6, f"nhwc vs nchw twin: max |Δ| = {worst}"
            sanity["nchw_twin_max_abs_diff"] = float(f"{worst:.3g}")
        else:
            # What the fixtures catch: the prefix zeroed along with the grid under ablation,
            # the grid read column-major, or read from token 0 (ignoring the prefix).
            wrong = cam_ablation(run, f, a, c, (pkg.height, pkg.width), pkg, zero_prefix=True)
            good = res["maps"]["ablationcam"]
            d_prefix = max(max_diff(wrong[0], good[0]), max_diff(wrong[1], good[1]))
            h, w = pkg.grid
            grid = f[pkg.prefix:].astype(np.float64)
            col_major = grid.reshape(w, h, CHANNELS).transpose(2, 1, 0)
            no_prefix = f[:h * w].astype(np.float64).reshape(h, w, CHANNELS).transpose(2, 0, 1)
            d_col, d_off = max_diff(col_major, a), max_diff(no_prefix, a)
            assert min(d_prefix, d_col, d_off) > 1e-2, (pkg.name, d_prefix, d_col, d_off)
            sanity.update({
                "ablation_prefix_zeroed_max_abs_diff": float(f"{d_prefix:.3g}"),
                "grid_read_column_major_max_abs_diff": float(f"{d_col:.3g}"),
                "grid_read_ignoring_prefix_max_abs_diff": float(f"{d_off:.3g}"),
            })

        ref = d / "reference"
        ref.mkdir(exist_ok=True)
        save_npy(ref / "features.npy", f[None])
        save_npy(ref / "activations.npy", a)
        methods = {}
        for m, (feat, big, weights) in res["maps"].items():
            if m in METHODS:
                method, preset, params = ("scorecam", m, {}) if m != "ablationcam" else (m, None, {})
            elif m in RECIPRO:
                method, preset, params = "reciprocam", None, RECIPRO[m]
            elif m == "rise":
                method, preset, params = "rise", None, {k: str(v) for k, v in RISE.items()}
            else:
                method, preset, params = m, None, {}
            entry = {
                "method": method,
                "preset": preset,
                "params": params,
                "feature": None,
                "input": {"file": f"{m}.input.npy", "shape": [pkg.height, pkg.width]},
            }
            if weights is not None:
                entry["weights"] = [None if v is None else float(f"{v:.9g}") for v in weights]
            save_npy(ref / f"{m}.input.npy", big)
            if feat is not None:
                entry["feature"] = {"file": f"{m}.feature.npy", "shape": list(pkg.grid)}
                save_npy(ref / f"{m}.feature.npy", feat)
            assert 0.0 <= big.min() and big.max() <= 1.0 + 1e-6 and big.max() > 0.5, (pkg.name, m)
            methods[m] = entry
        h, w = pkg.grid
        cases = {
            "package": pkg.name,
            "image": f"../../{pkg.image}",
            "input": {"width": pkg.width, "height": pkg.height},
            "layout": pkg.layout,
            "grid": [h, w],
            "prefix_tokens": pkg.prefix,
            "channels": CHANNELS,
            "features_shape": [1, *pkg.feature_shape()],
            "class_index": c,
            "class_label": LABELS[c],
            "clean_logits": f32s(logits.astype(np.float32)),
            "clean_probability": float(f"{softmax(logits)[c]:.9g}"),
            "constant_channels": sorted(pkg.constant),
            "all_zero_channels": sorted(k for k, b in pkg.constant.items() if b <= 0),
            "arrays": {"features": "features.npy", "activations": "activations.npy"},
            "methods": methods,
            # The gradient-family methods need a head that is pooling followed by a linear
            # layer; the token heads read prefix tokens, and the service refuses them.
            "gradient_methods": "supported" if pkg.layout in ("nchw", "nhwc") else "refused",
            "sanity": sanity,
        }
        (ref / "cases.json").write_text(json.dumps(cases, indent=1) + "\n", encoding="utf-8")
        summary[pkg.name] = cases
        print(f"{pkg.name}: class {c} ({LABELS[c]}), logits {cases['clean_logits']}, sanity {sanity}")

    (out / "README.md").write_text(readme(summary), encoding="utf-8")
    print(f"wrote {out}")


def readme(s: dict) -> str:
    def row(name):
        c = s[name]
        return f"| `{name}/` | {c['class_index']} (`{c['class_label']}`) | {c['clean_logits']} |"

    san = {n: s[n]["sanity"] for n in s}
    return f"""# Feature-layout test packages

Three complete model packages whose target layer is **not** channels-first, with reference
maps, written by `python scripts/dev/make_layout_models.py` (onnx, onnxruntime, numpy; fixed
seeds, deterministic serialisation, single-threaded ONNX Runtime: re-running gives
byte-identical files on one machine). Opset 17, IR version 8, float32, a dynamic batch
dimension `batch`; every other dimension of `features` is concrete. Labels are `zero` …
`four` (5 classes); inputs are normalised with mean 0.5 and std 0.25 like `tiny/`.

## Packages

| package | `input` | `features` | `[target_layer]` |
|---|---|---|---|
| `nhwc/` | [batch, 3, 16, 16] | [batch, 4, 4, 6] | `layout = "nhwc"` |
| `tokens1/` | [batch, 3, 16, 16] | [batch, 17, 6] | `layout = "tokens"`, `grid = [4, 4]`, `prefix_tokens = 1` |
| `tokens2/` | [batch, 3, 16, 12] (16 high, 12 wide) | [batch, 14, 6] | `layout = "tokens"`, `grid = [4, 3]`, `prefix_tokens = 2` |

All three start with Conv(3→6, kernel 4, stride 4, bias) + Relu, so the feature grid is
(H/4)×(W/4) with 6 channels; the weights are N(0, 0.1²) from a per-package seed.

- **nhwc**: the Relu output is transposed to channels-last: `features[n, y, x, k]`. Head:
  ReduceMean over axes 1, 2 → Gemm(6→5) → `logits`. Channel 4 is constant 0 (zero weights,
  bias −1) and channel 5 constant 0.5 (zero weights, bias 0.5) for every input.
- **tokens1** (ViT-like): the Relu output [batch, 6, 4, 4] is reshaped to [batch, 6, 16] and
  transposed to 16 patch tokens [batch, 16, 6], so patch (y, x) is token y·4 + x. A class
  token = learned constant + mean of the patch tokens (so it depends on the image) is
  concatenated in front: `features[n, 0]` is the class token, `features[n, 1 + y·4 + x]` the
  grid. Head: Gather token 0 → Gemm(6→5), plus Slice tokens 1..17 → ReduceMean → Gemm(6→5),
  summed. Channel 5 is constant 0.5 on the grid (its class-token entry is 0.5 plus the learned
  constant).
- **tokens2** (DeiT-like, non-square): input 12 wide × 16 high, grid 4 rows × 3 columns, patch
  (y, x) at token 2 + y·3 + x. Token 0 = constant + mean of the patch tokens, token 1 =
  another constant + max over the patch tokens. Head: Gemm(token 0) + Gemm(token 1) +
  Gemm(mean of the grid tokens). Channel 4 is constant 0 on the grid (zero weights, bias −1);
  in the prefix tokens it is the learned constants, not 0.

Every head reads its prefix tokens, so an engine that changes them when it writes modified
features back (or reads the grid from the wrong tokens) gets different logits.

## Images

`image_16x16.png` (for `nhwc/` and `tokens1/`) and `image_12x16.png` (12 wide, 16 high, for
`tokens2/`): 8-bit RGB PNGs at exactly the model input size, so no resize is involved. Red is
a left-to-right ramp, green a bright blob left of centre in the lower half, blue a diagonal
ramp, with seeded Gaussian noise (σ 12 levels) on top. Preprocessing: v = byte / 255 in
float32, then (v − 0.5) / 0.25.

## Reference maps (`<package>/reference/`)

For the clean pass's top-1 class (argmax of the logits of extractor then head on the image):

| package | class | clean logits |
|---|---|---|
{row("nhwc")}
{row("tokens1")}
{row("tokens2")}

`cases.json` gives the image (path relative to `cases.json`), the class, the clean logits
(float32 values), the layout, grid, prefix count, the constant channels and, per method, the
map files with their shape, plus the channel weights the method computed (`null`: the channel
was skipped). Files are little-endian float32 `.npy`, row-major:

| method | `feature` (h×w) | `input` (H×W) |
|---|---|---|
| Score-CAM `official` | none (this convention sums at input size) | `official.input.npy` |
| Score-CAM `pytorch_grad_cam` | `pytorch_grad_cam.feature.npy` | `pytorch_grad_cam.input.npy` |
| Score-CAM `torchcam` | `torchcam.feature.npy` | `torchcam.input.npy` |
| Ablation-CAM | `ablationcam.feature.npy` | `ablationcam.input.npy` |

Also `features.npy` (the clean `features`, [1, …] in the package's own layout) and
`activations.npy` (the grid read out as channel maps, [6, h, w]).

### How they were computed

The script does every forward pass with ONNX Runtime (extractor, then head) and everything
else in numpy in float64; the maps are rounded to float32 only when saved. The code follows
the method definitions directly, with none of the service's savings: every channel gets its
own masked pass, the official sum is taken at input size, constant channels are not shared.

Channel k's map is read from the grid only: A_k[y][x] = F[n, y, x, k] (nhwc) or
F[n, prefix + y·w + x, k] (tokens). X is the normalised input, c the class, z the logits,
p the softmax over classes. Up_F / Up_T: bilinear resize with half-pixel centres (source
coordinate (d + ½)·in/out − ½, clamped at 0) / with corners aligned (d·(in − 1)/(out − 1));
both hold the edge value past the last pixel. Masked inputs are X times the mask on all
three colour channels.

- `official`: U_k = Up_F(A_k); channels with a constant A_k are dropped; mask
  (U_k − min)/(max − min); weight p_c(X·M_k); map ReLU(Σ w_k U_k) at H×W, min-max normalised
  (all zero if constant).
- `pytorch_grad_cam`: U_k = Up_T(A_k); mask (U_k − min)/(max − min + 1e-8), all zero for a
  constant channel (which still gets its pass); weights softmax over channels of z_c(X·M_k);
  C = ReLU(Σ w_k A_k) at h×w, minus its min, over (its max + 1e-7) → `feature`; Up_F of that,
  normalised again the same way → `input`.
- `torchcam`: N_k = A_k − min, over (its max + 1e-8); mask Up_F(N_k); weights softmax over
  channels of z_c(X·M_k) − z_c(X); C = ReLU(Σ w_k A_k), minus min, over (max + 1e-8) →
  `feature`; Up_F(C) → `input` (no second normalisation).
- Ablation-CAM (only the head runs): y = z_c of the clean features; for each channel k the
  clean features with A_k set to 0 are fed to the head, giving y_k; w_k = (y − y_k) / y on
  raw logits; C = ReLU(Σ w_k A_k), minus min, over (max + 1e-7) → `feature`; Up_F of that,
  normalised again the same way → `input`. Every channel gets a pass here, including the
  all-zero ones (their weight is 0 and they add nothing to the map).

**Ablating a channel means the feature grid only.** For `tokens`, channel k is set to 0 in
every grid token, and the prefix tokens are fed to the head exactly as the clean pass
produced them (they are not part of the map being explained and are not recomputed from the
ablated grid: only the head runs). For `nhwc`, channel k is set to 0 in every cell. Which
channels are constant (skipped by `official`, all-zero masks elsewhere) is judged on the
grid too.

### Checks the script makes

- The resampler against hand-worked values; the written PNGs decode (Pillow, if installed)
  to the intended pixels; each extractor runs at batch 3 with the declared shapes; the grid
  read from the features equals the Conv+Relu output of a channels-first copy of the
  extractor, in row-major order; the prefix tokens are the constants plus the mean (max)
  of the grid; the constant channels are constant and the others are not; the top-1 logit
  is above 0.5 (Ablation-CAM divides by it).
- `nhwc/`: the same model with channels-first features (Relu output, GlobalAveragePool head,
  same weights) run through the same pipeline with layout `nchw` gives the same class,
  activations and maps (max |Δ| {san["nhwc"]["nchw_twin_max_abs_diff"]}, below 1e-6).
- `tokens1/`, `tokens2/`: the fixtures tell apart the usual mistakes, each by more than 0.01
  (max |Δ|, tokens1 / tokens2; also in `cases.json` under `sanity`):
  - Ablation-CAM with channel k zeroed in the prefix tokens too (maps):
    {san["tokens1"]["ablation_prefix_zeroed_max_abs_diff"]} / {san["tokens2"]["ablation_prefix_zeroed_max_abs_diff"]};
  - the grid read column-major (activations): {san["tokens1"]["grid_read_column_major_max_abs_diff"]} / {san["tokens2"]["grid_read_column_major_max_abs_diff"]};
  - the grid read from token 0, ignoring the prefix (activations): {san["tokens1"]["grid_read_ignoring_prefix_max_abs_diff"]} / {san["tokens2"]["grid_read_ignoring_prefix_max_abs_diff"]}.

The references agree with any correct implementation up to float32 rounding of the masks and
ONNX Runtime's own rounding (different batch sizes can change the last bits of a logit);
compare with a tolerance of about 1e-4.
"""


if __name__ == "__main__":
    main()
