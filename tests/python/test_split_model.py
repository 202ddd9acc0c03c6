"""Tests of scripts/tools/split_model.py on the generated fixtures in tests/fixtures/models/variants/.

full.onnx: image [batch,3,16,16] -> Conv -> conv_out -> Relu -> relu_out -> GlobalAveragePool
-> Flatten -> Gemm -> scores [batch,5] -> Softmax -> probs. Splitting it at relu_out must give
the tiny package's extractor/head (same weights), with the final Softmax dropped.

vit_tiny.onnx / deit_tiny.onnx (tokens, 1 / 2 prefix tokens), swin_tiny.onnx (channels-last),
ambiguous_777.onnx ([N,7,7,7]) and conv_affine.onnx (rounding across the cut): layout detection
and overrides, --module, --list-layers ranking, refusals, concrete dims, head(extractor(x)) == full(x).
See tests/fixtures/models/README.md.

Run: pytest tests/python   (needs onnx, onnxruntime, numpy, pytest: scripts/setup/requirements_tools.txt)
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "tools" / "split_model.py"
FIXTURES = REPO / "tests" / "fixtures" / "models"
FULL = FIXTURES / "variants" / "full.onnx"
FILES = {"extractor.onnx", "head.onnx", "labels.txt", "model.toml"}


def run_split(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=REPO
    )


def session(path_or_model) -> ort.InferenceSession:
    src = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def io(model: onnx.ModelProto):
    def shape(vi):
        return [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
                for d in vi.type.tensor_type.shape.dim]

    return ([(vi.name, shape(vi)) for vi in model.graph.input], [(vi.name, shape(vi)) for vi in model.graph.output])


def tensor_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    names = {vi.name for vi in list(g.input) + list(g.output) + list(g.value_info)} | {t.name for t in g.initializer}
    for n in g.node:
        names.update(n.input)
        names.update(n.output)
    return names


def renamed_full(mapping: dict[str, str]) -> onnx.ModelProto:
    """full.onnx with tensors renamed (graph I/O, value_info and node I/O), nothing else changed."""
    m = onnx.load(str(FULL))
    g = m.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = mapping.get(vi.name, vi.name)
    for n in g.node:
        n.input[:] = [mapping.get(x, x) for x in n.input]
        n.output[:] = [mapping.get(x, x) for x in n.output]
    onnx.checker.check_model(m, full_check=True)
    return m


def random_images(batch: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("split") / "tiny_split"
    r = run_split(FULL, "--layer", "relu_out", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


# --------------------------------------------------------------------------- the good case


def test_files_exist(package: Path):
    assert {p.name for p in package.iterdir()} == FILES  # and nothing else (no external data)
    for name in FILES:
        assert (package / name).stat().st_size > 0, name


def test_tensor_names_and_shapes(package: Path):
    ext = onnx.load(str(package / "extractor.onnx"))
    head = onnx.load(str(package / "head.onnx"))
    onnx.checker.check_model(ext, full_check=True)
    onnx.checker.check_model(head, full_check=True)

    (ext_in,), (ext_out,) = io(ext)
    assert ext_in[0] == "input" and ext_in[1][1:] == [3, 16, 16] and isinstance(ext_in[1][0], str)
    assert ext_out[0] == "features" and ext_out[1][1:] == [6, 4, 4] and isinstance(ext_out[1][0], str)
    (head_in,), (head_out,) = io(head)
    assert head_in[0] == "features" and head_in[1][1:] == [6, 4, 4] and isinstance(head_in[1][0], str)
    assert head_out[0] == "logits" and head_out[1][1:] == [5] and isinstance(head_out[1][0], str)

    # The old boundary names are gone; the ops are the original ones, minus the Softmax.
    for m in (ext, head):
        assert not tensor_names(m) & {"image", "relu_out", "scores", "probs"}
    assert [n.op_type for n in ext.graph.node] == ["Conv", "Relu"]
    assert [n.op_type for n in head.graph.node] == ["GlobalAveragePool", "Flatten", "Gemm"]
    assert [o.version for o in ext.opset_import] == [17] and [o.version for o in head.opset_import] == [17]


def test_weights_are_kept(package: Path):
    full = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(FULL)).graph.initializer}
    for part, names in (("extractor.onnx", {"conv.weight", "conv.bias"}), ("head.onnx", {"fc.weight", "fc.bias"})):
        inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(package / part)).graph.initializer}
        assert set(inits) == names, part
        for name, value in inits.items():
            np.testing.assert_array_equal(value, full[name])


def test_split_equals_full_model(package: Path):
    x = random_images(3)
    ext, head, full = session(package / "extractor.onnx"), session(package / "head.onnx"), session(FULL)
    (features,) = ext.run(["features"], {"input": x})
    (logits,) = head.run(["logits"], {"features": features})
    (probs,) = full.run(["probs"], {"image": x})
    assert features.shape == (3, 6, 4, 4) and logits.shape == (3, 5)
    # The head outputs logits (Softmax dropped): they are not already probabilities ...
    assert np.abs(logits.sum(axis=1) - 1.0).max() > 1e-3
    # ... and their softmax is the full model's output.
    assert np.abs(softmax(logits) - probs).max() <= 1e-5

    # features are exactly the full model's relu_out (and the tiny package's, which has the same weights)
    tapped = onnx.load(str(FULL))
    tapped.graph.output.append(helper.make_tensor_value_info("relu_out", TensorProto.FLOAT, None))
    (relu_out,) = session(tapped).run(["relu_out"], {"image": x})
    np.testing.assert_array_equal(features, relu_out)
    (tiny_features,) = session(FIXTURES / "tiny" / "extractor.onnx").run(["features"], {"input": x})
    np.testing.assert_array_equal(features, tiny_features)
    assert np.all(features[:, 4] == 0) and np.all(features[:, 5] == 0.5)


def test_model_toml_and_labels(package: Path):
    with open(package / "model.toml", "rb") as fh:
        toml = tomllib.load(fh)
    assert toml["input"]["width"] == 16 and toml["input"]["height"] == 16
    assert toml["input"]["resize"] == "stretch" and "crop_from" not in toml["input"]
    assert toml["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert toml["input"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert toml["target_layer"] == {"description": "relu_out", "layout": "nchw"}
    assert toml["input"]["resize_filter"] == "pillow_bilinear"
    assert all(isinstance(toml[k], str) and toml[k] for k in ("description", "source", "license"))
    assert (package / "labels.txt").read_text().splitlines() == [f"class_{i}" for i in range(5)]


def test_options_reach_model_toml(tmp_path: Path):
    out = tmp_path / "pkg"
    r = run_split(FULL, "--layer", "relu_out", "--out", out, "--labels", FIXTURES / "tiny" / "labels.txt",
                  "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25",
                  "--resize", "shorter_side_crop", "--crop-from", "20", "--input-size", "16", "16")
    assert r.returncode == 0, r.stderr
    toml = tomllib.loads((out / "model.toml").read_text())
    assert toml["input"] == {"width": 16, "height": 16, "resize": "shorter_side_crop", "crop_from": 20,
                             "resize_filter": "pillow_bilinear", "exif_orientation": "ignore",
                             "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    assert (out / "labels.txt").read_text().splitlines() == ["zero", "one", "two", "three", "four"]


def test_keep_softmax(tmp_path: Path):
    out = tmp_path / "pkg"
    r = run_split(FULL, "--layer", "relu_out", "--out", out, "--keep-softmax")
    assert r.returncode == 0, r.stderr
    head = onnx.load(str(out / "head.onnx"))
    assert head.graph.node[-1].op_type == "Softmax" and io(head)[1][0][0] == "logits"
    x = random_images(2, seed=5)
    (f,) = session(out / "extractor.onnx").run(["features"], {"input": x})
    (p,) = session(head).run(["logits"], {"features": f})
    (want,) = session(FULL).run(["probs"], {"image": x})
    assert np.abs(p - want).max() <= 1e-6


def test_existing_names_are_moved_aside(tmp_path: Path):
    # The new names already exist elsewhere in the graph: input 'logits', conv output 'input',
    # pooled 'features'. They must be renamed out of the way, not merged.
    m = renamed_full({"image": "logits", "conv_out": "input", "relu_out": "cut", "pooled": "features"})
    src = tmp_path / "clash.onnx"
    onnx.save(m, str(src))
    out = tmp_path / "pkg"
    r = run_split(src, "--layer", "cut", "--out", out)
    assert r.returncode == 0, r.stderr
    ext, head = onnx.load(str(out / "extractor.onnx")), onnx.load(str(out / "head.onnx"))
    assert [n for n, _ in io(ext)[0]] == ["input"] and [n for n, _ in io(ext)[1]] == ["features"]
    assert [n for n, _ in io(head)[0]] == ["features"] and [n for n, _ in io(head)[1]] == ["logits"]
    x = random_images(2, seed=7)
    (f,) = session(ext).run(["features"], {"input": x})
    (z,) = session(head).run(["logits"], {"features": f})
    (want,) = session(FULL).run(["probs"], {"image": x})
    assert np.abs(softmax(z) - want).max() <= 1e-5


def test_head_reading_the_input_shape_is_rewritten(tmp_path: Path):
    # torch's `x.view(x.size(0), -1)` exports as Shape(image) -> Gather(0) -> ... -> Reshape: the part
    # after the cut reads the image's shape. The split must still be exact and self-contained.
    full = onnx.load(str(FULL))
    nodes = [n for n in full.graph.node if n.op_type != "Flatten"]
    i = next(k for k, n in enumerate(nodes) if n.op_type == "Gemm")
    nodes[i:i] = [
        helper.make_node("Shape", ["image"], ["img_shape"]),
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("zero", TensorProto.INT64, [], [0])),
        helper.make_node("Gather", ["img_shape", "zero"], ["n"], axis=0),
        helper.make_node("Constant", [], ["axes0"], value=helper.make_tensor("axes0", TensorProto.INT64, [1], [0])),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Constant", [], ["minus1"], value=helper.make_tensor("minus1", TensorProto.INT64, [1], [-1])),
        helper.make_node("Concat", ["n1", "minus1"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]),
    ]
    g = helper.make_graph(nodes, "view", list(full.graph.input), list(full.graph.output),
                          initializer=list(full.graph.initializer))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    src = tmp_path / "view.onnx"
    onnx.save(m, str(src))
    out = tmp_path / "pkg"
    r = run_split(src, "--layer", "relu_out", "--out", out)
    assert r.returncode == 0, r.stderr
    head = onnx.load(str(out / "head.onnx"))
    assert "image" not in tensor_names(head)
    x = random_images(4, seed=3)  # a batch size the script did not verify with
    (f,) = session(out / "extractor.onnx").run(["features"], {"input": x})
    (z,) = session(head).run(["logits"], {"features": f})
    (want,) = session(src).run(["probs"], {"image": x})
    assert z.shape == (4, 5) and np.abs(softmax(z) - want).max() <= 1e-5


# --------------------------------------------------------------------------- failures


def clean_failure(r: subprocess.CompletedProcess) -> bool:
    """Non-zero exit with an `error: ...` message, not a traceback."""
    return r.returncode != 0 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_wrong_layer_fails_naming_it(tmp_path: Path):
    out = tmp_path / "pkg"
    r = run_split(FULL, "--layer", "no_such_tensor", "--out", out)
    assert clean_failure(r), r.stderr
    assert "no_such_tensor" in r.stderr and "--list-layers" in r.stderr
    assert not out.exists() or not any(out.iterdir())


def test_non_4d_layer_fails(tmp_path: Path):
    r = run_split(FULL, "--layer", "flat", "--out", tmp_path / "pkg")
    assert clean_failure(r), r.stderr
    assert "flat" in r.stderr and "4-D" in r.stderr


def test_graph_input_or_output_as_layer_fails(tmp_path: Path):
    for name in ("image", "probs"):
        r = run_split(FULL, "--layer", name, "--out", tmp_path / name)
        assert clean_failure(r) and name in r.stderr


def test_static_batch_fails(tmp_path: Path):
    m = onnx.load(str(FULL))
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    del m.graph.value_info[:]
    src = tmp_path / "static.onnx"
    onnx.save(m, str(src))
    r = run_split(src, "--layer", "relu_out", "--out", tmp_path / "pkg")
    assert clean_failure(r), r.stderr
    assert "batch" in r.stderr


def residual_around_the_cut(tmp_path: Path) -> Path:
    """image -> Conv -> a -> Relu -> b ; Add(b, a) -> c -> pool/flatten/gemm: cutting at b leaves 'a' needed by the
    head (a residual around the cut, as a transformer block's `x + attn(norm1(x))` cut at norm1)."""
    full = onnx.load(str(FULL))
    inits = list(full.graph.initializer)
    nodes = [
        helper.make_node("Conv", ["image", "conv.weight", "conv.bias"], ["a"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Add", ["b", "a"], ["c"]),
        helper.make_node("GlobalAveragePool", ["c"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["scores"], transB=1),
    ]
    g = helper.make_graph(nodes, "skip", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    src = tmp_path / "skip.onnx"
    onnx.save(m, str(src))
    return src


def test_skip_connection_around_the_cut_is_refused_with_no_side_inputs(tmp_path: Path):
    r = run_split(residual_around_the_cut(tmp_path), "--layer", "b", "--no-side-inputs", "--out", tmp_path / "pkg")
    assert clean_failure(r), r.stderr
    assert "'a'" in r.stderr and "separate" in r.stderr and "--no-side-inputs" in r.stderr
    assert "For example 'c'" in r.stderr  # a cut that would work: the first separating tensor after it
    assert not (tmp_path / "pkg" / "model.toml").exists()


def test_skip_connection_around_the_cut_is_wired_as_a_side_input(tmp_path: Path):
    src = residual_around_the_cut(tmp_path)
    out, r = split_ok(tmp_path, src, "--layer", "b")
    said = [line for line in r.stdout.splitlines() if line.startswith("side inputs:")]
    assert len(said) == 1, r.stdout  # one line: what rides along and what it costs
    assert "does not separate at 'b'" in said[0] and "'a' [N, 6, 4, 4]" in said[0] and "no extra cost" in said[0]
    ext, head = onnx.load(str(out / "extractor.onnx")), onnx.load(str(out / "head.onnx"))
    assert [n for n, _ in io(ext)[1]] == ["features", "a"] and [n for n, _ in io(head)[0]] == ["features", "a"]
    assert [n.op_type for n in head.graph.node][:1] == ["Add"]  # the residual stays in the head
    text = (out / "model.toml").read_text()
    assert re.search(r"^#   a \[N, 6, 4, 4\]$", text, re.M) and "does not separate" in text
    x = random_images(3, seed=5)  # a batch the tool did not try
    (got,) = run_package(out, x)
    want = session(src).run(None, {"image": x})[0]
    assert got.shape == (3, 5) and np.abs(got - want).max() <= 1e-5
    # A head-only pass with changed features keeps the residual at its clean value, as a PyTorch
    # hook replacing the layer's output does: scores = fc(pool(b' + a)), not fc(pool(b' + b')).
    ext_out = dict(zip(["features", "a"], session(out / "extractor.onnx").run(None, {"input": x})))
    changed = ext_out["features"] * 0.5
    (ablated,) = session(out / "head.onnx").run(None, {"features": changed, "a": ext_out["a"]})
    pooled = (changed + ext_out["a"]).mean(axis=(2, 3))
    fc = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(FULL)).graph.initializer}
    np.testing.assert_allclose(ablated, pooled @ fc["fc.weight"].T + fc["fc.bias"], rtol=1e-5, atol=1e-5)


def test_label_count_mismatch_fails(tmp_path: Path):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    r = run_split(FULL, "--layer", "relu_out", "--out", tmp_path / "pkg", "--labels", labels)
    assert clean_failure(r) and "3 labels" in r.stderr


def test_input_size_disagreeing_with_model_fails(tmp_path: Path):
    r = run_split(FULL, "--layer", "relu_out", "--out", tmp_path / "pkg", "--input-size", "32", "32")
    assert clean_failure(r) and "--input-size" in r.stderr


def test_refuses_to_overwrite_without_force(package: Path):
    r = run_split(FULL, "--layer", "relu_out", "--out", package)
    assert clean_failure(r) and "--force" in r.stderr
    assert run_split(FULL, "--layer", "relu_out", "--out", package, "--force").returncode == 0


def test_help():
    r = run_split("--help")
    assert r.returncode == 0
    for word in ("--layer", "--out", "--input-size", "--labels", "--mean", "--std", "--resize", "extractor.onnx", "head.onnx"):
        assert word in r.stdout


def test_list_layers():
    r = run_split(FULL, "--list-layers")
    assert r.returncode == 0, r.stderr
    rows = listed(r.stdout)
    assert [row[1] for row in rows] == ["relu_out", "conv_out", "pooled"]  # flat is 2-D: not listed
    assert rows[0][3:5] == ["[N, 6, 4, 4]", "nchw 4×4"] and "1×1" in " ".join(rows[2])
    # the filter is optional after --list-layers, so the model may also come after it
    r2 = run_split("--list-layers", FULL)
    assert r2.returncode == 0 and listed(r2.stdout) == rows


# --------------------------------------------------------------------------- architectures

VARIANTS = FIXTURES / "variants"
VIT, DEIT, SWIN = VARIANTS / "vit_tiny.onnx", VARIANTS / "deit_tiny.onnx", VARIANTS / "swin_tiny.onnx"
AMBIGUOUS, AFFINE = VARIANTS / "ambiguous_777.onnx", VARIANTS / "conv_affine.onnx"
VIT_BLOCK1 = "/encoder/layers/encoder_layer_1/Add_1_output_0"
VIT_SEQ_FIRST = "/encoder/layers/encoder_layer_1/self_attention/Transpose_5_output_0"  # [17, N, 12]
SWIN_STAGE3 = "/features/features.3/features.3.0/Add_output_0"


def listed(stdout: str) -> list[list[str]]:
    """The ranked rows of --list-layers: [rank, tensor, op, shape, layout, module, note]."""
    rows = []
    for line in stdout.splitlines():
        if re.match(r"\s*\d+  ", line):
            rows.append([c for c in re.split(r"\s{2,}", line.strip())])
    return rows


def split_ok(tmp_path: Path, src: Path, *args) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path / "pkg"
    r = run_split(src, *args, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r


def target_layer(out: Path) -> dict:
    return tomllib.loads((out / "model.toml").read_text())["target_layer"]


def inferred_dims(src: Path, name: str):
    m = onnx.shape_inference.infer_shapes(onnx.load(str(src)), data_prop=True)
    (vi,) = [v for v in m.graph.value_info if v.name == name]
    return io(helper.make_model(helper.make_graph([], "g", [vi], [])))[0][0][1]


def assert_split_equals_full(out: Path, src: Path, hw: int, batch: int = 3, tol: float = 1e-5):
    x = np.random.default_rng(11).standard_normal((batch, 3, hw, hw)).astype(np.float32)
    (f,) = session(out / "extractor.onnx").run(["features"], {"input": x})
    (z,) = session(out / "head.onnx").run(["logits"], {"features": f})
    (want,) = session(src).run(None, {"image": x})
    assert z.shape == want.shape == (batch, 5)
    assert np.abs(z - want).max() <= tol
    return f


def assert_concrete(out: Path, features: list, hw: int):
    ext, head = onnx.load(str(out / "extractor.onnx")), onnx.load(str(out / "head.onnx"))
    assert io(ext) == ([("input", ["batch", 3, hw, hw])], [("features", ["batch", *features])])
    assert io(head) == ([("features", ["batch", *features])], [("logits", ["batch", 5])])


def test_vit_tokens_detected_printed_and_written(tmp_path: Path):
    out, r = split_ok(tmp_path, VIT, "--layer", VIT_BLOCK1)
    assert "layout tokens" in r.stdout and "1 prefix token" in r.stdout and "4×4 grid" in r.stdout
    assert "32×32 input / 8" in r.stdout  # the reason: the grid is the input over the patch size
    assert target_layer(out) == {"description": VIT_BLOCK1, "layout": "tokens", "grid": [4, 4], "prefix_tokens": 1}
    f = assert_split_equals_full(out, VIT, 32)
    assert f.shape == (3, 17, 12)


def test_vit_concrete_dims_where_inference_left_them_symbolic(tmp_path: Path):
    # The class-token concat: shape inference knows only the channels ([?, ?, 12]).
    layer = "/Concat_2_output_0"
    before = inferred_dims(VIT, layer)
    assert before[2] == 12 and not all(isinstance(d, int) for d in before[1:2]) and before[0] != "batch"
    out, r = split_ok(tmp_path, VIT, "--layer", layer)
    assert_concrete(out, [17, 12], 32)
    assert_split_equals_full(out, VIT, 32, batch=4)


def test_deit_two_prefix_tokens_and_dynamo_scopes(tmp_path: Path):
    out, r = split_ok(tmp_path, DEIT, "--module", "blocks[-1]")
    assert "module blocks.1" in r.stdout and "'add_12'" in r.stdout
    assert "2 prefix tokens" in r.stdout
    tl = target_layer(out)
    assert (tl["layout"], tl["grid"], tl["prefix_tokens"]) == ("tokens", [4, 4], 2)
    assert "blocks.1" in tl["description"]
    assert_concrete(out, [18, 12], 32)
    assert_split_equals_full(out, DEIT, 32)


def test_swin_channels_last(tmp_path: Path):
    before = inferred_dims(SWIN, SWIN_STAGE3)
    assert before[3] == 24 and not all(isinstance(d, int) for d in before[1:3])  # h, w symbolic
    out, r = split_ok(tmp_path, SWIN, "--module", "features.3")
    assert f"cutting at its output {SWIN_STAGE3!r}" in r.stdout
    assert "layout nhwc" in r.stdout and "4×4 (= 32×32 input / 8) of 24 channels" in r.stdout
    assert target_layer(out)["layout"] == "nhwc" and "grid" not in target_layer(out)
    assert_concrete(out, [4, 4, 24], 32)
    f = assert_split_equals_full(out, SWIN, 32)
    assert f.shape == (3, 4, 4, 24)


@pytest.mark.parametrize("src,query,tensor", [
    (VIT, "encoder.layers.encoder_layer_1", VIT_BLOCK1),
    (VIT, "encoder.layers.1", VIT_BLOCK1),            # index -> encoder_layer_1
    (VIT, "encoder.layers[-1]", VIT_BLOCK1),
    (VIT, "/encoder/layers/encoder_layer_1", VIT_BLOCK1),  # an ONNX scope
    (VIT, "encoder_layer_1", VIT_BLOCK1),             # below the root
    (VIT, "encoder.layers[0]", "/encoder/layers/encoder_layer_0/Add_1_output_0"),
    (VIT, "encoder", "/encoder/ln/LayerNormalization_output_0"),
    (VIT, "conv_proj", "/conv_proj/Conv_output_0"),
    (SWIN, "features[-1]", SWIN_STAGE3),
    (SWIN, "features.1", "/features/features.1/features.1.0/Add_output_0"),
    (DEIT, "blocks.0", "add_6"),
    (DEIT, "norm", "layernormalization_4"),
])
def test_module_picks_the_module_output(tmp_path: Path, src: Path, query: str, tensor: str):
    out, r = split_ok(tmp_path, src, "--module", query)
    assert f"cutting at its output {tensor!r}" in r.stdout
    assert target_layer(out)["description"].startswith(tensor + " (output of module ")


def densenet_like(path: Path) -> Path:
    """A DenseNet-shaped graph: the `features` module ends in a BatchNorm, and the model's
    forward applies a ReLU to its output outside the module (torchvision does it in place)."""
    h = onnx.helper
    rng = np.random.default_rng(0)
    init = [
        onnx.numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w0"),
        onnx.numpy_helper.from_array(np.ones(6, np.float32), "scale"),
        onnx.numpy_helper.from_array(np.zeros(6, np.float32), "bias"),
        onnx.numpy_helper.from_array(np.zeros(6, np.float32), "mean"),
        onnx.numpy_helper.from_array(np.ones(6, np.float32), "var"),
        onnx.numpy_helper.from_array(rng.standard_normal((5, 6)).astype(np.float32), "wc"),
        onnx.numpy_helper.from_array(np.zeros(5, np.float32), "bc"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "w0"], ["/features/conv0/Conv_output_0"], name="/features/conv0/Conv", pads=[1, 1, 1, 1]),
        h.make_node("BatchNormalization", ["/features/conv0/Conv_output_0", "scale", "bias", "mean", "var"],
                    ["/features/norm5/BatchNormalization_output_0"], name="/features/norm5/BatchNormalization"),
        h.make_node("Relu", ["/features/norm5/BatchNormalization_output_0"], ["/Relu_output_0"], name="/Relu"),
        h.make_node("GlobalAveragePool", ["/Relu_output_0"], ["/GlobalAveragePool_output_0"], name="/GlobalAveragePool"),
        h.make_node("Flatten", ["/GlobalAveragePool_output_0"], ["/Flatten_output_0"], name="/Flatten"),
        h.make_node("Gemm", ["/Flatten_output_0", "wc", "bc"], ["logits"], name="/classifier/Gemm", transB=1),
    ]
    graph = h.make_graph(nodes, "densenet_like", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
                         [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 5])], init)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_module_followed_by_an_activation_warns_and_names_the_hooked_tensor(tmp_path: Path):
    src = densenet_like(tmp_path / "densenet_like.onnx")
    out, r = split_ok(tmp_path, src, "--module", "features")
    assert "cutting at its output '/features/norm5/BatchNormalization_output_0'" in r.stdout
    assert "warning:" in r.stdout and "in place" in r.stdout and "--layer '/Relu_output_0'" in r.stdout, r.stdout
    # The named tensor splits cleanly, and with no activation after it there is no warning.
    out2 = tmp_path / "relu"
    r = run_split(src, "--layer", "/Relu_output_0", "--out", out2)
    assert r.returncode == 0, r.stderr
    assert "warning:" not in r.stdout


def resnet_like(path: Path) -> Path:
    """A ResNet-shaped tail: module layer4.1 ends in its own ReLU (relu_1), which global pooling reads."""
    h = onnx.helper
    rng = np.random.default_rng(1)
    init = [onnx.numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w0"),
            onnx.numpy_helper.from_array(rng.standard_normal((6, 6, 3, 3)).astype(np.float32), "w1"),
            onnx.numpy_helper.from_array(rng.standard_normal((5, 6)).astype(np.float32), "wc"),
            onnx.numpy_helper.from_array(np.zeros(5, np.float32), "bc")]
    nodes = [
        h.make_node("Conv", ["x", "w0"], ["/conv1/Conv_output_0"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["/conv1/Conv_output_0", "w1"], ["/layer4/layer4.1/conv2/Conv_output_0"],
                    name="/layer4/layer4.1/conv2/Conv", pads=[1, 1, 1, 1]),
        h.make_node("Add", ["/layer4/layer4.1/conv2/Conv_output_0", "/conv1/Conv_output_0"], ["/layer4/layer4.1/Add_output_0"],
                    name="/layer4/layer4.1/Add"),
        h.make_node("Relu", ["/layer4/layer4.1/Add_output_0"], ["/layer4/layer4.1/relu_1/Relu_output_0"],
                    name="/layer4/layer4.1/relu_1/Relu"),
        h.make_node("GlobalAveragePool", ["/layer4/layer4.1/relu_1/Relu_output_0"], ["/avgpool/GlobalAveragePool_output_0"],
                    name="/avgpool/GlobalAveragePool"),
        h.make_node("Flatten", ["/avgpool/GlobalAveragePool_output_0"], ["/Flatten_output_0"], name="/Flatten"),
        h.make_node("Gemm", ["/Flatten_output_0", "wc", "bc"], ["logits"], name="/fc/Gemm", transB=1),
    ]
    graph = h.make_graph(nodes, "resnet_like", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
                         [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 5])], init)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("query", ["layer4", "layer4[-1]", "layer4.1.relu_1"])
