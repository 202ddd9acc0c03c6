"""Checks scorecam's detection heads (and the split tool's --side-inputs) against pytorch-grad-cam
1.5.7 and an independent D-RISE transcription. Not part of the test suite; the companion of
scripts/bench/verify_heads.py (same bar, same caching).

The model: Ultralytics YOLOv8n built from its yaml (ultralytics.nn.tasks.DetectionModel("yolov8n.yaml"),
nc=80; no weights are downloaded: torch.manual_seed(SEED) before it is built). Two changes to the random
model, because with random weights its output does not depend on the photo:

  * BatchNorm statistics recalibrated on a fixed batch (the letterboxed chelsea photo, its mirror image and
    six smooth random images from a seeded generator): with random convolutions and the default running
    statistics (mean 0, variance 1) every activation shrinks by ~3× per layer, so after 20 layers the class
    scores are equal to 1e-6 for any photo and the boxes are those of the anchors alone;
  * the class branches' last biases drawn from N(CLS_BIAS, 0.25²) (CLS_BIAS = -2; a seeded generator):
    Ultralytics' bias_init sets log(5/80/1600) ≈ -11.5, which makes every class score ≈ 1e-5; with -2 class
    probabilities range over ~0.01..0.7 and the photo has detections above 0.25. Not one value for every
    class, and the weights of those last convolutions scaled by CLS_WEIGHT_SCALE (0.1): on masked photos
    the class logits otherwise reach 17 and more, where float32's sigmoid is exactly 1.0, so a proposal's
    class scores tie, and FasterRCNNBoxScoreTarget's test "the proposal's argmax class is C" then depends
    on rounding (PyTorch and ONNX Runtime break such ties differently, and one flipped pass moves the map
    by ~0.05).

Both sides use that one model: exported to ONNX (opset 17, TorchScript exporter, dynamic batch, the Detect
layer in export mode: output [N, 84, A], cx, cy, w, h in input pixels then 80 sigmoid scores, A = 2100 at
320×320; no NMS), cut by scripts/tools/split_model.py at the module pytorch-grad-cam's YOLO tutorials hook,
model.model[-2] (layer 21, the neck's last C2f, [N, 256, 10, 10] at 320), with

    --module model.21 --side-inputs --head detection --resize letterbox --pad-value 114
    --resize-filter opencv_linear --mean 0 0 0 --std 1 1 1

The Detect head also reads layers 15 and 18 (the P3 and P4 levels), so the cut needs --side-inputs: the
extractor outputs them after the features and the head takes them; scorecam recomputes them on every masked
pass, as the library's full forward pass does. The extractor's output is checked against the hooked module's
("target check").

Photos: samples/chelsea.png (224×224, "224") and the 500×375 JPEG made from it by verify_architectures
("landscape"). scorecam letterboxes them itself; the library's input is Ultralytics' own
LetterBox(new_shape=(S, S), auto=False) of the RGB photo (Pillow-decoded), / 255.

The target: the clean pass's best proposal (largest class score) whose box lies on the letterboxed photo (not
on the padding or past the canvas; the best of all, clipped, if none does), its class C and its box (x1, y1,
x2, y2 from cx, cy, w, h). On chelsea.png that is the best proposal, scorecam's detection 0; on the landscape
JPEG the best one reaches into the padding (clipped, its box score would be 0 on the clean photo). scorecam gets the box in
photo pixels (mapped back through the letterbox: x_photo = (x_model - pad_x) · w / new_w), the library the
box scorecam maps that to (pad_x + x_photo · new_w / w) in model-input pixels.

Rows:

  yolov8n/d_rise     scorecam --method scorecam --preset pytorch_grad_cam --box B --target C --box-score d_rise
                     vs pytorch-grad-cam's ScoreCAM (batch 16) with DRiseTarget below: a PyTorch transcription
                     of the documented d_rise score, max over the raw proposals j of IoU(B, box_j) · p_j(C).
  yolov8n/box_score  the same with --box-score box_score vs pytorch-grad-cam's FasterRCNNBoxScoreTarget(labels=[C],
                     bounding_boxes=[B]) applied to the raw proposals: {"boxes": every proposal as x1, y1, x2, y2,
                     "labels": its argmax class, "scores": its max class score} (the raw-proposal form: the library's
                     target is meant for a Faster R-CNN's post-NMS detections; scorecam scores the raw proposals,
                     which is what a YOLO export without NMS gives). IoU threshold 0.5 on both sides.
  yolov8n/eigencam   scorecam --method eigencam vs pytorch-grad-cam's EigenCAM on the same layer. numpy's SVD sign
                     vs scorecam's rule (the projection's largest-|value| element positive) is reported; where they
                     differ the row is judged against the library's map recomputed with the sign fixed (as
                     verify_heads.py does).
  yolov8n/drise      scorecam --method rise --masks 500 --grid 8 --keep 0.5 --seed 0 --box B --target C vs a numpy
                     transcription of D-RISE with the same masks: mask i is scripts/dev/make_layout_models.py's
                     rise_mask(i, ...) (an independent transcription of the service's SplitMix64 generator and mask
                     construction, docs/methods.md "RISE"); each masked input X ⊙ M_i runs through the PyTorch model,
                     w_i is the d_rise score of pass i (computed here in float64), and the map is
                     Σ_i w_i M_i / (N · keep), min-max normalised.
  fasterrcnn/*       torchvision's fasterrcnn_mobilenet_v3_large_320_fpn (weights=None, weights_backbone=None,
                     box_score_thresh=0; BatchNorm statistics recalibrated on the calibration batch; the box
                     predictor's class weights ~ N(0, FRCNN_CLS_SCALE²) so that scores are distinct and unsaturated),
                     its state_dict saved and exported by scripts/tools/export_torchvision_detector.py as a user
                     would (one image per run, post-NMS detections padded to 100, the target the tutorial's
                     model.backbone with fasterrcnn_reshape_transform, a pass-through head). The library runs the
                     PyTorch model with target_layers=[model.backbone] and that reshape_transform:
                       box_score  ScoreCAM with its own FasterRCNNBoxScoreTarget(labels=[C], bounding_boxes=[B]);
                       d_rise     ScoreCAM with LabelledDRise, the documented d_rise score on labelled detections;
                       eigencam   EigenCAM.
                     The target: the highest-scoring detection whose box lies on the letterboxed photo.

Maps are compared at --resolution model (the S×S letterboxed grid): Pearson r and max |Δ|; a row passes when
r >= 0.9999 and max |Δ| <= 1e-3. A row whose step fails reports the step and its message and the other rows
go on. Exports, splits, the library's maps and the photos are cached in target/verify_detectors/ (keyed by the
model's weights, the photo, the target and the versions; --fresh-reference recomputes the library's maps):

    scripts/bench/verify_detectors.sh                         # every row, both photos
    scripts/bench/verify_detectors.sh --rows 'yolov8n/*' --photos 224
    scripts/bench/verify_detectors.sh --table                 # the cached results as Markdown

Same threads on both sides: torch.set_num_threads(T); scorecam with T workers of one intra-op thread each.
scorecam's time is the document's timings_ms.total_ms. Exit status: 0 when every row run passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / "target" / "verify_detectors"
# Ultralytics: no settings file in $HOME, no downloads, no update checks, quiet.
os.environ.setdefault("YOLO_CONFIG_DIR", str(CACHE / "ultralytics"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("TQDM_DISABLE", "1")  # ScoreCAM's per-batch progress bar

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "scripts" / "tools"))  # export_torchvision_detector (its reshape transform)
import verify_architectures as va  # noqa: E402  (photos, hooks, scorecam's env)

SPLIT = va.SPLIT
R_MIN, DELTA_MAX = va.R_MIN, va.DELTA_MAX
RowError = va.RowError
NC = 80
CLS_BIAS = -2.0
CLS_WEIGHT_SCALE = 0.1
RISE = dict(masks=500, grid=8, keep=0.5, seed=0)
YOLO_SPLIT = ["--module", "model.21", "--side-inputs", "--head", "detection", "--resize", "letterbox",
              "--pad-value", "114", "--resize-filter", "opencv_linear", "--mean", "0", "0", "0", "--std", "1", "1", "1"]

ROWS = {
    "yolov8n/d_rise": dict(method="scorecam", rule="d_rise"),
    "yolov8n/box_score": dict(method="scorecam", rule="box_score"),
    "yolov8n/eigencam": dict(method="eigencam"),
    "yolov8n/drise": dict(method="rise", rule="d_rise"),
    "fasterrcnn/box_score": dict(method="scorecam", rule="box_score", model="fasterrcnn"),
    "fasterrcnn/d_rise": dict(method="scorecam", rule="d_rise", model="fasterrcnn"),
    "fasterrcnn/eigencam": dict(method="eigencam", model="fasterrcnn"),
}
FRCNN = "fasterrcnn_mobilenet_v3_large_320_fpn"
FRCNN_CLS_SCALE = 0.05  # the box predictor's class weights ~ N(0, 0.05²): scores spread, not saturated
EXPORT_TOOL = ROOT / "scripts" / "tools" / "export_torchvision_detector.py"


def layout_tools():
    """scripts/dev/make_layout_models.py (rise_mask: the service's RISE masks, transcribed independently)."""
    path = ROOT / "scripts" / "dev" / "make_layout_models.py"
    spec = importlib.util.spec_from_file_location("make_layout_models", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- the model


def letterbox(image: pathlib.Path, size: int) -> tuple[torch.Tensor, dict]:
    """The library's input: Ultralytics' LetterBox of the RGB photo, / 255; and the geometry."""
    from ultralytics.data.augment import LetterBox
    rgb = np.asarray(Image.open(image).convert("RGB"))
    h0, w0 = rgb.shape[:2]
    out = LetterBox(new_shape=(size, size), auto=False, scale_fill=False, scaleup=True, center=True)(image=rgb)
    r = min(size / h0, size / w0)
    nw, nh = int(round(w0 * r)), int(round(h0 * r))
    geo = dict(w=w0, h=h0, nw=nw, nh=nh, pad_x=(size - nw) // 2, pad_y=(size - nh) // 2)
    x = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)[None].float() / 255.0
    return x, geo


def calibration_batch(size: int) -> torch.Tensor:
    x, _ = letterbox(ROOT / "samples" / "chelsea.png", size)
    g = torch.Generator().manual_seed(0)
    noise = torch.nn.functional.interpolate(torch.rand(6, 3, 20, 20, generator=g), size=(size, size), mode="bilinear",
                                            align_corners=False)
    return torch.cat([x, x.flip(-1), noise])


def make_yolo(seed: int, size: int):
    from ultralytics.nn.tasks import DetectionModel
    torch.manual_seed(seed)
    m = DetectionModel("yolov8n.yaml", nc=NC, verbose=False)
    det = m.model[-1]
    det.export, det.format = True, "onnx"  # forward returns the [N, 4 + nc, A] tensor alone
    for mod in m.modules():  # BatchNorm statistics of a fixed batch (see the docstring)
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    with torch.no_grad():
        m(calibration_batch(size))
        g = torch.Generator().manual_seed(seed)
        for branch in det.cv3:
            branch[-1].bias.copy_(CLS_BIAS + 0.25 * torch.randn(branch[-1].bias.shape, generator=g))
            branch[-1].weight.mul_(CLS_WEIGHT_SCALE)
    m.eval()
    with torch.no_grad():
        m(torch.zeros(1, 3, size, size))  # the anchors for this size
    return m


def weights_key(model) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def export_yolo(model, size: int, out: pathlib.Path) -> None:
    stamp = out.with_suffix(".weights")
    key = weights_key(model) + f"@{size}"
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(1, 3, size, size), str(tmp), opset_version=17, input_names=["images"],
                          output_names=["output0"], dynamic_axes={"images": {0: "N"}, "output0": {0: "N"}}, dynamo=False)
    tmp.rename(out)
    stamp.write_text(key)


def split(full: pathlib.Path, name: str, args: list[str]) -> tuple[pathlib.Path, str]:
    pkg = CACHE / "models" / name
    stamp_file = CACHE / "stamps" / f"{name}.txt"
    stamp = json.dumps([va.sha256(full), va.sha256(SPLIT), args])
    if (pkg / "model.toml").exists() and stamp_file.exists() and stamp_file.read_text().split("\n", 1)[0] == stamp:
        return pkg, stamp_file.read_text().split("\n", 1)[1]
    cmd = [sys.executable, str(SPLIT), str(full), "--out", str(pkg), "--force", *args,
           "--description", f"{name}, random weights (seed, BatchNorm recalibrated), cut at model.model[-2]",
           "--source", f"{name} (ultralytics, torch {torch.__version__}), exported by scripts/bench/verify_detectors.py",
           "--license", "AGPL-3.0 (Ultralytics' model code); random weights"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RowError("split", (r.stderr or r.stdout).strip())
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp + "\n" + r.stdout)
    return pkg, r.stdout


# --------------------------------------------------------------------------- targets


def xyxy(out: torch.Tensor) -> torch.Tensor:
    """[4 + C, A] -> the proposals' boxes [A, 4] as x1, y1, x2, y2."""
    cx, cy, w, h = out[0], out[1], out[2], out[3]
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


class DRiseTarget:
    """The documented d_rise score on one image's raw YOLOv8 output [4 + C, A]: max over the proposals j of
    IoU(box, box_j) · p_j(C) (scores are probabilities already; YOLOv8 has no objectness)."""

    def __init__(self, box, category: int):
        self.box = torch.as_tensor(np.asarray(box, np.float32))[None]
        self.category = category

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        iou = torchvision.ops.box_iou(self.box.to(out.dtype), xyxy(out))[0]
        return (iou * out[4 + self.category]).max()


class RawProposalsBoxScore:
    """pytorch-grad-cam's FasterRCNNBoxScoreTarget applied to the raw proposals of one image's YOLOv8 output:
    {"boxes": every proposal as x1, y1, x2, y2, "labels": its argmax class, "scores": its max class score}."""

    def __init__(self, box, category: int, iou_threshold: float = 0.5):
        from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
        self.target = FasterRCNNBoxScoreTarget(labels=[category], bounding_boxes=[np.asarray(box, np.float32)],
                                               iou_threshold=iou_threshold)

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        scores, labels = out[4:].max(dim=0)
        return self.target({"boxes": xyxy(out), "labels": labels, "scores": scores})


def d_rise_np(out: np.ndarray, box, category: int) -> float:
    """The d_rise score in float64 numpy (the D-RISE row's own transcription)."""
    out = out.astype(np.float64)
    cx, cy, w, h = out[0], out[1], out[2], out[3]
    bx = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    b = np.asarray(box, np.float64)
    iw = np.clip(np.minimum(b[2], bx[:, 2]) - np.maximum(b[0], bx[:, 0]), 0, None)
    ih = np.clip(np.minimum(b[3], bx[:, 3]) - np.maximum(b[1], bx[:, 1]), 0, None)
    inter = iw * ih
    area = lambda r: np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)  # noqa: E731
    union = area(b) + area(bx) - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
    return float((iou * out[4 + category]).max())


