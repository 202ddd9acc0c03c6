"""Checks `scorecam explain --preset pytorch_grad_cam` against pytorch-grad-cam 1.5.7's ScoreCAM
on torchvision architectures and timm's DeiT-S. Not part of the test suite.

For each architecture (random weights, `weights=None` / timm's `pretrained=False` under a fixed
seed: pretrained weights cannot be downloaded here) it

  1. exports the model to ONNX (opset 17, dynamic batch, the TorchScript exporter),
  2. cuts it with scripts/tools/split_model.py at the layer pytorch-grad-cam users pick
     (the ARCHS table below; by --module where the row says so, as a user would) and checks
     the extractor's output against that module's output as the library's forward hook
     records it. deit_small is cut at the ViT tutorial's `blocks[-1].norm1`, inside the last
     block's residual: the split tool passes the residual stream to the head as a side input;
     deit_small_block is the same model cut at `blocks[-1]` (separating), the time reference,
  3. explains each photo with `scorecam explain --preset pytorch_grad_cam --format json`
     and with pytorch-grad-cam's ScoreCAM (ClassifierOutputTarget of the same class, the
     model's top class on the library's input tensor),
  4. compares the two 224×224 maps: Pearson r and max |Δ|; a row passes when
     r >= 0.9999 and max |Δ| <= 1e-3.

Photos: samples/chelsea.png (224×224) and a 512×512 made from it deterministically (Pillow
LANCZOS upscale, written to the cache). pytorch-grad-cam gets the torchvision tensor
(transforms.Resize((224, 224)) on the PIL image = Pillow bilinear with antialias, ToTensor,
ImageNet Normalize); scorecam gets the file and resizes it itself (the package's model.toml
asks for `resize_filter = "pillow_bilinear"`). scorecam's map is taken at `--resolution model`
(224×224, the grid of the library's map; for the 224 photo it is the same as `input`).

JPEG photos (`--photos jpeg`, or some of landscape portrait exif6 gray): four JPEGs made
deterministically with Pillow from --jpeg-source (default samples/chelsea.png, LANCZOS):
  landscape  500×375 RGB, quality 90, 4:2:0
  portrait   375×500 RGB, quality 95, 4:4:4
  exif6      stored 500×375 with EXIF Orientation = 6 (upright it is a 375×500 portrait,
             the stored pixels are that portrait turned 90° anticlockwise), quality 85, 4:2:2
  gray       500×375 greyscale (mode L), quality 90, progressive
pytorch-grad-cam gets what its users give it: `Image.open(p).convert("RGB")` (no
ImageOps.exif_transpose: the pixels as stored), the architecture's torchvision resize
(`Resize((224, 224))`, `Resize(256) + CenterCrop(224)` for resnet50, `Resize(342) +
CenterCrop(299)` for inception_v3), ToTensor, Normalize. scorecam gets the JPEG file; its
package is the split tool's output with the matching `resize` / `crop_from` and must say
`[input] exif_orientation = "ignore"` (the split tool's default; checked, a row fails if it
does not). The maps are compared at the model grid (224×224 or 299×299).
--exif-control also runs the exif6 photo with `--exif-orientation apply` (the model sees
the upright photo) and reports how far that map is from the library's: a control that fails.

Same threads on both sides: torch.set_num_threads(T); scorecam with T workers of one
intra-op thread each (its CPU default layout, as scripts/bench/compare_pytorch_grad_cam.py).

Exported and split models, the 512 photo, pytorch-grad-cam's maps (keyed by model, image,
versions, batch size and threads; --fresh-reference recomputes) and each row's result live in
target/verify_architectures/, so reruns are cheap and a row can be run alone:

    scripts/bench/verify_architectures.sh                       # all rows
    scripts/bench/verify_architectures.sh --arch vit_b_16       # one architecture
    scripts/bench/verify_architectures.sh --photos 224          # the 224×224 photo only
    scripts/bench/verify_architectures.sh --arch resnet18 resnet50 inception_v3 --photos jpeg
    scripts/bench/verify_architectures.sh --table               # the cached results as Markdown
    scripts/bench/verify_architectures.sh --table --photos jpeg # the JPEG rows' table

A row whose step fails (export, split, an unsupported layout or model.toml key in scorecam)
is reported with the step and the error text; the other rows still run. Exit status: 0
when every row run passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
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

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / "target" / "verify_architectures"
SPLIT = ROOT / "scripts" / "tools" / "split_model.py"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
R_MIN, DELTA_MAX = 0.9999, 1e-3


def nhwc_to_nchw(t):
    return t.permute(0, 3, 1, 2)


def vit_tokens_to_nchw(t, grid=14):
    # pytorch-grad-cam's ViT tutorial: drop the class token, tokens -> grid, channels first.
    t = t[:, 1:, :].reshape(t.size(0), grid, grid, t.size(2))
    return t.transpose(2, 3).transpose(1, 2)


def deit_small(weights=None):
    # timm's DeiT-S (class token only), as in pytorch-grad-cam's ViT tutorial; weights=None is
    # timm's pretrained=False (random init under the seed).
    import timm
    return timm.create_model("deit_small_patch16_224", pretrained=weights is not None)


def inception_v3(weights=None):
    # aux_logits=False: one output; init_weights=True: torchvision's own initialisation (what
    # weights=None would warn it defaults to).
    return torchvision.models.inception_v3(weights=weights, aux_logits=False, init_weights=True)


# name: (constructor, module picked as pytorch-grad-cam target (as code), what it is,
#        how to find its tensor in the ONNX graph, layout, reshape_transform)
# "after:SCOPE" = the output of the last node (graph order) whose name starts with SCOPE/;
# "tensor:NAME" = that tensor.
# size: the model's input (default 224); resize: "stretch" (Resize((size, size)), the default)
# or "shorter_side_crop" with crop_from (Resize(crop_from) + CenterCrop(size)), the torchvision
# pipeline the library gets and the package's [input] resize / crop_from.
ARCHS = {
    "resnet18": dict(
        ctor=torchvision.models.resnet18, module="model.layer4[-1]",
        onnx="after:/layer4/layer4.1", layout="nchw", reshape=None),
    "resnet50": dict(
        ctor=torchvision.models.resnet50, module="model.layer4[-1]",
        onnx="after:/layer4/layer4.2", layout="nchw", reshape=None,
        resize="shorter_side_crop", crop_from=256),
    "inception_v3": dict(
        # torchvision's Inception_V3_Weights preset: Resize(342) + CenterCrop(299).
        ctor=inception_v3, module="model.Mixed_7c",
        onnx="after:/Mixed_7c", layout="nchw", reshape=None,
        size=299, resize="shorter_side_crop", crop_from=342),
    "mobilenet_v3_large": dict(
        ctor=torchvision.models.mobilenet_v3_large, module="model.features[-1]",
        onnx="after:/features/features.16", layout="nchw", reshape=None),
    "regnet_y_400mf": dict(
        ctor=torchvision.models.regnet_y_400mf, module="model.trunk_output",
        onnx="after:/trunk_output", layout="nchw", reshape=None),
    "densenet121": dict(
        # pytorch-grad-cam hooks model.features; its recorded tensor is then changed in place
        # by the F.relu(inplace=True) in DenseNet.forward, so the library sees the post-ReLU map.
        ctor=torchvision.models.densenet121, module="model.features",
        onnx="tensor:/Relu_output_0", layout="nchw", reshape=None, note="after the in-place ReLU"),
    "convnext_tiny": dict(
        ctor=torchvision.models.convnext_tiny, module="model.features[-1]",
        onnx="after:/features/features.7", layout="nchw", reshape=None),
    "vgg16": dict(
        ctor=torchvision.models.vgg16, module="model.features[-1]",
        onnx="after:/features/features.30", layout="nchw", reshape=None),
    "swin_t": dict(
        ctor=torchvision.models.swin_t, module="model.features[-1]",
        onnx="after:/features/features.7", layout="nhwc", reshape=nhwc_to_nchw),
    "vit_b_16": dict(
        # The library's ViT tutorial picks blocks[-1].norm1 (timm); its torchvision twin
        # encoder.layers[-1].ln_1 sits inside the block's residual, so the graph cannot be cut
        # there: the block output is used (same grid, same reshape_transform).
        ctor=torchvision.models.vit_b_16, module="model.encoder.layers[-1]",
        onnx="after:/encoder/layers/encoder_layer_11", layout="tokens", grid=(14, 14), prefix_tokens=1,
        reshape=vit_tokens_to_nchw),
    "deit_small": dict(
        # The tutorial's own layer: norm1 sits inside the last block's residual (x + attn(norm1(x))),
        # so the graph does not separate there; the split tool passes the residual stream (the
        # block's input) to the head as a side input. Cut by --module, as a user would.
        ctor=deit_small, source="timm", module="model.blocks[-1].norm1", cut_module="blocks[-1].norm1",
        onnx="after:/blocks/blocks.11/norm1", layout="tokens", grid=(14, 14), prefix_tokens=1,
        reshape=vit_tokens_to_nchw),
    "deit_small_block": dict(
        # The same model cut at the last block's output, which separates: the time reference for
        # the norm1 package (same passes, no side input).
        ctor=deit_small, source="timm", module="model.blocks[-1]", cut_module="blocks[-1]",
        onnx="after:/blocks/blocks.11", layout="tokens", grid=(14, 14), prefix_tokens=1,
        reshape=vit_tokens_to_nchw),
}


def resolve_module(model, expr: str):
    return eval(expr, {"model": model})  # noqa: S307 - expressions from the table above


class RowError(Exception):
    def __init__(self, step: str, text: str):
        super().__init__(f"{step}: {text}")
        self.step, self.text = step, text


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_model(name: str, seed: int):
    torch.manual_seed(seed)
    return ARCHS[name]["ctor"](weights=None).eval()


# --------------------------------------------------------------------------- export + split


def export(name: str, model, out: pathlib.Path) -> None:
    if out.exists():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    size = ARCHS[name].get("size", 224)
    x = torch.randn(1, 3, size, size)
    tmp = out.with_suffix(".tmp.onnx")
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # nn.MultiheadAttention's fused path does not export
    try:
        with torch.no_grad():
            torch.onnx.export(
                model, x, str(tmp), opset_version=17, input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    tmp.rename(out)


def find_tensor(full: pathlib.Path, spec: str) -> str:
    kind, _, what = spec.partition(":")
    g = onnx.load(str(full), load_external_data=False).graph
    if kind == "tensor":
        if not any(what in n.output for n in g.node):
            raise RowError("split", f"tensor {what!r} not in the exported graph")
        return what
    last = None
    for n in g.node:
        if n.name.startswith(what + "/"):
            last = n
    if last is None:
        raise RowError("split", f"no node in scope {what!r} in the exported graph")
    return last.output[0]


def split_help() -> str:
    return subprocess.run([sys.executable, str(SPLIT), "--help"], capture_output=True, text=True).stdout


def provenance(name: str) -> list[str]:
    if ARCHS[name].get("source") == "timm":
        import timm
        return ["--description", f"timm {name}, random weights (seed), cut at {ARCHS[name]['module']}",
                "--source", f"timm {timm.__version__} create_model(pretrained=False), exported by scripts/bench/verify_architectures.py",
                "--license", "Apache-2.0 (timm code); random weights"]
    return ["--description", f"torchvision {name}, random weights (seed), cut at {ARCHS[name]['module']}",
            "--source", f"torchvision {torchvision.__version__} {name}(weights=None), exported by scripts/bench/verify_architectures.py",
            "--license", "BSD-3-Clause (torchvision code); random weights"]


def split(name: str, full: pathlib.Path, pkg: pathlib.Path, tensor: str) -> None:
    a = ARCHS[name]
    # Split again when the tensor, the model or the split tool changed.
    stamp = f"{tensor}\n{sha256(full)}\n{sha256(SPLIT)}\n{a.get('resize', 'stretch')} {a.get('crop_from')}"
    if (pkg / "model.toml").exists() and (pkg / ".stamp").exists() and (pkg / ".stamp").read_text() == stamp:
        return
    # By module name where the row says so (what a user types); the tool must pick `tensor`.
    which = ["--module", a["cut_module"]] if a.get("cut_module") else ["--layer", tensor]
    cmd = [sys.executable, str(SPLIT), str(full), *which, "--out", str(pkg), "--force", *provenance(name)]
    if a.get("resize", "stretch") != "stretch":
        cmd += ["--resize", a["resize"], "--crop-from", str(a["crop_from"])]
    help_text = split_help()
    if a["layout"] != "nchw" and "--layout" in help_text:
        cmd += ["--layout", a["layout"]]
        if a["layout"] == "tokens":
            if "--grid" in help_text:
                cmd += ["--grid", "{}x{}".format(*a["grid"])]
            if "--prefix-tokens" in help_text:
                cmd += ["--prefix-tokens", str(a["prefix_tokens"])]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RowError("split", (r.stderr or r.stdout).strip())
    if a.get("cut_module") and f"cutting at its output {tensor!r}" not in r.stdout:
        raise RowError("split", f"--module {a['cut_module']} did not cut at {tensor!r}: {r.stdout.strip()[:500]}")
    (pkg / ".stamp").write_text(stamp)
    (pkg / "split.log").write_text(r.stdout)


def toml_section_set(text: str, section: str, key: str, value: str) -> str:
    """Set key = value in [section] of a small TOML file (added when missing)."""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip() == f"[{section}]"), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    for i in range(start + 1, end):
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[i]):
            return text  # the split tool already wrote it
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    lines.insert(end, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def package_variant(name: str, pkg: pathlib.Path, models_dir: pathlib.Path, pillow: bool) -> str:
    """A package folder in models_dir: the split output (linked) plus the keys this check needs."""
    a = ARCHS[name]
    variant = name + ("-pillow" if pillow else "")
    d = models_dir / variant
    d.mkdir(parents=True, exist_ok=True)
    for f in pkg.iterdir():
        if f.suffix == ".onnx" or f.name.endswith(".onnx.data") or f.name == "labels.txt":
            link = d / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    text = (pkg / "model.toml").read_text()
    if a["layout"] != "nchw":
        text = toml_section_set(text, "target_layer", "layout", f'"{a["layout"]}"')
    if a["layout"] == "tokens":
        text = toml_section_set(text, "target_layer", "grid", "[{}, {}]".format(*a["grid"]))
        text = toml_section_set(text, "target_layer", "prefix_tokens", str(a["prefix_tokens"]))
    if pillow:
        text = toml_section_set(text, "input", "resize_filter", '"pillow_bilinear"')
    (d / "model.toml").write_text(text)
    return variant


# --------------------------------------------------------------------------- the two tools


def library_transforms(name: str) -> list:
    a = ARCHS[name]
    size = a.get("size", 224)
    if a.get("resize", "stretch") == "stretch":
        return [transforms.Resize((size, size))]
    return [transforms.Resize(a["crop_from"]), transforms.CenterCrop(size)]


def library_input(name: str, image: pathlib.Path) -> torch.Tensor:
    # As pytorch-grad-cam's users load a photo: PIL.Image.open + convert("RGB"), no
    # ImageOps.exif_transpose (the pixels as stored), then torchvision's transforms.
    tf = transforms.Compose(library_transforms(name) + [transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    return tf(Image.open(image).convert("RGB"))[None]


def hooked_activation(model, module, x):
    """What pytorch-grad-cam's forward hook holds once the forward pass is over (in-place ops
    after the module included), before reshape_transform."""
    seen = []
    h = module.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        h.remove()
    return seen[0].numpy().copy(), logits.numpy()


def reference(name, model, x, image_key, args):
    """pytorch-grad-cam's ScoreCAM map (cached)."""
    import pytorch_grad_cam
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    a = ARCHS[name]
    with torch.no_grad():
        cls = int(model(x).argmax()) if args.target is None else args.target
    version = getattr(pytorch_grad_cam, "__version__", "1.5.7")
    key = hashlib.sha256(json.dumps([name, args.seed, image_key, torch.__version__, torchvision.__version__, version,
                                     args.batch_size, args.threads, cls]).encode()).hexdigest()[:16]
    path = CACHE / "reference" / f"{name}-{key}.npz"
    if path.exists() and not args.fresh_reference:
        z = np.load(path)
        return z["map"], float(z["seconds"]), cls, True
    cam = ScoreCAM(model=model, target_layers=[resolve_module(model, a["module"])], reshape_transform=a["reshape"])
    cam.batch_size = args.batch_size
    t = time.perf_counter()
    m = cam(input_tensor=x, targets=[ClassifierOutputTarget(cls)])[0]
    seconds = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, map=m, seconds=seconds)
    return m, seconds, cls, False