def test_module_ending_in_its_own_activation_does_not_warn(tmp_path: Path, query: str):
    out, r = split_ok(tmp_path, resnet_like(tmp_path / "resnet_like.onnx"), "--module", query)
    assert "cutting at its output '/layer4/layer4.1/relu_1/Relu_output_0'" in r.stdout, r.stdout
    assert "warning:" not in r.stdout and "in place" not in r.stdout


def test_module_output_read_by_a_residual_add_does_not_warn(tmp_path: Path):
    # conv2's output feeds the residual Add, not an activation: nothing can overwrite it.
    out, r = split_ok(tmp_path, resnet_like(tmp_path / "resnet_like.onnx"), "--module", "layer4.1.conv2")
    assert "warning:" not in r.stdout


def test_module_not_found_lists_close_names(tmp_path: Path):
    r = run_split(VIT, "--module", "encoder.layer.1", "--out", tmp_path / "pkg")
    assert clean_failure(r), r.stderr
    assert "encoder.layer.1" in r.stderr and "encoder.layers.encoder_layer_1" in r.stderr


def test_module_without_scopes_points_to_layer(tmp_path: Path):
    r = run_split(FULL, "--module", "relu", "--out", tmp_path / "pkg")
    assert clean_failure(r) and "--layer" in r.stderr