def pick_target(model, x: torch.Tensor, geo: dict) -> dict:
    """The clean pass's best proposal whose box lies on the letterboxed photo (a box scorecam can be given in
    photo pixels unchanged; else the best one, clipped): class, model-input box, photo box, library box."""
    with torch.no_grad():
        out = model(x)[0]
    best, labels = out[4:].max(dim=0)
    return pick_from(xyxy(out).double().numpy(), best, labels, geo)


def pick_from(boxes: np.ndarray, best: torch.Tensor, labels: torch.Tensor, geo: dict) -> dict:
    """The highest-scoring box that lies on the letterboxed photo (else the best, clipped)."""
    lo_x, lo_y = geo["pad_x"], geo["pad_y"]
    hi_x, hi_y = lo_x + geo["nw"], lo_y + geo["nh"]
    order = [int(j) for j in torch.argsort(best, descending=True, stable=True)]
    inside = [j for j in order if boxes[j][0] >= lo_x and boxes[j][1] >= lo_y and boxes[j][2] <= hi_x and boxes[j][3] <= hi_y]
    j = (inside or order)[0]
    rank = order.index(j)
    c = int(labels[j])
    b = boxes[j]
    b = np.array([np.clip(b[0], lo_x, hi_x), np.clip(b[1], lo_y, hi_y), np.clip(b[2], lo_x, hi_x), np.clip(b[3], lo_y, hi_y)])
    sx, sy = geo["w"] / geo["nw"], geo["h"] / geo["nh"]
    photo = [round((b[0] - lo_x) * sx, 3), round((b[1] - lo_y) * sy, 3), round((b[2] - lo_x) * sx, 3), round((b[3] - lo_y) * sy, 3)]
    photo = [float(min(max(v, 0.0), lim)) for v, lim in zip(photo, (geo["w"], geo["h"], geo["w"], geo["h"]))]
    # what scorecam maps the photo box to (src/imaging/preprocess.rs photo_box_on_input), as float32
    lib = np.array([lo_x + photo[0] / sx, lo_y + photo[1] / sy, lo_x + photo[2] / sx, lo_y + photo[3] / sy], np.float32)
    return dict(cls=c, proposal=j, rank=rank, clipped=not inside, score=float(best[j]), box_model=[float(v) for v in lib],
                box_photo=photo, box_flag=",".join(repr(v) for v in photo))


