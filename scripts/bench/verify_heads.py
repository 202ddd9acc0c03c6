"""Checks scorecam's new head kinds and inputs against pytorch-grad-cam 1.5.7. Not part of the
test suite; the companion of scripts/bench/verify_architectures.py (same bar, same caching).

Every model has random weights (torch.manual_seed(SEED) before it is built: pretrained weights
cannot be downloaded here; the check compares two implementations of one computation, so random
weights do as well as trained ones). Each model is exported to ONNX (opset 17, dynamic batch,
the TorchScript exporter) and cut with scripts/tools/split_model.py at the tensor the library
hooks; the extractor's output is checked against that hook's tensor ("target check"). Each row
then explains a photo with

    scorecam --models-dir DIR explain PHOTO --model PKG --method scorecam --preset pytorch_grad_cam \\
             --format json --resolution model [row flags] -o -

and with pytorch-grad-cam's ScoreCAM (batch size 16) given the library's own target object, and
compares the two maps at the model grid: Pearson r and max |Δ|; a row passes when r >= 0.9999 and
max |Δ| <= 1e-3. Photos (the service resizes them itself): samples/chelsea.png (224×224, "224")
and a 500×375 JPEG made from it as verify_architectures' --photos landscape ("landscape").

Rows (ROWS below):

  deeplabv3/predicted   torchvision deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                        aux_loss=False; the last conv's bias zeroed: with random weights it alone
                        decides every pixel), exported through a wrapper returning model(x)["out"]
                        ([N, 21, 224, 224]: the head includes the model's own upsampling to the input
                        size). Target layer: the backbone's last stage, backbone["16"]. Library target:
                        SemanticSegmentationTarget(category, mask) with mask = the clean output's
                        argmax == category (the predicted region, scorecam's default region);
                        category = the most frequent argmax class covering at most half of the map
                        (so that the region has a border), scorecam gets --target category.
  deeplabv3/box         the same with a box: scorecam --target category --region x1,y1,x2,y2 (photo
                        pixels; a fixed fraction of the photo); the library's mask is the output
                        pixels whose centre, mapped back to photo pixels through the stretch resize
                        (photo_x = (j + 0.5) * w0 / W_out), lies in the box (x1 <= x < x2, y1 <= y < y2).
  unet/encoder          segmentation-models-pytorch Unet("resnet18", encoder_weights=None, classes=3),
                        target layer encoder.layer4: the decoder's skip connections go around it, so
                        the row reports the step that fails (the split tool, or scorecam) and its
                        message.
  unet/decoder          the same Unet cut at the decoder's output ([N, 16, 224, 224]; separates the
                        graph; the head is the segmentation head's conv); predicted-region target.
  resnet18_binary/1     ResNet-18 with fc = Linear(512, 1), exported with a final Sigmoid (the split
                        tool drops it and writes [head] activation = "sigmoid"); the library runs the
                        same network without the Sigmoid (logits), BinaryClassifierOutputTarget(1),
                        scorecam --target 1 (the logit).
  resnet18_binary/0     the same with BinaryClassifierOutputTarget(0) / --target 0 (minus the logit).
  densenet121_gray      DenseNet-121 with features.conv0 = Conv2d(1, 64, 7, 2, 3) and classifier =
                        Linear(1024, 14) (no sigmoid layer; the package says activation = "sigmoid"),
                        a 1-channel input: the library gets Image.open(p).convert("L"), Resize((224,
                        224)), ToTensor, Normalize([0.5], [0.25]); the package [input] channels = 1,
                        mean = [0.5], std = [0.25]. ClassifierOutputTarget(top logit). Target layer:
                        model.features, i.e. the tensor after DenseNet's in-place F.relu
                        (/Relu_output_0, as in verify_architectures).
  resnet50_embedding/npy    ResNet-50 with fc = Identity (a 2048-d embedding; split --head embedding),
                        target layer layer4[-1]; the library target is SimilarityToConceptTarget
                        (the pytorch-grad-cam embeddings tutorial's class: cosine similarity of the
                        output to a concept vector) with the embedding of a second photo (chelsea
                        flipped left-right and cropped); scorecam gets --reference FILE.npy (that
                        float32 vector).
  resnet50_embedding/photo  the same, scorecam gets the second photo itself (--reference photo.png)
                        and embeds it with the package's own preprocessing.
  inception_v3          Inception-v3 at 299 (classes; Resize(342) + CenterCrop(299), split with
                        --resize shorter_side_crop --crop-from 342), ClassifierOutputTarget(top).
  eigencam/resnet18, eigencam/densenet121, eigencam/vit_b_16
                        scorecam --method eigencam vs the library's EigenCAM (class-agnostic) on
                        plain torchvision models (3 channels; ViT with verify_architectures'
                        reshape_transform). pytorch-grad-cam's get_2d_projection takes the sign of
                        numpy's SVD as LAPACK returns it; scorecam reproduces that sign from the
                        structure of LAPACK's sgesdd (src/cam/methods/eigencam.rs). Each row is
                        judged against the library's own map; it also reports whether numpy's
                        sign happened to agree with sklearn's svd_flip rule (the element of
                        largest magnitude positive), to show that a fixed rule would not do,
                        and how far scorecam's map is from the library's recomputed with the
                        other sign.

Until scorecam knows a flag or a model.toml key, its step fails: the row reports the step
("scorecam failed") and scorecam's message, and the other rows still run. Exports, splits, the
library's maps, masks, reference vectors and photos are cached in target/verify_heads/ (keyed by
the model, the photo, the target and the versions; --fresh-reference recomputes the library's maps),
so reruns only rerun scorecam:

    scripts/bench/verify_heads.sh                              # every row, both photos
    scripts/bench/verify_heads.sh --rows deeplabv3/box eigencam/resnet18 --photos 224
    scripts/bench/verify_heads.sh --rows 'eigencam/*'          # shell-style patterns
    scripts/bench/verify_heads.sh --table                      # the cached results as Markdown

Same threads on both sides: torch.set_num_threads(T); scorecam with T workers of one intra-op
thread each. scorecam's time is the document's timings_ms.total_ms. Exit status: 0 when every row
run passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import traceback

os.environ.setdefault("TQDM_DISABLE", "1")  # ScoreCAM's per-batch progress bar

import numpy as np
import onnx
import torch
import torchvision
from PIL import Image
from torchvision import transforms

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import verify_architectures as va  # noqa: E402  (helpers: photos, hooks, tensor lookup, scorecam's env)

ROOT = va.ROOT
CACHE = ROOT / "target" / "verify_heads"
SPLIT = va.SPLIT
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
R_MIN, DELTA_MAX = va.R_MIN, va.DELTA_MAX
BOX = (0.25, 0.2, 0.7, 0.75)  # the deeplabv3/box region as fractions of the photo (x1, y1, x2, y2)
RowError = va.RowError


# --------------------------------------------------------------------------- models


class Out(torch.nn.Module):
    """Torchvision's segmentation models return a dict: the wrapper pytorch-grad-cam's
    segmentation tutorial uses, returning model(x)["out"]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