def test_layer_and_module_are_exclusive(tmp_path: Path):
    r = run_split(VIT, "--layer", VIT_BLOCK1, "--module", "encoder", "--out", tmp_path / "pkg")
    assert r.returncode != 0 and "not allowed with" in r.stderr


def test_ambiguous_4d_is_refused_naming_layout(tmp_path: Path):
    r = run_split(AMBIGUOUS, "--module", "features.1", "--out", tmp_path / "pkg")
    assert clean_failure(r), r.stderr
    assert "[N, 7, 7, 7]" in r.stderr and "--layout nchw" in r.stderr and "--layout nhwc" in r.stderr
    assert not (tmp_path / "pkg" / "model.toml").exists()


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_layout_override(tmp_path: Path, layout: str):
    out, r = split_ok(tmp_path, AMBIGUOUS, "--module", "features.1", "--layout", layout)
    assert f"layout {layout}" in r.stdout and "--layout" in r.stdout
    assert target_layer(out)["layout"] == layout
    assert_concrete(out, [7, 7, 7], 28)
    assert_split_equals_full(out, AMBIGUOUS, 28)


def test_token_overrides(tmp_path: Path):
    out, r = split_ok(tmp_path, VIT, "--layer", VIT_BLOCK1, "--grid", "4x4")
    assert target_layer(out)["prefix_tokens"] == 1 and "--grid" in r.stdout
    out2 = tmp_path / "pkg2"
    r = run_split(VIT, "--layer", VIT_BLOCK1, "--prefix-tokens", "1", "--out", out2)
    assert r.returncode == 0, r.stderr
    assert target_layer(out2)["grid"] == [4, 4] and "--prefix-tokens" in r.stdout
    r = run_split(VIT, "--layer", VIT_BLOCK1, "--grid", "5x5", "--out", tmp_path / "pkg3")  # 25 > 17 tokens
    assert clean_failure(r) and "--grid" in r.stderr
    r = run_split(VIT, "--layer", VIT_BLOCK1, "--grid", "1x1", "--out", tmp_path / "pkg3")  # 16 prefix + 1×1
    assert clean_failure(r) and "1×1" in r.stderr
    r = run_split(VIT, "--layer", VIT_BLOCK1, "--layout", "nhwc", "--out", tmp_path / "pkg4")
    assert clean_failure(r) and "4-D" in r.stderr
    r = run_split(FULL, "--layer", "relu_out", "--layout", "tokens", "--out", tmp_path / "pkg5")
    assert clean_failure(r) and "3-D" in r.stderr
    r = run_split(FULL, "--layer", "relu_out", "--layout", "nchw", "--grid", "4x4", "--out", tmp_path / "pkg6")
    assert r.returncode == 2 and "--grid" in r.stderr  # argparse error