# --------------------------------------------------------------------------- the library's maps


def library_map(row_name: str, subject, x: torch.Tensor, target: dict, image: pathlib.Path, args):
    """pytorch-grad-cam's map or the D-RISE transcription's (cached)."""
    import pytorch_grad_cam
    from pytorch_grad_cam import EigenCAM, ScoreCAM
    row = ROWS[row_name]
    version = getattr(pytorch_grad_cam, "__version__", "1.5.7")
    model = subject.model
    key = hashlib.sha256(json.dumps([row_name, weights_key(model), va.sha256(image), args.size, torch.__version__,
                                     torchvision.__version__, version, args.batch_size, args.threads, {k: v for k, v in target.items() if k != "clean_score"},
                                     RISE if row["method"] == "rise" else None]).encode()).hexdigest()[:16]
    path = CACHE / "reference" / f"{row_name.replace('/', '-')}-{key}.npz"
    if path.exists() and not args.fresh_reference:
        z = np.load(path)
        return z["map"], float(z["seconds"]), True
    t = time.perf_counter()
    if row["method"] == "eigencam":
        m = EigenCAM(**subject.cam_args())(input_tensor=x, targets=subject.eigencam_targets(target))[0]
    elif row["method"] == "scorecam":
        tgt = subject.reference_target(row["rule"], target)
        cam = ScoreCAM(**subject.cam_args())
        cam.batch_size = args.batch_size
        m = cam(input_tensor=x, targets=[tgt])[0]
    else:
        m = d_rise_map(model, x, target, args.batch_size)
    seconds = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, map=m, seconds=seconds)
    return m, seconds, False