class WithSigmoid(torch.nn.Module):
    """The exported graph of the binary classifier: logits -> Sigmoid (the split tool drops it)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.sigmoid(self.model(x))


def deeplabv3():
    m = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=False)
    # With random weights the last conv's bias decides every pixel (one class everywhere); without
    # it the argmax varies over the photo, so the predicted region is a real region.
    with torch.no_grad():
        m.classifier[-1].bias.zero_()
    return Out(m)


def unet():
    import segmentation_models_pytorch as smp
    return smp.Unet("resnet18", encoder_weights=None, classes=3)


def resnet18_binary():
    m = torchvision.models.resnet18(weights=None)
    m.fc = torch.nn.Linear(512, 1)
    return m


def densenet121_gray():
    m = torchvision.models.densenet121(weights=None)
    m.features.conv0 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    m.classifier = torch.nn.Linear(1024, 14)
    return m


def resnet50_embedding():
    m = torchvision.models.resnet50(weights=None)
    m.fc = torch.nn.Identity()
    return m


# builder: (constructor, what is exported (the model, or a wrapper of it), input channels, size)
BUILDERS = {
    "deeplabv3": dict(ctor=deeplabv3),
    "unet": dict(ctor=unet),
    "resnet18_binary": dict(ctor=resnet18_binary, export=WithSigmoid),
    "densenet121_gray": dict(ctor=densenet121_gray, channels=1),
    "resnet50_embedding": dict(ctor=resnet50_embedding),
    "inception_v3": dict(ctor=lambda: va.inception_v3(weights=None), size=299),
    "resnet18": dict(ctor=lambda: torchvision.models.resnet18(weights=None)),
    "densenet121": dict(ctor=lambda: torchvision.models.densenet121(weights=None)),
    "vit_b_16": dict(ctor=lambda: torchvision.models.vit_b_16(weights=None)),
}

# package: the model cut at the layer the library hooks.
#   module: the hooked module (code, on the library's model); onnx: how to find its tensor in the
#   exported graph ("after:SCOPE" = the output of the last node under SCOPE/, "tensor:NAME");
#   split: extra split_model.py arguments; pipeline: the library's torchvision transforms (and the
#   package's [input]); reshape: reshape_transform.
PACKAGES = {
    "deeplabv3": dict(
        builder="deeplabv3", module='model.model.backbone["16"]', onnx="after:/model/backbone/backbone.16"),
    "unet_encoder": dict(
        builder="unet", module="model.encoder.layer4", onnx="after:/encoder/layer4", split=["--side-inputs"]),
    "unet_decoder": dict(
        builder="unet", module="model.decoder", onnx="after:/decoder"),
    "resnet18_binary": dict(
        builder="resnet18_binary", module="model.layer4[-1]", onnx="after:/model/layer4/layer4.1"),
    "densenet121_gray": dict(
        builder="densenet121_gray", module="model.features", onnx="tensor:/Relu_output_0",
        split=["--activation", "sigmoid", "--mean", "0.5", "--std", "0.25"], gray=True, mean=[0.5], std=[0.25]),
    "resnet50_embedding": dict(
        builder="resnet50_embedding", module="model.layer4[-1]", onnx="after:/layer4/layer4.2", split=["--head", "embedding"]),
    "inception_v3": dict(
        builder="inception_v3", module="model.Mixed_7c", onnx="after:/Mixed_7c",
        split=["--resize", "shorter_side_crop", "--crop-from", "342"], size=299, crop_from=342),
    "resnet18": dict(builder="resnet18", module="model.layer4[-1]", onnx="after:/layer4/layer4.1"),
    "densenet121": dict(builder="densenet121", module="model.features", onnx="tensor:/Relu_output_0"),
    "vit_b_16": dict(
        builder="vit_b_16", module="model.encoder.layers[-1]", onnx="after:/encoder/layers/encoder_layer_11",
        split=["--layout", "tokens", "--grid", "14x14", "--prefix-tokens", "1"], reshape=va.vit_tokens_to_nchw),
}

# row: package, method, target (how the library's target and scorecam's flags are made)
ROWS = {
    "deeplabv3/predicted": dict(package="deeplabv3", target="segmentation"),
    "deeplabv3/box": dict(package="deeplabv3", target="segmentation_box"),
    "unet/encoder": dict(package="unet_encoder", target="segmentation"),
    "unet/decoder": dict(package="unet_decoder", target="segmentation"),
    "resnet18_binary/1": dict(package="resnet18_binary", target="binary:1"),
    "resnet18_binary/0": dict(package="resnet18_binary", target="binary:0"),
    "densenet121_gray": dict(package="densenet121_gray", target="top"),
    "resnet50_embedding/npy": dict(package="resnet50_embedding", target="similarity:npy"),
    "resnet50_embedding/photo": dict(package="resnet50_embedding", target="similarity:photo"),
    "inception_v3": dict(package="inception_v3", target="top"),
    "eigencam/resnet18": dict(package="resnet18", method="eigencam"),
    "eigencam/densenet121": dict(package="densenet121", method="eigencam"),
    "eigencam/vit_b_16": dict(package="vit_b_16", method="eigencam"),
}


def make_model(builder: str, seed: int):
    torch.manual_seed(seed)
    return BUILDERS[builder]["ctor"]().eval()


def exported(builder: str, model):
    wrap = BUILDERS[builder].get("export")
    return wrap(model).eval() if wrap else model


def resolve_module(model, expr: str):
    return eval(expr, {"model": model})  # noqa: S307 - expressions from the table above


# --------------------------------------------------------------------------- export + split


def weights_key(model) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def export(builder: str, model, out: pathlib.Path) -> None:
    """Export again when the weights changed (the stamp beside the file)."""
    stamp = out.with_suffix(".weights")
    key = weights_key(model)
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    b = BUILDERS[builder]
    size = b.get("size", 224)
    x = torch.randn(1, b.get("channels", 3), size, size)
    tmp = out.with_suffix(".tmp.onnx")
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # nn.MultiheadAttention's fused path does not export
    try:
        with torch.no_grad():
            torch.onnx.export(
                exported(builder, model), x, str(tmp), opset_version=17, input_names=["image"], output_names=["output"],
                dynamic_axes={"image": {0: "N"}, "output": {0: "N"}}, dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    tmp.rename(out)
    stamp.write_text(key)


def split(name: str, full: pathlib.Path, tensor: str) -> tuple[pathlib.Path, str]:
    """The package folder in CACHE/models (split again when the tensor, the model or the tool changed),
    and the split tool's output."""
    p = PACKAGES[name]
    pkg = CACHE / "models" / name
    stamp_file = CACHE / "stamps" / f"{name}.txt"
    args = [*p.get("split", [])]
    stamp = json.dumps([tensor, va.sha256(full), va.sha256(SPLIT), args])
    if (pkg / "model.toml").exists() and stamp_file.exists() and stamp_file.read_text().split("\n", 1)[0] == stamp:
        return pkg, stamp_file.read_text().split("\n", 1)[1]
    cmd = [sys.executable, str(SPLIT), str(full), "--layer", tensor, "--out", str(pkg), "--force", *args,
           "--description", f"{name}, random weights (seed), cut at {p['module']}",
           "--source", f"{name} (torch {torch.__version__}, torchvision {torchvision.__version__}), exported by scripts/bench/verify_heads.py",
           "--license", "the model code's licence; random weights"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RowError("split", (r.stderr or r.stdout).strip())
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp + "\n" + r.stdout)
    return pkg, r.stdout