def test_pooled_1x1_is_refused_with_an_explanation(tmp_path: Path):
    r = run_split(FULL, "--layer", "pooled", "--out", tmp_path / "pkg")
    assert clean_failure(r), r.stderr
    assert "1×1" in r.stderr and "pooled" in r.stderr and "'relu_out'" in r.stderr  # names the map before it
    r = run_split(FULL, "--layer", "pooled", "--layout", "nchw", "--out", tmp_path / "pkg")
    assert clean_failure(r) and "1×1" in r.stderr


def test_batch_not_first_is_named_as_such(tmp_path: Path):
    r = run_split(VIT, "--layer", VIT_SEQ_FIRST, "--out", tmp_path / "pkg")
    assert clean_failure(r), r.stderr
    assert "the batch is not the first axis" in r.stderr and "[17, N, 12]" in r.stderr
    assert "fixed batch" not in r.stderr and "197" not in r.stderr
    assert "/encoder/layers/encoder_layer_1/Add_output_0" in r.stderr  # a usable tensor after it


VIT_LN2 = "/encoder/layers/encoder_layer_1/ln_2/LayerNormalization_output_0"


def test_cut_inside_a_residual_block_names_the_skip(tmp_path: Path):
    r = run_split(VIT, "--layer", VIT_LN2, "--no-side-inputs", "--out", tmp_path / "p")
    assert clean_failure(r), r.stderr
    assert "separate" in r.stderr and "'/encoder/layers/encoder_layer_1/Add_output_0'" in r.stderr
    assert "/conv_proj" not in r.stderr  # only the skip itself, not the whole path before the cut
    assert f"For example {VIT_BLOCK1!r}" in r.stderr  # the block's output separates


def test_cut_inside_a_residual_block_passes_the_residual_stream(tmp_path: Path):
    # The ViT tutorial's kind of layer (a LayerNorm inside the block's residual): the residual
    # stream rides along as a side input, the tokens layout is read as at the block's output.
    out, r = split_ok(tmp_path, VIT, "--layer", VIT_LN2)
    assert "side inputs: the graph does not separate" in r.stdout
    assert "'/encoder/layers/encoder_layer_1/Add_output_0' [N, 17, 12]" in r.stdout
    assert target_layer(out)["grid"] == [4, 4] and target_layer(out)["prefix_tokens"] == 1
    assert "#   /encoder/layers/encoder_layer_1/Add_output_0 [N, 17, 12]" in (out / "model.toml").read_text()
    x = np.random.default_rng(11).standard_normal((3, 3, 32, 32)).astype(np.float32)
    (got,) = run_package(out, x)
    assert np.abs(got - session(VIT).run(None, {"image": x})[0]).max() <= 1e-5


