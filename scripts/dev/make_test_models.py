#!/usr/bin/env python3
"""Generate the small ONNX test models in tests/fixtures/models/ (deterministic).

    python scripts/dev/make_test_models.py [--out tests/fixtures/models]

Only onnx + numpy (onnx.helper); opset 17, IR version 8, dynamic batch dimension `batch`
unless stated. Fixed seeds and a fixed layout, so re-running gives byte-identical files.

tiny/                      a valid scorecam package (16x16 RGB, 6 feature channels, 5 classes)
  extractor.onnx           input [batch,3,16,16] -> Conv(3->6, k4, s4, bias) -> Relu -> features [batch,6,4,4]
                           channel 4 is constant 0 (zero weights, bias -1, relu), channel 5 is
                           constant 0.5 (zero weights, bias 0.5); channels 0-3 random (seed 17)
  head.onnx                features [batch,6,4,4] -> GlobalAveragePool -> Flatten -> Gemm(6->5) -> logits [batch,5]
  labels.txt               zero, one, two, three, four
  model.toml               16x16, stretch, mean 0.5, std 0.25
variants/
  head_7ch.onnx            head expecting [batch,7,4,4] (channel mismatch with tiny/extractor.onnx)
  extractor_static_batch.onnx   tiny extractor with the batch fixed to 1
  extractor_batch2.onnx    tiny extractor with the batch fixed to 2
  head_3classes.onnx       head with 3 classes (mismatch with the 5 labels)
  full.onnx                tiny extractor + head fused: image -> ... -> relu_out -> ... -> scores -> Softmax -> probs
  vit_tiny.onnx            ViT-like (torchvision naming, TorchScript-style node names): 32x32 -> patch 8 conv ->
                           16 tokens + class token -> 2 encoder layers (seq-first attention inside) -> class token -> linear
  deit_tiny.onnx           DeiT-like (timm naming, dynamo-style pkg.torch.onnx.name_scopes metadata): class +
                           distillation token, 2 blocks, (head(x[:,0]) + head_dist(x[:,1])) / 2
  swin_tiny.onnx           Swin-like channels-last: patch 4 conv -> [N,8,8,12] -> block -> patch merging
                           (reshape with runtime shapes) -> [N,4,4,24] block -> norm -> permute -> pool -> linear
  ambiguous_777.onnx       28x28 -> Conv(3->7, k4, s4) -> [N,7,7,7] (nchw or nhwc?) -> pool -> linear
  conv_affine.onnx         16x16 -> Conv -> conv_out -> Mul -> Add -> Relu -> pool -> linear: ONNX Runtime fuses
                           Conv+Mul+Add in the whole model, not across a cut at conv_out (float rounding)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
OPSET = 17
IR_VERSION = 8
PRODUCER = "scorecam scripts/dev/make_test_models.py"
SIZE, K, STRIDE, CHANNELS, CLASSES = 16, 4, 4, 6, 5
FEAT = SIZE // STRIDE  # 4
LABELS = ["zero", "one", "two", "three", "four"]


def conv_params() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(17)
    w = (rng.standard_normal((CHANNELS, 3, K, K)) * 0.1).astype(np.float32)
    b = np.array([0.1, 0.05, -0.05, 0.2, 0.0, 0.0], dtype=np.float32)
    w[4] = 0.0
    b[4] = -1.0  # relu(-1) = 0: a constant-zero channel
    w[5] = 0.0
    b[5] = 0.5  # relu(0.5) = 0.5: a constant nonzero channel
    return w, b


def gemm_params(inputs: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((classes, inputs)).astype(np.float32)
    b = (rng.standard_normal(classes) * 0.1).astype(np.float32)
    return w, b


def tensor(name, shape, batch="batch"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, *shape])


def model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER,
                          producer_version="1")
    m.ir_version = IR_VERSION
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m, full_check=True)
    return m


def extractor_nodes(inp: str, conv_out: str, out: str):
    return [
        helper.make_node("Conv", [inp, "conv.weight", "conv.bias"], [conv_out], name="conv",
                         kernel_shape=[K, K], strides=[STRIDE, STRIDE], pads=[0, 0, 0, 0]),
        helper.make_node("Relu", [conv_out], [out], name="relu"),
    ]


def extractor_inits():
    w, b = conv_params()
    return [numpy_helper.from_array(w, "conv.weight"), numpy_helper.from_array(b, "conv.bias")]


def head_nodes(inp: str, out: str):
    return [
        helper.make_node("GlobalAveragePool", [inp], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], [out], name="fc", transB=1),
    ]


def head_inits(channels: int = CHANNELS, classes: int = CLASSES, seed: int = 23):
    w, b = gemm_params(channels, classes, seed)
    return [numpy_helper.from_array(w, "fc.weight"), numpy_helper.from_array(b, "fc.bias")]


def make_extractor(batch="batch") -> onnx.ModelProto:
    g = helper.make_graph(
        extractor_nodes("input", "conv_out", "features"), "tiny_extractor",
        [tensor("input", [3, SIZE, SIZE], batch)], [tensor("features", [CHANNELS, FEAT, FEAT], batch)],
        initializer=extractor_inits(),
    )
    return model(g)


def make_head(channels: int = CHANNELS, classes: int = CLASSES) -> onnx.ModelProto:
    g = helper.make_graph(
        head_nodes("features", "logits"), "tiny_head",
        [tensor("features", [channels, FEAT, FEAT])], [tensor("logits", [classes])],
        initializer=head_inits(channels, classes),
    )
    return model(g)


def make_full() -> onnx.ModelProto:
    nodes = extractor_nodes("image", "conv_out", "relu_out") + head_nodes("relu_out", "scores")
    nodes.append(helper.make_node("Softmax", ["scores"], ["probs"], name="softmax", axis=1))
    g = helper.make_graph(
        nodes, "tiny_full",
        [tensor("image", [3, SIZE, SIZE])], [tensor("probs", [CLASSES])],
        initializer=extractor_inits() + head_inits(),
    )
    return model(g)


# --------------------------------------------------------------------------- exporter-like graphs


def scope_components(path: str) -> list[str]:
    """TorchScript exporter scope names: each level is the qualified name from its last non-numeric atom."""
    atoms = path.split(".") if path else []
    comps = []
    for k in range(len(atoms)):
        j = max(i for i in range(k + 1) if not atoms[i].isdigit())
        comps.append(".".join(atoms[j:k + 1]))
    return comps


class Builder:
    """Builds a graph whose node names look like a PyTorch export.

    style "torchscript": node `/encoder/layers/encoder_layer_0/ln_1/LayerNormalization`, output
    `<node>_output_0`; style "dynamo": node `node_<Op>_<k>` with the module path in the
    `pkg.torch.onnx.name_scopes` metadata, output named like the FX node (`matmul_3`).
    """

    def __init__(self, style: str, seed: int):
        self.style, self.rng = style, np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.used: dict[str, int] = {}

    def param(self, name: str, shape, scale: float = 0.2) -> str:
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def fixed(self, name: str, array) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def _unique(self, base: str) -> str:
        k = self.used.get(base, 0)
        self.used[base] = k + 1
        return base if k == 0 else f"{base}_{k}"

    def op(self, module: str, op_type: str, inputs, outputs: int = 1, **attrs):
        if self.style == "torchscript":
            comps = scope_components(module)
            name = self._unique("/" + "/".join([*comps, op_type]))
            outs = [f"{name}_output_{i}" for i in range(outputs)]
            node = helper.make_node(op_type, list(inputs), outs, name=name, **attrs)
        else:
            fx = self._unique(op_type.lower())
            outs = [fx] if outputs == 1 else [f"{fx}_{i}" for i in range(outputs)]
            node = helper.make_node(op_type, list(inputs), outs, name=f"node_{fx}", **attrs)
            atoms = module.split(".") if module else []
            scopes = ["", *(".".join(atoms[:k + 1]) for k in range(len(atoms))), fx]
            node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(scopes))
        self.nodes.append(node)
        return outs[0] if outputs == 1 else outs

    def i64(self, module: str, vals) -> str:
        return self.op(module, "Constant", [], value=helper.make_tensor("value", TensorProto.INT64, [len(vals)], list(vals)))

    def linear(self, module: str, x: str, fin: int, fout: int, pname: str) -> str:
        y = self.op(module, "MatMul", [x, self.param(f"{pname}.weight", (fin, fout), 1 / math.sqrt(fin))])
        return self.op(module, "Add", [y, self.param(f"{pname}.bias", (fout,), 0.05)])

    def layer_norm(self, module: str, x: str, c: int, pname: str) -> str:
        g = self.fixed(f"{pname}.weight", (1.0 + self.rng.standard_normal(c) * 0.1).astype(np.float32))
        b = self.param(f"{pname}.bias", (c,), 0.05)
        return self.op(module, "LayerNormalization", [x, g, b], axis=-1, epsilon=1e-6)

    def model(self, name: str, image: str, hw, out: str, classes: int) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, name, [tensor(image, [3, *hw])], [tensor(out, [classes])], initializer=self.inits)
        return model(g)


VIT_NAMES = {  # torchvision.models.vit_b_16 module names
    "patch": "conv_proj", "cls": "class_token", "pos": "encoder.pos_embedding", "enc": "encoder",
    "block": "encoder.layers.encoder_layer_{i}", "ln1": "ln_1", "attn": "self_attention", "ln2": "ln_2",
    "fc1": "mlp.0", "act": "mlp.1", "fc2": "mlp.3", "norm": "encoder.ln", "head": "heads.head",
}
DEIT_NAMES = {  # timm deit_*_distilled module names
    "patch": "patch_embed.proj", "cls": "cls_token", "dist": "dist_token", "pos": "pos_embed", "enc": "",
    "block": "blocks.{i}", "ln1": "norm1", "attn": "attn", "ln2": "norm2",
    "fc1": "mlp.fc1", "act": "mlp.act", "fc2": "mlp.fc2", "norm": "norm", "head": "head", "head_dist": "head_dist",
}
T_SIZE, T_PATCH, T_DIM, T_BLOCKS = 32, 8, 12, 2
T_GRID = T_SIZE // T_PATCH  # 4


def make_vit(style: str, names: dict, prefix: int, seed: int) -> onnx.ModelProto:
    """A small ViT: the token count is left symbolic by shape inference (Reshape to a shape computed
    from Shape(image) / patch, as torch exports `x.reshape(n, c, n_h * n_w)`), attention runs
    sequence-first ([T, N, C], as nn.MultiheadAttention does inside)."""
    b = Builder(style, seed)
    C, T = T_DIM, prefix + T_GRID * T_GRID
    x = "image"
    p = b.op(names["patch"], "Conv", [x, b.param(f"{names['patch']}.weight", (C, 3, T_PATCH, T_PATCH), 0.1),
                                      b.param(f"{names['patch']}.bias", (C,), 0.05)],
             kernel_shape=[T_PATCH, T_PATCH], strides=[T_PATCH, T_PATCH])
    xs = b.op("", "Shape", [x])
    n = b.op("", "Gather", [xs, b.i64("", [0])], axis=0)
    nh = b.op("", "Div", [b.op("", "Gather", [xs, b.i64("", [2])], axis=0), b.i64("", [T_PATCH])])
    nw = b.op("", "Div", [b.op("", "Gather", [xs, b.i64("", [3])], axis=0), b.i64("", [T_PATCH])])
    shp = b.op("", "Concat", [n, b.i64("", [C]), b.op("", "Mul", [nh, nw])], axis=0)
    t = b.op("", "Transpose", [b.op("", "Reshape", [p, shp])], perm=[0, 2, 1])  # [N, h*w, C]
    expand_to = b.op("", "Concat", [n, b.i64("", [1]), b.i64("", [1])], axis=0)
    prefix_tokens = [b.op("", "Expand", [b.param(names[k], (1, 1, C)), expand_to]) for k in ("cls", "dist")[:prefix]]
    t = b.op("", "Concat", [*prefix_tokens, t], axis=1)
    t = b.op(names["enc"], "Add", [t, b.param(names["pos"], (1, T, C), 0.1)])
    for i in range(T_BLOCKS):
        blk = names["block"].format(i=i)
        m = lambda sub: f"{blk}.{sub}"  # noqa: E731
        y = b.layer_norm(m(names["ln1"]), t, C, m(names["ln1"]))
        a = m(names["attn"])
        s = b.op(a, "Transpose", [y], perm=[1, 0, 2])  # [T, N, C]
        qkv = b.linear(a, s, C, 3 * C, f"{a}.in_proj")
        q, k, v = b.op(a, "Split", [qkv, b.i64(a, [C, C, C])], outputs=3, axis=-1)
        q, k, v = (b.op(a, "Transpose", [z], perm=[1, 0, 2]) for z in (q, k, v))  # [N, T, C]
        sc = b.op(a, "MatMul", [q, b.op(a, "Transpose", [k], perm=[0, 2, 1])])
        sc = b.op(a, "Mul", [sc, b.fixed(f"{a}.scale", np.array(1 / math.sqrt(C), np.float32))])
        o = b.op(a, "MatMul", [b.op(a, "Softmax", [sc], axis=-1), v])
        o = b.op(a, "Transpose", [o], perm=[1, 0, 2])  # [T, N, C]
        o = b.linear(a, o, C, C, f"{a}.out_proj")
        o = b.op(a, "Transpose", [o], perm=[1, 0, 2])  # [N, T, C]
        t = b.op(blk, "Add", [t, o])
        y = b.layer_norm(m(names["ln2"]), t, C, m(names["ln2"]))
        y = b.op(m(names["act"]), "Relu", [b.linear(m(names["fc1"]), y, C, 2 * C, m(names["fc1"]))])
        y = b.linear(m(names["fc2"]), y, 2 * C, C, m(names["fc2"]))
        t = b.op(blk, "Add", [t, y])
    t = b.layer_norm(names["norm"], t, C, names["norm"])

    def head(name, token):
        z = b.op("", "Gather", [t, b.fixed(f"token_{token}", np.array(token, np.int64))], axis=1)  # [N, C]
        return b.op(name, "Gemm", [z, b.param(f"{name}.weight", (CLASSES, C), 0.5), b.param(f"{name}.bias", (CLASSES,), 0.1)], transB=1)

    logits = head(names["head"], 0)
    if prefix == 2:
        both = b.op("", "Add", [logits, head(names["head_dist"], 1)])
        logits = b.op("", "Div", [both, b.fixed("two", np.array(2.0, np.float32))])
    b.nodes[-1].output[0] = "output"
    return b.model("vit_tiny" if prefix == 1 else "deit_tiny", x, (T_SIZE, T_SIZE), "output", CLASSES)


def make_swin() -> onnx.ModelProto:
    """Swin-like, channels-last ([N, h, w, C]) from the patch embedding on; torchvision Swin names."""
    b = Builder("torchscript", 31)
    x = "image"
    C = T_DIM

    def block(path: str, t: str, c: int) -> str:
        y = b.layer_norm(f"{path}.norm1", t, c, f"{path}.norm1")
        y = b.op(f"{path}.mlp.1", "Relu", [b.linear(f"{path}.mlp.0", y, c, 2 * c, f"{path}.mlp.0")])
        y = b.linear(f"{path}.mlp.3", y, 2 * c, c, f"{path}.mlp.3")
        return b.op(path, "Add", [t, y])

    p = b.op("features.0.0", "Conv", [x, b.param("features.0.0.weight", (C, 3, 4, 4), 0.1), b.param("features.0.0.bias", (C,), 0.05)],
             kernel_shape=[4, 4], strides=[4, 4])
    t = b.op("features.0.1", "Transpose", [p], perm=[0, 2, 3, 1])  # [N, 8, 8, C]
    t = b.layer_norm("features.0.2", t, C, "features.0.2")
    t = block("features.1.0", t, C)
    # patch merging, timm style: x.reshape(B, H//2, 2, W//2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
    m = "features.2"
    s = b.op(m, "Shape", [t])
    g = [b.op(m, "Gather", [s, b.i64(m, [k])], axis=0) for k in range(4)]
    h2, w2 = (b.op(m, "Div", [g[k], b.i64(m, [2])]) for k in (1, 2))
    r = b.op(m, "Reshape", [t, b.op(m, "Concat", [g[0], h2, b.i64(m, [2]), w2, b.i64(m, [2]), g[3]], axis=0)])
    r = b.op(m, "Transpose", [r], perm=[0, 1, 3, 4, 2, 5])
    c4 = b.op(m, "Mul", [g[3], b.i64(m, [4])])
    r = b.op(m, "Reshape", [r, b.op(m, "Concat", [g[0], h2, w2, c4], axis=0)])  # [N, 4, 4, 4C]
    r = b.layer_norm(f"{m}.norm", r, 4 * C, f"{m}.norm")
    t = b.op(f"{m}.reduction", "MatMul", [r, b.param(f"{m}.reduction.weight", (4 * C, 2 * C), 1 / math.sqrt(4 * C))])
    t = block("features.3.0", t, 2 * C)  # [N, 4, 4, 2C]
    t = b.layer_norm("norm", t, 2 * C, "norm")
    t = b.op("permute", "Transpose", [t], perm=[0, 3, 1, 2])
    t = b.op("flatten", "Flatten", [b.op("avgpool", "GlobalAveragePool", [t])], axis=1)
    b.op("head", "Gemm", [t, b.param("head.weight", (CLASSES, 2 * C), 0.5), b.param("head.bias", (CLASSES,), 0.1)], transB=1)
    b.nodes[-1].output[0] = "output"
    return b.model("swin_tiny", x, (T_SIZE, T_SIZE), "output", CLASSES)


def make_ambiguous() -> onnx.ModelProto:
    """[N, 7, 7, 7]: 7 channels of 7×7 or 7×7 of 7 channels, on a 28×28 input."""
    b = Builder("torchscript", 41)
    f = b.op("features.0", "Conv", ["image", b.param("features.0.weight", (7, 3, 4, 4), 0.1), b.param("features.0.bias", (7,), 0.05)],
             kernel_shape=[4, 4], strides=[4, 4])
    f = b.op("features.1", "Relu", [f])
    f = b.op("flatten", "Flatten", [b.op("avgpool", "GlobalAveragePool", [f])], axis=1)
    b.op("fc", "Gemm", [f, b.param("fc.weight", (CLASSES, 7), 0.5), b.param("fc.bias", (CLASSES,), 0.1)], transB=1)
    b.nodes[-1].output[0] = "output"
    return b.model("ambiguous_777", "image", (28, 28), "output", CLASSES)


def make_conv_affine() -> onnx.ModelProto:
    """Conv -> Mul -> Add (a folded BatchNorm): ONNX Runtime folds the Mul/Add into the Conv in the whole
    model but cannot when conv_out is the cut, so the split differs by float rounding (~1e-7)."""
    rng = np.random.default_rng(53)
    arr = lambda shape, scale: (rng.standard_normal(shape) * scale).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (arr((8, 3, 3, 3), 0.3), "conv.weight"), (arr((8,), 0.1), "conv.bias"),
        (arr((1, 8, 1, 1), 1.0) + 1.5, "bn.scale"), (arr((1, 8, 1, 1), 0.5), "bn.shift"),
        (arr((CLASSES, 8), 1.0), "fc.weight"), (arr((CLASSES,), 0.1), "fc.bias"))]
    nodes = [
        helper.make_node("Conv", ["image", "conv.weight", "conv.bias"], ["conv_out"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["conv_out", "bn.scale"], ["scaled"], name="bn_mul"),
        helper.make_node("Add", ["scaled", "bn.shift"], ["shifted"], name="bn_add"),
        helper.make_node("Relu", ["shifted"], ["relu_out"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu_out"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["output"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "conv_affine", [tensor("image", [3, SIZE, SIZE])], [tensor("output", [CLASSES])], initializer=inits)
    return model(g)


MODEL_TOML = """description = "tiny: generated test model (16×16 RGB in, 6×4×4 features, 5 classes), not a real classifier"
source = "generated by scripts/dev/make_test_models.py (onnx.helper, fixed seeds)"
license = "Apache-2.0 (generated test data, part of this repository)"