# --------------------------------------------------------------------------- the library's side


def library_transforms(name: str) -> list:
    p = PACKAGES[name]
    size = p.get("size", 224)
    mean, std = (p["mean"], p["std"]) if "mean" in p else IMAGENET
    resize = ([transforms.Resize(p["crop_from"]), transforms.CenterCrop(size)] if "crop_from" in p
              else [transforms.Resize((size, size))])
    return resize + [transforms.ToTensor(), transforms.Normalize(mean, std)]


def library_input(name: str, image: pathlib.Path) -> torch.Tensor:
    # As the library's users load a photo: PIL.Image.open + convert (no EXIF transpose).
    mode = "L" if PACKAGES[name].get("gray") else "RGB"
    return transforms.Compose(library_transforms(name))(Image.open(image).convert(mode))[None]


class SimilarityToConceptTarget:
    """pytorch-grad-cam's embeddings tutorial ("Pixel Attribution for embeddings"): the cosine
    similarity of the model's output to a concept's features. Not in the package itself."""

    def __init__(self, features):
        self.features = features

    def __call__(self, model_output):
        cos = torch.nn.CosineSimilarity(dim=0)
        return cos(model_output, self.features)


def pick_category(pred: np.ndarray) -> int:
    """The most frequent argmax class covering at most half of the map (a region with a border),
    else the most frequent one not covering all of it, else the most frequent."""
    counts = np.bincount(pred.ravel())
    order = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    half = [c for c in order if counts[c] * 2 <= pred.size]
    partial = [c for c in order if counts[c] < pred.size]
    return (half or partial or order)[0]