def test_class_token_heads_compute_only_the_rows_they_read(tmp_path: Path):
    # ViT's head reads x[:, 0] (cut inside the last block's residual, as the library's ViT
    # tutorial), DeiT's x[:, 0] and x[:, 1] (cut after its first block): the last block's MLP,
    # the residual adds and the final norm run on those rows only. Swin's head pools every
    # token: nothing to narrow.
    x = np.random.default_rng(5).standard_normal((3, 3, 32, 32)).astype(np.float32)
    for src, args, rows, tokens in ((VIT, ["--layer", VIT_LN2], 1, 17), (DEIT, ["--module", "blocks.0"], 2, 18)):
        out, r = split_ok(tmp_path / src.stem, src, *args)
        assert f"computes only the {rows} of {tokens} token rows its output reads" in r.stdout
        head = onnx.shape_inference.infer_shapes(onnx.load(str(out / "head.onnx")))
        dims = {vi.name: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]
                for vi in list(head.graph.value_info) + list(head.graph.input)}
        weights = {w.name for w in head.graph.initializer}
        products = [dims.get(n.input[0]) for n in head.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
        assert sum(1 for d in products if d and d[1] == rows) >= 2, products  # the MLP's two
        assert np.abs(run_package(out, x)[0] - session(src).run(None, {"image": x})[0]).max() <= 1e-5
    out, r = split_ok(tmp_path / "swin", SWIN, "--module", "features.3")
    assert "token rows" not in r.stdout


def test_tolerance_hint_on_rounding(tmp_path: Path):
    # ONNX Runtime folds Mul/Add into the Conv in the whole model, not across a cut at conv_out.
    r = run_split(AFFINE, "--layer", "conv_out", "--out", tmp_path / "pkg", "--tolerance", "0", "--rtol", "0")
    assert clean_failure(r), r.stderr
    assert "rounding" in r.stderr and "--tolerance" in r.stderr and "--rtol" in r.stderr
    assert not (tmp_path / "pkg" / "model.toml").exists()
    out, r = split_ok(tmp_path, AFFINE, "--layer", "conv_out")  # the defaults accept it
    assert "max |Δ|" in r.stdout


def test_list_layers_ranking_vit():
    r = run_split(VIT, "--list-layers")
    assert r.returncode == 0, r.stderr
    rows = listed(r.stdout)
    assert len(rows) == 20 and re.search(r"… and \d+ more", r.stdout)
    assert rows[0][1] == "/encoder/ln/LayerNormalization_output_0" and rows[0][4] == "tokens 4×4+1"
    assert rows[1][1] == VIT_BLOCK1 and rows[1][5] == "encoder.layers.encoder_layer_1"
    everything = listed(run_split(VIT, "--list-layers", "--top", "0").stdout)
    assert len(everything) > 20 and everything[:20] == rows
    names = [row[1] for row in everything]
    # usable maps that separate the graph first, latest first; then those with a skip around them;
    # the sequence-first attention tensors come after all of them
    tiers = [0 if len(row) == 6 and ("tokens" in row[4] or "nchw" in row[4]) else
             1 if "ambiguous" in row[4] and len(row) == 7 and "separate" not in row[6] else
             2 if len(row) == 7 and "separate" in row[6] else 3 for row in everything]
    assert tiers == sorted(tiers), list(zip(tiers, names))
    seq_first = [row for row in everything if row[4] == "batch not first"]
    assert seq_first and all(row[3] in ("[17, N, 12]", "[17, N, 36]") for row in seq_first)
    assert VIT_SEQ_FIRST in names and names.index(VIT_SEQ_FIRST) > names.index(VIT_BLOCK1)
    assert not any(row[3].count(",") < 2 for row in everything)  # no 2-D tensors


def test_list_layers_filter():
    for args in (("--list-layers", "self_attention/Add"), ("--filter", "self_attention/Add")):
        r = run_split(VIT, *args)
        assert r.returncode == 0, r.stderr
        rows = listed(r.stdout)
        assert len(rows) == 4 and all("self_attention/Add" in row[1] for row in rows)
    rows = listed(run_split(SWIN, "--list-layers", "features.3").stdout)
    assert rows[0][1] == SWIN_STAGE3 and rows[0][4] == "nhwc 4×4"
    rows = listed(run_split(AMBIGUOUS, "--list-layers").stdout)
    assert rows[0][4] == "ambiguous" and "--layout" in rows[0][6]


def test_resize_filter_written(tmp_path: Path):
    out, _ = split_ok(tmp_path, FULL, "--layer", "relu_out", "--resize-filter", "opencv_linear")
    assert tomllib.loads((out / "model.toml").read_text())["input"]["resize_filter"] == "opencv_linear"
    r = run_split(FULL, "--layer", "relu_out", "--resize-filter", "lanczos", "--out", tmp_path / "x")
    assert r.returncode == 2


def test_exif_orientation_written_and_said(tmp_path: Path):
    # torchvision-style pipelines feed the pixels as stored: the default, and the tool says so.
    out, r = split_ok(tmp_path, FULL, "--layer", "relu_out")
    assert tomllib.loads((out / "model.toml").read_text())["input"]["exif_orientation"] == "ignore"
    assert "exif_orientation = \"ignore\"" in r.stdout and "PIL.Image.open" in r.stdout
    out2 = tmp_path / "apply"
    r = run_split(FULL, "--layer", "relu_out", "--exif-orientation", "apply", "--out", out2)
    assert r.returncode == 0, r.stderr
    assert tomllib.loads((out2 / "model.toml").read_text())["input"]["exif_orientation"] == "apply"
    assert run_split(FULL, "--layer", "relu_out", "--exif-orientation", "rotate", "--out", tmp_path / "x").returncode == 2


def test_head_reading_the_shape_of_a_tensor_before_the_cut(tmp_path: Path):
    # The head reads Shape(conv_out) (computed before the cut at relu_out) to flatten: rewritten
    # from the features' batch and conv_out's fixed dims, so the split still separates.
    full = onnx.load(str(FULL))
    nodes = [n for n in full.graph.node if n.op_type != "Flatten"]
    i = next(k for k, n in enumerate(nodes) if n.op_type == "Gemm")
    nodes[i:i] = [
        helper.make_node("Shape", ["conv_out"], ["cs"], start=0, end=1),
        helper.make_node("Constant", [], ["minus1"], value=helper.make_tensor("minus1", TensorProto.INT64, [1], [-1])),
        helper.make_node("Concat", ["cs", "minus1"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]),
    ]
    g = helper.make_graph(nodes, "view2", list(full.graph.input), list(full.graph.output), initializer=list(full.graph.initializer))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    src = tmp_path / "view2.onnx"
    onnx.save(m, str(src))
    out, r = split_ok(tmp_path, src, "--layer", "relu_out")
    assert "'conv_out'" in r.stdout
    head = onnx.load(str(out / "head.onnx"))
    assert not tensor_names(head) & {"conv_out", "image"}
    x = random_images(4, seed=3)
    (f,) = session(out / "extractor.onnx").run(["features"], {"input": x})
    (z,) = session(head).run(["logits"], {"features": f})
    (want,) = session(src).run(["probs"], {"image": x})
    assert np.abs(softmax(z) - want).max() <= 1e-5


def test_help_documents_the_new_options():
    r = run_split("--help")
    assert r.returncode == 0
    for word in ("--module", "--layout", "--grid", "--prefix-tokens", "--list-layers", "--filter", "--top",
                 "--rtol", "--tolerance", "--resize-filter", "pillow_bilinear", "opencv_linear", "tokens",
                 "nhwc", "prefix_tokens", "features[-1]"):
        assert word in r.stdout, word


# --------------------------------------------------------------------------- the pure parts


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("split_model", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["split_model"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("shape,hw,want", [
    ((512, 7, 7), (224, 224), ("nchw", (7, 7), 0)),          # ResNet layer4
    ((7, 7, 768), (224, 224), ("nhwc", (7, 7), 0)),          # Swin stage 4
    ((2048, 7, 10), (224, 320), ("nchw", (7, 10), 0)),       # non-square input
    ((197, 768), (224, 224), ("tokens", (14, 14), 1)),       # ViT-B/16
    ((198, 768), (224, 224), ("tokens", (14, 14), 2)),       # DeiT distilled
    ((50, 768), (224, 224), ("tokens", (7, 7), 1)),          # ViT-B/32
    ((3136, 96), (224, 224), ("tokens", (56, 56), 0)),       # Swin stage 1 as tokens
    ((281, 768), (224, 320), ("tokens", (14, 20), 1)),       # ViT on a non-square input
])
def test_analyze_layouts(tool, shape, hw, want):
    a = tool.analyze(((1, *shape), (2, *shape)), hw)
    assert a.problem is None and (a.layout, a.grid, a.prefix) == want


@pytest.mark.parametrize("shape,hw,kind,words", [
    ((7, 7, 7), (28, 28), "ambiguous", ["--layout"]),
    ((16, 16, 16), (64, 64), "ambiguous", ["--layout"]),
    ((3, 5, 9), (224, 224), "ambiguous", ["--layout"]),      # fits neither way
    ((5, 8), (224, 320), "ambiguous", ["--grid", "--prefix-tokens"]),  # 1 + 2×2 or 2 + 1×3
    ((768, 197), (224, 224), "ambiguous", ["channels-first"]),
    ((2048, 1, 1), (224, 224), "pooled", ["1×1"]),
    ((1, 768), (224, 224), "pooled", ["1×1"]),
    ((768,), (224, 224), "not_spatial", ["no spatial axes"]),
])
def test_analyze_refusals(tool, shape, hw, kind, words):
    a = tool.analyze(((1, *shape), (2, *shape)), hw)
    assert a.layout is None and a.kind == kind, a
    for w in words:
        assert w in a.problem, a.problem


def test_analyze_batch_axis(tool):
    a = tool.analyze(((197, 1, 768), (197, 2, 768)), (224, 224))
    assert a.kind == "batch" and "not the first axis" in a.problem and "[197, N, 768]" in a.problem
    assert "fixed" not in a.problem
    a = tool.analyze(((12, 197, 64), (24, 197, 64)), (224, 224))  # [N·heads, T, d]
    assert a.kind == "batch" and "folded" in a.problem


def test_compare_names_tolerance_only_for_noise(tool):
    want = np.array([[10.0, -5.0, 3.0]])
    assert tool.compare(want + 5e-4, want, 1e-5, 1e-4) == pytest.approx(5e-4)  # within 1e-5 + 1e-4 * 10
    with pytest.raises(tool.SplitError) as e:
        tool.compare(want + 1e-5, want, 0, 0)
    assert "rounding" in str(e.value) and "--tolerance" in str(e.value)
    with pytest.raises(tool.SplitError) as e:
        tool.compare(want + 1.0, want, 1e-5, 1e-4)
    assert "too large to be float rounding" in str(e.value)


@pytest.mark.parametrize("name,atoms", [
    ("/layer4/layer4.1/relu_1/Relu", ("layer4", "1", "relu_1")),
    ("/features/features.7/block/block.0/block.0.0/Conv", ("features", "7", "block", "0", "0")),
    ("/encoder/layers/encoder_layer_11/Add_1", ("encoder", "layers", "encoder_layer_11")),
    ("/Concat", ()),
    ("Conv_0", None),
])
def test_node_scope(tool, name, atoms):
    assert tool.node_scope(helper.make_node("Relu", ["a"], ["b"], name=name)) == atoms


# --------------------------------------------------------------------------- side inputs (skip connections)


def rand_weight(name: str, shape, rng) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def save_model(nodes, inputs, outputs, inits, path: Path) -> Path:
    g = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return path


def int64_const(name: str, values) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values))


def unet_like(path: Path, skip: str = "enc/skip 1", image_residual: bool = False) -> Path:
    """A two-level U-Net: image [b,3,16,16] -> Conv/Relu -> `skip` [b,4,16,16] -> MaxPool -> Conv/Relu -> enc
    [b,6,8,8] -> 1×1 Conv -> Resize to [e1.shape[0], d1.shape[1], *skip.shape[-2:]] (shape reads of the skip and of
    e1, the conv before it) -> Concat(up, skip) -> 1×1 Conv -> out [b,3,16,16] (+ the image itself with
    image_residual). Cutting at enc leaves the skip needed after it."""
    rng = np.random.default_rng(0)
    inits = [rand_weight("c1.w", (4, 3, 3, 3), rng), rand_weight("c1.b", (4,), rng),
             rand_weight("c2.w", (6, 4, 3, 3), rng), rand_weight("c2.b", (6,), rng),
             rand_weight("d1.w", (4, 6, 1, 1), rng), rand_weight("d1.b", (4,), rng),
             rand_weight("o.w", (3, 8, 1, 1), rng), rand_weight("o.b", (3,), rng)]
    nodes = [
        helper.make_node("Conv", ["image", "c1.w", "c1.b"], ["e1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["e1"], [skip]),
        helper.make_node("MaxPool", [skip], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2.w", "c2.b"], ["e2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["e2"], ["enc"]),
        helper.make_node("Conv", ["enc", "d1.w", "d1.b"], ["d1"]),
        helper.make_node("Shape", [skip], ["skip_shape"]),
        int64_const("two", [2]), int64_const("four", [4]), int64_const("zero", [0]),
        helper.make_node("Slice", ["skip_shape", "two", "four"], ["hw"]),
        helper.make_node("Shape", ["d1"], ["d1_shape"]),
        int64_const("one", [1]),
        helper.make_node("Shape", ["e1"], ["n"], start=0, end=1),
        helper.make_node("Slice", ["d1_shape", "one", "two"], ["c"]),
        helper.make_node("Concat", ["n", "c", "hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["d1", "", "", "sizes"], ["up"], mode="nearest"),
        helper.make_node("Concat", ["up", skip], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "o.w", "o.b"], ["seg" if image_residual else "out"]),
    ]
    if image_residual:
        nodes.append(helper.make_node("Add", ["seg", "image"], ["out"]))
    return save_model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                      [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 16, 16])], inits, path)


def run_package(out: Path, x: np.ndarray) -> list[np.ndarray]:
    """head(extractor(x)), the head fed every extractor output by name, as scorecam does."""
    ext, head = session(out / "extractor.onnx"), session(out / "head.onnx")
    values = dict(zip([o.name for o in ext.get_outputs()], ext.run(None, {"input": x})))
    return head.run(None, {i.name: values[i.name] for i in head.get_inputs()})


def test_side_inputs_refused_with_no_side_inputs(tmp_path: Path):
    src = unet_like(tmp_path / "unet.onnx")
    r = run_split(src, "--layer", "enc", "--no-side-inputs", "--out", tmp_path / "pkg")
    assert clean_failure(r), r.stderr
    assert "separate" in r.stderr and "'enc/skip 1'" in r.stderr and "--no-side-inputs" in r.stderr
    assert "'hw'" not in r.stderr  # the shape read of the skip is not a skip connection
    assert not (tmp_path / "pkg" / "model.toml").exists()


@pytest.mark.parametrize("flag", [(), ("--side-inputs",)])  # the default; the old flag still works
def test_side_inputs_become_extractor_outputs_and_head_inputs(tmp_path: Path, flag):
    src = unet_like(tmp_path / "unet.onnx")
    out, r = split_ok(tmp_path, src, "--layer", "enc", *flag)
    assert "'enc/skip 1' (as 'enc/skip_1') [N, 4, 16, 16]" in r.stdout  # the name sanitised
    assert "read the shape of tensor 'e1'" in r.stdout  # a shape read of a tensor before the cut: rewritten as before
    ext, head = onnx.load(str(out / "extractor.onnx")), onnx.load(str(out / "head.onnx"))
    onnx.checker.check_model(ext, full_check=True)
    onnx.checker.check_model(head, full_check=True)
    assert io(ext) == ([("input", ["batch", 3, 16, 16])],
                       [("features", ["batch", 6, 8, 8]), ("enc/skip_1", ["batch", 4, 16, 16])])
    assert io(head) == ([("features", ["batch", 6, 8, 8]), ("enc/skip_1", ["batch", 4, 16, 16])],
                        [("logits", ["batch", 3, 16, 16])])
    assert not tensor_names(head) & {"image", "enc/skip 1", "e1", "c1.w"}  # nothing before the cut is recomputed
    assert tomllib.loads((out / "model.toml").read_text())["head"] == {"kind": "segmentation", "layout": "nchw"}
    x = np.random.default_rng(4).standard_normal((3, 3, 16, 16)).astype(np.float32)  # a batch the tool did not try
    (got,) = run_package(out, x)
    (want,) = session(src).run(None, {"image": x})
    assert got.shape == (3, 3, 16, 16) and np.abs(got - want).max() <= 1e-5
    # the side input is what it says: the full model's tensor
    tapped = onnx.load(str(src))
    tapped.graph.output.append(helper.make_tensor_value_info("enc/skip 1", TensorProto.FLOAT, None))
    np.testing.assert_array_equal(session(out / "extractor.onnx").run(["enc/skip_1"], {"input": x})[0],
                                  session(tapped).run(["enc/skip 1"], {"image": x})[0])


def test_side_input_named_like_the_package_tensors_is_renamed(tmp_path: Path):
    src = unet_like(tmp_path / "unet.onnx", skip="features")
    out, r = split_ok(tmp_path, src, "--layer", "enc", "--side-inputs")
    assert "'features' (as 'features_1')" in r.stdout
    ext, head = onnx.load(str(out / "extractor.onnx")), onnx.load(str(out / "head.onnx"))
    assert [n for n, _ in io(ext)[1]] == ["features", "features_1"]
    assert [n for n, _ in io(head)[0]] == ["features", "features_1"]
    x = random_images(2, seed=9)
    assert np.abs(run_package(out, x)[0] - session(src).run(None, {"image": x})[0]).max() <= 1e-5


def test_side_inputs_on_a_separating_cut_change_nothing(tmp_path: Path):
    out, r = split_ok(tmp_path, FULL, "--layer", "relu_out", "--side-inputs")
    assert "separates" in r.stdout
    assert [n for n, _ in io(onnx.load(str(out / "extractor.onnx")))[1]] == ["features"]


def test_image_read_after_the_cut_is_refused_with_no_side_inputs(tmp_path: Path):
    src = unet_like(tmp_path / "unet_img.onnx", image_residual=True)
    r = run_split(src, "--layer", "enc", "--out", tmp_path / "pkg", "--no-side-inputs")
    assert clean_failure(r), r.stderr
    assert "'image'" in r.stderr and "the image among them" in r.stderr and "--no-side-inputs" in r.stderr
    assert not (tmp_path / "pkg" / "model.toml").exists()


def test_image_read_after_the_cut_rides_along_as_a_copy(tmp_path: Path):
    # The model's input is called `image`, the name the copy gets in the package: the graph input
    # becomes `input` there, the copy `image`.
    src = unet_like(tmp_path / "unet_img.onnx", image_residual=True)
    out, r = split_ok(tmp_path, src, "--layer", "enc")
    assert "the image itself (an Identity copy) (as 'image') [N, 3, 16, 16]" in r.stdout, r.stdout
    ext, head = onnx.load(str(out / "extractor.onnx")), onnx.load(str(out / "head.onnx"))
    assert [n for n, _ in io(ext)[1]] == ["features", "enc/skip_1", "image"]
    assert [n for n, _ in io(head)[0]] == ["features", "enc/skip_1", "image"]
    assert "#   image [N, 3, 16, 16] (an Identity copy of the image)" in (out / "model.toml").read_text()
    x = np.random.default_rng(6).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(session(out / "extractor.onnx").run(["image"], {"input": x})[0], x)
    (got,) = run_package(out, x)
    assert np.abs(got - session(src).run(None, {"image": x})[0]).max() <= 1e-5


def test_list_layers_ranks_cuts_needing_side_inputs_after_separating_ones(tmp_path: Path):
    src = unet_like(tmp_path / "unet.onnx")
    rows = listed(run_split(src, "--list-layers").stdout)
    by_name = {row[1]: row for row in rows}
    assert [row[1] for row in rows[:3]] == ["cat", "enc/skip 1", "e1"] and all(len(row) == 6 for row in rows[:3])
    assert by_name["enc"][6] == "does not separate: 1 side input"
    assert all("side input" in row[6] for row in rows[3:])
    rows = listed(run_split(unet_like(tmp_path / "unet_img.onnx", image_residual=True), "--list-layers").stdout)
    assert {row[1]: row for row in rows}["enc"][6] == "does not separate: 2 side inputs (the image among them)"


# --------------------------------------------------------------------------- detection heads


def detector(path: Path, fmt: str = "yolo_v8", classes: int = 3, logits: bool = False) -> Path:
    """A two-level YOLO-like detector: image [b,3,32,32] -> p3 [b,8,16,16] -> p4 [b,6,8,8]; a 1×1 conv per level
    gives 4 + C values per anchor (sigmoid; boxes scaled to pixels), concatenated over the 256 + 64 anchors:
    yolo_v8 [b, 4 + C, 320]; yolo_v5 its transpose [b, 320, 4 + C] (read as 5 + (C - 1)); boxes: x1y1x2y2 [b, 320, 4]
    then scores [b, 320, C]; logits: the class scores before their sigmoid. Cutting at p4 needs p3 as a side input."""
    rng = np.random.default_rng(1)
    a = 4 + classes
    inits = [rand_weight("s1.w", (8, 3, 3, 3), rng), rand_weight("s1.b", (8,), rng),
             rand_weight("s2.w", (6, 8, 3, 3), rng), rand_weight("s2.b", (6,), rng),
             rand_weight("h3.w", (a, 8, 1, 1), rng), rand_weight("h3.b", (a,), rng),
             rand_weight("h4.w", (a, 6, 1, 1), rng), rand_weight("h4.b", (a,), rng),
             numpy_helper.from_array(np.array([0, a, -1], np.int64), "flat"),
             numpy_helper.from_array(np.array([32.0], np.float32), "px")]
    nodes = [
        helper.make_node("Conv", ["image", "s1.w", "s1.b"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2]),
        # a shape read inside the part before the cut (as a C2f's chunk sizes): must not tie it to the head
        helper.make_node("Shape", ["c3"], ["c3_shape"]),
        helper.make_node("Reshape", ["c3", "c3_shape"], ["c3r"]),
        helper.make_node("Relu", ["c3r"], ["p3"]),
        helper.make_node("Conv", ["p3", "s2.w", "s2.b"], ["c4"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c4"], ["p4"]),
        helper.make_node("Conv", ["p3", "h3.w", "h3.b"], ["o3"]),
        helper.make_node("Reshape", ["o3", "flat"], ["r3"]),
        helper.make_node("Conv", ["p4", "h4.w", "h4.b"], ["o4"]),
        helper.make_node("Reshape", ["o4", "flat"], ["r4"]),
        helper.make_node("Concat", ["r3", "r4"], ["raw"], axis=2),
        helper.make_node("Sigmoid", ["raw"], ["sig"]),
        int64_const("split4", [4, classes]),
        helper.make_node("Split", ["sig", "split4"], ["box01", "cls"], axis=1),
        helper.make_node("Split", ["raw", "split4"], ["raw_box", "raw_cls"], axis=1),
        helper.make_node("Mul", ["box01", "px"], ["box"]),
        helper.make_node("Concat", ["box", "raw_cls" if logits else "cls"], ["pred"], axis=1),
    ]
    outs = [helper.make_tensor_value_info("pred", TensorProto.FLOAT, ["batch", a, 320])]
    if fmt == "yolo_v5":
        nodes.append(helper.make_node("Transpose", ["pred"], ["pred_t"], perm=[0, 2, 1]))
        outs = [helper.make_tensor_value_info("pred_t", TensorProto.FLOAT, ["batch", 320, a])]
    elif fmt in ("boxes", "boxes_reversed"):
        nodes += [
            int64_const("ones", [1, 1, 1, 1]),
            helper.make_node("Split", ["box", "ones"], ["cx", "cy", "bw", "bh"], axis=1),
            helper.make_node("Constant", [], ["half"], value=helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])),
            helper.make_node("Mul", ["bw", "half"], ["hw2"]), helper.make_node("Mul", ["bh", "half"], ["hh2"]),
            helper.make_node("Sub", ["cx", "hw2"], ["x1"]), helper.make_node("Sub", ["cy", "hh2"], ["y1"]),
            helper.make_node("Add", ["cx", "hw2"], ["x2"]), helper.make_node("Add", ["cy", "hh2"], ["y2"]),
            helper.make_node("Concat", ["x1", "y1", "x2", "y2"], ["xyxy"], axis=1),
            helper.make_node("Transpose", ["xyxy"], ["det_boxes"], perm=[0, 2, 1]),
            helper.make_node("Transpose", ["raw_cls" if logits else "cls"], ["det_scores"], perm=[0, 2, 1]),
        ]
        outs = [helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, ["batch", 320, 4]),
                helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, ["batch", 320, classes])]
        if fmt == "boxes_reversed":
            outs.reverse()
    return save_model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
                      outs, inits, path)