[input]
width = 16
height = 16
resize = "stretch"            # "stretch" (whole image to width×height) or "shorter_side_crop"
mean = [0.5, 0.5, 0.5]        # applied after scaling pixels to 0..1
std = [0.25, 0.25, 0.25]

[target_layer]
description = "Conv 3→6 (kernel 4, stride 4) + ReLU, 6×4×4; channel 4 constant 0, channel 5 constant 0.5"
"""


def gray_image_facts() -> tuple[np.ndarray, np.ndarray]:
    """Features per channel and logits for a uniform gray image (pixels 0.5 -> normalised 0)."""
    _, b = conv_params()
    f = np.maximum(b, 0.0).astype(np.float32)  # zero input: conv = bias everywhere
    w, fb = gemm_params(CHANNELS, CLASSES, 23)
    logits = (w.astype(np.float64) @ f.astype(np.float64) + fb).astype(np.float32)
    return f, logits


README = """# Generated test models

Small ONNX models for the tests, written by `python scripts/dev/make_test_models.py` (onnx +
numpy only, fixed seeds: re-running it gives byte-identical files). All are opset 17,
IR version 8, float32, with a dynamic batch dimension `batch` unless stated.

## `tiny/`: a complete, valid model package

| file | what |
|---|---|
| `extractor.onnx` | `input` [batch, 3, 16, 16] → Conv(3→6, kernel 4, stride 4, no padding, with bias) → Relu → `features` [batch, 6, 4, 4] |
| `head.onnx` | `features` [batch, 6, 4, 4] → GlobalAveragePool → Flatten → Gemm(6→5) → `logits` [batch, 5] (no softmax) |
| `labels.txt` | `zero`, `one`, `two`, `three`, `four` (one a line, no trailing newline) |
| `model.toml` | 16×16, `resize = "stretch"`, mean 0.5, std 0.25 (so pixels map to −2..2) |