def d_rise_map(model, x: torch.Tensor, target: dict, batch: int) -> np.ndarray:
    tools = layout_tools()
    hw = tuple(x.shape[-2:])
    n, grid, keep, seed = RISE["masks"], RISE["grid"], RISE["keep"], RISE["seed"]
    sal = np.zeros(hw, np.float64)
    for start in range(0, n, batch):
        ms = [tools.rise_mask(i, hw, grid, keep, seed) for i in range(start, min(n, start + batch))]
        xb = x * torch.from_numpy(np.stack(ms).astype(np.float32))[:, None]
        with torch.no_grad():
            outs = model(xb).numpy()
        for o, mk in zip(outs, ms):
            sal += d_rise_np(o, target["box_model"], target["cls"]) * mk
    sal /= n * keep
    return ((sal - sal.min()) / (sal.max() - sal.min())).astype(np.float32)


# --------------------------------------------------------------------------- scorecam


def run_scorecam(binary, package: str, image, flags, threads):
    env = dict(os.environ, SCORECAM_WORKERS=str(threads), SCORECAM_INTRA_THREADS="1")
    lib = va.ort_library()
    if lib:
        env["ORT_DYLIB_PATH"] = lib
    cmd = [str(binary), "--models-dir", str(CACHE / "models"), "explain", str(image), "--model", package,
           "--format", "json", "--resolution", "model", *flags, "-o", "-"]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=CACHE, env=env, capture_output=True)  # outside the repository: no config file
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RowError("scorecam", r.stderr.decode(errors="replace").strip()[-2000:])
    doc = json.loads(r.stdout)
    sal = doc["explanations"][0]["saliency"]
    m = np.asarray(sal["data"], dtype=np.float32).reshape(sal["height"], sal["width"])
    return m, wall, doc, " ".join(["scorecam", *cmd[1:]])