def images32(batch: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 3, 32, 32)).astype(np.float32)


YOLO_PRE = ("--resize", "letterbox", "--resize-filter", "opencv_linear", "--mean", "0", "0", "0", "--std", "1", "1", "1")


def test_detection_yolo_v8_inferred_with_side_inputs(tmp_path: Path):
    src = detector(tmp_path / "yolo8.onnx")
    r = run_split(src, "--layer", "p4", "--out", tmp_path / "pkg", "--no-side-inputs", *YOLO_PRE)
    assert clean_failure(r) and "'p3'" in r.stderr and "--no-side-inputs" in r.stderr  # the neck reads p3 too
    out, r = split_ok(tmp_path, src, "--layer", "p4", *YOLO_PRE)
    assert "yolo_v8 (inferred)" in r.stdout and "3 class scores for 320 anchors" in r.stdout
    toml = tomllib.loads((out / "model.toml").read_text())
    assert toml["head"] == {"kind": "detection", "format": "yolo_v8", "scores": "probabilities",
                            "score_threshold": 0.25, "iou_threshold": 0.45}
    assert toml["input"]["resize"] == "letterbox" and toml["input"]["pad_value"] == 114
    assert (out / "labels.txt").read_text().splitlines() == ["class_0", "class_1", "class_2"]
    ext, head = onnx.load(str(out / "extractor.onnx")), onnx.load(str(out / "head.onnx"))
    # The side input is the level the head reads (p3), not the per-level conv's output: that conv stays in the head.
    assert io(ext)[1] == [("features", ["batch", 6, 8, 8]), ("p3", ["batch", 8, 16, 16])]
    assert io(head) == ([("features", ["batch", 6, 8, 8]), ("p3", ["batch", 8, 16, 16])], [("logits", ["batch", 7, 320])])
    assert "h3.w" in {t.name for t in head.graph.initializer} and "h3.w" not in {t.name for t in ext.graph.initializer}
    assert not tensor_names(head) & {"image", "s1.w", "c3", "c3_shape"}  # nothing before p3 is in the head
    x = images32(3)
    (got,) = run_package(out, x)
    np.testing.assert_allclose(got, session(src).run(None, {"image": x})[0], atol=1e-5)
    assert "note: Ultralytics" not in r.stdout  # letterboxed already: no preprocessing note