Feature channels 0–3 have random weights (seed 17, N(0, 0.1²)) and biases
{bias}: for random inputs they are sometimes zero, sometimes not.
Channel 4 is constant 0 (zero weights, bias −1, then ReLU) and channel 5 is constant 0.5
(zero weights, bias 0.5), for every input: Score-CAM implementations must cope with both
(a constant map cannot be min-max normalised). The head weights are random (seed 23).

A uniform gray image (every pixel 0.5, so the normalised input is 0 everywhere) gives
features equal to relu(bias) in every cell, {gray_f}, and logits
{gray_logits} (argmax {gray_argmax}, `{gray_label}`).

## `variants/`: broken or alternative pieces

| file | what | for testing |
|---|---|---|
| `head_7ch.onnx` | a head whose input is [batch, 7, 4, 4] | extractor/head channel mismatch with `tiny/extractor.onnx` |
| `extractor_static_batch.onnx` | `tiny/extractor.onnx` with the batch fixed to 1 ([1, 3, 16, 16] → [1, 6, 4, 4]) | a graph exported for one image: loads, runs one image per run |
| `extractor_batch2.onnx` | `tiny/extractor.onnx` with the batch fixed to 2 | rejecting a fixed batch other than 1 |
| `head_3classes.onnx` | a head with 3 outputs ([batch, 3]; other random weights, seed 23) | label count (5) ≠ class count |
| `full.onnx` | extractor and head fused: `image` → Conv → `conv_out` → Relu → `relu_out` → GlobalAveragePool → `pooled` → Flatten → `flat` → Gemm → `scores` → Softmax(axis 1) → `probs` [batch, 5]; same weights as `tiny/` | `scripts/tools/split_model.py` (`--layer relu_out` gives the `tiny/` pair back, minus the Softmax; `pooled` is a 1×1 map it refuses) |