def box_pixels(size: tuple[int, int]) -> tuple[int, int, int, int]:
    w0, h0 = size
    return (round(BOX[0] * w0), round(BOX[1] * h0), round(BOX[2] * w0), round(BOX[3] * h0))


def box_mask(box, photo_size, out_hw) -> np.ndarray:
    """Output pixels whose centre, mapped back to photo pixels through the stretch resize, lies in
    the box: photo_x = (j + 0.5) * w0 / W_out, x1 <= photo_x < x2 (and the same for y)."""
    (x1, y1, x2, y2), (w0, h0), (H, W) = box, photo_size, out_hw
    xs = (np.arange(W) + 0.5) * w0 / W
    ys = (np.arange(H) + 0.5) * h0 / H
    return ((ys[:, None] >= y1) & (ys[:, None] < y2) & (xs[None, :] >= x1) & (xs[None, :] < x2)).astype(np.float32)


def reference_photo() -> pathlib.Path:
    """The second photo of the embedding rows: chelsea flipped left-right and cropped (PNG)."""
    path = CACHE / "photos" / "chelsea_flipped_crop.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.open(ROOT / "samples" / "chelsea.png").convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.crop((16, 24, 208, 200)).save(path)
    return path


def reference_vector(name: str, model) -> tuple[np.ndarray, pathlib.Path]:
    """The embedding of the second photo (the library's pipeline), saved as a float32 .npy."""
    photo = reference_photo()
    path = CACHE / "photos" / f"{photo.stem}_{name}.npy"
    with torch.no_grad():
        v = model(library_input(name, photo))[0].numpy().astype(np.float32)
    if not path.exists() or not np.array_equal(np.load(path), v):
        np.save(path, v)
    return v, path


