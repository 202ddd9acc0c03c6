#!/usr/bin/env python3
"""Generate the head-kind test packages and their reference maps (deterministic).

    python scripts/dev/make_head_models.py [--out tests/fixtures/models/heads]

Needs onnx, onnxruntime, numpy and Pillow (scripts/setup/python_tools.sh): Pillow is the
definition of the photo's resize (`resize_filter = "pillow_bilinear"`, Image.resize BILINEAR)
and of the grey conversion (convert("L")), so it computes them here. Opset 17, IR version 8,
float32, dynamic batch dimension `batch`. Fixed seeds, deterministic serialisation and
single-threaded ONNX Runtime: re-running gives byte-identical files on the same machine.

Packages (all: 16×16 input, extractor Conv(kernel 4, stride 4) + Relu -> features [batch,5,4,4]):

binary/         RGB; head GAP -> Gemm(5->1), [head] kind classes, activation sigmoid, one label
grey/           input.channels = 1; head GAP -> Gemm(5->3), sigmoid (multi-label)
segmentation/   RGB; head 1x1 Conv(5->3) -> Resize ×4 (linear, half-pixel) -> [batch,3,16,16] (nchw)
seg_nhwc/       the same extractor; head 1x1 Conv(5->3) -> Resize ×2 -> Transpose -> [batch,8,8,3]
embedding/      RGB; head GAP -> Gemm(5->8), [head] kind embedding, no labels.txt
letterbox/      RGB, resize = "letterbox" (pad 114); head GAP -> Gemm(5->5), softmax

<pkg>/reference/cases.json lists the cases (image, method, preset, target, region or reference,
the expected target score and the map files) and the expected /predict answer; the maps
(Score-CAM official / pytorch_grad_cam / torchcam, Grad-CAM on the classifier heads, EigenCAM)
are computed here in numpy (float64, ONNX Runtime for every forward pass) from the methods'
DEFINITIONS (docs/presets.md and the head-kind targets as pytorch-grad-cam defines them), not
from the service's code. See the README.md this script writes next to the packages.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_layout_models import (  # noqa: E402
    cam_gradient,
    check_interp,
    f32s,
    is_constant,
    png_bytes,
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
PRODUCER = "scorecam scripts/dev/make_head_models.py"
H = W = 16  # model input
KERNEL = 4  # conv kernel = stride
GRID = H // KERNEL  # 4×4 feature grid
K = 5  # feature channels


# ---------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    name: str
    kind: str  # classes | segmentation | embedding
    activation: str  # softmax | sigmoid
    outputs: int  # classes (classes, segmentation) or embedding dim
    channels: int  # input channels
    mean: tuple[float, ...]
    std: tuple[float, ...]
    conv_seed: int
    conv_bias: tuple[float, ...]
    head_seed: int
    head_bias: tuple[float, ...] = ()
    constant: dict[int, float] = field(default_factory=dict)
    resize: str = "stretch"
    layout: str = "nchw"  # segmentation output layout
    seg_scale: int = 4  # segmentation output = grid × seg_scale
    head_scale: float = 1.0  # multiplies the head's weights and bias (argmax unchanged)
    labels: tuple[str, ...] = ()
    description: str = ""

    @property
    def out_hw(self) -> tuple[int, int]:
        return GRID * self.seg_scale, GRID * self.seg_scale


PACKAGES = {
    p.name: p
    for p in [
        Package("binary", "classes", "sigmoid", 1, 3, (0.45, 0.5, 0.55), (0.22, 0.25, 0.28), conv_seed=101,
                conv_bias=(0.1, 0.05, -0.05, 0.15, 0.0), constant={4: 0.3}, head_seed=103, head_bias=(0.2,),
                labels=("cat",),
                description="heads/binary: generated binary classifier (16×16 RGB, one sigmoid logit), not a real model"),
        Package("grey", "classes", "sigmoid", 3, 1, (0.5,), (0.25,), conv_seed=107,
                conv_bias=(0.1, 0.0, 0.05, -0.05, 0.1), head_seed=112,
                labels=("finding_a", "finding_b", "finding_c"),
                description="heads/grey: generated multi-label classifier (16×16 grey, 3 sigmoid logits), not a real model"),
        Package("segmentation", "segmentation", "softmax", 3, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), conv_seed=115,
                conv_bias=(0.1, 0.05, 0.1, 0.1, 0.0), constant={4: 0.0}, head_seed=127, head_bias=(0.3, 0.0, -0.1),
                labels=("background", "blob", "edge"),
                description="heads/segmentation: generated segmenter (16×16 RGB, 3 classes at 16×16, NCHW), not a real model"),
        Package("seg_nhwc", "segmentation", "softmax", 3, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), conv_seed=115,
                conv_bias=(0.1, 0.05, 0.1, 0.1, 0.0), constant={4: 0.0}, head_seed=127, head_bias=(0.3, 0.0, -0.1),
                layout="nhwc", seg_scale=2, head_scale=0.03, labels=("background", "blob", "edge"),
                description="heads/seg_nhwc: generated segmenter (16×16 RGB, 3 classes at 8×8, NHWC, small logits), "
                            "not a real model"),
        Package("embedding", "embedding", "softmax", 8, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), conv_seed=131,
                conv_bias=(0.1, 0.05, 0.0, 0.1, -0.05), head_seed=137,
                description="heads/embedding: generated embedder (16×16 RGB, 8-d embedding), not a real model"),
        Package("letterbox", "classes", "softmax", 5, 3, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), conv_seed=143,
                conv_bias=(0.1, 0.05, 0.0, 0.1, -0.05), head_seed=149, resize="letterbox",
                labels=("zero", "one", "two", "three", "four"),
                description="heads/letterbox: generated classifier with a letterbox resize (16×16 RGB, 5 classes), "
                            "not a real model"),
    ]
}


# ---------------------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------------------


def tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])


def model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER,
                          producer_version="1")
    m.ir_version = IR_VERSION
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m, full_check=True)
    return m


def conv_params(pkg: Package) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(pkg.conv_seed)
    w = (rng.standard_normal((K, pkg.channels, KERNEL, KERNEL)) * (0.1 if pkg.channels == 3 else 0.17)).astype(np.float32)
    b = np.array(pkg.conv_bias, dtype=np.float32)
    for c, bias in pkg.constant.items():
        w[c] = 0.0
        b[c] = bias
    return w, b


def head_params(pkg: Package) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(pkg.head_seed)
    w = rng.standard_normal((pkg.outputs, K)).astype(np.float32)
    b = (rng.standard_normal(pkg.outputs) * 0.1).astype(np.float32)
    if pkg.head_bias:
        b = np.array(pkg.head_bias, dtype=np.float32)
    if pkg.head_scale != 1.0:
        w, b = (w * np.float32(pkg.head_scale)).astype(np.float32), (b * np.float32(pkg.head_scale)).astype(np.float32)
    return w, b


def make_extractor(pkg: Package) -> onnx.ModelProto:
    w, b = conv_params(pkg)
    g = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["conv_out"], name="conv",
                             kernel_shape=[KERNEL, KERNEL], strides=[KERNEL, KERNEL], pads=[0, 0, 0, 0]),
            helper.make_node("Relu", ["conv_out"], ["features"], name="relu"),
        ],
        f"{pkg.name}_extractor", [tensor("input", [pkg.channels, H, W])], [tensor("features", [K, GRID, GRID])],
        initializer=[numpy_helper.from_array(w, "conv.weight"), numpy_helper.from_array(b, "conv.bias")],
    )
    return model(g)


def make_head(pkg: Package) -> onnx.ModelProto:
    w, b = head_params(pkg)
    inits, nodes = [], []
    if pkg.kind in ("classes", "embedding"):
        inits += [numpy_helper.from_array(w, "fc.weight"), numpy_helper.from_array(b, "fc.bias")]
        nodes += [
            helper.make_node("GlobalAveragePool", ["features"], ["pooled4"], name="pool"),
            helper.make_node("Flatten", ["pooled4"], ["pooled"], name="flatten", axis=1),
            helper.make_node("Gemm", ["pooled", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
        ]
        out = [pkg.outputs]
    else:
        oh, ow = pkg.out_hw
        inits += [numpy_helper.from_array(w[:, :, None, None], "classifier.weight"),
                  numpy_helper.from_array(b, "classifier.bias"),
                  numpy_helper.from_array(np.array([1, 1, pkg.seg_scale, pkg.seg_scale], np.float32), "up.scales")]
        nodes += [
            helper.make_node("Conv", ["features", "classifier.weight", "classifier.bias"], ["low"], name="classifier",
                             kernel_shape=[1, 1]),
            helper.make_node("Resize", ["low", "", "up.scales"], ["up" if pkg.layout == "nhwc" else "logits"],
                             name="upsample", mode="linear", coordinate_transformation_mode="half_pixel"),
        ]
        if pkg.layout == "nhwc":
            nodes.append(helper.make_node("Transpose", ["up"], ["logits"], name="to_nhwc", perm=[0, 2, 3, 1]))
            out = [oh, ow, pkg.outputs]
        else:
            out = [pkg.outputs, oh, ow]
    g = helper.make_graph(nodes, f"{pkg.name}_head", [tensor("features", [K, GRID, GRID])], [tensor("logits", out)],
                          initializer=inits)
    return model(g)


def model_toml(pkg: Package) -> str:
    fmt = lambda v: ", ".join(repr(float(x)) for x in v)  # noqa: E731
    extra = ""
    if pkg.channels != 3:
        extra += f"channels = {pkg.channels}                  # the photo turned grey (Pillow convert(\"L\")) before resizing\n"
    if pkg.resize == "letterbox":
        extra += "pad_value = 114\n"
    head = f'kind = "{pkg.kind}"\n'
    if pkg.kind != "embedding":
        head += f'activation = "{pkg.activation}"\n'
    if pkg.kind == "segmentation":
        head += f'layout = "{pkg.layout}"\n'
    return f"""description = "{pkg.description}"