def test_detection_note_suggests_letterbox(tmp_path: Path):
    _, r = split_ok(tmp_path, detector(tmp_path / "yolo8.onnx"), "--layer", "p4", "--side-inputs")
    assert "--resize letterbox --pad-value 114 --resize-filter opencv_linear" in r.stdout


def test_detection_yolo_v5_needs_the_flag(tmp_path: Path):
    src = detector(tmp_path / "yolo5.onnx", fmt="yolo_v5")
    r = run_split(src, "--layer", "p4", "--side-inputs", "--out", tmp_path / "pkg")
    assert clean_failure(r) and "--detection-format" in r.stderr and "[N, 320, 7]" in r.stderr
    out, r = split_ok(tmp_path, src, "--layer", "p4", "--side-inputs", "--detection-format", "yolo_v5",
                      "--score-threshold", "0.1", "--iou-threshold", "0.6")
    head = tomllib.loads((out / "model.toml").read_text())["head"]
    assert head == {"kind": "detection", "format": "yolo_v5", "scores": "probabilities", "score_threshold": 0.1,
                    "iou_threshold": 0.6}
    assert len((out / "labels.txt").read_text().splitlines()) == 2  # 7 = 5 + 2 classes
    assert io(onnx.load(str(out / "head.onnx")))[1] == [("logits", ["batch", 320, 7])]


def test_detection_boxes_keeps_two_outputs_in_order(tmp_path: Path):
    src = detector(tmp_path / "boxes.onnx", fmt="boxes")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    out, r = split_ok(tmp_path, src, "--layer", "p4", "--side-inputs", "--detection-format", "boxes", "--labels", labels)
    assert "boxes [batch, 320, 4] and scores [batch, 320, 3]" in r.stdout
    head = onnx.load(str(out / "head.onnx"))
    assert io(head)[1] == [("boxes", ["batch", 320, 4]), ("scores", ["batch", 320, 3])]
    assert tomllib.loads((out / "model.toml").read_text())["head"]["format"] == "boxes"
    x = images32(2, seed=5)
    got = run_package(out, x)
    for g, w in zip(got, session(src).run(None, {"image": x})):
        np.testing.assert_allclose(g, w, atol=1e-5)
    # inferred without the flag too (two outputs of those shapes), refused the wrong way round
    out2 = tmp_path / "inferred"
    assert run_split(src, "--layer", "p4", "--side-inputs", "--out", out2).returncode == 0
    assert tomllib.loads((out2 / "model.toml").read_text())["head"]["format"] == "boxes"
    r = run_split(detector(tmp_path / "rev.onnx", fmt="boxes_reversed"), "--layer", "p4", "--side-inputs",
                  "--out", tmp_path / "rev")
    assert clean_failure(r) and "boxes [N, K, 4] first" in r.stderr


