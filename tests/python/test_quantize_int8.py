"""Tests of scripts/tools/quantize_int8.py (and split_model.py --int8) on tiny packages.

The tool needs the scorecam binary (it preprocesses the calibration photos and draws the
compared maps with it): the newer of target/release/scorecam and target/debug/scorecam, or
$SCORECAM_BIN. scripts/test.sh builds it (cargo test) before these tests run.

Run: pytest tests/python   (needs onnx, onnxruntime, numpy, pillow, pytest)
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "tools" / "quantize_int8.py"
SPLIT = REPO / "scripts" / "tools" / "split_model.py"
TINY = REPO / "tests" / "fixtures" / "models" / "tiny"
FULL = REPO / "tests" / "fixtures" / "models" / "variants" / "full.onnx"

spec = importlib.util.spec_from_file_location("quantize_int8", SCRIPT)
q8 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(q8)

BINARY = q8.default_binary()
needs_binary = pytest.mark.skipif(not BINARY.exists(), reason=f"no scorecam binary at {BINARY} (cargo build)")


def run_tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--binary", BINARY],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def photos(folder: Path, n: int = 6, seed: int = 0) -> Path:
    """n smooth random photos of odd sizes, plus the committed sample photo."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = (rng.random((5, 4, 3)) * 255).astype(np.uint8)
        Image.fromarray(a).resize((41 + i, 30 + 2 * i), Image.BILINEAR).save(folder / f"p{i}.png")
    shutil.copy(REPO / "samples" / "chelsea.png", folder / "chelsea.png")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def copy_package(src: Path, models: Path, name: str) -> Path:
    dst = models / name
    shutil.copytree(src, dst)
    return dst