### Whole classifiers of other architectures, for `scripts/tools/split_model.py`

Each has one input `image` [batch, 3, H, W] and one output `output` [batch, 5] (logits), random
weights (fixed seeds), and node names like a PyTorch export, so `--module` can find modules.

| file | what | for testing |
|---|---|---|
| `vit_tiny.onnx` | ViT-like, torchvision module names, TorchScript-style node names (`/encoder/layers/encoder_layer_1/Add_1`): 32×32 → `conv_proj` Conv(3→12, kernel 8, stride 8) → Reshape to a shape computed from `Shape(image)` / 8 (shape inference leaves the token count symbolic, as in real exports) → Transpose → [batch, 16, 12] → Concat with the expanded `class_token` → [batch, 17, 12] → + `encoder.pos_embedding` → 2 × `encoder.layers.encoder_layer_{{i}}` (ln_1, `self_attention` computed sequence-first on [17, batch, 12] like nn.MultiheadAttention, residual Add, ln_2, mlp.0 / mlp.1 (Relu) / mlp.3, residual Add_1) → `encoder.ln` → Gather token 0 → `heads.head` Gemm | tokens layout, grid 4×4, 1 prefix token; `--module`; concrete dims; batch-not-first refusal on the [17, batch, 12] tensors |
| `deit_tiny.onnx` | the same with timm DeiT names (`patch_embed.proj`, `cls_token`, `dist_token`, `pos_embed`, `blocks.{{i}}`, `norm`, `head`, `head_dist`), 2 prefix tokens ([batch, 18, 12]), output (head(x[:, 0]) + head_dist(x[:, 1])) / 2; node names `node_<Op>_<k>` with the module path in dynamo-style `pkg.torch.onnx.name_scopes` metadata | tokens with 2 prefix tokens; `--module` via metadata |
| `swin_tiny.onnx` | Swin-like, channels-last, torchvision Swin names: 32×32 → `features.0.0` Conv(3→12, kernel 4, stride 4) → `features.0.1` Transpose → [batch, 8, 8, 12] → LayerNorm → `features.1.0` block (norm1, mlp, residual Add) → `features.2` patch merging (timm-style Reshape/Transpose/Reshape with shapes computed at run time: symbolic dims after shape inference) → [batch, 4, 4, 24] → `features.3.0` block → `norm` → `permute` to NCHW → GlobalAveragePool → Flatten → `head` Gemm | nhwc layout; `--module features.3` / `features[-1]`; concrete dims |
| `ambiguous_777.onnx` | 28×28 → `features.0` Conv(3→7, kernel 4, stride 4) → `features.1` Relu → [batch, 7, 7, 7] → GlobalAveragePool → Flatten → `fc` Gemm | a 4-D map that fits both nchw and nhwc: refused without `--layout` |
| `conv_affine.onnx` | 16×16 → Conv(3→8, kernel 3, pad 1) → `conv_out` → Mul → Add (a folded BatchNorm) → Relu → GlobalAveragePool → Flatten → Gemm → `output` | ONNX Runtime folds the Mul/Add into the Conv in the whole model but not across a cut at `conv_out`: the split differs by float rounding (the `--tolerance` hint) |