def ort_library() -> str | None:
    if os.environ.get("ORT_DYLIB_PATH"):
        return os.environ["ORT_DYLIB_PATH"]
    p = ROOT / ".ort" / "cpu" / "libonnxruntime.so.1.31.1"
    return str(p) if p.exists() else None


def run_scorecam(binary, models_dir, variant, image, cls, threads, extra=()):
    env = dict(os.environ, SCORECAM_WORKERS=str(threads), SCORECAM_INTRA_THREADS="1")
    lib = ort_library()
    if lib:
        env["ORT_DYLIB_PATH"] = lib
    cmd = [str(binary), "--models-dir", str(models_dir), "explain", str(image), "--model", variant,
           "--preset", "pytorch_grad_cam", "--format", "json", "--resolution", "model", "--target", str(cls), "-o", "-", *extra]
    t = time.perf_counter()
    # Run outside the repository so that no config/default.toml applies: built-in defaults only.
    r = subprocess.run(cmd, cwd=CACHE, env=env, capture_output=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RowError("scorecam", r.stderr.decode(errors="replace").strip()[-2000:])
    doc = json.loads(r.stdout)
    sal = doc["explanations"][0]["saliency"]
    m = np.asarray(sal["data"], dtype=np.float32).reshape(sal["height"], sal["width"])
    return m, wall, doc


# --------------------------------------------------------------------------- rows


# The JPEG photos: (size as stored, mode, Pillow save options, EXIF orientation or None).
JPEG_PHOTOS = {
    "landscape": ((500, 375), "RGB", dict(quality=90, subsampling=2), None),
    "portrait": ((375, 500), "RGB", dict(quality=95, subsampling=0), None),
    "exif6": ((500, 375), "RGB", dict(quality=85, subsampling=1), 6),
    "gray": ((500, 375), "L", dict(quality=90, progressive=True), None),
}


def make_jpeg(source: pathlib.Path, key: str, out: pathlib.Path) -> None:
    """One of the JPEG photos, made from `source` with Pillow (the same bytes each time for the
    same source and Pillow/libjpeg-turbo)."""
    (w, h), mode, opts, orientation = JPEG_PHOTOS[key]
    img = Image.open(source).convert("RGB")
    if orientation == 6:
        # Upright the photo is a w'×h' = h×w portrait; stored turned 90° anticlockwise, with
        # Orientation = 6 ("turn 90° clockwise to view"): ImageOps.exif_transpose gives it back.
        upright = img.resize((h, w), Image.LANCZOS)
        stored = upright.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation
        opts = dict(opts, exif=exif.tobytes())
    else:
        stored = img.resize((w, h), Image.LANCZOS)
    stored = stored.convert(mode)
    assert stored.size == (w, h)
    tmp = out.with_suffix(".tmp.jpg")
    stored.save(tmp, "JPEG", **opts)
    tmp.rename(out)


def photos(args) -> dict[str, pathlib.Path]:
    if args.images:
        return {pathlib.Path(p).name: pathlib.Path(p) for p in args.images}
    base = ROOT / "samples" / "chelsea.png"
    big = CACHE / "photos" / "chelsea_512.png"
    out = {"224": base, "512": big}
    wanted = [k for k in args.photos if k != "jpeg"] + (list(JPEG_PHOTOS) if "jpeg" in args.photos else [])
    if "512" in wanted and not big.exists():
        big.parent.mkdir(parents=True, exist_ok=True)
        Image.open(base).convert("RGB").resize((512, 512), Image.LANCZOS).save(big)
    source = args.jpeg_source.resolve()
    tag = "chelsea" if source == base.resolve() else f"{source.stem}-{sha256(source)[:8]}"
    for key in JPEG_PHOTOS:
        path = CACHE / "photos" / f"{tag}_{key}.jpg"
        if key in wanted and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            make_jpeg(source, key, path)
        out[key] = path
    return {k: out[k] for k in dict.fromkeys(wanted)}


def run_row(name, photo_key, image, binary, args, model, pkg):
    a = ARCHS[name]
    row = dict(arch=name, photo=photo_key, image=str(image.relative_to(ROOT) if image.is_relative_to(ROOT) else image),
               module=a["module"], layout=a["layout"], tensor=None)
    t0 = time.perf_counter()
    try:
        full = CACHE / "onnx" / f"{name}.onnx"
        try:
            export(name, model, full)
        except RowError:
            raise
        except Exception as e:  # noqa: BLE001
            raise RowError("export", f"{type(e).__name__}: {e}") from e
        tensor = find_tensor(full, a["onnx"])
        row["tensor"] = tensor
        split(name, full, pkg, tensor)

        x = library_input(name, image)
        row["library_transforms"] = ", ".join(repr(t) for t in library_transforms(name))
        # The extractor's output must be what the library's hook records for the module.
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(pkg / "extractor.onnx"), so, providers=["CPUExecutionProvider"])
        feats = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        hooked, _ = hooked_activation(model, resolve_module(model, a["module"]), x)
        if feats.shape != hooked.shape:
            raise RowError("target check", f"extractor output {feats.shape} != hooked {a['module']} output {hooked.shape}")
        row["target_shape"] = list(hooked.shape)
        row["target_check_max_delta"] = float(np.abs(feats - hooked).max())
        row["target_scale"] = float(np.abs(hooked).max())

        ref, ref_s, cls, cached = reference(name, model, x, sha256(image), args)
        row.update(cls=cls, grad_cam_s=round(ref_s, 3), grad_cam_cached=cached)

        pillow = photo_key != "224" or args.pillow_always
        variant = package_variant(name, pkg, CACHE / "models", pillow=pillow)
        try:
            ours, wall, doc = run_scorecam(binary, CACHE / "models", variant, image, cls, args.threads)
        except RowError as e:
            if not (pillow and "resize_filter" in e.text):
                raise
            # This scorecam build does not know the key yet: its own resize, reported as such.
            row["note"] = "resize_filter not supported by this scorecam build: its own resize; " + e.text.splitlines()[-1][:200]
            variant = package_variant(name, pkg, CACHE / "models", pillow=False)
            ours, wall, doc = run_scorecam(binary, CACHE / "models", variant, image, cls, args.threads)
        toml_text = (CACHE / "models" / variant / "model.toml").read_text()
        m_exif = re.search(r'^\s*exif_orientation\s*=\s*"([a-z]+)"', toml_text, re.M)
        row["package_exif_orientation"] = m_exif.group(1) if m_exif else None
        row["answer_exif_orientation"] = doc.get("exif_orientation", doc["explanations"][0].get("exif_orientation"))
        m_resize = re.search(r'^\s*resize\s*=\s*"([a-z_]+)"', toml_text, re.M)
        m_crop = re.search(r'^\s*crop_from\s*=\s*(\d+)', toml_text, re.M)
        row["package_resize"] = (m_resize.group(1) if m_resize else "stretch") + (f" {m_crop.group(1)}" if m_crop else "")
        if photo_key in JPEG_PHOTOS and row["package_exif_orientation"] != "ignore":
            raise RowError("package", f"model.toml says exif_orientation = {row['package_exif_orientation']!r}, "
                                      "not \"ignore\" (what pytorch-grad-cam's users feed: the pixels as stored)")
        if ours.shape != ref.shape:
            raise RowError("compare", f"scorecam map {ours.shape} vs pytorch-grad-cam {ref.shape}")
        r = float(np.corrcoef(ours.ravel().astype(np.float64), ref.ravel().astype(np.float64))[0, 1])
        d = float(np.abs(ours.astype(np.float64) - ref).max())
        row.update(
            pearson=r, max_delta=d, scorecam_s=round(doc["timings_ms"]["total_ms"] / 1e3, 3), scorecam_wall_s=round(wall, 3),
            passes=doc["stats"].get("forward_passes"), ok=bool(r >= R_MIN and d <= DELTA_MAX), status="ok",
        )
        if photo_key == "exif6" and args.exif_control:
            # Control: the same request with --exif-orientation apply (the model sees the photo
            # turned upright) must not match the library's map on the stored pixels.
            other, _, other_doc = run_scorecam(binary, CACHE / "models", variant, image, cls, args.threads,
                                               extra=["--exif-orientation", "apply"])
            row["control_apply"] = dict(
                answer_exif_orientation=other_doc.get("exif_orientation"), shape=list(other.shape),
                pearson=float(np.corrcoef(other.ravel().astype(np.float64), ref.ravel().astype(np.float64))[0, 1])
                if other.shape == ref.shape else None,
                max_delta=float(np.abs(other.astype(np.float64) - ref).max()) if other.shape == ref.shape else None)
    except RowError as e:
        row.update(ok=False, status=f"{e.step} failed", error=e.text)
    except Exception as e:  # noqa: BLE001
        row.update(ok=False, status="error", error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
    row["row_s"] = round(time.perf_counter() - t0, 1)
    row["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return row


def fmt(row) -> str:
    if row.get("status") != "ok":
        return f"{row['arch']:20s} {row['photo']:>4s}  {row['status'].upper()}: {row.get('error', '').splitlines()[0] if row.get('error') else ''}"
    return (f"{row['arch']:20s} {row['photo']:>4s}  r={row['pearson']:.8f}  max|Δ|={row['max_delta']:.2e}  "
            f"grad-cam {row['grad_cam_s']:.1f} s{' (cached)' if row['grad_cam_cached'] else ''}  "
            f"scorecam {row['scorecam_s']:.1f} s (process {row['scorecam_wall_s']:.1f} s)  "
            f"{'PASS' if row['ok'] else 'FAIL'}  [target check {row['target_check_max_delta']:.1e}]"
            + (f"\n    package: resize {row['package_resize']}, exif_orientation {row['package_exif_orientation']}; "
               f"answer's exif_orientation {row.get('answer_exif_orientation')}"
               + (f"; control with --exif-orientation apply: r={row['control_apply']['pearson']:.4f}, "
                  f"max|Δ|={row['control_apply']['max_delta']:.2e} (answer says {row['control_apply']['answer_exif_orientation']})"
                  if row.get("control_apply") and row["control_apply"]["pearson"] is not None else "")
               if row.get("package_exif_orientation") and row["photo"] in JPEG_PHOTOS else "")
            + (f"\n    note: {row['note']}" if row.get("note") else ""))


def markdown_jpeg(results: dict, keys) -> str:
    out = ["| architecture | library's transforms (scorecam's package) | photo | Pearson r (1 − r) | max \\|Δ\\| | pytorch-grad-cam s | scorecam s | pass |",
           "|---|---|---|---|---|---|---|---|"]
    for name in ARCHS:
        for photo in keys:
            row = results.get(f"{name}/{photo}")
            if row is None:
                continue
            size = ARCHS[name].get("size", 224)
            tf = (f"`Resize(({size}, {size}))`" if ARCHS[name].get("resize", "stretch") == "stretch"
                  else f"`Resize({ARCHS[name]['crop_from']})`, `CenterCrop({size})`")
            pkg = row.get("package_resize")
            tf += f" (`{pkg}`, exif `{row.get('package_exif_orientation')}`)" if pkg else ""
            if row.get("status") != "ok":
                err = (row.get("error") or "").splitlines()[0].replace("|", "\\|")[:160]
                out.append(f"| {name} | {tf} | {photo} | – | – | – | – | {row['status']}: {err} |")
                continue
            out.append(f"| {name} | {tf} | {photo} | {row['pearson']:.8f} ({1 - row['pearson']:.0e}) | {row['max_delta']:.1e} | "
                       f"{row['grad_cam_s']:.1f} | {row['scorecam_s']:.1f} | {'yes' if row['ok'] else '**no**'} |")
    return "\n".join(out)


def markdown(results: dict) -> str:
    out = ["| architecture | target (module → ONNX tensor) | layout | photo | Pearson r (1 − r) | max \\|Δ\\| | pytorch-grad-cam s | scorecam s | pass |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name in ARCHS:
        for photo in ("224", "512"):
            row = results.get(f"{name}/{photo}")
            if row is None:
                continue
            target = f"`{row['module']}` → `{row['tensor']}`" if row.get("tensor") else f"`{row['module']}`"
            if row.get("status") != "ok":
                err = (row.get("error") or "").splitlines()[0].replace("|", "\\|")[:160]
                out.append(f"| {name} | {target} | {row['layout']} | {photo} | – | – | – | – | {row['status']}: {err} |")
                continue
            out.append(f"| {name} | {target} | {row['layout']} | {photo} | {row['pearson']:.8f} ({1 - row['pearson']:.0e}) | {row['max_delta']:.1e} | "
                       f"{row['grad_cam_s']:.1f} | {row['scorecam_s']:.1f} | {'yes' if row['ok'] else '**no**'}"
                       f"{' (scorecam resized with its own filter: resize_filter unsupported)' if row.get('note') else ''} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", choices=list(ARCHS), default=list(ARCHS), help="rows to run (default: all, CNNs first)")
    ap.add_argument("--photos", nargs="+", choices=["224", "512", "jpeg", *JPEG_PHOTOS], default=["224", "512"],
                    help="which photos: 224, 512 (the default two), jpeg (the four JPEG photos) or some of them")
    ap.add_argument("--jpeg-source", type=pathlib.Path, default=ROOT / "samples" / "chelsea.png",
                    help="the picture the JPEG photos are made from (default: samples/chelsea.png)")
    ap.add_argument("--images", nargs="+", help="other images instead of the two photos (any size)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16, help="pytorch-grad-cam's ScoreCAM batch size (its default: 16)")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed before building each model")
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "target" / "release" / "scorecam")
    ap.add_argument("--fresh-reference", action="store_true", help="recompute pytorch-grad-cam's maps even when cached")
    ap.add_argument("--pillow-always", action="store_true", help="ask for resize_filter = pillow_bilinear on the 224 photo too")
    ap.add_argument("--target", type=int, metavar="CLASS",
                    help="explain this class instead of the top one (e.g. where a random model's top class gives an "
                         "all-zero map on both sides, which Pearson r cannot judge); results kept as ARCH/PHOTO@CLASS")
    ap.add_argument("--exif-control", action="store_true",
                    help="exif6 photo: also run scorecam with --exif-orientation apply and report how far it is from the library's map")
    ap.add_argument("--table", action="store_true", help="print the cached results as a Markdown table and exit")
    args = ap.parse_args()

    results_path = CACHE / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.table:
        keys = [k for k in args.photos if k != "jpeg"] + (list(JPEG_PHOTOS) if "jpeg" in args.photos else [])
        jpeg_keys = [k for k in keys if k in JPEG_PHOTOS]
        if jpeg_keys:
            print(markdown_jpeg(results, jpeg_keys))
        else:
            print(markdown(results))
        return 0

    torch.set_num_threads(args.threads)
    if not args.binary.exists():
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    import pytorch_grad_cam
    import PIL
    from PIL import features as pil_features
    print(f"Pillow {PIL.__version__} (libjpeg-turbo {pil_features.version('libjpeg_turbo')}), "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}, grad-cam "
          f"{getattr(pytorch_grad_cam, '__version__', '1.5.7')}, onnx {onnx.__version__}; {args.threads} threads; "
          f"ScoreCAM batch {args.batch_size}; pass: r >= {R_MIN}, max |Δ| <= {DELTA_MAX:g}", flush=True)
    imgs = photos(args)
    all_ok = True
    for name in args.arch:
        model = make_model(name, args.seed)
        pkg = CACHE / "packages" / name
        for key, image in imgs.items():
            row = run_row(name, key, image, args.binary, args, model, pkg)
            print(fmt(row) + f"  ({row['row_s']:.0f} s)", flush=True)
            if row.get("error") and len(row["error"].splitlines()) > 1:
                print("    " + row["error"].replace("\n", "\n    ")[:3000], flush=True)
            all_ok &= row["ok"]
            if not args.images:
                results[f"{name}/{key}" + (f"@{args.target}" if args.target is not None else "")] = row
                results_path.parent.mkdir(parents=True, exist_ok=True)
                results_path.write_text(json.dumps(results, indent=1))
        del model
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