def targets_for(row: dict, model, x, image: pathlib.Path, name: str):
    """(the library's targets, scorecam's flags, what the target is)."""
    from pytorch_grad_cam.utils.model_targets import (BinaryClassifierOutputTarget, ClassifierOutputTarget,
                                                      SemanticSegmentationTarget)
    kind, _, arg = row.get("target", "").partition(":")
    if row.get("method") == "eigencam":
        return None, [], dict(target="none (EigenCAM is class-agnostic)")
    with torch.no_grad():
        out = model(x)[0]
    if kind == "top":
        cls = int(out.argmax())
        return [ClassifierOutputTarget(cls)], ["--target", str(cls)], dict(target=f"ClassifierOutputTarget({cls})", cls=cls)
    if kind == "binary":
        c = int(arg)
        return ([BinaryClassifierOutputTarget(c)], ["--target", str(c)],
                dict(target=f"BinaryClassifierOutputTarget({c})", cls=c, logit=float(out[0])))
    if kind in ("segmentation", "segmentation_box"):
        pred = out.argmax(0).numpy()
        cat = pick_category(pred)
        if kind == "segmentation":
            mask = (pred == cat).astype(np.float32)
            flags, what = ["--target", str(cat)], f"SemanticSegmentationTarget({cat}, argmax == {cat})"
        else:
            size = Image.open(image).size
            box = box_pixels(size)
            mask = box_mask(box, size, pred.shape)
            flags = ["--target", str(cat), "--region", ",".join(map(str, box))]
            what = f"SemanticSegmentationTarget({cat}, box {box} of the {size[0]}×{size[1]} photo)"
        return ([SemanticSegmentationTarget(cat, mask)], flags,
                dict(target=what, cls=cat, mask_pixels=int(mask.sum()), mask_of=int(mask.size),
                     mask_sha=hashlib.sha256(mask.tobytes()).hexdigest()[:16]))
    if kind == "similarity":
        v, npy = reference_vector(name, model)
        ref = str(npy if arg == "npy" else reference_photo())
        return ([SimilarityToConceptTarget(torch.from_numpy(v))], ["--reference", ref],
                dict(target=f"SimilarityToConceptTarget(embedding of {reference_photo().name})",
                     reference=str(pathlib.Path(ref).relative_to(ROOT)), reference_sha=hashlib.sha256(v.tobytes()).hexdigest()[:16],
                     similarity_clean=float(torch.nn.functional.cosine_similarity(out, torch.from_numpy(v), dim=0))))
    raise ValueError(f"unknown target {row.get('target')!r}")


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
    """The library's EigenCAM map recomputed with its own functions, the projection's sign flipped
    when `flip` (BaseCAM.compute_cam_per_layer + aggregate_multi_layers for one layer)."""
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
    cam = get_2d_projection(acts)
    if flip:
        cam = -cam
    cam = scale_cam_image(np.maximum(cam, 0), size)[:, None, :]
    return scale_cam_image(np.mean(np.maximum(cam, 0), axis=1))[0]