`tests/python/test_split_model.py` (pytest) checks `scripts/tools/split_model.py` on these.
"""


def save(m: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(m.SerializeToString(deterministic=True))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def self_check(out: Path) -> None:
    """Run the generated models with ONNX Runtime when it is installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: runtime self-check skipped")
        return
    sess = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])  # noqa: E731
    ext, head, full = sess(out / "tiny/extractor.onnx"), sess(out / "tiny/head.onnx"), sess(out / "variants/full.onnx")
    x = np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    f = ext.run(None, {"input": x})[0]
    assert f.shape == (3, CHANNELS, FEAT, FEAT), f.shape
    assert np.all(f[:, 4] == 0.0) and np.all(f[:, 5] == 0.5), "constant channels"
    for c in range(4):
        frac = float((f[:, c] > 0).mean())
        assert 0.1 < frac < 0.9 and f[:, c].std() > 0.05, (c, frac, f[:, c].std())
    logits = head.run(None, {"features": f})[0]
    assert logits.shape == (3, CLASSES)
    z = np.exp(logits - logits.max(1, keepdims=True))
    p = full.run(None, {"image": x})[0]
    assert np.abs(p - z / z.sum(1, keepdims=True)).max() < 1e-6
    gray_f, gray_logits = gray_image_facts()
    g = ext.run(None, {"input": np.zeros((1, 3, SIZE, SIZE), np.float32)})[0]
    assert np.allclose(g[0], gray_f[:, None, None], atol=1e-7)
    assert np.allclose(head.run(None, {"features": g})[0][0], gray_logits, atol=1e-5)
    print(f"self-check ok: features {f.shape}, channel 4 == 0, channel 5 == 0.5, full == softmax(head(extractor))")
    for name, hw in (("vit_tiny", T_SIZE), ("deit_tiny", T_SIZE), ("swin_tiny", T_SIZE), ("ambiguous_777", 28),
                     ("conv_affine", SIZE)):
        x = np.random.default_rng(1).standard_normal((2, 3, hw, hw)).astype(np.float32)
        (z,) = sess(out / "variants" / f"{name}.onnx").run(None, {"image": x})
        assert z.shape == (2, CLASSES) and np.all(np.isfinite(z)) and z.std() > 0.05, (name, z)
    print("self-check ok: vit_tiny, deit_tiny, swin_tiny, ambiguous_777, conv_affine run and give [2, 5] logits")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "models", help="default: %(default)s")
    out = ap.parse_args().out

    save(make_extractor(), out / "tiny" / "extractor.onnx")
    save(make_head(), out / "tiny" / "head.onnx")
    (out / "tiny" / "labels.txt").write_text("\n".join(LABELS), encoding="utf-8")
    (out / "tiny" / "model.toml").write_text(MODEL_TOML, encoding="utf-8")
    print(f"wrote {out / 'tiny' / 'labels.txt'}, {out / 'tiny' / 'model.toml'}")

    save(make_head(channels=7), out / "variants" / "head_7ch.onnx")
    save(make_extractor(batch=1), out / "variants" / "extractor_static_batch.onnx")
    save(make_extractor(batch=2), out / "variants" / "extractor_batch2.onnx")
    save(make_head(classes=3), out / "variants" / "head_3classes.onnx")
    save(make_full(), out / "variants" / "full.onnx")
    save(make_vit("torchscript", VIT_NAMES, prefix=1, seed=29), out / "variants" / "vit_tiny.onnx")
    save(make_vit("dynamo", DEIT_NAMES, prefix=2, seed=37), out / "variants" / "deit_tiny.onnx")
    save(make_swin(), out / "variants" / "swin_tiny.onnx")
    save(make_ambiguous(), out / "variants" / "ambiguous_777.onnx")
    save(make_conv_affine(), out / "variants" / "conv_affine.onnx")
    f, logits = gray_image_facts()
    fmt = lambda xs: "[" + ", ".join(f"{float(x):.6g}" for x in xs) + "]"  # noqa: E731
    _, bias = conv_params()
    (out / "README.md").write_text(README.format(
        bias=fmt(bias[:4]), gray_f=fmt(f), gray_logits=fmt(logits),
        gray_argmax=int(np.argmax(logits)), gray_label=LABELS[int(np.argmax(logits))],
    ), encoding="utf-8")
    print(f"wrote {out / 'README.md'}")
    self_check(out)


if __name__ == "__main__":
    main()