def scorecam_flags(row: dict, target: dict) -> list[str]:
    if row["method"] == "eigencam":
        return ["--method", "eigencam"]
    box = ["--box", target["box_flag"], "--target", str(target["cls"])]
    if row["method"] == "scorecam":
        return ["--method", "scorecam", "--preset", "pytorch_grad_cam", *box, "--box-score", row["rule"]]
    return ["--method", "rise", "--masks", str(RISE["masks"]), "--grid", str(RISE["grid"]), "--keep", str(RISE["keep"]),
            "--seed", str(RISE["seed"]), *box]


def compare(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    if ours.shape != ref.shape:
        raise RowError("compare", f"scorecam map {ours.shape} vs the reference {ref.shape}")
    r = float(np.corrcoef(ours.ravel().astype(np.float64), ref.ravel().astype(np.float64))[0, 1])
    return r, float(np.abs(ours.astype(np.float64) - ref).max())


def eigen_sign(acts: np.ndarray) -> dict:
    """numpy's SVD sign vs the svd_flip rule, for the projection get_2d_projection makes."""
    a = acts[0].reshape(acts.shape[1], -1).T.astype(np.float32)
    a = a - a.mean(axis=0)
    _, s, vt = np.linalg.svd(a, full_matrices=True)
    proj = a @ vt[0, :]
    k = int(np.argmax(np.abs(proj)))
    return dict(numpy_sign_agrees=bool(proj[k] > 0), largest_projection=float(proj[k]),
                singular_gap=float((s[0] - s[1]) / s[0]) if len(s) > 1 and s[0] > 0 else None)


def eigencam_fixed(acts: np.ndarray, flip: bool, size) -> np.ndarray:
    """The library's EigenCAM map recomputed with its own functions, the projection's sign flipped when `flip`."""
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
    cam = get_2d_projection(acts)
    if flip:
        cam = -cam
    cam = scale_cam_image(np.maximum(cam, 0), size)[:, None, :]
    return scale_cam_image(np.mean(np.maximum(cam, 0), axis=1))[0]


# --------------------------------------------------------------------------- rows


def photos(keys) -> dict[str, pathlib.Path]:
    out = {}
    for key in keys:
        if key == "224":
            out[key] = ROOT / "samples" / "chelsea.png"
        else:
            path = CACHE / "photos" / f"chelsea_{key}.jpg"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                va.make_jpeg(ROOT / "samples" / "chelsea.png", key, path)
            out[key] = path
    return out


def yolo_package(model, args) -> tuple[pathlib.Path, str, pathlib.Path]:
    full = CACHE / "onnx" / f"yolov8n_{args.size}.onnx"
    try:
        export_yolo(model, args.size, full)
    except Exception as e:  # noqa: BLE001
        raise RowError("export", f"{type(e).__name__}: {e}") from e
    pkg, out = split(full, f"yolov8n_{args.size}", YOLO_SPLIT)
    return pkg, out, full


def run_row(row_name: str, photo_key: str, image: pathlib.Path, subject, args) -> dict:
    row_spec = ROWS[row_name]
    row = dict(row=row_name, photo=photo_key, method=row_spec["method"], size=args.size,
               image=str(image.relative_to(ROOT) if image.is_relative_to(ROOT) else image))
    t0 = time.perf_counter()
    try:
        pkg, split_out = subject.package(args)
        row["split_output"] = split_out
        row["model_toml"] = (pkg / "model.toml").read_text()
        row["side_inputs"] = [l.strip() for l in split_out.splitlines() if l.startswith("  '")]
        row["tensor"] = next((l.split("cutting at its output ", 1)[1].split(" ", 1)[0].strip("'")
                              for l in split_out.splitlines() if "cutting at its output" in l), None)
        x, geo = letterbox(image, args.size)
        row["letterbox"] = geo
        target = subject.target(x, geo)
        row["target"] = target
        hooked = subject.activations(x)
        row["target_shape"] = list(hooked.shape)
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(pkg / "extractor.onnx"), so, providers=["CPUExecutionProvider"])
        feats = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        if feats.shape != hooked.shape:
            raise RowError("target check", f"extractor output {feats.shape} != the hooked target layer's {hooked.shape}")
        row["target_check_max_delta"] = float(np.abs(feats - hooked).max())
        if row_spec["method"] == "eigencam":
            row.update(eigen_sign(hooked))
        if row_spec["method"] != "eigencam":  # the target's score on the clean photo, by the reference's own code
            target["clean_score"] = subject.clean_score(x, row_spec.get("rule"), target)
        ref, ref_s, cached = library_map(row_name, subject, x, target, image, args)
        row.update(reference_s=round(ref_s, 3), reference_cached=cached)

        ours, wall, doc, cmd = run_scorecam(args.binary, pkg.name, image, scorecam_flags(row_spec, target), args.threads)
        row["scorecam_command"] = cmd
        dets = doc.get("detections") or []
        if dets:  # scorecam's own best detection on the clean photo, for the record
            row["scorecam_detection0"] = dets[0]
        expl = doc["explanations"][0]
        row["scorecam_target"] = {k: expl.get(k) for k in ("index", "label", "box", "score", "probability") if k in expl}
        r, d = compare(ours, ref)
        row.update(pearson=r, max_delta=d, scorecam_s=round(doc["timings_ms"]["total_ms"] / 1e3, 3),
                   scorecam_wall_s=round(wall, 3), passes=doc.get("stats", {}).get("forward_passes"))
        judged = (r, d)
        if row_spec["method"] == "eigencam":
            fixed = eigencam_fixed(hooked, not row["numpy_sign_agrees"], (x.shape[-1], x.shape[-2]))
            row["sign_fixed_pearson"], row["sign_fixed_max_delta"] = compare(ours, fixed)
            if not row["numpy_sign_agrees"]:
                judged = (row["sign_fixed_pearson"], row["sign_fixed_max_delta"])
                row["note"] = "numpy's SVD sign differs from the svd_flip rule: judged against the sign-fixed library map"
        row.update(ok=bool(judged[0] >= R_MIN and judged[1] <= DELTA_MAX), status="ok")
    except RowError as e:
        row.update(ok=False, status=f"{e.step} failed", error=e.text)
    except Exception as e:  # noqa: BLE001
        row.update(ok=False, status="error", error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}")
    row["row_s"] = round(time.perf_counter() - t0, 1)
    row["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return row


class Yolo:
    """YOLOv8n with raw proposals: the subject of the yolov8n/* rows."""

    name = "yolov8n"

    def __init__(self, args):
        self.model = make_yolo(args.seed, args.size)
        self.layer = self.model.model[-2]

    def package(self, args):
        pkg, out, _ = yolo_package(self.model, args)
        return pkg, out

    def target(self, x, geo):
        return pick_target(self.model, x, geo)

    def activations(self, x):
        return va.hooked_activation(self.model, self.layer, x)[0]

    def cam_args(self) -> dict:
        return dict(model=self.model, target_layers=[self.layer])

    def eigencam_targets(self, target):
        return None  # BaseCAM's argmax of the raw output (EigenCAM ignores it)

    def reference_target(self, rule, target):
        return (DRiseTarget if rule == "d_rise" else RawProposalsBoxScore)(target["box_model"], target["cls"])

    def clean_score(self, x, rule, target) -> float:
        with torch.no_grad():
            clean = self.model(x)[0]
        if rule == "box_score":
            return float(RawProposalsBoxScore(target["box_model"], target["cls"])(clean))
        return d_rise_np(clean.numpy(), target["box_model"], target["cls"])


class FasterRCNN:
    """torchvision's fasterrcnn_mobilenet_v3_large_320_fpn, random weights (seed), made to give distinct
    detections: BatchNorm statistics recalibrated on the calibration batch (as YOLO's), box_score_thresh 0 (all
    100 detections kept) and the box predictor's class weights drawn from N(0, FRCNN_CLS_SCALE²). The target
    layer is pytorch-grad-cam's Faster R-CNN tutorial's: model.backbone with fasterrcnn_reshape_transform."""

    name = "fasterrcnn"

    def __init__(self, args):
        torch.manual_seed(args.seed)
        m = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None, box_score_thresh=0.0).eval()
        norms = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
        for b in norms:
            b.reset_running_stats()
            b.momentum = None
            b.train()
        with torch.no_grad():
            m(list(calibration_batch(args.size)))
            cls = m.roi_heads.box_predictor.cls_score
            g = torch.Generator().manual_seed(args.seed)
            cls.weight.copy_(FRCNN_CLS_SCALE * torch.randn(cls.weight.shape, generator=g))
        for b in norms:
            b.eval()
        self.model = m

    def package(self, args):
        """The export tool, run as a user runs it, on the weights saved to a file."""
        name = f"fasterrcnn_{args.size}"
        pkg, weights = CACHE / "models" / name, CACHE / "onnx" / f"{name}.pt"
        stamp_file = CACHE / "stamps" / f"{name}.txt"
        stamp = json.dumps([weights_key(self.model), va.sha256(EXPORT_TOOL), args.size])
        if (pkg / "model.toml").exists() and stamp_file.exists() and stamp_file.read_text().split("\n", 1)[0] == stamp:
            return pkg, stamp_file.read_text().split("\n", 1)[1]
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), weights)
        cmd = [sys.executable, str(EXPORT_TOOL), FRCNN, "--weights", str(weights), "--model-score-thresh", "0",
               "--size", str(args.size), "--out", str(pkg), "--force", "--score-threshold", "0.05",
               "--description", f"{FRCNN}, random weights (seed {args.seed}, see verify_detectors.py)",
               "--license", "BSD-3-Clause (torchvision's model code); random weights"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RowError("export", (r.stderr or r.stdout).strip()[-2000:])
        stamp_file.parent.mkdir(parents=True, exist_ok=True)
        stamp_file.write_text(stamp + "\n" + r.stdout)
        return pkg, r.stdout

    def detections(self, x):
        with torch.no_grad():
            return self.model(x)[0]

    def target(self, x, geo):
        out = self.detections(x)
        return pick_from(out["boxes"].double().numpy(), out["scores"], out["labels"], geo)

    def activations(self, x):
        from export_torchvision_detector import fasterrcnn_reshape_transform
        got = {}
        handle = self.model.backbone.register_forward_hook(lambda _m, _i, o: got.setdefault("levels", o))
        try:
            self.detections(x)
        finally:
            handle.remove()
        return fasterrcnn_reshape_transform(got["levels"]).numpy()

    def cam_args(self) -> dict:
        from export_torchvision_detector import fasterrcnn_reshape_transform
        return dict(model=self.model, target_layers=[self.model.backbone],
                    reshape_transform=fasterrcnn_reshape_transform)

    def eigencam_targets(self, target):
        # EigenCAM ignores its targets, but BaseCAM cannot take the argmax of a list of dicts: give one
        return [self.reference_target("box_score", target)]

    def reference_target(self, rule, target):
        from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
        box = np.asarray(target["box_model"], np.float32)
        if rule == "box_score":
            return FasterRCNNBoxScoreTarget(labels=[target["cls"]], bounding_boxes=[box], iou_threshold=0.5)
        return LabelledDRise(box, target["cls"])

    def clean_score(self, x, rule, target) -> float:
        return float(self.reference_target(rule, target)(self.detections(x)))


class LabelledDRise:
    """The documented d_rise score on post-NMS detections: max over detections j of IoU(box, box_j) · score_j
    when label_j is the class (0 otherwise)."""

    def __init__(self, box, category: int):
        self.box = torch.as_tensor(np.asarray(box, np.float32))[None]
        self.category = category

    def __call__(self, out: dict) -> torch.Tensor:
        if len(out["boxes"]) == 0:
            return torch.tensor(0.0)
        iou = torchvision.ops.box_iou(self.box.to(out["boxes"].dtype), out["boxes"])[0]
        return (iou * out["scores"] * (out["labels"] == self.category)).max()


SUBJECTS = {"yolov8n": Yolo, "fasterrcnn": FasterRCNN}


def va_dims(vi) -> list:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in vi.type.tensor_type.shape.dim]