def reference(row_name: str, model, x, image: pathlib.Path, targets, info, args):
    """The library's map (cached): ScoreCAM or EigenCAM."""
    import pytorch_grad_cam
    from pytorch_grad_cam import EigenCAM, ScoreCAM
    row = ROWS[row_name]
    p = PACKAGES[row["package"]]
    method = row.get("method", "scorecam")
    version = getattr(pytorch_grad_cam, "__version__", "1.5.7")
    key = hashlib.sha256(json.dumps([row["package"], method, args.seed, va.sha256(image), torch.__version__,
                                     torchvision.__version__, version, args.batch_size, args.threads,
                                     {k: v for k, v in info.items() if k != "reference"}]).encode()).hexdigest()[:16]
    # Named by package, not row: rows that differ only in scorecam's flags (an .npy or a photo as the
    # reference) share the library's map.
    path = CACHE / "reference" / f"{row['package']}-{key}.npz"
    if path.exists() and not args.fresh_reference:
        z = np.load(path)
        return z["map"], float(z["seconds"]), True
    module = resolve_module(model, p["module"])
    if method == "eigencam":
        cam = EigenCAM(model=model, target_layers=[module], reshape_transform=p.get("reshape"))
    else:
        cam = ScoreCAM(model=model, target_layers=[module], reshape_transform=p.get("reshape"))
        cam.batch_size = args.batch_size
    t = time.perf_counter()
    m = cam(input_tensor=x, targets=targets)[0]
    seconds = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, map=m, seconds=seconds)
    return m, seconds, False


# --------------------------------------------------------------------------- scorecam