source = "generated by scripts/dev/make_head_models.py (onnx.helper, fixed seeds)"
license = "Apache-2.0 (generated test data, part of this repository)"

[input]
width = {W}
height = {H}
resize = "{pkg.resize}"
{extra}mean = [{fmt(pkg.mean)}]
std = [{fmt(pkg.std)}]

[target_layer]
description = "Conv {pkg.channels}→{K} (kernel 4, stride 4) + ReLU, {K}×4×4"

[head]
{head}"""


# ---------------------------------------------------------------------------------------
# Preprocessing (Pillow is the definition of the resize and of the grey conversion)
# ---------------------------------------------------------------------------------------


def grey(img: np.ndarray) -> np.ndarray:
    """Pillow's convert("L"): L = (19595 R + 38470 G + 7471 B + 32768) >> 16."""
    rgb = img.astype(np.int64)
    lum = ((19595 * rgb[..., 0] + 38470 * rgb[..., 1] + 7471 * rgb[..., 2] + 32768) >> 16).astype(np.uint8)
    pil = np.asarray(Image.fromarray(img, "RGB").convert("L"))
    assert np.array_equal(lum, pil), "the grey formula is not Pillow's"
    return lum


def pil_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Image.resize((w, h), BILINEAR) on a uint8 H×W×3 or H×W array."""
    if img.shape[1] == size[0] and img.shape[0] == size[1]:
        return img.copy()
    mode = "L" if img.ndim == 2 else "RGB"
    return np.asarray(Image.fromarray(img, mode).resize(size, Image.Resampling.BILINEAR))


def round_half_even(v: float) -> int:
    return int(round(v))  # Python's round is half to even


@dataclass
class Geometry:
    """How the photo maps onto the model's input: the pasted rectangle (x0, y0, nw, nh)."""
    photo: tuple[int, int]  # (w0, h0)
    paste: tuple[int, int, int, int]


