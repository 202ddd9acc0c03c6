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
  head_3classes.onnx       head with 3 classes (mismatch with the 5 labels)
  full.onnx                tiny extractor + head fused: image -> ... -> relu_out -> ... -> scores -> Softmax -> probs
"""

from __future__ import annotations

import argparse
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
| `extractor_static_batch.onnx` | `tiny/extractor.onnx` with the batch fixed to 1 ([1, 3, 16, 16] → [1, 6, 4, 4]) | rejecting a non-dynamic batch |
| `head_3classes.onnx` | a head with 3 outputs ([batch, 3]; other random weights, seed 23) | label count (5) ≠ class count |
| `full.onnx` | extractor and head fused: `image` → Conv → `conv_out` → Relu → `relu_out` → GlobalAveragePool → `pooled` → Flatten → `flat` → Gemm → `scores` → Softmax(axis 1) → `probs` [batch, 5]; same weights as `tiny/` | `scripts/tools/split_model.py` (`--layer relu_out` gives the `tiny/` pair back, minus the Softmax) |

`tests/python/test_split_model.py` (pytest) checks `scripts/tools/split_model.py` on `full.onnx`.
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
    save(make_head(classes=3), out / "variants" / "head_3classes.onnx")
    save(make_full(), out / "variants" / "full.onnx")
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