def error_line(row) -> str:
    lines = [l.strip() for l in (row.get("error") or "").strip().splitlines() if l.strip()]
    return next((l for l in lines if l.startswith("error:")), lines[0] if lines else "")


def fmt(row) -> str:
    head = f"{row['row']:20s} {row['photo']:>9s}"
    sign = ""
    if "numpy_sign_agrees" in row:
        sign = f"  numpy sign {'agrees' if row['numpy_sign_agrees'] else 'DIFFERS'} (svd_flip rule)"
    lib = (f"  reference {row['reference_s']:.1f} s{' (cached)' if row.get('reference_cached') else ''}"
           if "reference_s" in row else "")
    if row.get("status") != "ok":
        return f"{head}  {row['status'].upper()}: {error_line(row)}{lib}{sign}"
    if row.get("informational"):
        return f"{head}  {row.get('note', '')}"
    t = row.get("target") or {}
    text = (f"{head}  r={row['pearson']:.8f}  max|Δ|={row['max_delta']:.2e}{lib}  scorecam {row['scorecam_s']:.1f} s  "
            f"{'PASS' if row['ok'] else 'FAIL'}  [target check {row['target_check_max_delta']:.1e}"
            + (f"; class {t.get('cls')} box {t.get('box_flag')}]" if row.get("method") != "eigencam" else "]") + sign)
    if "sign_fixed_pearson" in row:
        text += f"\n    vs the sign-fixed library map: r={row['sign_fixed_pearson']:.8f}  max|Δ|={row['sign_fixed_max_delta']:.2e}"
    if row.get("note"):
        text += f"\n    note: {row['note']}"
    return text