def model_pixels(pkg: Package, img: np.ndarray) -> tuple[np.ndarray, Geometry]:
    """The photo as the model sees it, uint8 H×W×C, and where it lies on the input."""
    h0, w0 = img.shape[:2]
    if pkg.channels == 1:
        img = grey(img)  # before resizing
    if pkg.resize == "stretch":
        out = pil_resize(img, (W, H))
        geo = Geometry((w0, h0), (0, 0, W, H))
    else:
        s = min(W / w0, H / h0)
        nw = min(max(round_half_even(w0 * s), 1), W)
        nh = min(max(round_half_even(h0 * s), 1), H)
        x0, y0 = (W - nw) // 2, (H - nh) // 2
        canvas = np.full((H, W) + img.shape[2:], 114, np.uint8)
        canvas[y0:y0 + nh, x0:x0 + nw] = pil_resize(img, (nw, nh))
        out, geo = canvas, Geometry((w0, h0), (x0, y0, nw, nh))
    if out.ndim == 2:
        out = out[..., None]
    return out, geo


def normalise(pkg: Package, pixels: np.ndarray) -> np.ndarray:
    """[1,C,H,W] float32: byte / 255, then (v - mean) / std, per channel, in float32."""
    v = pixels.astype(np.float32) / np.float32(255.0)
    x = (v - np.array(pkg.mean, np.float32)) / np.array(pkg.std, np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


# ---------------------------------------------------------------------------------------
# Forward passes and targets
# ---------------------------------------------------------------------------------------


class Runner:
    def __init__(self, pkg: Package, extractor: onnx.ModelProto, head: onnx.ModelProto):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        mk = lambda m: ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])  # noqa: E731
        self.pkg, self.ext, self.head_sess = pkg, mk(extractor), mk(head)

    def features(self, x: np.ndarray) -> np.ndarray:
        return self.ext.run(["features"], {"input": x.astype(np.float32)})[0]

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The head's output per input, as float64; segmentation always as [N, C, H_o, W_o]."""
        out = self.head_sess.run(["logits"], {"features": self.features(x)})[0].astype(np.float64)
        if self.pkg.kind == "segmentation" and self.pkg.layout == "nhwc":
            out = out.transpose(0, 3, 1, 2)
        return out


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


class Target:
    """What one target scores on a head output (score: what pytorch_grad_cam / torchcam
    weigh; probability: what official weighs and what answers report)."""

    def score(self, out: np.ndarray) -> float:
        raise NotImplementedError

    def probability(self, out: np.ndarray) -> float:
        raise NotImplementedError


@dataclass
class ClassTarget(Target):
    c: int
    activation: str
    binary: bool

    def score(self, out):
        if self.binary:  # BinaryClassifierOutputTarget: target 1 scores z, target 0 scores -z
            return float(out[0] if self.c == 1 else -out[0])
        return float(out[self.c])

    def probability(self, out):
        if self.activation == "sigmoid":
            return float(sigmoid(self.score(out)))
        return float(softmax(out)[self.c])


@dataclass
class SegTarget(Target):
    c: int
    region: np.ndarray  # bool [H_o, W_o]
    activation: str

    def score(self, out):  # SemanticSegmentationTarget: sum over the region of logit c
        return float(out[self.c][self.region].sum())

    def probability(self, out):
        p = softmax(out, axis=0)[self.c] if self.activation == "softmax" else sigmoid(out[self.c])
        return float(p[self.region].mean())


@dataclass
class EmbTarget(Target):
    reference: np.ndarray

    def score(self, out):
        a, b = out.astype(np.float64), self.reference.astype(np.float64)
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8))

    def probability(self, out):
        return self.score(out)


# ---------------------------------------------------------------------------------------
# Methods (docs/presets.md), written from the definitions
# ---------------------------------------------------------------------------------------