def outlier_package(models: Path) -> Path:
    """Like tiny (16×16 in, Conv k4 s4 + ReLU, 4×4 features, GAP + Gemm head), but one of its
    four feature channels is a constant 1000 (zero weights, bias 1000). int8 activations are
    quantised per tensor, so that channel sets the scale (about 4) and the other channels'
    activations (below 1) round to zero: the int8 maps lose everything the fp32 maps show."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((4, 3, 4, 4)) * 0.05).astype(np.float32)
    w[3] = 0
    b = np.array([0.1, 0.2, 0.05, 1000.0], np.float32)
    ext = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[4, 4], strides=[4, 4]),
         helper.make_node("Relu", ["c"], ["features"])],
        "outlier_extractor",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4, 4, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    g = rng.standard_normal((3, 4)).astype(np.float32)
    g[:, 3] = 0  # the constant channel does not move the scores
    head = helper.make_model(helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["features"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "g", "gb"], ["logits"], transB=1)],
        "outlier_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(g * 5, "g"), numpy_helper.from_array(np.zeros(3, np.float32), "gb")]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    pkg = models / "outlier"
    pkg.mkdir(parents=True)
    onnx.save(ext, pkg / "extractor.onnx")
    onnx.save(head, pkg / "head.onnx")
    (pkg / "labels.txt").write_text("a\nb\nc\n")
    (pkg / "model.toml").write_text(
        'description = "outlier: a constant channel of 1000 beside small ones"\n'
        'source = "tests/python/test_quantize_int8.py"\nlicense = "Apache-2.0"\n\n'
        "[input]\nwidth = 16\nheight = 16\nmean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\n\n"
        '[target_layer]\ndescription = "Conv 3→4 + ReLU"\n')
    return pkg


def models_listing(models: Path) -> str:
    r = subprocess.run([str(BINARY), "--models-dir", str(models), "models"], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


# --------------------------------------------------------------------------- the comparisons


def test_the_fp32_packages_measured_engine_section_is_not_copied():
    text = ('description = "d"\nsource = "s"\nlicense = "l"\n\n[input]\nwidth = 8\n\n[head]\nkind = "classes"\n\n'
            '[engine]  # how scorecam runs this model\nmax_batch_size = 2\nflush_denormals = true\nmeasured = "x"\n')
    fig = dict(photos=1, held_out=False, preset="official", pearson_mean=0.99, pearson_min=0.99, top20_iou_mean=0.9,
               top20_iou_min=0.9, worst_photo="p", top1_agree=1)
    out = q8.int8_manifest(text, {"description": "d", "source": "s"}, "ref", 4, fig, 0.95, False)
    assert "[engine]" not in out and "max_batch_size" not in out and "flush_denormals" not in out
    assert '[head]\nkind = "classes"' in out and "[quantization]" in out
    # a section after [engine] is kept
    after = q8.without_engine(text.replace('[head]\nkind = "classes"\n\n', "") + '[head]\nkind = "classes"\n')
    assert '[head]\nkind = "classes"' in after and "[engine]" not in after and "measured" not in after


def test_pearson_and_top_iou():
    a = np.arange(100, dtype=np.float64).reshape(10, 10)
    assert q8.pearson(a, 2 * a + 3) == pytest.approx(1.0)
    assert q8.pearson(a, -a) == pytest.approx(-1.0)
    assert q8.top_iou(a, a) == 1.0
    assert q8.top_iou(a, -a) == 0.0  # the top 20 % of one is the bottom 20 % of the other
    b = a.copy()
    b.ravel()[[99, 0]] = b.ravel()[[0, 99]]  # the best pixel swapped with the worst
    assert q8.top_iou(a, b) == pytest.approx(19 / 21)


# --------------------------------------------------------------------------- scorecam preprocess


@needs_binary
def test_calibration_tensors_are_the_binarys_preprocessing(tmp_path: Path):
    """The calibration tensors come from `scorecam preprocess`: Pillow's bilinear resize and
    the package's mean/std for tiny (stretch), stacked in the order given."""
    folder = photos(tmp_path / "photos", n=2)
    files = [folder / "p1.png", folder / "chelsea.png"]
    x = q8.preprocessed(BINARY, TINY, files, tmp_path / "x.npy")
    assert x.shape == (2, 3, 16, 16) and x.dtype == np.float32
    for i, f in enumerate(files):
        img = Image.open(f).convert("RGB").resize((16, 16), Image.BILINEAR)
        want = ((np.asarray(img, np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)
        assert np.abs(x[i] - want).max() <= 1e-5, f


# --------------------------------------------------------------------------- the good case


@needs_binary
def test_int8_package_is_written_with_its_measured_fidelity(tmp_path: Path):
    models = tmp_path / "models"
    pkg = copy_package(TINY, models, "tiny")
    folder = photos(tmp_path / "photos")
    r = run_tool(pkg, "--calibrate", folder, "--fidelity", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    out = models / "tiny-int8"
    assert {p.name for p in out.iterdir()} == {"extractor.onnx", "head.onnx", "labels.txt", "model.toml", "fidelity.csv"}

    # The extractor is quantised (QDQ, int8 per-channel weights), the head copied as it is.
    ext = onnx.load(str(out / "extractor.onnx"))
    ops = {n.op_type for n in ext.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert any(t.data_type == TensorProto.INT8 and len(t.dims) == 4 for t in ext.graph.initializer)
    assert (out / "head.onnx").read_bytes() == (TINY / "head.onnx").read_bytes()
    assert (out / "labels.txt").read_bytes() == (TINY / "labels.txt").read_bytes()

    m = tomllib.loads((out / "model.toml").read_text())
    assert m["input"] == tomllib.loads((TINY / "model.toml").read_text())["input"]
    assert "int8" in m["description"] and "quantize_int8.py" in m["source"]
    qz = m["quantization"]
    assert (qz["kind"], qz["reference"], qz["calibration_photos"]) == ("int8", "tiny", 7)  # notes.txt is no photo
    f = qz["fidelity"]
    assert (f["photos"], f["held_out"], f["preset"], f["forced"], f["min_pearson_mean"]) == (4, False, "official", False, 0.95)
    assert 0.95 <= f["pearson_min"] <= f["pearson_mean"] <= 1.0
    assert 0.0 <= f["top20_iou_min"] <= f["top20_iou_mean"] <= 1.0
    assert f["worst_photo"] in {"chelsea", "p0", "p1", "p2"} and f["top1_agree"] <= 4

    rows = list(csv.DictReader((out / "fidelity.csv").open()))
    assert [row["photo"] for row in rows] == ["chelsea.png", "p0.png", "p1.png", "p2.png"]  # sorted by name
    r_values = [float(row["pearson"]) for row in rows]
    assert f["pearson_mean"] == round(float(np.mean(r_values)), 4)
    assert f["worst_photo"] == Path(rows[int(np.argmin(r_values))]["photo"]).stem

    # The service loads it and says it is approximate, with the figures.
    listing = models_listing(models)
    assert "APPROXIMATE (Int8 of tiny)" in listing and f"Pearson r mean {f['pearson_mean']:.4f}" in listing
    assert "timings" not in r.stderr and "fp32" in r.stdout and "×" in r.stdout


@needs_binary
def test_held_out_photos_are_measured_when_given(tmp_path: Path):
    models = tmp_path / "models"
    pkg = copy_package(TINY, models, "tiny")
    calib = photos(tmp_path / "calib", n=3, seed=1)
    check = photos(tmp_path / "check", n=2, seed=2)
    out = tmp_path / "elsewhere" / "tiny-q"
    r = run_tool(pkg, "--calibrate", calib, "--check", check, "--out", out, "--calibration", "2", "--every", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    qz = tomllib.loads((out / "model.toml").read_text())["quantization"]
    assert qz["calibration_photos"] == 2  # chelsea, p1 (every 2nd of chelsea, p0, p1, p2), at most 2
    assert (qz["fidelity"]["photos"], qz["fidelity"]["held_out"]) == (3, True)
    assert "held-out" in r.stdout


# --------------------------------------------------------------------------- the gate and refusals


@needs_binary
def test_a_package_below_the_gate_is_refused_unless_forced(tmp_path: Path):
    models = tmp_path / "models"
    pkg = outlier_package(models)
    folder = photos(tmp_path / "photos")
    r = run_tool(pkg, "--calibrate", folder, "--fidelity", "3")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "refused" in r.stdout and "--min-pearson 0.95" in r.stdout
    assert not (models / "outlier-int8").exists()

    r = run_tool(pkg, "--calibrate", folder, "--fidelity", "3", "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" in r.stdout
    f = tomllib.loads((models / "outlier-int8" / "model.toml").read_text())["quantization"]["fidelity"]
    assert f["forced"] is True and f["pearson_mean"] < 0.95
    # A forced package still loads, and is listed as approximate with its poor figures.
    assert "APPROXIMATE" in models_listing(models)

    # A low enough gate accepts it without --force (on a fresh folder).
    r = run_tool(pkg, "--calibrate", folder, "--fidelity", "3", "--min-pearson", "-1", "--out", tmp_path / "low")
    assert r.returncode == 0, r.stdout + r.stderr
    assert tomllib.loads((tmp_path / "low" / "model.toml").read_text())["quantization"]["fidelity"]["forced"] is False


@needs_binary
def test_refusals(tmp_path: Path):
    models = tmp_path / "models"
    pkg = copy_package(TINY, models, "tiny")
    folder = photos(tmp_path / "photos", n=2)
    assert run_tool(pkg, "--calibrate", folder, "--fidelity", "1").returncode == 0
    # An existing package is not replaced without --force.
    r = run_tool(pkg, "--calibrate", folder, "--fidelity", "1")
    assert r.returncode == 1 and "already holds a package" in r.stderr
    # A quantised package is not quantised again.
    r = run_tool(models / "tiny-int8", "--calibrate", folder, "--fidelity", "1")
    assert r.returncode == 1 and "already quantised" in r.stderr
    # No photos; not a package.
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_tool(pkg, "--calibrate", empty, "--out", tmp_path / "x")
    assert r.returncode == 1 and "no photos" in r.stderr
    r = run_tool(folder, "--calibrate", folder)
    assert r.returncode == 1 and "not a model package" in r.stderr


# --------------------------------------------------------------------------- split_model.py --int8


@needs_binary
def test_split_model_int8_writes_both_packages(tmp_path: Path):
    folder = photos(tmp_path / "photos", n=3)
    out = tmp_path / "models" / "split"
    r = subprocess.run([sys.executable, str(SPLIT), str(FULL), "--layer", "relu_out", "--out", str(out),
                        "--int8", "--calibrate", str(folder), "--int8-fidelity", "2", "--binary", str(BINARY)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out / "model.toml").exists() and "quantization" not in tomllib.loads((out / "model.toml").read_text())
    qz = tomllib.loads((tmp_path / "models" / "split-int8" / "model.toml").read_text())["quantization"]
    assert qz["reference"] == "split" and qz["fidelity"]["photos"] == 2


def test_split_model_int8_needs_calibration_photos(tmp_path: Path):
    r = subprocess.run([sys.executable, str(SPLIT), str(FULL), "--layer", "relu_out", "--out", str(tmp_path / "p"),
                        "--int8"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 2 and "--calibrate" in r.stderr
    assert not (tmp_path / "p").exists()