REFERENCE = {
    "scorecam": "pytorch-grad-cam ScoreCAM",
    "eigencam": "pytorch-grad-cam EigenCAM",
    "rise": "numpy D-RISE (same masks)",
    "split_only": "–",
}


def markdown(results: dict, photo_keys) -> str:
    out = ["| row | reference | photo | target (class, photo box) | Pearson r (1 − r) | max \\|Δ\\| | reference s | "
           "scorecam s | numpy SVD sign = svd_flip | pass |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ROWS:
        for photo in photo_keys:
            row = results.get(f"{name}/{photo}")
            if row is None:
                continue
            ref = REFERENCE.get(row.get("method"), "–")
            t = row.get("target") or {}
            target = f"{t['cls']}, ({t['box_flag']})" if t else "–"
            if row.get("method") == "eigencam":
                target = "none (class-agnostic)"
            sign = "–" if "numpy_sign_agrees" not in row else ("yes" if row["numpy_sign_agrees"] else "**no**")
            lib = f"{row['reference_s']:.1f}" if "reference_s" in row else "–"
            if row.get("status") != "ok":
                err = error_line(row).replace("|", "\\|")[:240]
                out.append(f"| {name} | {ref} | {photo} | {target} | – | – | {lib} | – | {sign} | {row['status']}: {err} |")
                continue
            if row.get("informational"):
                out.append(f"| {name} | {ref} | {photo} | – | – | – | – | – | – | {row.get('note', '')} |")
                continue
            out.append(f"| {name} | {ref} | {photo} | {target} | {row['pearson']:.8f} ({1 - row['pearson']:.0e}) | "
                       f"{row['max_delta']:.1e} | {lib} | {row['scorecam_s']:.1f} | {sign} | "
                       f"{'yes' if row['ok'] else '**no**'}{' (sign-fixed map)' if row.get('note') else ''} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), metavar="ROW",
                    help="rows to run, names or shell patterns ('yolov8n/*'); default: all. Rows: " + ", ".join(ROWS))
    ap.add_argument("--photos", nargs="+", choices=["224", "landscape"], default=["224", "landscape"],
                    help="224: samples/chelsea.png; landscape: the 500×375 JPEG made from it (default: both)")
    ap.add_argument("--size", type=int, default=320, help="the model's input side (default: %(default)s; Ultralytics': 640)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16, help="pytorch-grad-cam's ScoreCAM batch size (its default: 16)")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed before building the model")
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "target" / "release" / "scorecam")
    ap.add_argument("--fresh-reference", action="store_true", help="recompute the reference maps even when cached")
    ap.add_argument("--table", action="store_true", help="print the cached results as a Markdown table and exit")
    args = ap.parse_args()
    wanted = [r for r in ROWS if any(fnmatch.fnmatchcase(r, pat) for pat in args.rows)]
    unknown = [pat for pat in args.rows if not any(fnmatch.fnmatchcase(r, pat) for r in ROWS)]
    if unknown:
        ap.error(f"no row matches {', '.join(unknown)}; rows: {', '.join(ROWS)}")

    results_path = CACHE / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.table:
        print(markdown({k: v for k, v in results.items() if v["row"] in wanted}, args.photos))
        return 0

    torch.set_num_threads(args.threads)
    if not args.binary.exists():
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    import PIL
    import pytorch_grad_cam
    try:
        import ultralytics
        uv = ultralytics.__version__
    except ImportError:
        uv = None
    print(f"Pillow {PIL.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, grad-cam "
          f"{getattr(pytorch_grad_cam, '__version__', '1.5.7')}, ultralytics {uv}, onnx {onnx.__version__}; "
          f"{args.threads} threads; ScoreCAM batch {args.batch_size}; input {args.size}×{args.size}; "
          f"pass: r >= {R_MIN}, max |Δ| <= {DELTA_MAX:g}; scorecam {args.binary}", flush=True)
    imgs = photos(args.photos)
    all_ok = True
    subjects = {}
    for row_name in wanted:
        informational = ROWS[row_name].get("informational", False)
        keys = list(imgs)[:1] if informational else list(imgs)
        kind = ROWS[row_name].get("model", "yolov8n")
        if kind not in subjects:
            try:
                subjects[kind] = SUBJECTS[kind](args)
            except Exception as e:  # noqa: BLE001 (ultralytics missing, ...)
                for key in keys:
                    row = dict(row=row_name, photo=key, ok=False, status="model failed", error=f"{type(e).__name__}: {e}")
                    print(fmt(row), flush=True)
                    results[f"{row_name}/{key}"] = row
                all_ok = False
                continue
        for key in keys:
            row = run_row(row_name, key, imgs[key], subjects[kind], args)
            print(fmt(row) + f"  ({row['row_s']:.0f} s)", flush=True)
            if row.get("error") and len(row["error"].strip().splitlines()) > 1:
                print("    " + row["error"].strip().replace("\n", "\n    ")[:3000], flush=True)
            if not informational:
                all_ok &= row["ok"]
            results[f"{row_name}/{key}"] = row
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=1))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