def masked(x: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """X ⊙ M_k on every input channel, one input per mask."""
    if not masks:
        return np.zeros((0, *x.shape[1:]), np.float32)
    return np.stack([x[0] * m[None] for m in masks]).astype(np.float32)


def cam_official(run: Runner, x, a, t: Target):
    hw = (H, W)
    ups = [upsample(a_k, hw, False) for a_k in a]
    keep = [k for k in range(len(a)) if not is_constant(a[k])]
    masks = [(ups[k] - ups[k].min()) / (ups[k].max() - ups[k].min()) for k in keep]
    outs = run.outputs(masked(x, masks))
    total = np.zeros(hw)
    weights: list[float | None] = [None] * len(a)
    for k, o in zip(keep, outs):
        weights[k] = t.probability(o)
        total += weights[k] * ups[k]
    total = np.maximum(total, 0.0)
    lo, hi = total.min(), total.max()
    return None, ((total - lo) / (hi - lo) if hi > lo else np.zeros(hw)), weights


def cam_pytorch_grad_cam(run: Runner, x, a, t: Target):
    hw = (H, W)
    masks = []
    for a_k in a:
        u = upsample(a_k, hw, True)
        masks.append(np.zeros(hw) if is_constant(a_k) else (u - u.min()) / (u.max() - u.min() + 1e-8))
    s = np.array([t.score(o) for o in run.outputs(masked(x, masks))])
    w = softmax(s)
    cam = shift_scale(np.maximum(np.tensordot(w, a, axes=1), 0.0), 1e-7)
    return cam, shift_scale(upsample(cam, hw, False), 1e-7), [float(v) for v in w]


def cam_torchcam(run: Runner, x, a, t: Target, clean_score: float):
    hw = (H, W)
    masks = [upsample(shift_scale(a_k, 1e-8), hw, False) for a_k in a]
    s = np.array([t.score(o) for o in run.outputs(masked(x, masks))]) - clean_score
    w = softmax(s)
    cam = shift_scale(np.maximum(np.tensordot(w, a, axes=1), 0.0), 1e-8)
    return cam, upsample(cam, hw, False), [float(v) for v in w]


def eigen_svd_sign_flipped(a: np.ndarray) -> bool:
    """Whether LAPACK's first right singular vector gives a projection whose largest |value|
    is negative (the sign rule flips it): recorded so that the fixtures show both cases."""
    k, h, w = a.shape
    xm = a.reshape(k, h * w).T
    xm = xm - xm.mean(axis=0)
    proj = xm @ np.linalg.svd(xm, full_matrices=True)[2][0]
    return bool(proj[int(np.argmax(np.abs(proj)))] < 0)


def cam_eigen(a: np.ndarray):
    """EigenCAM as pytorch-grad-cam 1.5.7's get_2d_projection computes it: the activations as
    (h·w)×K in float32, each channel minus its spatial mean, projected on the first right
    singular vector of numpy's SVD with the sign numpy gives it; ReLU, then pytorch_grad_cam's
    normalise / resize / normalise."""
    k, h, w = a.shape
    xm = a.astype(np.float32).reshape(k, h * w).T
    xm = xm - xm.mean(axis=0)
    _, _, vt = np.linalg.svd(xm, full_matrices=True)
    proj = (xm @ vt[0]).astype(np.float64)
    cam = shift_scale(np.maximum(proj.reshape(h, w), 0.0), 1e-7)
    return cam, shift_scale(upsample(cam, (H, W), False), 1e-7), None


def class_head_gradient(run: Runner, pkg: Package, t: ClassTarget, f: np.ndarray) -> np.ndarray:
    """d score / d A for a GAP -> Gemm head: the Gemm row of the target (minus it for the binary
    head's target 0) over the cells, at every cell; checked by central differences through ONNX
    Runtime on two channels."""
    w, _ = head_params(pkg)
    row = w[0] * (1.0 if t.c == 1 else -1.0) if t.binary else w[t.c]
    grads = np.broadcast_to((row.astype(np.float64) / (GRID * GRID))[:, None, None], f.shape).copy()
    step = 1e-2
    for k in (0, 1):
        for y in range(GRID):
            for x in range(GRID):
                up, down = f.copy(), f.copy()
                up[k, y, x] += step
                down[k, y, x] -= step
                out = run.head_sess.run(["logits"], {"features": np.stack([up, down]).astype(np.float32)})[0]
                fd = (t.score(out[0].astype(np.float64)) - t.score(out[1].astype(np.float64))) / (2 * step)
                assert abs(fd - grads[k, y, x]) < 1e-3, (pkg.name, k, y, x, fd, grads[k, y, x])
    return grads


# ---------------------------------------------------------------------------------------
# Regions
# ---------------------------------------------------------------------------------------


def centres_in_photo(pkg: Package, geo: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Each output pixel's centre in photo pixels (stretch): ((u+0.5)·W/W_o)·w0/W."""
    assert pkg.resize == "stretch"
    oh, ow = pkg.out_hw
    w0, h0 = geo.photo
    xs = ((np.arange(ow) + 0.5) * W / ow) * w0 / W
    ys = ((np.arange(oh) + 0.5) * H / oh) * h0 / H
    return xs, ys


def box_region(pkg: Package, geo: Geometry, box) -> np.ndarray:
    x1, y1, x2, y2 = box
    xs, ys = centres_in_photo(pkg, geo)
    return ((ys >= y1) & (ys < y2))[:, None] & ((xs >= x1) & (xs < x2))[None, :]


def mask_region(pkg: Package, geo: Geometry, mask: np.ndarray) -> np.ndarray:
    xs, ys = centres_in_photo(pkg, geo)
    px, py = np.floor(xs).astype(int), np.floor(ys).astype(int)
    return mask[py][:, px] != 0


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------

IMAGES = {
    # name: (width, height, seed)
    "photo_16x16.png": (16, 16, 11),
    "photo_20x20.png": (20, 20, 13),  # grey's colour photo; embedding's reference photo
    "photo_32x24.png": (32, 24, 17),  # segmentation (stretched to 16×16: x ÷ 2, y ÷ 1.5)
    "photo_24x11.png": (24, 11, 19),  # letterbox (pasted as 16×7 at y = 4)
}


def region_mask_image() -> np.ndarray:
    """32×24 RGB: white on a disc right of centre plus a bar at the top, black elsewhere."""
    yy, xx = np.mgrid[0:24, 0:32]
    on = ((xx - 21.0) ** 2 + (yy - 13.0) ** 2 <= 36.0) | ((yy < 4) & (xx >= 2) & (xx < 12))
    return np.where(on[..., None], np.uint8(255), np.uint8(0)).repeat(3, axis=2).astype(np.uint8)


def write_png(path: Path, img: np.ndarray) -> None:
    path.write_bytes(png_bytes(img))
    with Image.open(path) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), img)


# ---------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------


def f9(v: float) -> float:
    return float(f"{v:.9g}")


