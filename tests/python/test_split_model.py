"""Tests of scripts/tools/split_model.py on the generated fixture tests/fixtures/models/variants/full.onnx.

full.onnx: image [batch,3,16,16] -> Conv -> conv_out -> Relu -> relu_out -> GlobalAveragePool
-> Flatten -> Gemm -> scores [batch,5] -> Softmax -> probs. Splitting it at relu_out must give
the tiny package's extractor/head (same weights), with the final Softmax dropped.

Run: pytest tests/python   (needs onnx, onnxruntime, numpy, pytest: scripts/setup/requirements_tools.txt)
"""

from __future__ import annotations

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
SCRIPT = REPO / "scripts" / "split_model.py"
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
    assert toml["target_layer"]["description"] == "relu_out"
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


def test_skip_connection_around_the_cut_fails(tmp_path: Path):
    # image -> Conv -> a -> Relu -> b ; Add(b, a) -> c -> pool/flatten/gemm: cutting at b leaves 'a' needed by the head.
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
    r = run_split(src, "--layer", "b", "--out", tmp_path / "pkg")
    assert clean_failure(r), r.stderr
    assert "'a'" in r.stderr and "separate" in r.stderr


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
    listed = [line.split()[0] for line in r.stdout.splitlines()]
    assert "relu_out" in listed and "conv_out" in listed and "flat" not in listed