def run_scorecam(binary, package: str, image, flags, threads, method: str):
    env = dict(os.environ, SCORECAM_WORKERS=str(threads), SCORECAM_INTRA_THREADS="1")
    lib = va.ort_library()
    if lib:
        env["ORT_DYLIB_PATH"] = lib
    how = ["--method", "scorecam", "--preset", "pytorch_grad_cam"] if method == "scorecam" else ["--method", method]
    cmd = [str(binary), "--models-dir", str(CACHE / "models"), "explain", str(image), "--model", package, *how,
           "--format", "json", "--resolution", "model", *flags, "-o", "-"]
    t = time.perf_counter()
    # Run outside the repository so that no config/default.toml applies: built-in defaults only.
    r = subprocess.run(cmd, cwd=CACHE, env=env, capture_output=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RowError("scorecam", r.stderr.decode(errors="replace").strip()[-2000:])
    doc = json.loads(r.stdout)
    sal = doc["explanations"][0]["saliency"]
    m = np.asarray(sal["data"], dtype=np.float32).reshape(sal["height"], sal["width"])
    return m, wall, doc, " ".join(["scorecam", *cmd[1:]])


def compare(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    if ours.shape != ref.shape:
        raise RowError("compare", f"scorecam map {ours.shape} vs pytorch-grad-cam {ref.shape}")
    r = float(np.corrcoef(ours.ravel().astype(np.float64), ref.ravel().astype(np.float64))[0, 1])
    return r, float(np.abs(ours.astype(np.float64) - ref).max())


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


def package_toml(pkg: pathlib.Path) -> str:
    return (pkg / "model.toml").read_text() if (pkg / "model.toml").exists() else ""


def run_row(row_name: str, photo_key: str, image: pathlib.Path, model, args) -> dict:
    row_spec = ROWS[row_name]
    name = row_spec["package"]
    p = PACKAGES[name]
    method = row_spec.get("method", "scorecam")
    row = dict(row=row_name, package=name, photo=photo_key, method=method, module=p["module"], tensor=None,
               image=str(image.relative_to(ROOT) if image.is_relative_to(ROOT) else image))
    t0 = time.perf_counter()
    try:
        full = CACHE / "onnx" / f"{p['builder']}.onnx"
        try:
            export(p["builder"], model, full)
        except Exception as e:  # noqa: BLE001
            raise RowError("export", f"{type(e).__name__}: {e}") from e
        row["tensor"] = tensor = va.find_tensor(full, p["onnx"])

        x = library_input(name, image)
        row["library_transforms"] = ", ".join(repr(t) for t in library_transforms(name))
        hooked, _ = va.hooked_activation(model, resolve_module(model, p["module"]), x)
        row["target_shape"] = list(hooked.shape)
        targets, flags, info = targets_for(row_spec, model, x, image, name)
        row.update(info)
        if method == "eigencam":
            acts = p["reshape"](torch.from_numpy(hooked)).numpy() if p.get("reshape") else hooked
            row.update(eigen_sign(acts))
        ref, ref_s, cached = reference(row_name, model, x, image, targets, info, args)
        row.update(grad_cam_s=round(ref_s, 3), grad_cam_cached=cached)

        pkg, split_out = split(name, full, tensor)
        row["model_toml"] = package_toml(pkg)
        # The extractor's output must be what the library's hook records for the module.
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(pkg / "extractor.onnx"), so, providers=["CPUExecutionProvider"])
        feats = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        if feats.shape != hooked.shape:
            raise RowError("target check", f"extractor output {feats.shape} != hooked {p['module']} output {hooked.shape}")
        row["target_check_max_delta"] = float(np.abs(feats - hooked).max())
        row["target_scale"] = float(np.abs(hooked).max())

        ours, wall, doc, cmd = run_scorecam(args.binary, name, image, flags, args.threads, method)
        row["scorecam_command"] = cmd
        r, d = compare(ours, ref)
        row.update(pearson=r, max_delta=d, scorecam_s=round(doc["timings_ms"]["total_ms"] / 1e3, 3),
                   scorecam_wall_s=round(wall, 3), passes=doc.get("stats", {}).get("forward_passes"))
        judged = (r, d)
        if method == "eigencam":
            fixed = eigencam_fixed(acts, not row["numpy_sign_agrees"], (x.shape[-1], x.shape[-2]))
            row["sign_fixed_pearson"], row["sign_fixed_max_delta"] = compare(ours, fixed)
        row.update(ok=bool(judged[0] >= R_MIN and judged[1] <= DELTA_MAX), status="ok")
    except RowError as e:
        row.update(ok=False, status=f"{e.step} failed", error=e.text)
    except Exception as e:  # noqa: BLE001
        row.update(ok=False, status="error", error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}")
    row["row_s"] = round(time.perf_counter() - t0, 1)
    row["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return row


def error_line(row) -> str:
    """The error's headline: scorecam's own `error: ...` line (after any log lines), else the first line."""
    lines = [l.strip() for l in (row.get("error") or "").strip().splitlines() if l.strip()]
    return next((l for l in lines if l.startswith("error:")), lines[0] if lines else "")


def fmt(row) -> str:
    head = f"{row['row']:26s} {row['photo']:>9s}"
    sign = ""
    if "numpy_sign_agrees" in row:
        sign = f"  numpy sign {'agrees' if row['numpy_sign_agrees'] else 'DIFFERS'} (svd_flip rule)"
    lib = (f"  grad-cam {row['grad_cam_s']:.1f} s{' (cached)' if row.get('grad_cam_cached') else ''}"
           if "grad_cam_s" in row else "")
    if row.get("status") != "ok":
        return f"{head}  {row['status'].upper()}: {error_line(row)}{lib}{sign}"
    text = (f"{head}  r={row['pearson']:.8f}  max|Δ|={row['max_delta']:.2e}{lib}  scorecam {row['scorecam_s']:.1f} s  "
            f"{'PASS' if row['ok'] else 'FAIL'}  [target check {row['target_check_max_delta']:.1e}]{sign}")
    if "sign_fixed_pearson" in row:
        text += f"\n    (vs the library's map made with svd_flip's sign: r={row['sign_fixed_pearson']:.8f}  max|Δ|={row['sign_fixed_max_delta']:.2e})"
    if row.get("note"):
        text += f"\n    note: {row['note']}"
    return text


def markdown(results: dict, photo_keys) -> str:
    out = ["| row | library target | target (module → ONNX tensor) | photo | Pearson r (1 − r) | max \\|Δ\\| | "
           "pytorch-grad-cam s | scorecam s | numpy SVD sign = svd_flip | pass |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ROWS:
        for photo in photo_keys:
            row = results.get(f"{name}/{photo}")
            if row is None:
                continue
            target = f"`{row['module']}` → `{row['tensor']}`" if row.get("tensor") else f"`{row['module']}`"
            what = (row.get("target") or "–").replace("|", "\\|")
            sign = "–" if "numpy_sign_agrees" not in row else ("yes" if row["numpy_sign_agrees"] else "**no**")
            lib = f"{row['grad_cam_s']:.1f}" if "grad_cam_s" in row else "–"
            if row.get("status") != "ok":
                err = error_line(row).replace("|", "\\|")[:200]
                out.append(f"| {name} | {what} | {target} | {photo} | – | – | {lib} | – | {sign} | {row['status']}: {err} |")
                continue
            out.append(f"| {name} | {what} | {target} | {photo} | {row['pearson']:.8f} ({1 - row['pearson']:.0e}) | "
                       f"{row['max_delta']:.1e} | {lib} | {row['scorecam_s']:.1f} | {sign} | "
                       f"{'yes' if row['ok'] else '**no**'} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), metavar="ROW",
                    help="rows to run, names or shell patterns ('eigencam/*'); default: all. Rows: " + ", ".join(ROWS))
    ap.add_argument("--photos", nargs="+", choices=["224", "landscape"], default=["224", "landscape"],
                    help="224: samples/chelsea.png; landscape: the 500×375 JPEG made from it (default: both)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16, help="pytorch-grad-cam's ScoreCAM batch size (its default: 16)")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed before building each model")
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "target" / "release" / "scorecam")
    ap.add_argument("--fresh-reference", action="store_true", help="recompute pytorch-grad-cam's maps even when cached")
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
    print(f"Pillow {PIL.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, grad-cam "
          f"{getattr(pytorch_grad_cam, '__version__', '1.5.7')}, onnx {onnx.__version__}; {args.threads} threads; "
          f"ScoreCAM batch {args.batch_size}; pass: r >= {R_MIN}, max |Δ| <= {DELTA_MAX:g}; scorecam {args.binary}", flush=True)
    imgs = photos(args.photos)
    all_ok = True
    models: dict[str, torch.nn.Module] = {}
    for row_name in wanted:
        builder = PACKAGES[ROWS[row_name]["package"]]["builder"]
        if builder not in models:
            models.clear()  # one model in memory at a time (rows of one model are adjacent)
            try:
                models[builder] = make_model(builder, args.seed)
            except Exception as e:  # noqa: BLE001 (e.g. segmentation-models-pytorch missing)
                for key in imgs:
                    row = dict(row=row_name, package=ROWS[row_name]["package"], photo=key, module=PACKAGES[ROWS[row_name]["package"]]["module"],
                               ok=False, status="model failed", error=f"{type(e).__name__}: {e}")
                    print(fmt(row), flush=True)
                    results[f"{row_name}/{key}"] = row
                all_ok = False
                continue
        for key, image in imgs.items():
            row = run_row(row_name, key, image, models[builder], args)
            print(fmt(row) + f"  ({row['row_s']:.0f} s)", flush=True)
            if row.get("error") and len(row["error"].strip().splitlines()) > 1:
                print("    " + row["error"].strip().replace("\n", "\n    ")[:3000], flush=True)
            all_ok &= row["ok"]
            results[f"{row_name}/{key}"] = row
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=1))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