class Builder:
    def __init__(self, out: Path, pkg: Package, images: dict[str, np.ndarray]):
        self.out, self.pkg, self.images = out, pkg, images
        self.ref = out / pkg.name / "reference"
        self.ref.mkdir(parents=True, exist_ok=True)
        self.ext, self.head = make_extractor(pkg), make_head(pkg)
        self.run = Runner(pkg, self.ext, self.head)
        self.cases: list[dict] = []

    def load(self, image: str):
        pixels, geo = model_pixels(self.pkg, self.images[image])
        x = normalise(self.pkg, pixels)
        f = self.run.features(x)[0].astype(np.float64)
        out = self.run.outputs(x)[0]
        return x, f, out, geo

    def label(self, c: int) -> str | None:
        p = self.pkg
        if p.kind == "embedding":
            return None
        if p.outputs == 1 and len(p.labels) == 1:
            return [f"not {p.labels[0]}", p.labels[0]][c]
        return p.labels[c]

    def add(self, name: str, image: str, t: Target, target_index: int | None, ask: dict, methods: list[str],
            feature_check: bool = True) -> None:
        x, a, out, geo = self.load(image)
        prob = t.probability(out)
        for m in methods:
            if m == "official":
                res = cam_official(self.run, x, a, t)
            elif m == "pytorch_grad_cam":
                res = cam_pytorch_grad_cam(self.run, x, a, t)
            elif m == "torchcam":
                res = cam_torchcam(self.run, x, a, t, t.score(out))
            elif m == "eigencam":
                res = cam_eigen(a)
            elif m == "gradcam":
                res = cam_gradient("gradcam", a, class_head_gradient(self.run, self.pkg, t, a), (H, W))
            else:
                raise ValueError(m)
            feat, big, weights = res
            assert big.max() > 0.5 and big.min() >= 0.0 and big.max() <= 1.0 + 1e-6, (self.pkg.name, name, m)
            stem = f"{name}.{m}"
            entry = {
                "name": f"{name}/{m}",
                "image": f"../../{image}",
                "method": m if m in ("eigencam", "gradcam") else "scorecam",
                "preset": None if m in ("eigencam", "gradcam") else m,
                **ask,
                "target": {"index": target_index, "label": self.label(target_index) if target_index is not None else None,
                           "score": f9(prob)},
                "model": {"file": f"{stem}.model.npy", "shape": [H, W]},
                "feature": None,
                "input": None,
            }
            if weights is not None:
                entry["weights"] = [None if v is None else f9(v) for v in weights]
            save_npy(self.ref / f"{stem}.model.npy", big)
            if feat is not None:
                entry["feature"] = {"file": f"{stem}.feature.npy", "shape": [GRID, GRID]}
                save_npy(self.ref / f"{stem}.feature.npy", feat)
            if self.pkg.resize == "letterbox":
                x0, y0, nw, nh = geo.paste
                w0, h0 = geo.photo
                crop = big[y0:y0 + nh, x0:x0 + nw]
                entry["input"] = {"file": f"{stem}.input.npy", "shape": [h0, w0]}
                save_npy(self.ref / f"{stem}.input.npy", upsample(crop, (h0, w0), False))
            self.cases.append(entry)

    def predict(self, image: str) -> dict:
        _, _, out, _ = self.load(image)
        p = self.pkg
        if p.kind == "embedding":
            return {"image": f"../../{image}", "predictions": [],
                    "embedding": {"dim": p.outputs, "norm": f9(float(np.linalg.norm(out)))}}
        if p.kind == "segmentation":
            arg = out.argmax(axis=0)
            scores = [float((arg == c).mean()) for c in range(p.outputs)]
        elif p.outputs == 1:
            scores = [float(sigmoid(-out[0])), float(sigmoid(out[0]))]
        elif p.activation == "sigmoid":
            scores = [float(v) for v in sigmoid(out)]
        else:
            scores = [float(v) for v in softmax(out)]
        order = sorted(range(len(scores)), key=lambda c: -scores[c])
        assert len(set(scores)) == len(scores), f"{p.name}: tied scores make the order ambiguous"
        return {"image": f"../../{image}", "predictions": [{"index": c, "label": self.label(c), "score": f9(scores[c])}
                                                          for c in order]}

    def finish(self, extra: dict) -> dict:
        d = self.out / self.pkg.name
        save_model(self.ext, d / "extractor.onnx")
        save_model(self.head, d / "head.onnx")
        if self.pkg.labels:
            (d / "labels.txt").write_text("\n".join(self.pkg.labels), encoding="utf-8")
        (d / "model.toml").write_text(model_toml(self.pkg), encoding="utf-8")
        doc = {"package": self.pkg.name, "kind": self.pkg.kind, "input": {"width": W, "height": H,
               "channels": self.pkg.channels}, **extra, "cases": self.cases}
        (self.ref / "cases.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return doc


def check_outputs(b: Builder, x: np.ndarray) -> None:
    """Batch 3 runs with the declared shapes."""
    xs = np.concatenate([x, x * 0.5, -x]).astype(np.float32)
    f = b.run.features(xs)
    assert f.shape == (3, K, GRID, GRID)
    raw = b.run.head_sess.run(["logits"], {"features": f})[0]
    p = b.pkg
    want = {"classes": (3, p.outputs), "embedding": (3, p.outputs)}.get(p.kind)
    if p.kind == "segmentation":
        oh, ow = p.out_hw
        want = (3, p.outputs, oh, ow) if p.layout == "nchw" else (3, oh, ow, p.outputs)
    assert raw.shape == want, (p.name, raw.shape, want)
    for ch, bias in p.constant.items():
        assert np.all(f[:, ch] == max(bias, 0.0))
    for ch in set(range(K)) - set(p.constant):
        assert not is_constant(f[0, ch]), (p.name, ch)


def build_binary(out, images):
    b = Builder(out, PACKAGES["binary"], images)
    img = "photo_16x16.png"
    x, a, z, _ = b.load(img)
    check_outputs(b, x)
    assert 0.3 < abs(z[0]) < 4, z
    for c in (0, 1):
        t = ClassTarget(c, "sigmoid", binary=True)
        b.add(f"target{c}", img, t, c, {"targets": [c]}, ["official", "pytorch_grad_cam", "torchcam", "gradcam"])
    top = 1 if z[0] > 0 else 0
    b.add("eigen", img, ClassTarget(top, "sigmoid", True), top, {"targets": None}, ["eigencam"])
    return b.finish({"clean_logits": f32s(z.astype(np.float32)), "predict": b.predict(img),
                     "sanity": {"eigencam_svd_sign_flipped": eigen_svd_sign_flipped(a)}})


def build_grey(out, images):
    b = Builder(out, PACKAGES["grey"], images)
    img = "photo_20x20.png"
    x, a, z, _ = b.load(img)
    check_outputs(b, x)
    c = int(np.argmax(z))
    assert np.sort(z)[-1] - np.sort(z)[-2] > 0.05
    # The grey conversion has to come before the resize: the other order gives other bytes.
    rgb = images[img]
    other = grey(pil_resize(rgb, (W, H)))
    now = pil_resize(grey(rgb), (W, H))
    order_diff = int(np.abs(other.astype(int) - now.astype(int)).max())
    # and a plain channel mean is not Pillow's weighting
    mean_grey = pil_resize(np.round(rgb.astype(np.float64).mean(axis=2)).astype(np.uint8), (W, H))
    mean_diff = int(np.abs(mean_grey.astype(int) - now.astype(int)).max())
    assert mean_diff >= 10, mean_diff
    b.add("top", img, ClassTarget(c, "sigmoid", False), c, {"targets": None},
          ["official", "pytorch_grad_cam", "gradcam"])
    # ... and the maps tell the two orders apart
    xo = normalise(b.pkg, other[..., None])
    alt = cam_pytorch_grad_cam(b.run, xo, b.run.features(xo)[0].astype(np.float64), ClassTarget(c, "sigmoid", False))[1]
    order_map = float(np.abs(alt - np.load(b.ref / "top.pytorch_grad_cam.model.npy")).max())
    assert order_map > 1e-3, order_map
    # a second, explicit target (the lowest logit)
    lo = int(np.argmin(z))
    b.add(f"target{lo}", img, ClassTarget(lo, "sigmoid", False), lo, {"targets": [lo]}, ["pytorch_grad_cam"])
    return b.finish({"clean_logits": f32s(z.astype(np.float32)), "predict": b.predict(img),
                     "sanity": {"convert_after_resize_max_byte_diff": order_diff,
                                "convert_after_resize_pytorch_grad_cam_max_abs_diff": float(f"{order_map:.3g}"),
                                "channel_mean_grey_max_byte_diff": mean_diff}})


BOX = (5.0, 3.75, 19.0, 14.25)  # photo pixels; on the 16×16 grid: u, v in 2..=8 (centres on x1, y1 in; on x2, y2 out)
BOX_NHWC = (6.0, 1.0, 26.0, 10.5)


def build_segmentation(out, images, name: str):
    pkg = PACKAGES[name]
    b = Builder(out, pkg, images)
    img = "photo_32x24.png"
    x, a, o, geo = b.load(img)
    check_outputs(b, x)
    arg = o.argmax(axis=0)
    counts = [int((arg == c).sum()) for c in range(pkg.outputs)]
    assert all(n > 0 for n in counts) and len(set(counts)) == len(counts), counts
    top = int(np.argmax(counts))
    methods = ["official", "pytorch_grad_cam", "torchcam"]
    b.add("predicted", img, SegTarget(top, arg == top, pkg.activation), top, {"targets": None}, methods)
    # an explicit class over its own predicted region (not the top class)
    second = int(np.argsort(counts)[-2])
    b.add(f"predicted{second}", img, SegTarget(second, arg == second, pkg.activation), second,
          {"targets": [second]}, ["pytorch_grad_cam"])
    box = BOX if pkg.layout == "nchw" else BOX_NHWC
    region = box_region(pkg, geo, box)
    assert 0 < region.sum() < region.size
    b.add("box", img, SegTarget(second, region, pkg.activation), second,
          {"targets": [second], "region": {"box": list(box)}}, methods)
    extra = {"region_pixels": {"box": int(region.sum())}}
    if pkg.layout == "nchw":
        # the edges are exact: the centres at x = x1, y = y1 (u, v = 2) are in, x = x2, y = y2 (9) out
        assert region[2, 2] and region[8, 8] and not region[9, 8] and not region[8, 9] and not region[1, 2] \
            and not region[2, 1] and region.sum() == 49
        mask = images["region_mask_32x24.png"]
        mreg = mask_region(pkg, geo, mask[..., 0])
        assert 0 < mreg.sum() < mreg.size
        b.add("mask", img, SegTarget(top, mreg, pkg.activation), top,
              {"targets": [top], "region": {"mask": "../../region_mask_32x24.png"}}, ["official", "pytorch_grad_cam"])
        b.add("eigen", img, SegTarget(top, arg == top, pkg.activation), top, {"targets": None}, ["eigencam"])
        extra["region_pixels"]["mask"] = int(mreg.sum())
        # a closed box (x <= x2, y <= y2) would give another score (and official map)
        xs, ys = centres_in_photo(pkg, geo)
        closed = ((ys >= box[1]) & (ys <= box[3]))[:, None] & ((xs >= box[0]) & (xs <= box[2]))[None, :]
        t_open, t_closed = SegTarget(second, region, pkg.activation), SegTarget(second, closed, pkg.activation)
        d_score = abs(t_open.probability(o) - t_closed.probability(o))
        d_map = float(np.abs(cam_official(b.run, x, a, t_closed)[1] - cam_official(b.run, x, a, t_open)[1]).max())
        assert d_score > 1e-3 and d_map > 1e-3, (d_score, d_map)
        extra["sanity"] = {"eigencam_svd_sign_flipped": eigen_svd_sign_flipped(a),
                           "closed_box_score_diff": float(f"{d_score:.3g}"),
                           "closed_box_official_max_abs_diff": float(f"{d_map:.3g}")}
    extra["predicted_pixels"] = counts
    extra["output"] = {"layout": pkg.layout, "height": pkg.out_hw[0], "width": pkg.out_hw[1]}
    return b.finish({**extra, "predict": b.predict(img)})


def build_embedding(out, images):
    pkg = PACKAGES["embedding"]
    b = Builder(out, pkg, images)
    img, ref_img = "photo_16x16.png", "photo_20x20.png"
    x, a, e, _ = b.load(img)
    check_outputs(b, x)
    rng = np.random.default_rng(154)
    vec = rng.standard_normal(pkg.outputs).astype(np.float32)
    if EmbTarget(vec).score(e) < 0:  # official weighs by the cosine: keep the map from being all ReLU'd away
        vec = -vec
    assert 0.1 < EmbTarget(vec).score(e) < 0.9, EmbTarget(vec).score(e)
    ref_e = b.load(ref_img)[2].astype(np.float32)  # what the service embeds for the reference photo
    methods = ["official", "pytorch_grad_cam", "torchcam"]
    b.add("vector", img, EmbTarget(vec), None, {"targets": None, "reference": {"vector": f32s(vec)}}, methods)
    b.add("photo", img, EmbTarget(ref_e), None, {"targets": None, "reference": {"image": f"../../{ref_img}"}},
          methods)
    return b.finish({"embedding": f32s(e.astype(np.float32)), "reference_photo_embedding": f32s(ref_e),
                     "predict": b.predict(img)})


def build_letterbox(out, images):
    pkg = PACKAGES["letterbox"]
    b = Builder(out, pkg, images)
    img = "photo_24x11.png"
    x, a, z, geo = b.load(img)
    check_outputs(b, x)
    assert geo.paste == (0, 4, 16, 7), geo.paste
    c = int(np.argmax(z))
    b.add("top", img, ClassTarget(c, "softmax", False), c, {"targets": None},
          ["official", "pytorch_grad_cam", "torchcam"])
    # what a stretch resize would have given differs (the fixtures tell the two apart)
    stretched = normalise(pkg, pil_resize(images[img], (W, H)))
    _, sbig, _ = cam_pytorch_grad_cam(b.run, stretched, b.run.features(stretched)[0].astype(np.float64),
                                      ClassTarget(c, "softmax", False))
    want = np.load(b.ref / "top.pytorch_grad_cam.model.npy")
    d = float(np.abs(sbig - want).max())
    assert d > 1e-2, d
    return b.finish({"clean_logits": f32s(z.astype(np.float32)), "paste": {"x": 0, "y": 4, "width": 16, "height": 7},
                     "predict": b.predict(img), "sanity": {"stretch_instead_max_abs_diff": float(f"{d:.3g}")}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "models" / "heads",
                    help="default: %(default)s")
    out: Path = ap.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    check_interp()

    images = {}
    for name, (w, h, seed) in IMAGES.items():
        img = test_image(w, h, seed)
        write_png(out / name, img)
        images[name] = img
    mask = region_mask_image()
    write_png(out / "region_mask_32x24.png", mask)
    images["region_mask_32x24.png"] = mask

    docs = {
        "binary": build_binary(out, images),
        "grey": build_grey(out, images),
        "segmentation": build_segmentation(out, images, "segmentation"),
        "seg_nhwc": build_segmentation(out, images, "seg_nhwc"),
        "embedding": build_embedding(out, images),
        "letterbox": build_letterbox(out, images),
    }
    for name, d in docs.items():
        print(f"{name}: {len(d['cases'])} maps; " + "; ".join(
            f"{c['name']} score {c['target']['score']}" for c in d["cases"]))
    (out / "README.md").write_text(readme(docs), encoding="utf-8")
    print(f"wrote {out}")


def readme(d: dict) -> str:
    seg = d["segmentation"]
    return f"""# Head-kind test packages

Six complete model packages, one per new head kind or input option, with reference maps,
written by `python scripts/dev/make_head_models.py` (onnx, onnxruntime, numpy, Pillow; fixed
seeds, deterministic serialisation, single-threaded ONNX Runtime: re-running gives
byte-identical files on one machine). Opset 17, IR version 8, float32, dynamic batch
dimension `batch`. Every extractor is Conv(C→5, kernel 4, stride 4, bias) + Relu:
`input` [batch, C, 16, 16] → `features` [batch, 5, 4, 4] (nchw).

| package | input | head | `[head]` |
|---|---|---|---|
| `binary/` | RGB, mean/std per channel | GlobalAveragePool → Gemm(5→1) → [batch, 1] | classes, sigmoid; `labels.txt` = `cat` (labels `not cat`, `cat`); channel 4 constant 0.3 |
| `grey/` | `channels = 1`, mean [0.5], std [0.25] | GlobalAveragePool → Gemm(5→3) → [batch, 3] | classes, sigmoid (multi-label) |
| `segmentation/` | RGB | 1×1 Conv(5→3) → Resize ×4 (linear, half-pixel) → [batch, 3, 16, 16] | segmentation, softmax, nchw; channel 4 constant 0 |
| `seg_nhwc/` | RGB | 1×1 Conv(5→3) → Resize ×2 → Transpose → [batch, 8, 8, 3] | segmentation, softmax, nhwc (the extractor of `segmentation/`, its head's weights × 0.03: small logits, so the softmax over channels of `pytorch_grad_cam` / `torchcam` is far from one-hot) |
| `embedding/` | RGB | GlobalAveragePool → Gemm(5→8) → [batch, 8] | embedding; no `labels.txt` |
| `letterbox/` | RGB, `resize = "letterbox"`, `pad_value = 114`, mean/std per channel | GlobalAveragePool → Gemm(5→5) | classes, softmax |

## Images

8-bit RGB PNGs (the layout fixtures' test pattern: red ramp, green blob, blue diagonal, noise):
`photo_16x16.png` (binary, embedding), `photo_20x20.png` (grey; the embedding's reference
photo), `photo_32x24.png` (segmentation: stretched to 16×16, x ÷ 2, y ÷ 1.5),
`photo_24x11.png` (letterbox: resized to 16×7, pasted at x 0, y 4 on 114 grey), and
`region_mask_32x24.png` (white disc and bar on black: a `region_mask` for `photo_32x24.png`).

## Reference (`<package>/reference/cases.json`)

Each case gives the image, `method` / `preset`, the request (`targets`: class indices or
`null` for the default top-1; `region`: `{{"box": [x1, y1, x2, y2]}}` or `{{"mask": file}}`;
`reference`: `{{"vector": [...]}}` or `{{"image": file}}`), the expected `target`
(`index`, `label`, `score` = the target's clean probability as the answer reports it), the
channel weights, and the maps: `model` (16×16), `feature` (4×4, presets that have one,
EigenCAM) and, for `letterbox/`, `input` (the upload's size). Each package's `predict` is the
expected /predict answer (all classes, best first; an embedding's `{{dim, norm}}`).

### How they were computed

Forward passes in ONNX Runtime; everything else numpy float64 from the definitions:

- Preprocessing: Pillow `convert("L")` before the resize for `channels = 1`; Pillow
  `resize(BILINEAR)` to 16×16 (stretch) or to round_half_even(w0·s) × round_half_even(h0·s),
  s = min(16/w0, 16/h0), pasted at the floored centre on 114 (letterbox); byte / 255 and
  (v − mean) / std per channel in float32. Masks multiply every input channel.
- Targets: classes + softmax: score z_c, probability softmax(z)_c. Sigmoid, several
  outputs: score z_c, probability sigmoid(z_c). One sigmoid output: target 1 scores z,
  target 0 scores −z, probability sigmoid(score). Segmentation: score Σ_R z_c, probability
  the mean over R of the per-pixel softmax over classes at c; R = the clean pass's argmax ==
  c, or the output pixels whose centre ((u + ½)·16/W_o)·w0/16, ((v + ½)·16/H_o)·h0/16 lies in
  the box (x1 ≤ x < x2, y1 ≤ y < y2) or, floored, on a non-zero mask pixel. Embedding:
  score = probability = cosine(output, reference) (denominator at least 1e-8).
- `official`: w_k = the probability on X ⊙ M_k (Up_half masks, constant channels skipped),
  L = ReLU(Σ w_k Up_half(A_k)) min-max normalised. `pytorch_grad_cam`: softmax over channels
  of the score (Up_corner masks, ε 1e-8), ReLU(Σ w_k A_k), normalise (ε 1e-7), Up_half,
  normalise. `torchcam`: softmax over channels of (score − clean score), masks
  Up_half(shift-scale ε 1e-8), map ReLU(Σ w_k A_k) normalised (ε 1e-8), Up_half (no second
  normalisation). Grad-CAM (`binary/`, `grey/`; pytorch-grad-cam 1.5.7): the head is GAP →
  Gemm, so d score / d A is the target's Gemm row over the 16 cells (minus it for the binary
  head's target 0), checked by central differences; weights = its spatial mean, then
  ReLU(Σ w_k A_k) and `pytorch_grad_cam`'s normalise / Up_half / normalise. EigenCAM (`binary/`, `segmentation/`): A as (h·w)×K minus each channel's
  mean (float32, as the library), projected on numpy's first right singular vector with numpy's
  sign (pytorch-grad-cam's get_2d_projection), ReLU, then as `pytorch_grad_cam`'s normalise / Up_half / normalise.
- Letterbox `input` maps: the 16×16 map cropped to the pasted rectangle, Up_half to 24×11.

Checks: PNGs decode to the intended pixels; Pillow's grey equals the integer formula; the
grey-then-resize bytes differ from a channel mean by {d["grey"]["sanity"]["channel_mean_grey_max_byte_diff"]} levels, and resizing before the
conversion moves the `pytorch_grad_cam` map by {d["grey"]["sanity"]["convert_after_resize_pytorch_grad_cam_max_abs_diff"]};
a closed box (x ≤ x2) moves the segmentation box score by {seg["sanity"]["closed_box_score_diff"]} and its `official` map by
{seg["sanity"]["closed_box_official_max_abs_diff"]}; numpy's sign leaves the projection's largest |value| negative on
`segmentation/` ({seg["sanity"]["eigencam_svd_sign_flipped"]}) and not on `binary/` ({d["binary"]["sanity"]["eigencam_svd_sign_flipped"]}) here (so `svd_flip` would not give the library's map);
the segmentation classes have {seg["predicted_pixels"]} predicted pixels (no ties); the box
edges are exact (centres on x1 and y1 are in, on x2 and y2 out: output pixels 2..=8 both ways); the letterbox map differs from
the stretched one by {d["letterbox"]["sanity"]["stretch_instead_max_abs_diff"]} (max |Δ|). Compare with a tolerance of about 1e-4.
"""


if __name__ == "__main__":
    main()