def test_detection_logit_scores_need_the_scores_flag(tmp_path: Path):
    src = detector(tmp_path / "logits.onnx", logits=True)
    r = run_split(src, "--layer", "p4", "--side-inputs", "--out", tmp_path / "pkg")
    assert clean_failure(r) and "--scores logits" in r.stderr
    out, _ = split_ok(tmp_path, src, "--layer", "p4", "--side-inputs", "--scores", "logits")
    assert tomllib.loads((out / "model.toml").read_text())["head"]["scores"] == "logits"


def test_detection_flag_checks(tmp_path: Path):
    src = detector(tmp_path / "yolo8.onnx")
    for bad in (("--score-threshold", "1.5"), ("--iou-threshold", "-0.1"), ("--head", "classes", "--detection-format", "boxes")):
        r = run_split(src, "--layer", "p4", "--out", tmp_path / "x", *bad)
        assert r.returncode == 2, bad
    r = run_split(FULL, "--layer", "relu_out", "--out", tmp_path / "y", "--scores", "logits")
    assert clean_failure(r) and "only applies to detection" in r.stderr
    r = run_split(src, "--layer", "p4", "--side-inputs", "--detection-format", "boxes", "--out", tmp_path / "z")
    assert clean_failure(r) and "two outputs" in r.stderr
    r = run_split(FULL, "--layer", "relu_out", "--head", "detection", "--out", tmp_path / "w")
    assert clean_failure(r) and "3-D" in r.stderr


def test_help_documents_side_inputs_and_detection():
    r = run_split("--help")
    assert r.returncode == 0
    for word in ("--side-inputs", "--no-side-inputs", "--detection-format", "yolo_v8", "yolo_v5", "boxes", "--scores", "--score-threshold",
                 "--iou-threshold", "--resize letterbox --pad-value 114", "opencv_linear"):
        assert word in r.stdout, word


def tiny_classifier(channels: int) -> onnx.ModelProto:
    """image [batch, channels, 16, 16] -> Conv(6, 4x4/4) -> Relu -> GAP -> Flatten -> Gemm -> scores [batch, 5]."""
    rng = np.random.default_rng(channels)
    inits = [numpy_helper.from_array(rng.standard_normal((6, channels, 4, 4)).astype(np.float32), "cw"),
             numpy_helper.from_array(rng.standard_normal((5, 6)).astype(np.float32), "gw"),
             numpy_helper.from_array(np.zeros(5, np.float32), "gb")]
    nodes = [helper.make_node("Conv", ["image", "cw"], ["conv_out"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Relu", ["conv_out"], ["relu_out"]),
             helper.make_node("GlobalAveragePool", ["relu_out"], ["pooled4"]),
             helper.make_node("Flatten", ["pooled4"], ["pooled"], axis=1),
             helper.make_node("Gemm", ["pooled", "gw", "gb"], ["scores"], transB=1)]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", channels, 16, 16])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.mark.parametrize("channels, mean", [(1, ["0.5"]), (4, ["0.5", "0.5", "0.5", "0.5"])])
def test_grey_and_rgba_inputs_write_their_channels(tmp_path: Path, channels: int, mean: list[str]):
    src = tmp_path / "tiny.onnx"
    onnx.save(tiny_classifier(channels), str(src))
    refused = run_split(src, "--layer", "relu_out", "--out", tmp_path / "nomean")
    assert refused.returncode != 0 and "--mean" in refused.stderr, refused.stderr
    out = tmp_path / "pkg"
    std = ["0.25"] * channels
    r = run_split(src, "--layer", "relu_out", "--out", out, "--mean", *mean, "--std", *std)
    assert r.returncode == 0, r.stderr
    toml = tomllib.loads((out / "model.toml").read_text())
    assert toml["input"]["channels"] == channels
    assert toml["input"]["mean"] == [0.5] * channels and toml["input"]["std"] == [0.25] * channels
    x = np.random.default_rng(3).standard_normal((2, channels, 16, 16)).astype(np.float32)
    (f,) = session(out / "extractor.onnx").run(["features"], {"input": x})
    (z,) = session(out / "head.onnx").run(["logits"], {"features": f})
    (want,) = session(src).run(["scores"], {"image": x})
    assert np.abs(z - want).max() <= 1e-5


# --------------------------------------------------------------------------- [engine] max_batch_size


def engine_section(out: Path) -> dict | None:
    return tomllib.loads((out / "model.toml").read_text()).get("engine")


@pytest.mark.parametrize("times,want", [
    ({1: 10.0, 2: 9.9, 4: 9.8, 8: 12.0}, 2),  # 4 is fastest, 2 within 2 % of it: the smaller
    ({1: 10.0, 2: 9.0, 4: 5.0, 8: 5.2}, 4),
    ({1: 5.0, 2: 5.0, 4: 5.0}, 1),
    ({8: 3.0, 1: 9.0}, 8),
])
def test_pick_batch_takes_the_smallest_within_two_percent_of_the_fastest(tool, times, want):
    assert tool.pick_batch(times) == want


def test_transformer_style_graphs_get_a_measured_batch_size(tmp_path: Path):
    out, r = split_ok(tmp_path, VIT, "--layer", VIT_BLOCK1, "--batch-candidates", "1", "2", "--measure-workers", "1")
    e = engine_section(out)
    assert e is not None, (out / "model.toml").read_text()
    assert e["max_batch_size"] in (1, 2)
    assert "1 workers x 1 thread" in e["measured"] and re.search(r"\): 1: [\d.e+-]+, 2: [\d.e+-]+; subnormals flushed "
                                                                r"1: [\d.e+-]+, 2: [\d.e+-]+; outputs .* max \|Δ\| = 0$",
                                                                e["measured"]), e["measured"]
    assert isinstance(e["flush_denormals"], bool)
    assert f"batch size: {e['max_batch_size']}" in r.stdout
    assert_split_equals_full(out, VIT, 32)  # the graphs are the same as without the measurement


def test_a_single_candidate_is_written_as_measured(tmp_path: Path):
    out, _ = split_ok(tmp_path, DEIT, "--module", "blocks[-1]", "--batch-candidates", "3", "--measure-workers", "1")
    assert engine_section(out)["max_batch_size"] == 3


def test_cnns_keep_the_engine_default_unless_asked(tmp_path: Path):
    out, r = split_ok(tmp_path, FULL, "--layer", "relu_out")
    assert engine_section(out) is None and "batch size:" not in r.stdout
    out, _ = split_ok(tmp_path, FULL, "--layer", "relu_out", "--force", "--measure-batch", "on",
                      "--batch-candidates", "2", "--measure-workers", "1")
    assert engine_section(out)["max_batch_size"] == 2


def test_batch_size_flags(tmp_path: Path):
    out, _ = split_ok(tmp_path, VIT, "--layer", VIT_BLOCK1, "--measure-batch", "off")
    assert engine_section(out) is None
    out, _ = split_ok(tmp_path, VIT, "--layer", VIT_BLOCK1, "--force", "--batch-size", "6")
    assert engine_section(out) == {"max_batch_size": 6, "measured": "given with --batch-size"}
    for bad, words in [(["--batch-size", "0"], "--batch-size must be"), (["--batch-candidates", "0"], "--batch-candidates"),
                       (["--batch-size", "2", "--measure-batch", "on"], "not both")]:
        r = run_split(VIT, "--layer", VIT_BLOCK1, "--out", tmp_path / "bad", *bad)
        assert r.returncode != 0 and words in r.stderr, r.stderr


def test_flush_denormals_off_times_only_the_graph_as_it_is(tmp_path: Path):
    out, _ = split_ok(tmp_path, VIT, "--layer", VIT_BLOCK1, "--batch-candidates", "2", "--measure-workers", "1",
                      "--flush-denormals", "off")
    e = engine_section(out)
    assert e["flush_denormals"] is False and "subnormals" not in e["measured"]


def outs(*values):
    return [np.asarray(values, dtype=np.float32)]


@pytest.mark.parametrize("med,flushed,want", [
    # flushing is chosen when more than 2 % faster, with its own best batch ...
    ({(False, 1): 10.0, (False, 4): 9.0, (True, 1): 8.0, (True, 4): 7.0}, outs(1.0, 2.0), (4, True)),
    ({(False, 1): 10.0, (False, 4): 9.0, (True, 1): 7.0, (True, 4): 7.1}, outs(1.0, 2.0), (1, True)),
    # ... not when within 2 % ...
    ({(False, 1): 10.0, (False, 4): 9.0, (True, 1): 8.9, (True, 4): 8.9}, outs(1.0, 2.0), (4, False)),
    # ... nor when its outputs differ (the graph computes with subnormals): 1e-3 > 1e-5 + 1e-4 × 2
    ({(False, 1): 10.0, (False, 4): 9.0, (True, 1): 5.0, (True, 4): 5.0}, outs(1.001, 2.0), (4, False)),
])
def test_pick_engine_flushes_only_when_faster_with_the_same_outputs(tool, med, flushed, want):
    batch, flush, diff = tool.pick_engine(med, {False: outs(1.0, 2.0), True: flushed}, 1e-5, 1e-4)
    assert (batch, flush) == want
    assert diff == pytest.approx(float(np.abs(flushed[0] - outs(1.0, 2.0)[0]).max()))


def test_pick_engine_without_the_flush_timings(tool):
    assert tool.pick_engine({(False, 2): 3.0, (False, 8): 1.0}, {False: outs(1.0)}, 1e-5, 1e-4) == (8, False, None)
