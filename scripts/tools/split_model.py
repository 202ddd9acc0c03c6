#!/usr/bin/env python3
"""Split a whole ONNX image model (classifier, segmenter, embedder, detector) into a scorecam model package.

scorecam needs a model in two pieces: an extractor (image -> the activations of the
target layer) and a head (those activations -> class scores, a segmentation map or an
embedding). This tool cuts a single ONNX graph (a ResNet, ConvNeXt, EfficientNet, ViT,
DeiT, Swin, DenseNet, DeepLabV3 ... exported from PyTorch or elsewhere) at one of its
intermediate tensors with onnx.utils.Extractor:

  extractor.onnx   graph input -> LAYER      renamed: input -> features (then any side inputs)
  head.onnx        LAYER -> graph output     renamed: features (then any side inputs) -> logits
                                             (a boxes detector: -> boxes, scores)
  labels.txt       --labels, or class_0 .. class_{C-1} (none for an embedding head)
  model.toml       input size, channels, resize mode and filter, mean/std, provenance, target
                   layer, head kind

Only tensor names and the declared shapes of the four package inputs/outputs change (node
inputs/outputs are rewritten; a tensor that already used one of the new names gets a fresh
one); nodes, weights and attributes are kept as they are.

Requirements on the model: one float32 image input N x 3 x H x W (RGB) or N x 1 x H x W
(greyscale), one output (two for a boxes detector), and a dynamic batch dimension. H x W must
be fixed in the model or given with --input-size.

Heads (model.toml [head]; --head, default inferred from the output's rank)
  classes        output [N, C]: class scores (a 2-D output). --activation softmax (one class
                 per image, the default) or sigmoid (multi-label; a one-output sigmoid head is a
                 binary classifier: target 1 = the logit, target 0 = -logit, as pytorch-grad-cam's
                 BinaryClassifierOutputTarget). labels.txt: C lines (a one-output sigmoid head:
                 1 line, or 2 = negative, positive; default "negative", "positive").
  segmentation   output [N, C, H, W] per-pixel class logits (a 4-D output; any H x W, e.g. the
                 input size after the model's own upsampling); --head-layout nhwc for
                 [N, H, W, C]. labels.txt: C lines. Torchvision's segmentation models return a
                 dict: export a wrapper returning model(x)["out"]; the head then contains the
                 model's final upsampling to the input size (its read of the input's shape is
                 rewritten, see below).
  embedding      output [N, D] feature vector, explained by its similarity to a reference;
                 must be asked for (--head embedding; a 2-D output is otherwise classes); no
                 labels.txt.
  detection      raw proposals, before non-maximum suppression (a 3-D output or two outputs).
                 --detection-format (implies --head detection):
                   yolo_v8  one output [N, 4 + C, A]: cx, cy, w, h (input pixels) then C class
                            scores per anchor (YOLOv8/v11 exported without NMS). Inferred when
                            A > 4 + C (more anchors than attributes); otherwise give the flag.
                   yolo_v5  one output [N, A, 5 + C]: cx, cy, w, h, objectness, C scores. Never
                            inferred ([N, A, 4 + C], a transposed YOLOv8 output, looks the same).
                   boxes    two outputs, boxes [N, K, 4] (x1, y1, x2, y2) then scores [N, K, C];
                            the head keeps both, in that order (named boxes, scores). Inferred
                            for two outputs of those shapes.
                 --scores probabilities (the default: YOLOv8's export applies the sigmoid) or
                 logits (scorecam applies a sigmoid to class scores and objectness); class
                 scores outside 0..1 on the verification batch are refused without --scores.
                 --score-threshold (0.25) and --iou-threshold (0.45): model.toml's default
                 prediction thresholds (greedy class-wise NMS). labels.txt: C lines.
                 Ultralytics' preprocessing is a letterbox: give --resize letterbox --pad-value
                 114 --resize-filter opencv_linear --mean 0 0 0 --std 1 1 1 (pixels / 255).
                 The target layer of a YOLO head is usually a neck level that the head reads
                 with others (model.model[-2] of YOLOv8): the tool passes those as side inputs.

Greyscale models (input N x 1 x H x W): model.toml says [input] channels = 1 and scorecam
converts photos like Pillow's Image.convert("L") before resizing. --mean and --std take one
value each and have no default (there is no common greyscale normalisation: give the values
of your pipeline, e.g. --mean 0.5 --std 0.25); RGB models take three values each, ImageNet's
by default. RGBA models (N x 4 x H x W): channels = 4, the photo's alpha is kept (255 where
it has none; Pillow's premultiplied-alpha resize), four --mean and --std values, no default.

Choosing the target layer
  --layer TENSOR     cut at this tensor (names as --list-layers prints them)
  --module NAME      cut at the output of a PyTorch module: `layer4`, `features.7`,
                     `features[-1]`, `encoder.layers.encoder_layer_11` (or `encoder.layers.11`),
                     `blocks.11`, `layers.3`, or an ONNX scope `/layer4/layer4.2`. The module's
                     nodes are found by their names (the TorchScript exporter writes
                     `/layer4/layer4.1/relu_1/Relu`: module layer4.1.relu, called a second time)
                     or by the `pkg.torch.onnx.name_scopes` metadata of the dynamo exporter; a
                     module path may also match below a wrapper (`model.layer4`). The cut is the
                     module's output: the last tensor (in topological order) made inside it and
                     used outside it. The tool prints which tensor it chose; when nothing
                     matches it lists close module names. When that tensor feeds nothing but an
                     element-wise activation outside the module (DenseNet's `features`, then
                     F.relu(..., inplace=True) in forward), it warns and names the activation's
                     output: an in-place activation overwrites the tensor pytorch-grad-cam's hook
                     holds, so the library's maps come from that output.
  --list-layers [SUBSTRING]   rank the candidate tensors, best first, and exit (also --filter
                     SUBSTRING; matches tensor name, op type and module, case-insensitive).
                     The model is run once with ONNX Runtime (batches of 1 and 2) to learn every
                     tensor's real shape and batch axis. Ranking: usable maps (batch first,
                     spatial h, w not both 1, layout decidable; token grids count as spatial)
                     that separate the graph come first, latest in the graph first; then maps
                     whose layout needs --layout; then tensors with a skip connection around
                     them, noted "does not separate: N side inputs" (the tensors the package
                     would pass; "the image among them" when the model reads its input image
                     after the cut); then 1x1 maps, tensors whose batch is not the first axis,
                     and the like.
                     --top N rows (default 20, 0 = all).

A cut that separates the graph (every path from the image to the output goes through it)
gives a plain extractor/head pair. Reading only the *shape* of a tensor from before the cut
is fine when that shape is fixed apart from the batch (torch's `x.view(x.size(0), -1)`,
`F.interpolate(x, size=skip.shape[-2:])`): the read is rewritten as [batch of the features,
fixed dims...].

Side inputs (cuts that do not separate): where the part after the cut also reads tensors
computed before it (a residual around the cut: a transformer block's `x + attn(norm1(x))` cut
at norm1; a U-Net decoder reading the encoder's stages; a detector's neck and head reading
several backbone levels), those tensors become extra outputs of the extractor (after
`features`) and extra inputs of the head, of the same name (characters outside
[A-Za-z0-9_./:-] replaced by _, and made distinct from input/features/logits), declared with
concrete dims and a dynamic batch; the tool prints which, and model.toml lists them in a
comment. Each is traced back to a tensor the extractor computes anyway (the level the head
reads, not the head's own convolution of it), unless it comes from a branch of its own
straight from the image. They must be float32 with the batch first. A model that reads its
input image itself after the cut (a global residual `out + x`) gets an Identity copy of the
image as a side input named `image`. scorecam recomputes side inputs on every full pass
(Score-CAM, SS-CAM, IS-CAM, RISE: each pass costs what it costs at any cut; EigenCAM needs
only the clean pass) and keeps them at their clean values on head-only passes (Ablation-CAM,
Recipro-CAM), which is what a PyTorch forward hook replacing the layer's output does
(pytorch-grad-cam's AblationCAM); the check below feeds them. --no-side-inputs refuses such cuts instead, naming
the tensors that go around the cut and a separating tensor after it. (--side-inputs, which
used to be needed, is the default and still accepted.)

Feature-map layouts (model.toml [target_layer] layout, grid, prefix_tokens)
  nchw     [N, C, h, w]                 convnets (ResNet, ConvNeXt, EfficientNet, DenseNet)
  nhwc     [N, h, w, C]                 channels-last stages (Swin, some ConvNeXt blocks)
  tokens   [N, prefix + h*w, C]         transformers: `prefix` leading non-grid tokens (1:
                                        ViT class token; 2: DeiT class + distillation token),
                                        then the h x w patch grid, row by row
The layout is inferred and the decision printed with its reason; an ambiguous tensor is
refused, never guessed:
  4-D: [N, a, b, c] is nchw when b x c matches the H x W input at one integer stride s
       (b, c each floor or ceil of H/s, W/s; b = c for a square input) and a x b does not;
       nhwc the other way round. Both ([N, 7, 7, 7] on a 28 x 28 input) or neither: refused,
       give --layout nchw|nhwc.
  3-D: [N, T, C] is tokens when exactly one (prefix p in 0..2, grid h x w) has T = p + h*w with
       h x w matching the input at one stride (the patch size); several or none: refused,
       give --grid HxW and/or --prefix-tokens N (e.g. 5 for ViT with 4 register tokens).
  Overrides: --layout nchw|nhwc|tokens, --grid HxW, --prefix-tokens N (--grid or
  --prefix-tokens alone imply tokens).
Refused as target layers: 1x1 maps ([N, 2048, 1, 1] after global pooling: nothing left to
localise; the message names the last usable map before it), 2-D [N, C] tensors, and tensors
whose batch is not the first axis (the sequence-first [T, N, C] tensors inside PyTorch's
nn.MultiheadAttention, or [N*heads, ...]); the message says so and names a usable tensor.

Concrete shapes: exporters often leave dims after a reshape/permute symbolic. The extractor
is run on a trial batch with ONNX Runtime and the package declares concrete dims: extractor
input [batch, C, H, W] and output features [batch, ...], head input the same features and
output logits [batch, C] ([batch, C, H, W] segmentation, [batch, D] embedding); only the
batch stays dynamic (named "batch").

Softmax / Sigmoid: if a classes graph ends in a Softmax it is dropped from the head, so the
head yields logits (scorecam applies the softmax itself); a final Sigmoid is dropped the
same way and the package says activation = "sigmoid". --keep-activation (or its old name
--keep-softmax) keeps either. Segmentation and embedding heads keep their graph as it is.

Class-token heads (ViT's x[:, 0], DeiT's x[:, 0] and x[:, 1]): when the head's output reads only
some token rows, the row selection is moved up through the operators that compute each row on
its own (LayerNorm over channels, matrix products with weights, element-wise ops, residual adds:
a block's output projection and MLP), so the head computes those for the rows it reads only;
attention, which mixes rows, still sees every row. Cut at the ViT tutorial's norm1, DeiT-S's
head-only passes (Ablation-CAM) took half the time and its Score-CAM passes 6 % less, maps
unchanged. The narrowed head must give the unnarrowed one's outputs (within the tolerance
below) or it is not used.

Check: head(extractor(x)) (fed the side inputs too) must equal the full model's output(s)
(after a softmax or sigmoid when one was dropped) on a random batch of 2 (ONNX Runtime, CPU),
to within
    max |Δ| <= --tolerance + --rtol * max |full model output|
(defaults 1e-5 and 1e-4). ONNX Runtime fuses operators across the cut in the whole model
but cannot in the split, so float32 rounding differences of ~1e-7 relative are normal; a
wrong split is off by far more. A failure that looks like rounding says so and suggests a
--tolerance that would accept it.

Batch size and subnormals (model.toml [engine]): for transformer-style graphs (LayerNormalization,
Softmax and MatMul: ViT, DeiT, Swin; --measure-batch on for any graph, off for none) the tool
times the written package as scorecam's engine runs it on the CPU: one worker process per
core (--measure-workers), each with a one-thread session pair, batches of --batch-candidates
(1 2 4 8), with subnormal floats kept and treated as zero (ONNX Runtime's
session.set_denormal_as_zero; --flush-denormals off skips it), three interleaved rounds, the
workers' thread CPU time per image (robust to other load on a shared machine). It writes
  max_batch_size    the smallest batch within 2 % of the fastest (scorecam's batch for this
                    model on the CPU unless engine.models.NAME.max_batch_size is configured)
  flush_denormals   true when flushing was more than 2 % faster and the head's outputs equal
                    the unflushed ones within --tolerance + --rtol x max |output|
  measured          the figures, the machine and the load
A softmax over masked inputs makes many subnormals, which take a slow path in x86
multiply-adds: Swin-T's passes took ~25 % less CPU time flushed, with the same logits.
--batch-size B writes B without measuring. ONNX Runtime's transformer optimizer
(onnxruntime.transformers.optimizer) was measured too and is not applied: on torchvision's
ViT-B/16 and Swin-T it recognises no attention, and its other fusions (LayerNormalization,
BiasGelu) are what a session at optimisation level 3 already does (no change in time).

Resize (model.toml [input] resize): stretch (the whole photo to W x H: torchvision's
Resize((H, W))), shorter_side_crop (shorter side to --crop-from, then the centre W x H:
Resize(crop_from) + CenterCrop) or letterbox (keep the aspect ratio: scale s = min(W/w0,
H/h0), resize to round(w0*s) x round(h0*s) (half to even, at least 1), paste at
(floor((W-nw)/2), floor((H-nh)/2)) on a W x H canvas of --pad-value (0..255 before
normalisation, default 114): Ultralytics' letterbox with --resize-filter opencv_linear).

Resize filter (model.toml [input] resize_filter): pillow_bilinear (Pillow's antialiased
bilinear, what torchvision's PIL-based transforms use; the default) or opencv_linear
(OpenCV's INTER_LINEAR, no antialiasing); pick what the model was trained/evaluated with.

EXIF orientation (model.toml [input] exif_orientation): ignore (the default: the model sees
a photo's pixels as stored, as PIL.Image.open and torchvision's transforms give them, so
what pytorch-grad-cam's users compare against) or apply (turned upright by the EXIF tag
first, as ImageOps.exif_transpose does). Maps are drawn on the upright photo either way.

model.toml written:
  description, source, license
  [input]         width, height, channels (1 only: 3 is the default and not written), resize,
                  crop_from (shorter_side_crop only), pad_value (letterbox only),
                  resize_filter, exif_orientation, mean, std (one value per channel)
  [target_layer]  description, layout ("nchw" | "nhwc" | "tokens", always written),
                  grid = [h, w] and prefix_tokens (tokens only)
  [head]          kind ("classes" | "segmentation" | "embedding" | "detection"), activation
                  ("softmax" | "sigmoid"; classes only), layout ("nchw" | "nhwc"; segmentation
                  only), format, scores, score_threshold, iou_threshold (detection only)

Examples:
  python scripts/tools/split_model.py resnet50.onnx --list-layers
  python scripts/tools/split_model.py resnet50.onnx --module layer4 \\
      --out models/resnet50 --labels imagenet_labels.txt --resize shorter_side_crop --crop-from 256
  python scripts/tools/split_model.py vit_b_16.onnx --list-layers encoder_layer_11
  python scripts/tools/split_model.py vit_b_16.onnx --module encoder.layers.encoder_layer_11 --out models/vit_b_16
  python scripts/tools/split_model.py swin_t.onnx --module 'features[-1]' --out models/swin_t
  python scripts/tools/split_model.py resnet50.onnx --module layer4 --out models/resnet50 \
      --int8 --calibrate photos/          # and models/resnet50-int8, with its measured fidelity
  python scripts/tools/split_model.py model.onnx --layer /stage4/Add_output_0 --layout nhwc --out models/x
  python scripts/tools/split_model.py deeplabv3.onnx --module backbone --out models/deeplab   # [N, 21, H, W]: segmentation
  python scripts/tools/split_model.py chest_xray.onnx --module features --out models/cxr \
      --activation sigmoid --mean 0.5 --std 0.25                                   # 1-channel, multi-label
  python scripts/tools/split_model.py resnet50_embed.onnx --module layer4 --head embedding --out models/embed
  python scripts/tools/split_model.py deit_s.onnx --module 'blocks[-1].norm1' --out models/deit_s   # inside a residual
  python scripts/tools/split_model.py unet.onnx --module encoder.layer4 --out models/unet   # skips to the decoder
  python scripts/tools/split_model.py yolov8n.onnx --module model.21 --out models/yolov8n \
      --head detection --labels coco.txt --resize letterbox --pad-value 114 --resize-filter opencv_linear \
      --mean 0 0 0 --std 1 1 1                                                  # [N, 84, 8400]: yolo_v8

Needs only onnx, onnxruntime and numpy (pip install -r scripts/setup/requirements_tools.txt).
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.checker
import onnx.numpy_helper
import onnx.shape_inference
import onnx.utils
from onnx import TensorProto, helper

INPUT, FEATURES, LOGITS = "input", "features", "logits"
BATCH = "batch"
FILES = ("extractor.onnx", "head.onnx", "labels.txt", "model.toml")
LAYOUTS = ("nchw", "nhwc", "tokens")
RESIZE_FILTERS = ("pillow_bilinear", "opencv_linear")
RESIZES = ("stretch", "shorter_side_crop", "letterbox")
HEAD_KINDS = ("classes", "segmentation", "embedding", "detection")
ACTIVATIONS = ("softmax", "sigmoid")
DETECTION_FORMATS = ("yolo_v8", "yolo_v5", "boxes")
SCORE_SCALES = ("probabilities", "logits")
BOXES, SCORES = "boxes", "scores"  # a boxes detector's two head outputs
RESERVED_NAMES = (INPUT, FEATURES, LOGITS, BOXES, SCORES)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DEFAULT_PAD_VALUE = 114  # Ultralytics' letterbox border
DEFAULT_TOP = 20
MAX_PREFIX_TOKENS, MAX_GRID_SIDE = 16, 1024  # what scorecam's model.toml accepts
SHAPE_OPS = ("Shape", "Size")


class SplitError(Exception):
    pass


# --------------------------------------------------------------------------- shapes


def dims_of(vi: onnx.ValueInfoProto) -> list | None:
    """[int | str | None, ...] (None: unknown dim), or None when the rank is unknown."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def fmt_dims(dims) -> str:
    if dims is None:
        return "unknown shape"
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def fmt_batch_first(dims) -> str:
    """[N, ...] with the concrete non-batch dims."""
    return "[" + ", ".join(["N", *map(str, dims)]) + "]"


def is_dynamic(d) -> bool:
    return not isinstance(d, int)


def set_dims(vi: onnx.ValueInfoProto, dims) -> None:
    """Declare dims (str: symbolic, int: fixed) on a tensor value_info."""
    shape = vi.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = int(d)


def is_default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


# --------------------------------------------------------------------------- graph helpers


def subgraphs(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def all_names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer}
    names.update(vi.name for vi in list(graph.input) + list(graph.output) + list(graph.value_info))
    for node in graph.node:
        names.update(n for n in node.input if n)
        names.update(n for n in node.output if n)
        for g in subgraphs(node):
            names |= all_names(g)
    return names


def rename(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Rename tensors everywhere in graph (simultaneously), subgraphs included."""

    def sub(name: str) -> str:
        return mapping.get(name, name)

    for t in graph.initializer:
        t.name = sub(t.name)
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        vi.name = sub(vi.name)
    for node in graph.node:
        for i, n in enumerate(node.input):
            node.input[i] = sub(n)
        for i, n in enumerate(node.output):
            node.output[i] = sub(n)
        for g in subgraphs(node):
            rename(g, mapping)


def rename_to(model: onnx.ModelProto, wanted: dict[str, str]) -> None:
    """Give tensors the wanted names; other tensors already using those names move aside."""
    mapping = {old: new for old, new in wanted.items() if old != new}
    if not mapping:
        return
    taken = all_names(model.graph)
    targets = set(mapping.values())
    reserved = taken | targets
    for name in sorted(taken):
        if name in targets and name not in mapping:
            k = 1
            while f"{name}_{k}" in reserved:
                k += 1
            mapping[name] = f"{name}_{k}"
            reserved.add(mapping[name])
    rename(model.graph, mapping)


def image_dependent(nodes, graph_input: str, through: str | None = None, data_only: bool = False) -> set[str]:
    """Tensors computed from graph_input, not counting paths through `through` (the cut), nor
    (data_only) paths through shape reads."""
    dep = {graph_input}
    for node in nodes:  # topologically sorted
        if data_only and node.op_type in SHAPE_OPS and is_default_domain(node):
            continue
        if any(n in dep for n in node.input if n and n != through):
            dep.update(o for o in node.output if o)
    return dep


def rewrite_shape_reads(head: onnx.ModelProto, graph_input: str, cut: str, known: dict[str, list[int]]) -> list[str]:
    """Replace Shape(t), for t computed before the cut, by [batch of the cut tensor, fixed dims of t].

    Exporters turn `x.view(x.size(0), -1)` into Shape(x) -> Gather(0) -> ... -> Reshape, so the
    head may read the shape of the image or of another tensor before the cut. known[t] is
    t's shape with the batch first (known[t][0] is ignored); the batch of every such t is the
    cut tensor's batch, so this is exact. Returns the tensors whose shape reads were rewritten.
    """
    before = image_dependent(head.graph.node, graph_input, through=cut) - {cut}
    rewritten: list[str] = []
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in head.graph.node:
        src = node.input[0] if node.input else ""
        if node.op_type != "Shape" or not is_default_domain(node) or src not in before or src not in known:
            nodes.append(node)
            continue
        dims = known[src]
        rank = len(dims)
        start = next((a.i for a in node.attribute if a.name == "start"), 0)
        end = next((a.i for a in node.attribute if a.name == "end"), None)
        axes = list(range(rank))[start:end]
        out = node.output[0]
        p = f"{out}__scorecam_shape{count}"

        def const(name, vals):
            return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(vals)], vals))

        nodes += [
            helper.make_node("Shape", [cut], [f"{p}_cut"]),
            const(f"{p}_zero", [0]),
            helper.make_node("Gather", [f"{p}_cut", f"{p}_zero"], [f"{p}_batch"], axis=0),
        ]
        if rank == 1:
            nodes.append(helper.make_node("Identity", [f"{p}_batch"], [f"{p}_all"]))
        else:
            nodes += [
                const(f"{p}_rest", [int(d) for d in dims[1:]]),
                helper.make_node("Concat", [f"{p}_batch", f"{p}_rest"], [f"{p}_all"], axis=0),
            ]
        if axes == list(range(rank)):
            nodes.append(helper.make_node("Identity", [f"{p}_all"], [out]))
        else:
            nodes += [
                const(f"{p}_idx", axes),
                helper.make_node("Gather", [f"{p}_all", f"{p}_idx"], [out], axis=0),
            ]
        count += 1
        if src not in rewritten:
            rewritten.append(src)
    if count:
        del head.graph.node[:]
        head.graph.node.extend(nodes)
        prune(head)
    return rewritten


def prune(model: onnx.ModelProto) -> None:
    """Drop nodes no graph output depends on, and initializers/value_info nothing uses any more."""
    g = model.graph
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output if o):
            keep.append(node)
            needed.update(n for n in node.input if n)
            for sg in subgraphs(node):
                needed |= all_names(sg)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    vis = [vi for vi in g.value_info if vi.name in needed]
    del g.value_info[:]
    g.value_info.extend(vis)


def check_separates(head: onnx.ModelProto, cut: str, graph_input: str) -> None:
    """Nothing in the head may depend on the image except through the cut tensor."""
    from_image, from_cut = {graph_input}, {cut}
    crossing: list[str] = []
    uses_image = False
    for node in head.graph.node:  # topologically sorted
        ins = [n for n in node.input if n]
        image_ins = [n for n in ins if n in from_image]
        if image_ins:
            uses_image = True
            from_image.update(o for o in node.output if o)
        if any(n in from_cut for n in ins):
            from_cut.update(o for o in node.output if o)
            crossing += [n for n in image_ins if n not in crossing]
    if uses_image:
        names = crossing or [graph_input]
        raise SplitError(
            f"the graph does not separate at {cut!r}: after the cut, the model also reads "
            f"{', '.join(repr(m) for m in names[:5])}{' …' if len(names) > 5 else ''}, computed from the input "
            "before the cut (a skip connection around it?). Pick a tensor that every path from the input to the "
            "output goes through (--list-layers ranks those first), or leave out --no-side-inputs to pass such "
            "tensors to the head as extra inputs."
        )


def crossings(head: onnx.ModelProto, cut: str, graph_input: str, outputs: list[str]) -> list[str]:
    """Tensors the part after the cut reads that depend on the input but not on the cut.

    Walks the head as the Extractor cut it from [cut] (so it still holds whatever computes
    tensors before the cut that the rest needs, back to the image): a node that depends on
    the cut reading a tensor that depends only on the image is where a skip connection crosses
    the cut. Shape reads should be rewritten first (they then read the cut). The graph input
    itself may be among them (the image used after the cut). Raises when an output does not
    depend on the cut at all.
    """
    from_image, from_cut = {graph_input}, {cut}
    found: list[str] = []
    for node in head.graph.node:  # topologically sorted
        ins = [n for n in node.input if n]
        if any(n in from_cut for n in ins):
            from_cut.update(o for o in node.output if o)
            found += [n for n in ins if n in from_image and n not in found]
        elif any(n in from_image for n in ins):
            from_image.update(o for o in node.output if o)
    loose = [o for o in outputs if o not in from_cut]
    if loose:
        raise SplitError(f"the output {loose[0]!r} does not depend on {cut!r}: the head would not read the target "
                         "layer; cut at a tensor every output depends on")
    return found


def image_read_after_cut(head: onnx.ModelProto, cut: str, graph_input: str) -> str:
    """A node after the cut that reads the image itself (for the error message)."""
    from_cut = {cut}
    for node in head.graph.node:
        ins = [n for n in node.input if n]
        if any(n in from_cut for n in ins):
            from_cut.update(o for o in node.output if o)
            if graph_input in ins:
                article = "an" if node.op_type[:1] in "AEIOU" else "a"
                return f"{node.op_type} node {node.name!r}" if node.name else f"{article} {node.op_type} node"
    return "a node"


def check_closed(sub: onnx.ModelProto, cut: str, part: str) -> None:
    """Every tensor the sub-graph reads must be made inside it (or be the cut/initializer)."""
    available = {t.name for t in sub.graph.initializer} | {vi.name for vi in sub.graph.input} | {""}
    missing: list[str] = []
    for node in sub.graph.node:
        missing += [n for n in node.input if n not in available and n not in missing]
        available.update(node.output)
    if missing:
        raise SplitError(
            f"the graph does not separate at {cut!r}: the {part} also needs {', '.join(repr(m) for m in missing[:5])}"
            f"{' …' if len(missing) > 5 else ''}, computed before the cut (a skip connection around it?). "
            "Pick a tensor that every path from the input to the output goes through."
        )


def separating_tensors(graph: onnx.GraphProto, graph_input: str, output) -> set[str]:
    """Tensors that every data path from the input to `output` (or to each of several outputs)
    goes through (dominators).

    Shape/Size reads are not data paths (their results are fixed apart from the batch, and
    the split rewrites them). Nodes are vertices of their own, so the outputs of one node
    (Split -> q, k, v) do not dominate each other.
    """
    idom: dict = {graph_input: None}
    depth: dict = {graph_input: 0}

    def lca(a, b):
        while a != b:
            if depth[a] < depth[b]:
                a, b = b, a
            a = idom[a]
        return a

    for k, node in enumerate(graph.node):
        if node.op_type in SHAPE_OPS and is_default_domain(node):
            continue
        preds = [n for n in node.input if n and n in idom]
        if not preds:
            continue
        d = preds[0]
        for p in preds[1:]:
            d = lca(d, p)
        vid = ("node", k)
        idom[vid], depth[vid] = d, depth[d] + 1
        for o in node.output:
            if o:
                idom[o], depth[o] = vid, depth[vid] + 1
    result: set[str] | None = None
    for name in as_list(output):
        if name not in idom:
            return set()
        out, v = set(), idom[name]
        while v is not None:
            if isinstance(v, str) and v != graph_input:
                out.add(v)
            v = idom[v]
        result = out if result is None else result & out
    return result or set()


def cut_ancestors(graph: onnx.GraphProto, cut: str) -> set[str]:
    """The tensors the extractor computes anyway: those the cut is computed from (and itself)."""
    producers = {o: node for node in graph.node for o in node.output if o}
    seen, stack = set(), [cut]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        node = producers.get(t)
        if node is not None:
            stack += [n for n in node.input if n]
    return seen


def pull_back(nodes, frontier: list[str], available: set[str], graph_input: str) -> list[str]:
    """The side tensors for the tensors `frontier` the part after the cut reads: each one is
    traced back (through the nodes that make it, not through shape reads) to tensors the
    extractor computes anyway (`available`: float tensors the cut is computed from), which the
    head then takes instead, so the head keeps the nodes in between (a detector's per-level
    convolutions on the backbone/neck levels it reads, not their outputs). A tensor whose trace
    reaches the image itself (a branch of its own from the input) stays as it is."""
    producers = {o: node for node in nodes for o in node.output if o}
    out: list[str] = []
    for t in frontier:
        if t in available or t == graph_input:
            out += [t] if t not in out else []
            continue
        sources, seen, stack, own_branch = [], set(), [t], False
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            if u == graph_input:
                own_branch = True
                break
            if u in available:
                sources.append(u)
                continue
            node = producers.get(u)
            if node is None or (node.op_type in SHAPE_OPS and is_default_domain(node)):
                continue
            stack += [n for n in node.input if n]
        for u in ([t] if own_branch or not sources else sources):
            if u not in out:
                out.append(u)
    return out


def float_tensors(model_or_graph) -> set[str]:
    g = model_or_graph.graph if isinstance(model_or_graph, onnx.ModelProto) else model_or_graph
    return {vi.name for vi in list(g.value_info) + list(g.input) + list(g.output)
            if vi.type.tensor_type.elem_type == TensorProto.FLOAT}


def skip_tensors(graph: onnx.GraphProto, cut: str, graph_input: str) -> list[str]:
    """Tensors computed from the input without the cut that the part after the cut reads (data
    reads: Shape/Size reads are not counted, the split rewrites them), traced back to tensors
    the extractor computes anyway (pull_back): the side inputs a split passes. The graph input
    itself is among them when a node after the cut reads the image."""
    desc = descendants(graph, cut)
    before = image_dependent(graph.node, graph_input, through=cut, data_only=True)
    skips: list[str] = []
    for node in graph.node:
        if node.op_type in SHAPE_OPS and is_default_domain(node):
            continue
        if any(n in desc for n in node.input if n):
            skips += [n for n in node.input if n and n in before and n not in desc and n not in skips]
    available = (cut_ancestors(graph, cut) - {cut}) & float_tensors(graph)
    return pull_back(graph.node, skips, available, graph_input)


def check_dominates(graph: onnx.GraphProto, cut: str, graph_input: str, output, side_inputs: bool = True) -> list[str]:
    """The tensors that skip the cut (computed before it, read after it; the graph input among
    them when a node after the cut reads the image), which the split passes to the head as side
    inputs; [] for a cut that separates. Without side_inputs (--no-side-inputs) such a cut is
    refused, naming them."""
    if cut in separating_tensors(graph, graph_input, output):
        return []
    skips = skip_tensors(graph, cut, graph_input)
    if not skips:
        raise SplitError(f"the graph does not separate at {cut!r}: the output does not depend on it")
    if side_inputs:
        return skips
    n = len(skips)
    them = "this tensor" if n == 1 else f"these {n} tensors"
    image = " (the image among them: an Identity copy of it)" if graph_input in skips else ""
    raise SplitError(
        f"the graph does not separate at {cut!r}: after the cut, the model also reads "
        f"{', '.join(repr(m) for m in skips[:5])}{' …' if n > 5 else ''}, computed from the input before "
        "the cut (a skip connection / residual around it), and --no-side-inputs refuses such cuts. Without it the "
        f"extractor also outputs {them}{image} and the head takes {'it as an extra input' if n == 1 else 'them as extra inputs'}. "
        "Or pick a tensor that every path from the input to the output goes through, such as a block's output."
    )


def descendants(graph: onnx.GraphProto, cut: str) -> set[str]:
    """The cut and every tensor computed from it."""
    desc = {cut}
    for node in graph.node:  # topologically sorted
        if any(n in desc for n in node.input if n):
            desc.update(o for o in node.output if o)
    return desc


def route_image_reads(model: onnx.ModelProto, cut: str, graph_input: str) -> str | None:
    """Give the nodes after the cut that read the image itself (a global residual `out + x`) an
    Identity copy of it instead, and return the copy's name (None when there are none).

    scorecam's head gets only the features and extractor outputs, never the graph input; the
    copy is a tensor computed before the cut like any other, so the side-input machinery
    passes it (full passes recompute it from the masked image, as the model does). Shape reads
    are left alone: the split rewrites them."""
    g = model.graph
    desc = descendants(g, cut)
    readers = [n for n in g.node
               if graph_input in n.input and not (n.op_type in SHAPE_OPS and is_default_domain(n))
               and any(i in desc for i in n.input if i)]
    if not readers:
        return None
    taken, name, k = all_names(g), f"{graph_input}_copy", 1
    while name in taken:
        name, k = f"{graph_input}_copy{k}", k + 1
    for node in readers:
        node.input[:] = [name if i == graph_input else i for i in node.input]
    g.node.insert(0, helper.make_node("Identity", [graph_input], [name], name=f"{name}/Identity"))
    vi = copy.deepcopy(next(i for i in g.input if i.name == graph_input))
    vi.name = name
    g.value_info.append(vi)
    return name


# --------------------------------------------------------------------------- module scopes


def strip_call_suffix(atom: str) -> str:
    return atom.split("@", 1)[0]


def components_to_atoms(comps: list[str]) -> list[str]:
    """TorchScript scope components -> the module's dotted path atoms.

    torch names each scope level by the module's qualified name from its last non-numeric
    atom on: features.7.block.0.0 gives /features/features.7/block/block.0/block.0.0/.
    """
    atoms: list[str] = []
    prev = None
    for c in comps:
        rest = c[len(prev) + 1:] if prev is not None and c.startswith(prev + ".") else None
        if rest and all(a.isdigit() for a in rest.split(".")):
            atoms += rest.split(".")
        else:
            atoms += [a for a in c.split(".") if a]
        prev = c
    return atoms


def node_scope(node: onnx.NodeProto) -> tuple[str, ...] | None:
    """The module path (atoms) a node was exported from, or None when its name carries none."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                break
            if isinstance(scopes, (list, tuple)) and all(isinstance(s, str) for s in scopes):
                mods = [s for s in scopes[:-1] if s]  # cumulative paths; the last entry is the node's own name
                return tuple(strip_call_suffix(a) for a in mods[-1].split(".")) if mods else ()
            break
    if "/" not in node.name:
        return None
    parts = [p for p in node.name.split("/") if p]
    return tuple(components_to_atoms(parts[:-1]))


def parse_module(query: str) -> list[str]:
    q = query.strip()
    if q.startswith("/"):
        return components_to_atoms([p for p in q.split("/") if p])
    q = re.sub(r"\[\s*(-?\d+)\s*\]", r".\1", q)
    atoms = [a for a in q.split(".") if a]
    if not atoms:
        raise SplitError(f"--module {query!r} names no module")
    return atoms


def atom_matches(a: str, q: str, relaxed: bool) -> bool:
    if a == q:
        return True
    if not relaxed:
        return False
    if q.isdigit():  # encoder.layers.11 -> encoder_layer_11
        return a.endswith("_" + q) and len(a) > len(q) + 1 and not a[-len(q) - 2].isdigit()
    return re.fullmatch(re.escape(q) + r"_\d+", a) is not None  # relu -> relu_1 (a module called again)


def trailing_int(a: str) -> int | None:
    m = re.search(r"(?:^|_)(\d+)$", a)
    return int(m.group(1)) if m else None


def match_scopes(scopes: list, q: list[str]):
    """{wrapper prefix: [node index, ...]} for the nodes under module q, trying exact matches
    anchored at the root first, then relaxed ones, then matches below a wrapper module."""
    for relaxed in (False, True):
        for anchored in (True, False):
            found: dict[tuple, list[int]] = {}
            for i, s in enumerate(scopes):
                if not s or len(s) < len(q):
                    continue
                for j in ([0] if anchored else range(1, len(s) - len(q) + 1)):
                    if all(atom_matches(s[j + k], q[k], relaxed) for k in range(len(q))):
                        found.setdefault(s[:j], []).append(i)
                        break
            if found:
                return found
    return {}


def resolve_negative(scopes: list, q: list[str], query: str) -> list[str]:
    q = list(q)
    for k, atom in enumerate(q):
        if not re.fullmatch(r"-\d+", atom):
            continue
        if k == 0:
            raise SplitError(f"--module {query!r}: a negative index needs a parent module before it")
        found = match_scopes(scopes, q[:k])
        children: dict[str, int] = {}
        for prefix, idx in found.items():
            at = len(prefix) + k
            for i in idx:
                s = scopes[i]
                if len(s) > at and trailing_int(s[at]) is not None:
                    children[s[at]] = trailing_int(s[at])
        ordered = sorted(children, key=lambda c: children[c])
        n = int(atom)
        if not ordered or -n > len(ordered):
            raise SplitError(f"--module {query!r}: {'.'.join(q[:k])} has {len(ordered)} numbered children, no [{n}]")
        q[k] = ordered[n]
    return q


def module_tensor(model: onnx.ModelProto, query: str) -> tuple[str, str, int]:
    """(tensor, module path, node count): the output of the module named by --module."""
    graph = model.graph
    scopes = [node_scope(n) for n in graph.node]
    if not any(scopes):
        raise SplitError(
            "no node name carries a module scope (the exporter did not record them, or the graph was "
            "optimised and renamed): use --layer with a tensor name from --list-layers"
        )
    q = resolve_negative(scopes, parse_module(query), query)
    found = match_scopes(scopes, q)
    if not found:
        paths = sorted({".".join(s[:k]) for s in scopes if s for k in range(1, len(s) + 1)})
        want = ".".join(q)
        close = difflib.get_close_matches(want, paths, n=6, cutoff=0.5)
        close += [p for p in paths if q[-1].lower() in p.lower().split(".")[-1] and p not in close][: max(0, 8 - len(close))]
        hint = f" Close module names: {', '.join(close)}." if close else ""
        raise SplitError(
            f"no node lies under module {query!r}.{hint} (Modules come from the node names the exporter wrote, "
            "e.g. '/layer4/layer4.1/relu/Relu' is module layer4.1.relu; --list-layers shows each tensor's module.)"
        )
    if len(found) > 1:
        where = ", ".join(".".join([*p, *q]) for p in sorted(found))
        raise SplitError(f"--module {query!r} matches several modules: {where}; give the full path")
    prefix, idx = next(iter(found.items()))
    inside = set(idx)
    vis = value_infos(model)
    graph_outputs = {o.name for o in graph.output}
    users: dict[str, set[int]] = {}
    for k, node in enumerate(graph.node):
        for n in node.input:
            users.setdefault(n, set()).add(k)

    def is_float(t):
        return t in vis and vis[t].type.tensor_type.elem_type == TensorProto.FLOAT

    made = [(k, o) for k in sorted(inside) for o in graph.node[k].output if o and is_float(o)]
    outputs = [(k, o) for k, o in made if (users.get(o, set()) - inside) or o in graph_outputs]
    pick = (outputs or made)
    if not pick:
        raise SplitError(f"module {query!r} makes no float tensor")
    # the matched path as the graph spells it (relaxed matches: encoder.layers.11 -> encoder_layer_11)
    s = scopes[idx[0]]
    module = ".".join(s[: len(prefix) + len(q)])
    return pick[-1][1], module, len(inside)


# Element-wise activations PyTorch models often apply in place (nn.ReLU(inplace=True),
# F.relu(x, inplace=True), nn.Hardswish(inplace=True), ...).
INPLACE_ACTIVATIONS = {"Relu", "LeakyRelu", "Clip", "HardSwish", "HardSigmoid", "Elu", "Selu", "Celu", "PRelu"}


def inplace_follower(model: onnx.ModelProto, tensor: str, module: str) -> tuple[str, str] | None:
    """(op, its output) when `tensor`, the output of `module`, feeds nothing but one element-wise
    activation applied outside the module (DenseNet's `F.relu(features, inplace=True)` after
    `features`' norm5).

    A forward hook keeps the module's output tensor without copying it; when the model then
    applies that activation in place, the hooked tensor is overwritten, so pytorch-grad-cam
    records the activation's output. ONNX does not say whether it was in place, so this is
    a warning, not a choice. An activation inside the module is the module's own (its hook
    sees it anyway), and a tensor that is a graph output or read twice was not overwritten.
    """
    if tensor in {o.name for o in model.graph.output}:
        return None
    users = [n for n in model.graph.node if tensor in n.input]
    if len(users) != 1 or users[0].op_type not in INPLACE_ACTIVATIONS or not users[0].output:
        return None
    atoms = tuple(module.split("."))
    if (node_scope(users[0]) or ())[: len(atoms)] == atoms:
        return None
    return users[0].op_type, users[0].output[0]


# --------------------------------------------------------------------------- loading, ONNX Runtime


def load_inferred(path: Path) -> onnx.ModelProto:
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:  # noqa: BLE001 - report any checker failure the same way
        raise SplitError(f"{path} is not a valid ONNX model: {e}") from e
    model = onnx.load(str(path), load_external_data=False)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:  # noqa: BLE001
        raise SplitError(f"shape inference failed on {path}: {e}") from e
    onnx.load_external_data_for_model(model, str(path.parent))
    return model


def graph_ios(model: onnx.ModelProto) -> tuple[onnx.ValueInfoProto, list[onnx.ValueInfoProto]]:
    """The image input and every graph output."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if len(inputs) != 1:
        raise SplitError(f"the model must have exactly one (image) input; it has {[vi.name for vi in inputs]}")
    return inputs[0], list(model.graph.output)


def graph_io(model: onnx.ModelProto) -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    inp, outputs = graph_ios(model)
    if len(outputs) != 1:
        raise SplitError(f"the model must have exactly one (class scores) output; it has {[vi.name for vi in outputs]} "
                         "(a detector with two outputs, boxes [N, K, 4] then scores [N, K, C]: --head detection "
                         "--detection-format boxes)")
    return inp, outputs[0]


def as_list(names) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    return {vi.name: vi for vi in list(g.value_info) + list(g.input) + list(g.output)}


def ort_session(m):
    """An ONNX Runtime CPU session for a ModelProto or a file."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3  # no warnings about declared vs. actual shapes
    if isinstance(m, onnx.ModelProto):
        if m.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "model.onnx"
                onnx.save(copy.deepcopy(m), str(p), save_as_external_data=True, location="model.onnx.data")
                return ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(str(m), so, providers=["CPUExecutionProvider"])


def probe(model: onnx.ModelProto, input_name: str, names: list[str], hw, seed: int, channels: int = 3) -> dict[str, tuple]:
    """Run the model on random batches of 1 and 2 with `names` as extra outputs: {name: (shape@1, shape@2)}."""
    vis = value_infos(model)
    existing = {o.name for o in model.graph.output}
    extra = [n for n in dict.fromkeys(names) if n not in existing]
    n0 = len(model.graph.output)
    for n in extra:
        elem = vis[n].type.tensor_type.elem_type if n in vis else TensorProto.FLOAT
        model.graph.output.append(helper.make_tensor_value_info(n, elem, None))
    try:
        sess = ort_session(model)
    except Exception as e:  # noqa: BLE001
        raise SplitError(f"ONNX Runtime could not load the model to probe tensor shapes: {e}") from e
    finally:
        del model.graph.output[n0:]
    wanted = list(dict.fromkeys(names))
    shapes: dict[str, list] = {n: [] for n in wanted}
    rng = np.random.default_rng(seed)
    for b in (1, 2):
        x = rng.standard_normal((b, channels, *hw)).astype(np.float32)
        try:
            outs = sess.run(wanted, {input_name: x})
        except Exception as e:  # noqa: BLE001
            baked = (" The input's batch is dynamic but the graph may have the export batch size baked in "
                     "(a Reshape to a constant shape): re-export with a dynamic batch (dynamic_axes / dynamic_shapes)."
                     if b == 2 else "")
            raise SplitError(f"ONNX Runtime failed running the model on a batch of {b} (input {b}×{channels}×{hw[0]}×{hw[1]}): "
                             f"{e}.{baked}") from e
        for n, v in zip(wanted, outs):
            shapes[n].append(tuple(np.shape(v)))
    return {n: tuple(v) for n, v in shapes.items()}


# --------------------------------------------------------------------------- layouts


@dataclass
class Analysis:
    shape: tuple                 # shape at batch 2
    layout: str | None = None    # nchw | nhwc | tokens when usable
    grid: tuple | None = None
    prefix: int = 0
    channels: int | None = None
    why: str = ""                # how the layout was decided
    problem: str | None = None   # why it cannot be a target layer
    kind: str = "ok"             # ok | ambiguous | pooled | not_spatial | batch | constant
    batch_dims: tuple = field(default_factory=tuple)  # the non-batch dims when the batch is first
    batch_at: int | None = None  # the batch axis, when it is a single one

    @property
    def shape_text(self) -> str:
        if self.batch_at is None:
            return "[" + ", ".join(map(str, self.shape)) + "]"
        return "[" + ", ".join("N" if k == self.batch_at else str(d) for k, d in enumerate(self.shape)) + "]"

    @property
    def short(self) -> str:
        if self.layout == "tokens":
            return f"tokens {self.grid[0]}×{self.grid[1]}" + (f"+{self.prefix}" if self.prefix else "")
        if self.layout:
            return f"{self.layout} {self.grid[0]}×{self.grid[1]}"
        return {"ambiguous": "ambiguous", "pooled": "1×1 (pooled)", "not_spatial": "not spatial",
                "batch": "batch not first", "constant": "no batch"}.get(self.kind, self.kind)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def strides(h: int, w: int, hw) -> list[int]:
    """Integer strides s for which an h×w map fits the H×W input (each side floor or ceil of H/s, W/s)."""
    H, W = hw
    if h < 1 or w < 1 or (H == W and h != w) or (H < W and h > w) or (H > W and h < w):
        return []  # the same rounding on both sides: a square input gives a square map, and so on
    out = []
    for s in range(1, max(H, W) + 1):
        if h in (H // s, ceil_div(H, s)) and w in (W // s, ceil_div(W, s)):
            out.append(s)
    return out


def stride_text(h: int, w: int, hw) -> str:
    ss = strides(h, w, hw)
    if not ss:
        return f"fits the {hw[0]}×{hw[1]} input at no single stride"
    exact = [s for s in ss if h * s == hw[0] and w * s == hw[1]]
    s = (exact or ss)[0]
    return f"{hw[0]}×{hw[1]} input / {s}"


def batch_axis(s1: tuple, s2: tuple) -> tuple[str, int | None]:
    if len(s1) != len(s2):
        return "weird", None
    changed = [i for i, (a, b) in enumerate(zip(s1, s2)) if a != b]
    if not changed:
        return "constant", None
    if len(changed) == 1:
        i = changed[0]
        if s1[i] == 1 and s2[i] == 2:
            return ("first" if i == 0 else "axis"), i
        return "folded", i
    return "weird", None


def analyze(shapes: tuple, hw, layout: str | None = None, grid=None, prefix: int | None = None) -> Analysis:
    """Decide the layout of a tensor from its probed shapes (batch 1, batch 2) and the input size."""
    s1, s2 = shapes
    a = Analysis(shape=s2)
    where, i = batch_axis(s1, s2)
    if where in ("first", "axis"):
        a.batch_at = i
    shape_txt = "[" + ", ".join(str(d) for d in s2) + "]"
    if where == "constant":
        a.kind, a.problem = "constant", f"its shape {shape_txt} does not change with the batch size: it does not depend on the batch"
        return a
    if where == "axis":
        dims = ["N" if k == i else str(d) for k, d in enumerate(s2)]
        a.kind = "batch"
        a.problem = (
            f"the batch is not the first axis: the tensor is [{', '.join(dims)}] with the batch on axis {i} "
            "(found by running batches of 1 and 2). Sequence-first [T, N, C] tensors like this live inside "
            "attention (PyTorch's nn.MultiheadAttention works on them); scorecam needs the batch first"
        )
        return a
    if where == "folded":
        a.kind = "batch"
        a.problem = (
            f"the batch is folded into axis {i} (size {s1[i]} for 1 image, {s2[i]} for 2: e.g. [N·heads, …] "
            "inside attention); scorecam needs a tensor with one batch axis first"
        )
        return a
    if where == "weird":
        a.kind, a.problem = "batch", f"the batch size changes several axes ({shape_txt} for 2 images)"
        return a
    dims = tuple(s2[1:])
    a.batch_dims = dims
    if grid is not None or prefix is not None:
        if layout not in (None, "tokens"):
            raise SplitError("--grid and --prefix-tokens only apply to --layout tokens")
        layout = "tokens"
    if len(dims) == 3:
        if layout == "tokens":
            a.kind, a.problem = "override", f"--layout tokens needs a 3-D [N, T, C] tensor; this one is {fmt_batch_first(dims)}"
            return a
        return analyze_4d(a, dims, hw, layout)
    if len(dims) == 2:
        if layout in ("nchw", "nhwc"):
            a.kind, a.problem = "override", f"--layout {layout} needs a 4-D tensor; this one is {fmt_batch_first(dims)}"
            return a
        return analyze_tokens(a, dims, hw, grid, prefix)
    if len(dims) <= 1:
        a.kind = "not_spatial"
        a.problem = (f"it is {fmt_batch_first(dims)}: no spatial axes left (after global pooling / flatten, or class "
                     "scores); the target layer must be a 4-D map [N, C, h, w] / [N, h, w, C] or 3-D tokens [N, T, C]")
        return a
    a.kind, a.problem = "not_spatial", f"it is {len(s2)}-D {fmt_batch_first(dims)}; the target layer must be 4-D or 3-D tokens"
    return a


def pooled(a: Analysis, text: str) -> Analysis:
    a.kind = "pooled"
    a.problem = (
        f"{text}: a 1×1 map. The spatial positions have already been pooled away (global pooling, or a "
        "class token alone), so Score-CAM has nothing to localise; cut before the pooling"
    )
    return a


def analyze_4d(a: Analysis, dims, hw, layout) -> Analysis:
    d0, d1, d2 = dims
    shape = fmt_batch_first(dims)
    why = None
    if layout is None:
        as_nchw, as_nhwc = strides(d1, d2, hw), strides(d0, d1, hw)
        if as_nchw and as_nhwc:
            if d1 * d2 == 1 and d0 * d1 == 1:
                return pooled(a, f"it is {shape}")
            a.kind = "ambiguous"
            a.problem = (
                f"{shape} could be [N, C, h, w] ({d0} channels of {d1}×{d2}) or [N, h, w, C] ({d0}×{d1} of {d2} "
                f"channels): both fit the {hw[0]}×{hw[1]} input. Give --layout nchw or --layout nhwc "
                "(PyTorch convnets are nchw; stages that permute to channels-last, as in Swin, are nhwc)"
            )
            return a
        if not as_nchw and not as_nhwc:
            a.kind = "ambiguous"
            a.problem = (
                f"{shape} fits the {hw[0]}×{hw[1]} input at no single stride either as [N, C, h, w] ({d1}×{d2}) "
                f"or as [N, h, w, C] ({d0}×{d1}); if it is a feature map anyway, give --layout nchw or --layout nhwc"
            )
            return a
        layout = "nchw" if as_nchw else "nhwc"
        if layout == "nchw":
            why = (f"{shape} reads as {d0} channels of {d1}×{d2} (= {stride_text(d1, d2, hw)}); "
                   f"as [N, h, w, C] it would be {d0}×{d1}, which fits no stride of the input")
        else:
            why = (f"{shape} reads as {d0}×{d1} (= {stride_text(d0, d1, hw)}) of {d2} channels; "
                   f"as [N, C, h, w] it would be {d1}×{d2}, which fits no stride of the input")
    h, w, c = (d1, d2, d0) if layout == "nchw" else (d0, d1, d2)
    if why is None:
        why = f"{shape} as {h}×{w} of {c} channels, as given by --layout {layout}"
        if not strides(h, w, hw):
            why += f"; note: {h}×{w} fits the {hw[0]}×{hw[1]} input at no single stride"
    a.layout, a.grid, a.channels, a.why = layout, (h, w), c, why
    if h * w == 1:
        a.layout = None
        return pooled(a, f"it is {shape} ({layout})")
    return a


def analyze_tokens(a: Analysis, dims, hw, grid, prefix) -> Analysis:
    T, C = dims
    shape = fmt_batch_first(dims)
    if grid is not None:
        h, w = grid
        p = T - h * w if prefix is None else prefix
        if p < 0 or p + h * w != T:
            raise SplitError(
                f"--grid {h}x{w}{f' and --prefix-tokens {prefix}' if prefix is not None else ''} do not fit "
                f"{shape}: {T} tokens ≠ {max(p, 0)} + {h}×{w}"
            )
        why = f"{shape} as {p} prefix token(s) + a {h}×{w} grid (--grid{' and --prefix-tokens' if prefix is not None else ''})"
        if not strides(h, w, hw):
            why += f"; note: a {h}×{w} grid fits the {hw[0]}×{hw[1]} input at no single stride (patch size)"
        cands = [(p, h, w)]
    else:
        ps = [prefix] if prefix is not None else [0, 1, 2]
        cands = []
        for p in ps:
            n = T - p
            if n < 1:
                continue
            for h in range(1, n + 1):
                if n % h == 0 and strides(h, n // h, hw):
                    cands.append((p, h, n // h))
        if prefix is not None and not cands and T - prefix >= 1 and math.isqrt(T - prefix) ** 2 == T - prefix:
            k = math.isqrt(T - prefix)
            cands = [(prefix, k, k)]
        spatial = [c for c in cands if c[1] * c[2] > 1]
        if not spatial and cands:
            p, h, w = cands[0]
            return pooled(a, f"it is {shape}, as {p} prefix token(s) + a 1×1 grid")
        cands = spatial
        if len(cands) > 1:
            a.kind = "ambiguous"
            a.problem = (
                f"{shape} could be " + ", ".join(f"{p} prefix + {h}×{w}" for p, h, w in cands)
                + f" tokens (all fit the {hw[0]}×{hw[1]} input); give --grid HxW and/or --prefix-tokens N"
            )
            return a
        if not cands:
            a.kind = "ambiguous"
            tried = f"{prefix}" if prefix is not None else "0, 1 or 2"
            hint = ""
            if any(C - p >= 2 and any((C - p) % h == 0 and strides(h, (C - p) // h, hw) for h in range(1, C - p + 1))
                   for p in (0, 1, 2)):
                hint = (f". Its last axis ({C}) would fit as tokens: it may be channels-first [N, C, T]; "
                        "cut at the tensor after the transpose back to [N, T, C]")
            a.problem = (
                f"{shape} is not {tried} prefix token(s) + an h×w grid that fits the {hw[0]}×{hw[1]} input at one "
                f"stride (the patch size). If it is a token sequence, give --grid HxW and --prefix-tokens N "
                f"(e.g. --prefix-tokens 5 for a ViT with 4 register tokens){hint}"
            )
            return a
        p, h, w = cands[0]
        names = {0: "no prefix tokens", 1: "1 prefix token (a class token, as in ViT)",
                 2: "2 prefix tokens (class + distillation token, as in DeiT)"}
        what = names.get(p, f"{p} prefix tokens")
        if prefix is not None:
            why = (f"{shape} reads as {what} (--prefix-tokens) + a {h}×{w} grid (= {stride_text(h, w, hw)}: the "
                   f"patch size) of {C}-channel tokens; no other grid fits")
        else:
            why = (f"{shape} reads as {what} + a {h}×{w} grid (= {stride_text(h, w, hw)}: the patch size) of "
                   f"{C}-channel tokens; no other prefix count 0..2 and grid fits")
    p, h, w = cands[0]
    if p > MAX_PREFIX_TOKENS or max(h, w) > MAX_GRID_SIDE:
        raise SplitError(
            f"{shape} as {p} prefix token(s) + a {h}×{w} grid: scorecam accepts at most {MAX_PREFIX_TOKENS} prefix "
            f"tokens and grid sides up to {MAX_GRID_SIDE}; check --grid / --prefix-tokens"
        )
    a.layout, a.grid, a.prefix, a.channels, a.why = "tokens", (h, w), p, C, why
    if h * w == 1:
        a.layout = None
        return pooled(a, f"it is {shape} ({p} prefix + 1×1)")
    return a


# --------------------------------------------------------------------------- candidates


@dataclass
class Candidate:
    index: int          # producing node's position (topological)
    name: str
    op: str
    module: str
    analysis: Analysis
    separates: bool
    sides: int = 0      # not separating: the side inputs its package would pass
    image: bool = False  # not separating: the image itself (a copy) among them

    @property
    def tier(self) -> int:
        if self.analysis.kind == "ok" and self.separates:
            return 0
        if self.analysis.kind == "ambiguous" and self.separates:
            return 1
        if self.analysis.kind in ("ok", "ambiguous") and self.sides > 0:
            return 2
        if self.analysis.kind in ("ok", "ambiguous"):
            return 3
        return 4


def candidates(model: onnx.ModelProto, input_name: str, head_out: str, hw, seed: int,
               only: list[str] | None = None, channels: int = 3) -> list[Candidate]:
    """Float tensors of rank >= 3 (or unknown), probed and analysed, best first."""
    g = model.graph
    vis = value_infos(model)
    outputs = {o.name for o in g.output} | set(as_list(head_out))
    names, info = [], {}
    for k, node in enumerate(g.node):
        scope = node_scope(node)
        for o in node.output:
            if not o or o in outputs or o in info:
                continue
            if only is not None and o not in only:
                continue
            vi = vis.get(o)
            if vi is None or vi.type.tensor_type.elem_type != TensorProto.FLOAT:
                continue
            d = dims_of(vi)
            if d is not None and len(d) < 3:
                continue
            names.append(o)
            info[o] = (k, node.op_type, ".".join(scope) if scope else "")
    if not names:
        return []
    shapes = probe(model, input_name, names, hw, seed, channels)
    sep = separating_tensors(g, input_name, head_out)
    out = []
    for n in names:
        a = analyze(shapes[n], hw)
        if a.kind == "constant" or (a.kind == "not_spatial" and len(a.batch_dims) < 2):
            continue
        k, op, module = info[n]
        skips = skip_tensors(g, n, input_name) if n not in sep and a.kind in ("ok", "ambiguous") else []
        out.append(Candidate(k, n, op, module, a, n in sep, len(skips), input_name in skips))
    out.sort(key=lambda c: (c.tier, -c.index))
    return out


def note_of(c: Candidate) -> str:
    notes = []
    if not c.separates and c.analysis.kind in ("ok", "ambiguous"):
        if c.sides > 0:
            image = " (the image among them)" if c.image else ""
            notes.append(f"does not separate: {c.sides} side input{'s' if c.sides != 1 else ''}{image}")
        else:
            notes.append("a skip connection goes around it: does not separate")
    if c.analysis.kind == "ambiguous":
        notes.append("needs --layout / --grid")
    return "; ".join(notes)


def print_candidates(rows: list[Candidate], total: int, shown_from: str, top: int, filt: str | None) -> None:
    if not rows:
        print(f"no candidate tensors{f' matching {filt!r}' if filt else ''}")
        return
    shown = rows if top == 0 else rows[:top]
    head = ("#", "tensor", "op", "shape", "layout", "module", "note")
    table = [head] + [
        (str(i + 1), c.name, c.op, c.analysis.shape_text, c.analysis.short, c.module or "-", note_of(c))
        for i, c in enumerate(shown)
    ]
    widths = [max(len(r[k]) for r in table) for k in range(len(head))]
    print(f"candidate target layers of {shown_from}, best first (usable maps that separate the graph, latest "
          f"first; then those that do not separate, whose packages pass side inputs to the head: as good for "
          f"Score-CAM){f'; filter {filt!r}' if filt else ''}:")
    for r in table:
        print("  ".join(v.rjust(widths[0]) if k == 0 else v.ljust(widths[k]) for k, v in enumerate(r)).rstrip())
    more = len(rows) - len(shown)
    if more:
        print(f"… and {more} more (--top 0 shows all; --list-layers SUBSTRING filters)")
    elif filt:
        print(f"({len(rows)} of {total} candidates match {filt!r})")


def suggestion(model, input_name, head_out, hw, seed, cut_index: int, later: bool, channels: int = 3) -> str:
    """A usable, separating tensor near the refused cut: the latest before it, or the first after it."""
    try:
        cands = [c for c in candidates(model, input_name, head_out, hw, seed, channels=channels) if c.tier == 0]
    except SplitError:
        return ""
    if later:
        after = sorted((c for c in cands if c.index > cut_index), key=lambda c: c.index)
        pick = after[0] if after else None
    else:
        before = sorted((c for c in cands if c.index < cut_index), key=lambda c: -c.index)
        pick = before[0] if before else None
    if pick is None:
        return " Run --list-layers for usable tensors."
    mod = f", module {pick.module}" if pick.module else ""
    return (f" For example {pick.name!r} {fmt_batch_first(pick.analysis.batch_dims)} ({pick.analysis.short}{mod}); "
            "--list-layers ranks the others.")


# --------------------------------------------------------------------------- the split


def final_activation(model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The node making the graph output when it is a Softmax or a Sigmoid (default domain)."""
    _, outs = graph_ios(model)
    if len(outs) != 1:
        return None
    out = outs[0]
    last = next((node for node in model.graph.node if out.name in node.output), None)
    if last is not None and last.op_type in ("Softmax", "Sigmoid") and is_default_domain(last):
        return last
    return None


def find_head_out(model: onnx.ModelProto, keep: bool, kind: str = "classes"):
    """(the tensor the head ends at, what was dropped: None | ("Softmax", axis) | ("Sigmoid", None)).

    A classes head ending in a Softmax or a Sigmoid loses it (scorecam applies the activation
    itself); segmentation, embedding and detection heads keep their graph as it is. A detector
    may have two outputs (boxes, scores): then the first is returned here (see head_outputs).
    """
    _, outs = graph_ios(model)
    out = outs[0]
    last = final_activation(model)
    if last is None or keep or kind != "classes":
        return out.name, None
    if last.op_type == "Softmax":
        axis = next((a.i for a in last.attribute if a.name == "axis"), None)
        return last.input[0], ("Softmax", -1 if axis is None else axis)
    return last.input[0], ("Sigmoid", None)


def check_input(inp: onnx.ValueInfoProto) -> list:
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise SplitError(f"the input {inp.name!r} must be float32")
    in_dims = dims_of(inp)
    if in_dims is None or len(in_dims) != 4:
        raise SplitError(f"the input {inp.name!r} must be 4-D N×3×H×W (or N×1×H×W greyscale, N×4×H×W RGBA); it is {fmt_dims(in_dims)}")
    if not is_dynamic(in_dims[0]):
        raise SplitError(
            f"the batch dimension of the input {inp.name!r} is fixed to {in_dims[0]} ({fmt_dims(in_dims)}); "
            "scorecam runs the model on batches: re-export it with a dynamic batch dimension"
        )
    if isinstance(in_dims[1], int) and in_dims[1] not in (1, 3, 4):
        raise SplitError(f"the input {inp.name!r} must have 3 (RGB), 1 (greyscale) or 4 (RGBA) channels; it is {fmt_dims(in_dims)}")
    return in_dims


def check_layer_name(model: onnx.ModelProto, layer: str, full_name: str, head_out: str) -> int:
    graph = model.graph
    inp, outs = graph_ios(model)
    producers = {n: k for k, node in enumerate(graph.node) for n in node.output if n}
    if layer == inp.name:
        raise SplitError(f"tensor {layer!r} is the model's input; cut at an intermediate tensor")
    if layer in {o.name for o in outs}:
        raise SplitError(f"tensor {layer!r} is the model's output; cut at an intermediate tensor")
    if layer not in producers:
        close = difflib.get_close_matches(layer, list(producers), n=5, cutoff=0.5)
        hint = f" Close names: {', '.join(repr(c) for c in close)}." if close else ""
        raise SplitError(
            f"tensor {layer!r} is not produced by any node of {full_name}.{hint} "
            "Run with --list-layers to see the candidate tensors."
        )
    if layer == head_out:
        raise SplitError(f"tensor {layer!r} is the input of the final Softmax/Sigmoid; cut earlier")
    vis = value_infos(model)
    if layer in vis and vis[layer].type.tensor_type.elem_type not in (0, TensorProto.FLOAT):
        raise SplitError(f"tensor {layer!r} must be float32")
    return producers[layer]


@dataclass
class Side:
    """A tensor computed before the cut that the head reads (a side input): an extra output of
    the extractor and an extra input of the head, of one name."""
    tensor: str        # its name in the whole model
    name: str          # its name in the package (the tensor's, sanitised)
    dims: tuple        # its non-batch dims
    image: bool = False  # an Identity copy of the image (route_image_reads)


def side_inputs_line(layer: str, sides: list[Side]) -> str:
    """The one line saying that the cut does not separate and what rides along with the features."""
    def one(sd: Side) -> str:
        what = "the image itself (an Identity copy)" if sd.image else repr(sd.tensor)
        return f"{what}{f' (as {sd.name!r})' if sd.name != sd.tensor else ''} {fmt_batch_first(sd.dims)}"

    it, its = ("it", "its clean value") if len(sides) == 1 else ("them", "their clean values")
    return (f"side inputs: the graph does not separate at {layer!r} (a residual or skip connection goes around it), "
            f"so the extractor also returns {', '.join(one(sd) for sd in sides)} and the head takes {it} by name; "
            f"Score-CAM's full passes recompute {it} at no extra cost, head-only passes (Ablation-CAM, Recipro-CAM) "
            f"hold {it} at {its}, as a PyTorch hook replacing the layer's output does (--no-side-inputs refuses "
            "such cuts)")


def side_name(tensor: str, used: set[str]) -> str:
    """The package name of a side tensor: its own, with characters outside [A-Za-z0-9_./:-]
    replaced, and made distinct from the package's names and the other side tensors."""
    base = re.sub(r"[^A-Za-z0-9_./:-]", "_", tensor) or "side"
    name, k = base, 1
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def shape_reads(model: onnx.ModelProto, head: onnx.ModelProto, graph_input: str, layer: str, hw, seed: int,
                channels: int) -> dict[str, list[int]]:
    """{tensor before the cut whose shape the head reads: its shape at batch 2, batch first}
    for the ones whose batch is the first axis (their reads can be rewritten)."""
    before = image_dependent(head.graph.node, graph_input, through=layer) - {layer}
    reads = [n.input[0] for n in head.graph.node
             if n.op_type == "Shape" and is_default_domain(n) and n.input and n.input[0] in before]
    known: dict[str, list[int]] = {graph_input: [0, channels, *hw]}
    others = [t for t in dict.fromkeys(reads) if t != graph_input]
    if others:
        for t, (s1, s2) in probe(model, graph_input, others, hw, seed, channels).items():
            if batch_axis(s1, s2) == ("first", 0):
                known[t] = list(s2)
    return known


def ensure_value_info(model: onnx.ModelProto, name: str) -> None:
    if name not in value_infos(model):  # Extractor needs a value_info for its I/O
        model.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))


def split(model: onnx.ModelProto, layer: str, head_out, hw, seed: int, channels: int = 3,
          side_inputs: bool = True, out_names: list[str] | None = None):
    """(extractor, head, tensors whose shape reads were rewritten, side tensors), checked and renamed.

    head_out: the tensor the head ends at, or several (a boxes detector's boxes and scores),
    renamed to out_names (default: logits). side_inputs: tensors computed before the cut that
    the part after it reads become extra extractor outputs / head inputs instead of an error
    (the image itself through an Identity copy, added to `model`).
    """
    inp, _ = graph_ios(model)
    image_copy = route_image_reads(model, layer, inp.name) if side_inputs else None
    head_outs = as_list(head_out)
    out_names = out_names or [LOGITS]
    ensure_value_info(model, layer)
    ex = onnx.utils.Extractor(model)
    extractor = ex.extract_model([inp.name], [layer])
    head = ex.extract_model([layer], head_outs)
    rewritten = rewrite_shape_reads(head, inp.name, layer, shape_reads(model, head, inp.name, layer, hw, seed, channels))
    crossing = crossings(head, layer, inp.name, head_outs)
    sides: list[Side] = []
    if crossing and side_inputs:
        # The tensors to pass: what the part after the cut reads by data (not through shape reads,
        # which the Shape rewrite serves) of what is computed without the cut, traced back to
        # tensors the extractor computes anyway. Found on the whole graph: in the head cut from
        # [layer] alone, rewriting the shape reads inside the part before the cut (a C2f's chunk
        # sizes) would tie that part to the cut.
        available = (cut_ancestors(model.graph, layer) - {layer}) & float_tensors(model)
        wanted = skip_tensors(model.graph, layer, inp.name)
        for _ in range(8):  # a shape read that cannot be rewritten adds what it reads
            if inp.name in wanted:  # route_image_reads gave every such read the image's copy
                raise SplitError(
                    f"internal: after the cut at {layer!r}, the model still reads its input image {inp.name!r} itself "
                    f"({image_read_after_cut(head, layer, inp.name)}); cut after that use of the image")
            for t in wanted:
                ensure_value_info(model, t)
            ex = onnx.utils.Extractor(model)
            head = ex.extract_model([layer, *wanted], head_outs)
            known = shape_reads(model, head, inp.name, layer, hw, seed, channels)
            rewritten = rewrite_shape_reads(head, inp.name, layer, known)
            more = [t for t in pull_back(head.graph.node, crossings(head, layer, inp.name, head_outs), available, inp.name)
                    if t not in wanted]
            if not more:
                break
            wanted += more
        else:
            raise SplitError(f"internal: the side inputs did not settle on the tensors to pass at {layer!r}")
        vis = value_infos(model)
        bad = [t for t in wanted if t in vis and vis[t].type.tensor_type.elem_type not in (0, TensorProto.FLOAT)]
        if bad:
            t = bad[0]
            kind = onnx.helper.tensor_dtype_to_np_dtype(vis[t].type.tensor_type.elem_type)
            raise SplitError(f"the part after the cut reads {t!r} ({kind}), computed before the cut: scorecam passes "
                             "float32 side tensors only; cut elsewhere")
        shapes = probe(model, inp.name, wanted, hw, seed, channels)
        used = set(RESERVED_NAMES) | set(out_names)
        for t in wanted:
            s1, s2 = shapes[t]
            if batch_axis(s1, s2) != ("first", 0):
                raise SplitError(f"the part after the cut reads {t!r}, computed before the cut, whose batch is not "
                                 f"its first axis ({list(s1)} for 1 image, {list(s2)} for 2): it cannot be a side input; "
                                 "cut elsewhere")
            # The image's copy is called what it is; the graph input itself becomes `input`.
            sides.append(Side(t, side_name("image" if t == image_copy else t, used), tuple(s2[1:]), t == image_copy))
        extractor = onnx.utils.Extractor(model).extract_model([inp.name], [layer, *wanted])
    elif crossing and inp.name in crossing and len(crossing) == 1:
        raise SplitError(
            f"the graph does not separate at {layer!r}: after the cut the model reads its input image {inp.name!r} itself "
            f"({image_read_after_cut(head, layer, inp.name)}), not only its shape, and scorecam's head never gets the graph "
            "input; without --no-side-inputs the extractor passes it a copy. Or cut after that use of the image.")
    check_separates(head, layer, inp.name)
    check_closed(extractor, layer, "extractor")
    check_closed(head, layer, "head")
    if not head.graph.node:
        raise SplitError(f"nothing lies between {layer!r} and the output")

    for part in (extractor, head):
        # Extractor copies graph inputs/outputs into value_info as well: drop those duplicates,
        # and entries of tensors no node uses any more.
        io = {vi.name for vi in list(part.graph.input) + list(part.graph.output)}
        io |= {t.name for t in part.graph.initializer}
        used = {n for node in part.graph.node for n in list(node.input) + list(node.output)}
        keep = [vi for vi in part.graph.value_info if vi.name not in io and vi.name in used]
        del part.graph.value_info[:]
        part.graph.value_info.extend(keep)
        part.doc_string = model.doc_string
        part.model_version = model.model_version
        part.domain = model.domain
        for p in model.metadata_props:
            part.metadata_props.add(key=p.key, value=p.value)
    side_map = {sd.tensor: sd.name for sd in sides}
    rename_to(extractor, {inp.name: INPUT, layer: FEATURES, **side_map})
    rename_to(head, {layer: FEATURES, **side_map, **dict(zip(head_outs, out_names))})
    return extractor, head, rewritten, sides


def declare_concrete(extractor, head, hw, feature_dims, out_dims, channels: int = 3, sides=()) -> None:
    """Fixed non-batch dims on the package's inputs and outputs; the batch is `batch`.

    out_dims: the head output's non-batch dims ([C] classes, [C, H, W] / [H, W, C] segmentation,
    [D] embedding, [4 + C, A] / [A, 5 + C] a YOLO detector), or a list of them, one per head
    output (a boxes detector: [[K, 4], [K, C]]). sides: the side tensors, extractor outputs and
    head inputs after the features, in that order."""
    set_dims(extractor.graph.input[0], [BATCH, channels, *hw])
    set_dims(extractor.graph.output[0], [BATCH, *feature_dims])
    set_dims(head.graph.input[0], [BATCH, *feature_dims])
    for part, vis in ((extractor, extractor.graph.output), (head, head.graph.input)):
        by_name = {vi.name: vi for vi in vis}
        for sd in sides:
            set_dims(by_name[sd.name], [BATCH, *sd.dims])
    per_output = out_dims if out_dims and isinstance(out_dims[0], (list, tuple)) else [out_dims]
    for vi, dims in zip(head.graph.output, per_output):
        set_dims(vi, [BATCH, *dims])
    for part, what in ((extractor, "extractor"), (head, "head")):
        try:
            onnx.checker.check_model(part, full_check=True)
        except Exception as e:  # noqa: BLE001
            raise SplitError(f"the extracted {what} does not pass the ONNX checker: {e}") from e


def save(model: onnx.ModelProto, path: Path) -> None:
    if model.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(model, str(path))


# --------------------------------------------------------------------------- rows the head reads

# Operators that compute each token row from that row alone (with weights and broadcast
# constants): selecting rows before them gives the same rows as selecting after.
ROW_UNARY = {"Abs", "Cast", "Clip", "Elu", "Erf", "Exp", "FastGelu", "Gelu", "HardSigmoid", "HardSwish", "Identity",
             "LeakyRelu", "Log", "Mish", "Neg", "Reciprocal", "Relu", "Selu", "Sigmoid", "Softplus", "Sqrt", "Tanh"}
ROW_BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"}


def const_values(graph: onnx.GraphProto, name: str):
    """The value of an initializer or a Constant node's output, else None."""
    for t in graph.initializer:
        if t.name == name:
            return onnx.numpy_helper.to_array(t)
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return onnx.numpy_helper.to_array(a.t)
    return None


def token_row_select(graph: onnx.GraphProto, shapes: dict):
    """The head's selection of token rows (ViT's class token x[:, 0], DeiT's x[:, 0] and x[:, 1]):
    Gathers on axis 1 with constant indices that are all the uses of one [N, T, C] tensor.
    Returns (that tensor, the Gathers, the rows they read in order, T) or None."""
    users: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            users.setdefault(i, []).append(node)
    for name, nodes in users.items():
        dims = shapes.get(name)
        if dims is None or len(dims) != 3 or not isinstance(dims[1], int):
            continue
        rows: list[int] = []
        for node in nodes:
            axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
            idx = const_values(graph, node.input[1]) if node.op_type == "Gather" and node.input[0] == name else None
            if idx is None or axis not in (1, -2) or idx.ndim > 1:
                break
            rows += [int(i) % dims[1] for i in np.atleast_1d(idx) if int(i) % dims[1] not in rows]
        else:
            if len(rows) < dims[1]:
                return name, nodes, sorted(rows), dims[1]
    return None


def narrow_rows(head: onnx.ModelProto, atol: float, rtol: float, seed: int) -> str | None:
    """Moves a class-token head's row selection (ViT, DeiT: logits from x[:, 0]) up through the
    operators that compute each token row on its own (LayerNorm over channels, matrix products
    with weights, element-wise ops: a transformer block's MLP, output projection and residual
    adds), so the head computes those only for the rows its output reads: the last block of
    a ViT cut at the tutorial's norm1 costs about a third. Stops where rows mix (attention).
    The narrowed head must give the original's outputs on a random batch (within atol + rtol ×
    max |output|), else the head is left as it was. Returns what moved, or None."""
    g = head.graph
    inferred = onnx.shape_inference.infer_shapes(head)
    shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]
              for vi in list(inferred.graph.value_info) + list(g.input) + list(g.output)}
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    found = token_row_select(g, shapes)
    if found is None:
        return None
    selected, selects, rows, tokens = found
    producer = {o: n for n in g.node for o in n.output if o}
    consts = {t.name for t in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    idx_name = selected + "/rows_read"
    new_nodes: list[onnx.NodeProto] = []
    memo: dict[str, str] = {}
    moved: list[str] = []
    cut_at: list[str] = []

    def rows_of(t: str) -> str:
        if t not in memo:
            memo[t] = pushed(t) or frontier(t)
        return memo[t]

    def frontier(t: str) -> str:
        out = t + "/rows"
        cut_at.append(t)
        new_nodes.append(helper.make_node("Gather", [t, idx_name], [out], axis=1))
        return out

    def broadcast_ok(t: str) -> bool | None:
        """True: t broadcasts over the rows unchanged; False: it has the rows (select them too);
        None: neither (stop)."""
        d = shapes.get(t)
        if d is None:
            return None
        if len(d) <= 1 or (len(d) == 2 and d[0] == 1) or (len(d) == 3 and d[1] == 1):
            return True
        if len(d) == 3 and d[1] == tokens and t not in consts:
            return False
        return None

    def pushed(t: str) -> str | None:
        n = producer.get(t)
        if n is None or len([o for o in n.output if o]) != 1 or shapes.get(t, [None] * 3)[1:2] != [tokens]:
            return None
        ins = list(n.input)
        if n.op_type in ROW_UNARY and n.domain in ("", "ai.onnx", "com.microsoft"):
            ins[0] = rows_of(ins[0])
        elif n.op_type in ROW_BINARY:
            kinds = [broadcast_ok(i) for i in ins]
            if None in kinds or all(kinds):
                return None
            ins = [i if k else rows_of(i) for i, k in zip(ins, kinds)]
        elif n.op_type == "LayerNormalization":
            axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), -1)
            if axis not in (-1, 2):
                return None
            ins[0] = rows_of(ins[0])
        elif n.op_type == "MatMul":
            if ins[1] not in consts or len(shapes.get(ins[1], [])) != 2:
                return None
            ins[0] = rows_of(ins[0])
        else:
            return None
        out = t + "/rows"
        copy_ = helper.make_node(n.op_type, ins, [out], name=(n.name or n.op_type) + "/rows", domain=n.domain)
        copy_.attribute.extend(n.attribute)
        new_nodes.append(copy_)
        moved.append(n.op_type)
        return out

    top = rows_of(selected)
    if not moved:
        return None
    original = copy.deepcopy(head)
    g.initializer.append(helper.make_tensor(idx_name, TensorProto.INT64, [len(rows)], rows))
    nodes = list(g.node)
    at = min(nodes.index(s) for s in selects)
    # The narrowed tensor holds just `rows`, in order: each selection now picks its rows by position.
    for k, s in enumerate(selects):
        idx = const_values(g, s.input[1])
        picked = [rows.index(int(i) % tokens) for i in np.atleast_1d(idx)]
        name = f"{selected}/picked_{k}"
        g.initializer.append(helper.make_tensor(name, TensorProto.INT64, list(idx.shape), picked))
        s.input[0], s.input[1] = top, name
    del g.node[:]
    g.node.extend(nodes[:at] + new_nodes + nodes[at:])
    prune(head)
    try:
        onnx.checker.check_model(head, full_check=True)
        same_outputs(original, head, atol, rtol, seed)
    except Exception as e:  # noqa: BLE001 - any failure: keep the head as it was
        head.CopyFrom(original)
        print(f"note: the head's token rows were not narrowed ({e}); it computes every row")
        return None
    matmuls = moved.count("MatMul")
    return (f"the head computes only the {len(rows)} of {tokens} token rows its output reads from "
            f"{' and '.join(map(repr, cut_at))} on ({len(moved)} operators, {matmuls} matrix products, moved after "
            "the row selection)")


def same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, atol: float, rtol: float, seed: int) -> None:
    """Raises SplitError unless heads a and b give the same outputs on a random batch of 2."""
    sa, sb = ort_session(a), ort_session(b)
    rng = np.random.default_rng(seed)
    feed = {}
    for i in sa.get_inputs():
        dims = [2 if not isinstance(d, int) else d for d in i.shape]
        feed[i.name] = rng.standard_normal(dims).astype(np.float32)
    for x, y in zip(sa.run(None, feed), sb.run(None, feed)):
        if x.shape != y.shape:
            raise SplitError(f"the narrowed head gives shape {y.shape}, the head {x.shape}")
        compare(y, x, atol, rtol, what="the narrowed head differs from the head")


# --------------------------------------------------------------------------- verification


def softmax(z: np.ndarray, axis: int) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def compare(got: np.ndarray, want: np.ndarray, atol: float, rtol: float,
            what: str = "head(extractor(x)) differs from the full model") -> float:
    """max |got - want|, or SplitError (saying `what` differs) when it exceeds atol + rtol * max|want|."""
    want = want.astype(np.float64)
    diff = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
    scale = float(np.abs(want).max()) if want.size else 0.0
    allowed = atol + rtol * scale
    if diff <= allowed:
        return diff
    msg = (f"{what} by max |Δ| = {diff:.3e}, more than the allowed "
           f"{allowed:.3e} (--tolerance {atol:g} + --rtol {rtol:g} × max |output| {scale:.3g})")
    spread = float(want.max() - want.min()) if want.size else 0.0
    ref = max(spread, scale)
    if math.isfinite(diff) and ref > 0 and diff <= 1e-3 * ref:
        suggest = 10.0 ** math.ceil(math.log10(diff * 2))
        msg += (f". That is {diff / ref:.1e} of the outputs' spread ({ref:.3g}): float32 rounding, most likely "
                "(ONNX Runtime fuses operators across the cut in the whole model but cannot in the split), not a "
                f"wrong split. If that is acceptable, rerun with --tolerance {suggest:g} (or a larger --rtol).")
    else:
        msg += ". That is too large to be float rounding: the split changes what the model computes."
    raise SplitError(msg)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def verify(full_path: Path, parts: dict, input_name: str, shape: tuple[int, ...], dropped,
           feature_dims, atol: float, rtol: float, seed: int, out_rank: int = 2, sides=(), outputs: int = 1,
           returned: list | None = None):
    """parts: {"extractor": ModelProto or Path, "head": ModelProto or Path}; dropped: the final
    activation the head lost (None, ("Softmax", axis) or ("Sigmoid", None)); out_rank: the rank of
    the head's output (2: [N, C] or [N, D]; 4: a segmentation map; 3: a detector's proposals);
    sides: the side tensors, which the head is fed from the extractor's extra outputs; outputs:
    how many head outputs are compared with the full model's (2: a boxes detector). The head's
    outputs are appended to `returned` when given. Returns (features shape, first head output's
    shape, the largest max |Δ| over the outputs)."""
    full, ext, head = ort_session(full_path), ort_session(parts["extractor"]), ort_session(parts["head"])
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    wants = full.run(None, {input_name: x})[:outputs]
    names = [FEATURES, *(sd.name for sd in sides)]
    f, *side_values = ext.run(names, {INPUT: x})
    if tuple(f.shape) != (shape[0], *feature_dims):
        raise SplitError(f"extractor produced features of shape {f.shape} for a batch of {shape[0]}; "
                         f"expected {fmt_batch_first(feature_dims)}")
    for sd, v in zip(sides, side_values):
        if tuple(v.shape) != (shape[0], *sd.dims):
            raise SplitError(f"extractor produced side tensor {sd.name!r} of shape {v.shape} for a batch of "
                             f"{shape[0]}; expected {fmt_batch_first(sd.dims)}")
    feed = {FEATURES: f, **{sd.name: v for sd, v in zip(sides, side_values)}}
    gots = head.run([o.name for o in head.get_outputs()][:outputs], feed)
    if returned is not None:
        returned.extend(gots)
    diff = 0.0
    for k, (got, want) in enumerate(zip(gots, wants)):
        if got.ndim != out_rank or got.shape[0] != shape[0]:
            raise SplitError(f"head produced an output of shape {got.shape} for a batch of {shape[0]}")
        if dropped is None:
            cmp = got
        elif dropped[0] == "Softmax":
            cmp = softmax(got, dropped[1])
        else:
            cmp = sigmoid(got)
        if cmp.shape != want.shape:
            raise SplitError(f"split output shape {cmp.shape} differs from the full model's {want.shape}")
        diff = max(diff, compare(cmp, want, atol, rtol))
    return f.shape, gots[0].shape, diff


# --------------------------------------------------------------------------- batch size


TRANSFORMER_OPS = ("LayerNormalization", "Softmax")
BATCH_CANDIDATES = (1, 2, 4, 8)
MEASURE_ROUNDS = 3  # interleaved rounds of measure_batch; the median is written
MAX_BATCH = 1024  # scorecam refuses a larger model.toml [engine] max_batch_size


def transformer_style(model: onnx.ModelProto) -> bool:
    """Attention and LayerNorm (ViT, DeiT, Swin): graphs of dense matrix products, whose best
    batch size on a CPU is worth measuring (a CNN's is not: scorecam's default of 4 was measured on them)."""
    ops = {n.op_type for n in model.graph.node}
    return all(op in ops for op in TRANSFORMER_OPS) and "MatMul" in ops


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def pick_batch(ms_per_image: dict[int, float], within: float = 0.02) -> int:
    """The smallest batch whose time per image is within `within` of the fastest: a larger batch
    costs memory and latency, so it must be measurably faster to be chosen."""
    fastest = min(ms_per_image.values())
    return min(b for b, t in ms_per_image.items() if t <= fastest * (1 + within))


def timing_worker(conn, out: str, names: list[str], flush: bool) -> None:
    """One of measure_batch's workers (a process of its own): the package's two sessions, one
    intra-op thread each, so each run computes on this process's main thread, as a scorecam
    worker's do. flush: ONNX Runtime's session.set_denormal_as_zero, which the first session of a
    process also sets on the thread that makes it (this one): subnormal floats read as zero.
    Messages: (batch tensor, repetitions) -> thread CPU seconds; ("run", tensor) -> head outputs;
    None -> exit."""
    import time

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if flush:
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    ext = ort.InferenceSession(str(Path(out) / "extractor.onnx"), so, providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(Path(out) / "head.onnx"), so, providers=["CPUExecutionProvider"])

    def once(x):
        return head.run(None, dict(zip(names, ext.run(names, {INPUT: x}))))

    conn.send("ready")
    while (msg := conn.recv()) is not None:
        if isinstance(msg[0], str):  # ("run", tensor)
            conn.send(once(msg[1]))
            continue
        x, reps = msg
        once(x)  # a new batch size allocates on its first run
        t = time.thread_time()
        for _ in range(reps):
            once(x)
        conn.send(time.thread_time() - t)


def measure_batch(out: Path, channels: int, hw, sides=(), batches=BATCH_CANDIDATES, workers: int = 0,
                  rounds: int = MEASURE_ROUNDS, images: int = 8, seed: int = 0, flush: bool = True):
    """Times the package's extractor + head as scorecam's engine runs them on the CPU (`workers`
    processes with one one-thread session pair each, default one per core, all optimisations on)
    at each batch size, with subnormal floats kept and (flush) treated as zero, in interleaved
    rounds (the order reversed every other round). The figure is the workers' CPU time per image
    (thread CPU time: a one-thread session computes on the calling thread), which other load on a
    shared machine inflates far less than wall time. Returns ({(flush, batch): median ms per
    image}, {flush: the head's outputs on one random batch}) for pick_engine."""
    import multiprocessing

    workers = workers or os.cpu_count() or 1
    names = [FEATURES, *(sd.name for sd in sides)]
    rng = np.random.default_rng(seed)
    xs = {b: rng.standard_normal((b, channels, *hw)).astype(np.float32) for b in batches}
    ctx = multiprocessing.get_context("spawn")
    modes = (False, True) if flush else (False,)
    pools: dict[bool, list] = {}
    try:
        for mode in modes:
            pools[mode] = []
            for _ in range(workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=timing_worker, args=(child, str(out), names, mode), daemon=True)
                proc.start()
                pools[mode].append((proc, parent))
        for pool in pools.values():
            for proc, conn in pool:
                if conn.recv() != "ready":
                    raise SplitError("a timing worker did not start")
        outputs = {}
        for mode, pool in pools.items():
            pool[0][1].send(("run", xs[max(batches)]))
            outputs[mode] = pool[0][1].recv()
        keys = [(mode, b) for mode in modes for b in batches]
        times: dict = {k: [] for k in keys}
        for r in range(rounds):
            for mode, b in (keys if r % 2 == 0 else list(reversed(keys))):
                reps = max(1, images // b)
                for _, conn in pools[mode]:
                    conn.send((xs[b], reps))
                cpu = sum(conn.recv() for _, conn in pools[mode])
                times[(mode, b)].append(cpu / (workers * reps * b))
    except (EOFError, OSError) as e:
        raise SplitError(f"timing the package failed: a worker process ended ({e})") from e
    finally:
        for pool in pools.values():
            for proc, conn in pool:
                try:
                    conn.send(None)
                except OSError:
                    pass
            for proc, _ in pool:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}, outputs


def pick_engine(med: dict, outputs: dict, atol: float, rtol: float, within: float = 0.02):
    """From measure_batch's figures: (batch, flush, max |Δ| of the outputs with flush vs without, or
    None). The batch: pick_batch's over the chosen setting. Flushing subnormals is chosen when its
    best is more than `within` faster than keeping them and its outputs equal the others to within
    atol + rtol × max |output| (compare's rule: a subnormal is below 1.2e-38, so any larger
    change means the graph computes with them and the flush is refused)."""
    keep = {b: t for (f, b), t in med.items() if not f}
    flush = {b: t for (f, b), t in med.items() if f}
    diff = None
    if flush:
        diff = max(float(np.abs(a - b).max()) for a, b in zip(outputs[True], outputs[False]))
        scale = max(float(np.abs(a).max()) for a in outputs[False])
        if diff <= atol + rtol * scale and min(flush.values()) < min(keep.values()) * (1 - within):
            return pick_batch(flush, within), True, diff
    return pick_batch(keep, within), False, diff


def engine_summary(med: dict, workers: int, rounds: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts = []
    for f in (False, True):
        row = {b: t for (ff, b), t in sorted(med.items()) if ff == f}
        if row:
            parts.append(("subnormals flushed " if f else "") + ", ".join(f"{b}: {t:.4g}" for b, t in row.items()))
    return (f"CPU ms per image by batch ({workers} workers x 1 thread, median of {rounds} interleaved rounds, "
            f"{cpu_model_name()}, load {load:.1f}): " + "; ".join(parts))


# --------------------------------------------------------------------------- package files


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def toml_value(v) -> str:
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def toml_floats(xs) -> str:
    return "[" + ", ".join(repr(float(x)) for x in xs) + "]"


def model_toml(args, width: int, height: int, description: str, a: Analysis, channels: int = 3,
               head: dict | None = None, sides=(), engine: dict | None = None) -> str:
    """head: {"kind": ..., "activation": ... (classes), "layout": ... (segmentation)}; sides: the
    side inputs, named in a comment (scorecam reads them from the graphs; the manifest has no key)."""
    lines = [
        f"description = {toml_str(args.description)}",
        f"source = {toml_str(args.source)}",
        f"license = {toml_str(args.license)}",
        "",
        "[input]",
        f"width = {width}",
        f"height = {height}",
    ]
    if channels == 1:  # 3 (RGB) is the default; older scorecam builds do not know the key
        lines.append(f"channels = {channels}  # greyscale: the photo is converted like Pillow's convert(\"L\") before resizing")
    elif channels == 4:
        lines.append(f"channels = {channels}  # RGBA: the photo's alpha is kept (255 where it has none)")
    lines.append(f"resize = {toml_str(args.resize)}")
    if args.resize == "shorter_side_crop":
        lines.append(f"crop_from = {args.crop_from}")
    if args.resize == "letterbox":
        lines.append(f"pad_value = {args.pad_value}  # the border, 0..255 before normalisation")
    lines += [
        f"resize_filter = {toml_str(args.resize_filter)}",
        f"exif_orientation = {toml_str(args.exif_orientation)}  # what the model sees of a photo's EXIF rotation",
        f"mean = {toml_floats(args.mean)}  # applied after scaling pixels to 0..1",
        f"std = {toml_floats(args.std)}",
        "",
        "[target_layer]",
        f"description = {toml_str(description)}",
        f"layout = {toml_str(a.layout)}",
    ]
    if a.layout == "tokens":
        lines += [f"grid = [{a.grid[0]}, {a.grid[1]}]", f"prefix_tokens = {a.prefix}"]
    if sides:
        lines.append("# The graph does not separate at this layer: extractor.onnx also returns these side inputs and "
                     "head.onnx takes them (by name), recomputed on full passes, clean on head-only passes:")
        lines += [f"#   {sd.name} {fmt_batch_first(sd.dims)}"
                  + (" (an Identity copy of the image)" if sd.image else f" (tensor {sd.tensor})" if sd.name != sd.tensor else "")
                  for sd in sides]
    if head:
        lines += ["", "[head]"] + [f"{k} = {toml_value(v)}" for k, v in head.items()]
    if engine:
        lines += ["", "[engine]  # how scorecam runs this model on the CPU, unless its config says otherwise"]
        lines += [f"{k} = {toml_value(v)}" for k, v in engine.items()]
    lines.append("")
    return "\n".join(lines)


def read_labels(path: Path) -> list[str]:
    labels = path.read_text(encoding="utf-8").splitlines()
    while labels and not labels[-1].strip():
        labels.pop()
    if any(not s.strip() for s in labels):
        raise SplitError(f"{path} has blank lines among the labels")
    return labels


# --------------------------------------------------------------------------- main


def parse_grid(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[x×X,]\s*(\d+)\s*", text)
    if not m or min(int(m.group(1)), int(m.group(2))) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW with positive integers, e.g. 14x14; got {text!r}")
    return int(m.group(1)), int(m.group(2))


def non_negative(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="split_model.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", type=Path, nargs="?", metavar="FULL.onnx",
                    help="the whole classifier (one image input, one class-score output); required")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--layer", metavar="TENSOR_NAME", help="the intermediate tensor to cut at (the Score-CAM target layer)")
    which.add_argument("--module", metavar="NAME",
                       help="cut at the output of this PyTorch module: layer4, features.7, 'features[-1]', "
                            "encoder.layers.encoder_layer_11, blocks.11, /layer4/layer4.2 (see above)")
    ap.add_argument("--list-layers", nargs="?", const="", default=None, metavar="SUBSTRING",
                    help="rank the candidate target layers (best first), optionally only those whose tensor name, "
                         "op or module contains SUBSTRING, and exit")
    ap.add_argument("--filter", metavar="SUBSTRING", help="same as --list-layers SUBSTRING")
    ap.add_argument("--top", type=non_negative, default=DEFAULT_TOP, metavar="N",
                    help="--list-layers: show the best N (default: %(default)s; 0: all)")
    ap.add_argument("--layout", choices=LAYOUTS,
                    help="layout of the target layer, when it cannot be inferred: nchw [N,C,h,w], nhwc [N,h,w,C], "
                         "tokens [N,prefix+h*w,C] (default: inferred, and the decision printed)")
    ap.add_argument("--grid", type=parse_grid, metavar="HxW", help="tokens: the patch grid, e.g. 14x14 (implies --layout tokens)")
    ap.add_argument("--prefix-tokens", type=non_negative, metavar="N",
                    help="tokens: leading non-grid tokens (1: ViT class token, 2: DeiT class + distillation; "
                         "implies --layout tokens; default: inferred among 0..2)")
    ap.add_argument("--out", type=Path, metavar="DIR", help="output package folder, e.g. models/NAME")
    ap.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                    help="input height and width; needed when the model's input size is dynamic, must agree when it is fixed")
    ap.add_argument("--labels", type=Path, metavar="FILE",
                    help="class names, one a line, as many as the model has classes (default: class_0 .. class_{C-1}; "
                         "a one-output sigmoid head: 1 line, or 2 for targets 0 and 1, default 'negative', 'positive'; "
                         "an embedding head has none)")
    ap.add_argument("--mean", type=float, nargs="+", metavar="M",
                    help="per-channel mean, applied after scaling pixels to 0..1: 3 values (R G B) for an RGB model, "
                         "1 for a greyscale one (default: ImageNet's 0.485 0.456 0.406 for RGB; a greyscale model has "
                         "no common convention, so give --mean and --std, e.g. --mean 0.5 --std 0.25)")
    ap.add_argument("--std", type=float, nargs="+", metavar="S",
                    help="per-channel std, as many values as --mean (default: ImageNet's 0.229 0.224 0.225 for RGB)")
    ap.add_argument("--resize", choices=RESIZES, default="stretch",
                    help="stretch: whole image to W×H; shorter_side_crop: shorter side to --crop-from, then centre crop; "
                         "letterbox: keep the aspect ratio, scale to fit W×H, centre, fill the rest with --pad-value "
                         "(Ultralytics' letterbox with --resize-filter opencv_linear) (default: %(default)s)")
    ap.add_argument("--crop-from", type=int, metavar="PX", help="shorter side before the centre crop (shorter_side_crop only; default: round(max(H, W) / 0.875), 256 for 224)")
    ap.add_argument("--pad-value", type=int, metavar="V",
                    help="letterbox only: the border's pixel value 0..255 before normalisation, same for every channel "
                         f"(default: {DEFAULT_PAD_VALUE}, Ultralytics' grey)")
    ap.add_argument("--resize-filter", choices=RESIZE_FILTERS, default="pillow_bilinear",
                    help="resampling the model was trained with: pillow_bilinear (Pillow's antialiased bilinear, "
                         "torchvision's PIL path) or opencv_linear (cv2.INTER_LINEAR) (default: %(default)s)")
    ap.add_argument("--exif-orientation", choices=["ignore", "apply"], default="ignore",
                    help="whether the model sees a photo turned upright by its EXIF tag: ignore (the pixels as stored, "
                         "what PIL.Image.open and torchvision give) or apply (default: %(default)s)")
    ap.add_argument("--description", help="model.toml description (default: derived from the file name)")
    ap.add_argument("--source", help="model.toml source (default: the file name and this script)")
    ap.add_argument("--license", default="unknown: not stated when this package was made; fill in the original model's licence",
                    help="model.toml license (default: 'unknown ...')")
    ap.add_argument("--head", choices=HEAD_KINDS, dest="head_kind",
                    help="what the model outputs: classes [N, C] (scores of C classes), segmentation [N, C, H, W] "
                         "(per-pixel class logits; see --head-layout), embedding [N, D] (a feature vector, explained "
                         "by its similarity to a reference) or detection (raw proposals before NMS; see "
                         "--detection-format). Default: segmentation for a 4-D output, classes for a 2-D one, detection "
                         "for a 3-D output or two outputs; embedding must be asked for")
    ap.add_argument("--detection-format", choices=DETECTION_FORMATS,
                    help="detection only (implies --head detection): yolo_v8 = one output [N, 4 + C, A] (cx, cy, w, h "
                         "in input pixels, then C class scores; YOLOv8/v11 exported without NMS), yolo_v5 = one output "
                         "[N, A, 5 + C] (cx, cy, w, h, objectness, C scores), boxes = two outputs, boxes [N, K, 4] "
                         "(x1, y1, x2, y2) then scores [N, K, C] (kept in that order). Default: yolo_v8 when the "
                         "output is [N, 4 + C, A] with A > 4 + C, boxes for two outputs of those shapes; otherwise "
                         "required. Ultralytics models are letterboxed: add --resize letterbox --pad-value 114 "
                         "--resize-filter opencv_linear --mean 0 0 0 --std 1 1 1")
    ap.add_argument("--scores", choices=SCORE_SCALES,
                    help="detection only: the class scores (and objectness) are probabilities (the default; YOLOv8 "
                         "exports apply the sigmoid) or logits (scorecam applies a sigmoid). Scores outside 0..1 on the "
                         "verification batch need this flag")
    ap.add_argument("--score-threshold", type=float, metavar="P",
                    help="detection only: model.toml's default score threshold of predictions, 0..1 (default: 0.25)")
    ap.add_argument("--iou-threshold", type=float, metavar="IOU",
                    help="detection only: model.toml's default NMS IoU threshold, 0..1 (default: 0.45)")
    sides = ap.add_mutually_exclusive_group()
    sides.add_argument("--side-inputs", action="store_true", default=None,
                       help="the default: cut even where a skip connection or residual goes around the layer (a "
                            "transformer block's norm1, a U-Net decoder reading encoder stages, a detector neck reading "
                            "several backbone levels): each tensor computed before the cut and read after it (the image "
                            "itself through an Identity copy) becomes an extra extractor output and an extra head input "
                            "of the same name (concrete dims, dynamic batch); scorecam recomputes them on every full "
                            "pass and keeps them at their clean values on head-only passes")
    sides.add_argument("--no-side-inputs", action="store_false", dest="side_inputs",
                       help="refuse a cut that does not separate the graph, naming the tensors that go around it and "
                            "a separating tensor after it (a plain extractor/head pair or nothing)")
    ap.add_argument("--head-layout", choices=("nchw", "nhwc"),
                    help="segmentation only: the output is [N, C, H, W] (nchw, the default) or [N, H, W, C] (nhwc)")
    ap.add_argument("--activation", choices=ACTIVATIONS,
                    help="classes only: how scores become probabilities: softmax (one class per image) or sigmoid "
                         "(multi-label; a one-output sigmoid head is a binary classifier: target 1 = the logit, "
                         "target 0 = -logit). Default: sigmoid when the graph ends in a Sigmoid (which is dropped), "
                         "else softmax; give sigmoid for a multi-label/binary model that outputs logits")
    ap.add_argument("--keep-activation", "--keep-softmax", action="store_true", dest="keep_activation",
                    help="keep a final Softmax/Sigmoid in the head (by default a classes head drops it so that it outputs "
                         "logits; scorecam applies the activation itself)")
    ap.add_argument("--tolerance", type=float, default=1e-5, metavar="ATOL",
                    help="absolute part of the allowed difference between head(extractor(x)) and the full model: "
                         "max |Δ| <= ATOL + RTOL * max|output| (default: %(default)g)")
    ap.add_argument("--rtol", type=float, default=1e-4,
                    help="relative part of that allowance, times the largest |output| (default: %(default)g: far above "
                         "float32 rounding from operator fusion, far below what a wrong split gives)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random probe/verification inputs (default: %(default)s)")
    ap.add_argument("--force", action="store_true", help="overwrite package files already in --out")
    speed = ap.add_argument_group("batch size (model.toml [engine] max_batch_size: scorecam's batch for this model on the CPU)")
    speed.add_argument("--measure-batch", choices=("auto", "on", "off"), default="auto",
                       help="time the package at batch sizes --batch-candidates as scorecam's engine runs it (one "
                            "session of one thread per core) and write the fastest into model.toml [engine]; auto "
                            "(the default): only for transformer-style graphs (LayerNormalization, Softmax and MatMul: "
                            "ViT, DeiT, Swin), whose best batch differs from the engine's default of 4")
    speed.add_argument("--batch-candidates", type=int, nargs="+", default=list(BATCH_CANDIDATES), metavar="B",
                       help="--measure-batch: the batch sizes timed (default: %(default)s)")
    speed.add_argument("--measure-workers", type=int, default=0, metavar="N",
                       help="--measure-batch: sessions run at once (default: one per core, as scorecam's engine)")
    speed.add_argument("--batch-size", type=int, metavar="B",
                       help="write this [engine] max_batch_size without measuring")
    speed.add_argument("--flush-denormals", choices=("auto", "off"), default="auto",
                       help="--measure-batch: also time the package with subnormal floats treated as zero (ONNX "
                            "Runtime's session.set_denormal_as_zero, scorecam's [engine] flush_denormals) and choose "
                            "it when more than 2 %% faster with the same outputs (--tolerance, --rtol); off: never")
    q8 = ap.add_argument_group("int8 package (scripts/tools/quantize_int8.py on the package just written)")
    q8.add_argument("--int8", action="store_true",
                    help="also write an int8 package beside --out (OUT-int8): static quantisation calibrated on "
                         "--calibrate photos, its Score-CAM maps compared with the fp32 package's; refused below "
                         "--int8-min-pearson (quantize_int8.py --help)")
    q8.add_argument("--calibrate", type=Path, metavar="DIR", help="--int8: folder of calibration photos")
    q8.add_argument("--int8-fidelity", type=int, default=16, metavar="N",
                    help="--int8: photos whose maps are compared (default: %(default)s)")
    q8.add_argument("--int8-min-pearson", type=float, default=0.95, metavar="R",
                    help="--int8: the least mean Pearson r accepted (default: %(default)s)")
    q8.add_argument("--binary", type=Path, help="--int8: the scorecam binary (default: the newer of target/release "
                                                "and target/debug)")
    args = ap.parse_args(argv)
    if args.int8 and args.calibrate is None:
        ap.error("--int8 needs --calibrate DIR (a folder of photos like the ones the model will explain)")
    if args.calibrate is not None and not args.int8:
        ap.error("--calibrate only applies to --int8")
    # `--list-layers model.onnx` : the optional filter swallowed the model path
    if args.model is None and args.list_layers and args.list_layers.lower().endswith(".onnx"):
        args.model, args.list_layers = Path(args.list_layers), ""
    if args.model is None:
        ap.error("the following arguments are required: FULL.onnx")
    if args.filter is not None:
        if args.list_layers:
            ap.error("give the filter once: --list-layers SUBSTRING or --filter SUBSTRING")
        args.list_layers = args.filter
    listing = args.list_layers is not None
    if not listing and ((args.layer is None and args.module is None) or args.out is None):
        ap.error("--layer or --module, and --out, are required (or use --list-layers)")
    if (args.grid is not None or args.prefix_tokens is not None) and args.layout not in (None, "tokens"):
        ap.error("--grid and --prefix-tokens only apply to --layout tokens")
    if args.crop_from is not None and args.resize != "shorter_side_crop":
        ap.error("--crop-from only applies to --resize shorter_side_crop")
    if args.pad_value is not None and args.resize != "letterbox":
        ap.error("--pad-value only applies to --resize letterbox")
    if args.resize == "letterbox":
        if args.pad_value is None:
            args.pad_value = DEFAULT_PAD_VALUE
        if not 0 <= args.pad_value <= 255:
            ap.error("--pad-value must be 0..255")
    if args.head_layout is not None and args.head_kind not in (None, "segmentation"):
        ap.error("--head-layout only applies to --head segmentation")
    if args.activation is not None and args.head_kind not in (None, "classes"):
        ap.error("--activation only applies to --head classes")
    if args.detection_format is not None and args.head_kind not in (None, "detection"):
        ap.error("--detection-format only applies to --head detection")
    for name in ("score_threshold", "iou_threshold"):
        v = getattr(args, name)
        if v is not None and not (math.isfinite(v) and 0.0 <= v <= 1.0):
            ap.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    for name in ("mean", "std"):
        vals = getattr(args, name)
        if vals is None:
            continue
        if len(vals) not in (1, 3, 4):
            ap.error(f"--{name} takes 1 value (greyscale), 3 (RGB) or 4 (RGBA); got {len(vals)}")
        if not all(math.isfinite(v) for v in vals):
            ap.error(f"--{name} values must be finite")
    if (args.mean is None) != (args.std is None) and not listing:
        ap.error("give --mean and --std together (or neither, for ImageNet's on an RGB model)")
    if args.mean is not None and args.std is not None and len(args.mean) != len(args.std):
        ap.error(f"--mean has {len(args.mean)} values and --std {len(args.std)}: one per input channel each")
    if args.std is not None and not all(v > 0 for v in args.std):
        ap.error("--std values must be positive")
    if args.input_size is not None and min(args.input_size) <= 0:
        ap.error("--input-size values must be positive")
    for name in ("tolerance", "rtol"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v >= 0):
            ap.error(f"--{name} must be a finite number >= 0")
    if args.batch_size is not None and not 1 <= args.batch_size <= MAX_BATCH:
        ap.error(f"--batch-size must be 1..{MAX_BATCH}")
    if args.batch_size is not None and args.measure_batch == "on":
        ap.error("give --batch-size or --measure-batch on, not both")
    if not all(1 <= b <= MAX_BATCH for b in args.batch_candidates):
        ap.error(f"--batch-candidates must be 1..{MAX_BATCH}")
    args.batch_candidates = sorted(set(args.batch_candidates))
    if args.measure_workers < 0:
        ap.error("--measure-workers must be >= 0 (0: one per core)")
    return args


def package_batch(args, model: onnx.ModelProto, out: Path, channels: int, hw, sides) -> dict | None:
    """model.toml's [engine] ({max_batch_size, flush_denormals, measured}), or None for the engine's
    defaults: --batch-size as given, else measured (--measure-batch on, or auto on a
    transformer-style graph)."""
    if args.batch_size is not None:
        return {"max_batch_size": args.batch_size, "measured": "given with --batch-size"}
    if args.measure_batch == "off" or (args.measure_batch == "auto" and not transformer_style(model)):
        return None
    workers = args.measure_workers or os.cpu_count() or 1
    med, outputs = measure_batch(out, channels, hw, sides, batches=args.batch_candidates, workers=workers,
                                 seed=args.seed, flush=args.flush_denormals != "off")
    batch, flush, diff = pick_engine(med, outputs, args.tolerance, args.rtol)
    summary = engine_summary(med, workers, MEASURE_ROUNDS)
    if diff is not None:
        summary += f"; outputs with subnormals flushed vs kept: max |Δ| = {diff:.3g}"
    print(f"batch size: {batch}{', subnormals flushed to zero' if flush else ''} ({summary})")
    return {"max_batch_size": batch, "flush_denormals": flush, "measured": summary}


def int8_package(args, out: Path) -> int:
    """--int8: quantize_int8.py on the package just written (OUT-int8 beside it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("quantize_int8", Path(__file__).with_name("quantize_int8.py"))
    q8 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(q8)
    argv = [str(out), "--calibrate", str(args.calibrate), "--fidelity", str(args.int8_fidelity),
            "--min-pearson", str(args.int8_min_pearson)]
    if args.binary is not None:
        argv += ["--binary", str(args.binary)]
    print(f"int8: scripts/tools/quantize_int8.py {' '.join(argv)}")
    return q8.main(argv)


def input_size(args, in_dims) -> tuple[int, int] | None:
    h, w = in_dims[2], in_dims[3]
    if args.input_size is not None:
        ih, iw = args.input_size
        for what, fixed, given in (("height", h, ih), ("width", w, iw)):
            if isinstance(fixed, int) and fixed != given:
                raise SplitError(f"--input-size {what} {given} disagrees with the model's fixed input {what} {fixed}")
        h, w = ih, iw
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def input_channels(args, in_dims) -> int:
    """1, 3 or 4: the input's channel dim when fixed, else the --mean count, else 3."""
    c = in_dims[1]
    if isinstance(c, int):
        return c
    return len(args.mean) if args.mean is not None else 3


def normalisation(args, channels: int) -> None:
    """Fill in / check --mean and --std for the input's channel count."""
    if args.mean is None:
        if channels == 1:
            raise SplitError("the model's input has 1 channel (greyscale): give its normalisation with --mean M --std S "
                             "(one value each, e.g. --mean 0.5 --std 0.25); there is no common default for greyscale")
        if channels == 4:
            raise SplitError("the model's input has 4 channels (RGBA): give its normalisation with four --mean and "
                             "four --std values; there is no common default for alpha")
        args.mean, args.std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    for name in ("mean", "std"):
        n = len(getattr(args, name))
        if n != channels:
            raise SplitError(f"--{name} has {n} value{'s' if n != 1 else ''} but the model's input has {channels} "
                             f"channel{'s' if channels != 1 else ''}: give one value per channel")


def output_rank(model, out, inp_name: str, hw, seed: int, channels: int) -> int:
    """The rank of the graph output: from shape inference, else by running the model."""
    d = dims_of(out)
    if d is not None:
        return len(d)
    if hw is None:
        raise SplitError(f"the rank of the output {out.name!r} is unknown and the input size is dynamic: "
                         "give --input-size H W (or --head)")
    s1, s2 = probe(model, inp_name, [out.name], hw, seed, channels)[out.name]
    return len(s2)


def head_kind(args, ranks: list[int], out_names: list[str]) -> str:
    """The head kind: --head (--detection-format implies detection), else from the output(s):
    2-D classes, 4-D segmentation, a 3-D output or two outputs a detector."""
    rank, out_name = ranks[0], out_names[0]
    given = args.head_kind or ("detection" if args.detection_format else None)
    if len(out_names) > 1 and given not in (None, "detection"):
        raise SplitError(f"the model has {len(out_names)} outputs {out_names}; a {given} head has one")
    if len(out_names) > 2:
        raise SplitError(f"the model must have one output (or two: a detector's boxes and scores); it has {out_names}")
    if given == "detection" or (given is None and (rank == 3 or len(out_names) == 2)):
        kind = "detection"
        if len(out_names) == 1 and rank != 3:
            raise SplitError(f"--head detection needs a 3-D output ([N, 4 + C, A] yolo_v8, [N, A, 5 + C] yolo_v5) or "
                             f"two (boxes [N, K, 4] then scores [N, K, C]); {out_name!r} is {rank}-D")
        if len(out_names) == 2 and ranks != [3, 3]:
            raise SplitError(f"a detector with two outputs returns boxes [N, K, 4] then scores [N, K, C]; "
                             f"{out_names} are {ranks[0]}-D and {ranks[1]}-D")
    elif given is not None:
        want = {"classes": 2, "embedding": 2, "segmentation": 4}[given]
        if rank != want:
            shape = {2: "[N, C]", 4: "[N, C, H, W]"}[want] if given != "embedding" else "[N, D]"
            raise SplitError(f"--head {given} needs a {want}-D output {shape}; {out_name!r} is {rank}-D")
        kind = given
    elif rank == 2:
        kind = "classes"
    elif rank == 4:
        kind = "segmentation"
    else:
        raise SplitError(f"the output {out_name!r} is {rank}-D: scorecam explains [N, C] class scores (--head classes), "
                         "[N, C, H, W] segmentation maps (--head segmentation), [N, D] embeddings (--head embedding) "
                         "and raw detector proposals (--head detection)")
    if args.head_layout is not None and kind != "segmentation":
        raise SplitError(f"--head-layout only applies to segmentation heads; this one is {kind}")
    if args.activation is not None and kind != "classes":
        raise SplitError(f"--activation only applies to classes heads; this one is {kind}")
    if kind != "detection":
        for flag in ("scores", "score_threshold", "iou_threshold"):
            if getattr(args, flag) is not None:
                raise SplitError(f"--{flag.replace('_', '-')} only applies to detection heads; this one is {kind}")
    return kind


def detection_format(args, shapes: list[tuple], names: list[str]) -> tuple[str, int, str]:
    """(format, classes, how it was decided) from the head outputs' shapes at batch 2."""
    fmt = args.detection_format
    dims = [tuple(sh[1:]) for sh in shapes]
    txt = " and ".join(fmt_batch_first(d) for d in dims)
    if len(dims) == 2:
        if fmt not in (None, "boxes"):
            raise SplitError(f"--detection-format {fmt} reads one output; the model has two ({txt})")
        (k, four), (k2, c) = dims[0] + (None,) * (2 - len(dims[0])), dims[1] + (None,) * (2 - len(dims[1]))
        if len(dims[0]) == 2 and len(dims[1]) == 2 and k == k2 and four == 4 and c and c > 0:
            how = "--detection-format boxes" if fmt else "inferred: two outputs"
            return "boxes", c, f"boxes ({how}): {names[0]!r} {fmt_batch_first(dims[0])} boxes x1, y1, x2, y2 then {names[1]!r} {fmt_batch_first(dims[1])} scores of {c} classes for {k} proposals"
        if len(dims[0]) == 2 and len(dims[1]) == 2 and k == k2 and c == 4:
            raise SplitError(f"the outputs are {txt}: scores then boxes; the boxes format needs boxes [N, K, 4] first, "
                             "then scores [N, K, C]: re-export with the outputs in that order")
        raise SplitError(f"a boxes detector outputs boxes [N, K, 4] then scores [N, K, C]; {names} are {txt}")
    (d,) = dims
    if len(d) != 2:
        raise SplitError(f"a detector's output is 3-D; {names[0]!r} is {fmt_batch_first(d)}")
    a, b = d
    if fmt == "boxes":
        raise SplitError(f"--detection-format boxes needs two outputs, boxes [N, K, 4] then scores [N, K, C]; the "
                         f"model has one, {fmt_batch_first(d)}")
    if fmt == "yolo_v8":
        if a <= 4:
            raise SplitError(f"yolo_v8 reads [N, 4 + C, A]; {fmt_batch_first(d)} has no class scores")
        return "yolo_v8", a - 4, (f"yolo_v8 (--detection-format): {fmt_batch_first(d)} as 4 box values (cx, cy, w, h) "
                                  f"+ {a - 4} class scores for {b} anchors")
    if fmt == "yolo_v5":
        if b <= 5:
            raise SplitError(f"yolo_v5 reads [N, A, 5 + C]; {fmt_batch_first(d)} has no class scores")
        return "yolo_v5", b - 5, (f"yolo_v5 (--detection-format): {fmt_batch_first(d)} as {a} anchors of 4 box values "
                                  f"(cx, cy, w, h), objectness and {b - 5} class scores")
    if a > 4 and b > a:
        return "yolo_v8", a - 4, (f"yolo_v8 (inferred): {fmt_batch_first(d)} reads as 4 box values (cx, cy, w, h) + "
                                  f"{a - 4} class scores for {b} anchors (more anchors than attributes, so not [N, "
                                  "anchors, attributes]); give --detection-format otherwise")
    guessed = ("" if args.head_kind or args.detection_format else
               "a 3-D output is read as a detector's raw proposals (scorecam explains [N, C] class scores, [N, C, H, W] "
               "segmentation maps, [N, D] embeddings and detectors), but ")
    raise SplitError(
        f"{guessed}cannot tell the detection format of {fmt_batch_first(d)}: it is not [N, 4 + C, A] with more anchors than "
        f"attributes (YOLOv8/v11). Give --detection-format yolo_v8 ([N, 4 + C, A]) or yolo_v5 ([N, A, 5 + C]: "
        "cx, cy, w, h, objectness, C scores; a YOLOv8 output transposed to [N, A, 4 + C] is not yolo_v5: export it "
        "untransposed)")


def head_activation(args, last: onnx.NodeProto | None, dropped) -> str:
    """classes: the activation model.toml names, checked against a final Softmax/Sigmoid."""
    ends = last.op_type if last is not None else None
    if args.activation is not None and ends is not None and ends.lower() != args.activation:
        raise SplitError(f"--activation {args.activation}, but the graph ends in a {ends}: its scores are "
                         f"{ends.lower()} probabilities (leave --activation out, or give {ends.lower()})")
    if args.activation is not None:
        return args.activation
    return ends.lower() if ends is not None else "softmax"


def check_detection_scores(args, head_toml: dict, outputs: list) -> None:
    """On the verification batch: class scores outside 0..1 are not probabilities."""
    fmt = head_toml["format"]
    first = {"yolo_v8": 4, "yolo_v5": 4, "boxes": 0}[fmt]
    if fmt == "boxes":
        scores = outputs[1]
    elif fmt == "yolo_v8":
        scores = outputs[0][:, first:, :]
    else:
        scores = outputs[0][:, :, first:]  # objectness and class scores
    lo, hi = float(np.min(scores)), float(np.max(scores))
    if lo >= -1e-6 and hi <= 1.0 + 1e-6:  # a float32 sigmoid may round just past 0 or 1
        return
    what = "class scores" + (" and objectness" if fmt == "yolo_v5" else "")
    if args.scores is None:
        raise SplitError(f"the {what} range from {lo:.7g} to {hi:.7g} on the random verification batch: not "
                         "probabilities. Give --scores logits (scorecam applies a sigmoid) or, if they are scores "
                         "of another scale on purpose, --scores probabilities")
    if args.scores == "probabilities":
        print(f"warning: --scores probabilities, but the {what} range from {lo:.3g} to {hi:.3g} on the random "
              "verification batch (logits would be --scores logits)")


def main(argv=None) -> int:
    args = parse_args(argv)
    full: Path = args.model
    try:
        if not full.is_file():
            raise SplitError(f"{full} does not exist")
        model = load_inferred(full)
        inp, out_vis = graph_ios(model)
        in_dims = check_input(inp)
        channels = input_channels(args, in_dims)
        hw = input_size(args, in_dims)
        ranks = [output_rank(model, o, inp.name, hw, args.seed, channels) for o in out_vis[:3]]
        kind = head_kind(args, ranks, [o.name for o in out_vis])
        last = final_activation(model)
        if kind == "detection":  # the graph as it is: every output (one, or boxes and scores)
            head_out, dropped = [o.name for o in out_vis], None
        else:
            head_out, dropped = find_head_out(model, args.keep_activation, kind)
        head_outs = as_list(head_out)

        if args.list_layers is not None:
            if hw is None:
                raise SplitError(f"the model's input size is dynamic ({fmt_dims(in_dims)}): give --input-size H W "
                                 "(--list-layers runs the model once to learn the real shapes)")
            rows = candidates(model, inp.name, head_out, hw, args.seed, channels=channels)
            filt = args.list_layers.lower()
            chosen = [c for c in rows if filt in c.name.lower() or filt in c.op.lower() or filt in c.module.lower()]
            print_candidates(chosen, len(rows), f"{full} (probed on {hw[0]}×{hw[1]} input)", args.top, args.list_layers or None)
            return 0

        normalisation(args, channels)
        head_toml: dict = {"kind": kind}
        if kind == "classes":
            head_toml["activation"] = head_activation(args, last, dropped)
        elif kind == "segmentation":
            head_toml["layout"] = args.head_layout or "nchw"

        out: Path = args.out
        existing = [n for n in FILES if (out / n).exists()]
        if existing and not args.force:
            raise SplitError(f"{out} already has {', '.join(existing)}; use --force to overwrite")
        if hw is None:
            raise SplitError(f"the model's input size is dynamic ({fmt_dims(in_dims)}): give --input-size H W")
        h, w = hw

        module = None
        if args.module is not None:
            layer, module, count = module_tensor(model, args.module)
            print(f"--module {args.module}: module {module} ({count} nodes); cutting at its output {layer!r} "
                  "(the last tensor made inside it and used outside it)")
            follower = inplace_follower(model, layer, module)
            if follower:
                op, after = follower
                print(f"warning: {layer!r} feeds only a {op} ({after!r}) outside module {module}. If the model "
                      f"applies that {op} in place (torchvision's DenseNet does: F.relu(features, inplace=True)), "
                      f"pytorch-grad-cam's hook on the module records {after!r}, not {layer!r}: to reproduce the "
                      f"library's maps, cut with --layer {after!r}")
        else:
            layer = args.layer
        cut_index = check_layer_name(model, layer, str(full), head_outs[0])

        shapes = probe(model, inp.name, [layer, *head_outs], hw, args.seed, channels)
        a = analyze(shapes[layer], hw, args.layout, args.grid, args.prefix_tokens)
        if a.problem:
            later = a.kind == "batch"
            hint = (suggestion(model, inp.name, head_out, hw, args.seed, cut_index, later, channels)
                    if a.kind in ("batch", "pooled", "not_spatial") else "")
            raise SplitError(f"cannot use tensor {layer!r} as the target layer: {a.problem}.{hint}")
        want_rank = {"segmentation": 4, "detection": 3}.get(kind, 2)
        for name in head_outs:
            ls1, ls2 = shapes[name]
            if batch_axis(ls1, ls2) != ("first", 0) or len(ls2) != want_rank:
                what = {"classes": "class scores", "segmentation": "segmentation map", "embedding": "embedding",
                        "detection": "detector output"}[kind]
                form = {"classes": "2-D [N, C]", "embedding": "2-D [N, D]", "detection": "3-D, batch first",
                        "segmentation": "4-D [N, H, W, C]" if head_toml.get("layout") == "nhwc" else "4-D [N, C, H, W]"}[kind]
                raise SplitError(f"the {what} {name!r} must be {form}; for 2 images they are {list(ls2)}")
        out_dims = list(shapes[head_outs[0]][1][1:])
        classes = None
        out_names = [LOGITS]
        if kind == "classes":
            classes = out_dims[0]
        elif kind == "segmentation":
            classes = out_dims[0] if head_toml["layout"] == "nchw" else out_dims[2]
        elif kind == "detection":
            fmt, classes, fmt_why = detection_format(args, [shapes[n][1] for n in head_outs], head_outs)
            head_toml.update(format=fmt, scores=args.scores or "probabilities",
                             score_threshold=0.25 if args.score_threshold is None else args.score_threshold,
                             iou_threshold=0.45 if args.iou_threshold is None else args.iou_threshold)
            if fmt == "boxes":
                out_names = [BOXES, SCORES]
                out_dims = [list(shapes[n][1][1:]) for n in head_outs]
        feature_dims = a.batch_dims
        wire = args.side_inputs is not False
        try:
            check_dominates(model.graph, layer, inp.name, head_outs, side_inputs=wire)
        except SplitError as e:  # name a cut that would work
            raise SplitError(f"{e}{suggestion(model, inp.name, head_out, hw, args.seed, cut_index, True, channels)}") from e
        print(f"target layer {layer!r} {fmt_batch_first(feature_dims)}")
        print(f"layout {a.layout}: {a.why}")
        if kind == "detection":
            print(f"detection format {fmt_why}")

        extractor, head, rewritten, sides = split(model, layer, head_outs, hw, args.seed, channels,
                                                  side_inputs=wire, out_names=out_names)
        if args.side_inputs and not sides:
            print(f"note: --side-inputs: the graph separates at {layer!r}; the head reads nothing else")
        elif sides:
            print(side_inputs_line(layer, sides))
        declare_concrete(extractor, head, hw, feature_dims, out_dims, channels, sides)
        narrowed = narrow_rows(head, args.tolerance, args.rtol, args.seed)
        if narrowed:
            print(narrowed)

        if args.resize == "shorter_side_crop" and args.crop_from is None:
            args.crop_from = int(round(max(h, w) / 0.875))
        if args.resize == "shorter_side_crop" and args.crop_from < max(h, w):
            raise SplitError(f"--crop-from {args.crop_from} is smaller than the input size {h}×{w}")
        where = f"tensor {layer}" + (f" (output of module {module})" if module else "")
        if args.description is None:
            args.description = f"{full.stem} (split at {where} by scripts/tools/split_model.py)"
        if args.source is None:
            args.source = f"{full.name}, split at {where} by scripts/tools/split_model.py"

        labels = read_labels(args.labels) if args.labels else None
        binary = kind == "classes" and classes == 1 and head_toml["activation"] == "sigmoid"
        if labels is not None:
            if kind == "embedding":
                raise SplitError("an embedding head has no classes: leave --labels out (no labels.txt is written)")
            ok = len(labels) in (1, 2) if binary else len(labels) == classes
            if not ok and binary:
                raise SplitError(f"{args.labels} has {len(labels)} labels; a one-output sigmoid head (a binary "
                                 "classifier) takes 1, or 2 for its targets 0 and 1 (negative, positive)")
            if not ok:
                raise SplitError(f"{args.labels} has {len(labels)} labels but the model has {classes} classes")
        if kind == "classes" and classes == 1 and not binary:
            print("warning: the head has one output and a softmax: its probability is always 1. A binary classifier "
                  "with one logit wants --activation sigmoid")

        big = max(extractor.ByteSize(), head.ByteSize()) > onnx.checker.MAXIMUM_PROTOBUF
        out.mkdir(parents=True, exist_ok=True)
        if big:  # too big to hand to ONNX Runtime from memory: write first
            save(extractor, out / "extractor.onnx")
            save(head, out / "head.onnx")
            parts = {"extractor": out / "extractor.onnx", "head": out / "head.onnx"}
        else:
            parts = {"extractor": extractor, "head": head}
        head_values: list = []
        f_shape, l_shape, diff = verify(full, parts, inp.name, (2, channels, h, w), dropped, feature_dims,
                                        args.tolerance, args.rtol, args.seed, out_rank=want_rank, sides=sides,
                                        outputs=len(head_outs), returned=head_values)
        if kind == "detection":
            check_detection_scores(args, head_toml, head_values)
        if labels is None and kind != "embedding":
            labels = ["negative", "positive"] if binary else [f"class_{i}" for i in range(classes)]
        if not big:
            save(extractor, out / "extractor.onnx")
            save(head, out / "head.onnx")
        if labels is not None:
            (out / "labels.txt").write_text("\n".join(labels), encoding="utf-8")
        elif (out / "labels.txt").exists():
            (out / "labels.txt").unlink()  # --force over an older package: an embedding has no labels
        desc = layer + (f" (output of module {module})" if module else "")
        engine = package_batch(args, model, out, channels, hw, sides)
        (out / "model.toml").write_text(model_toml(args, w, h, desc, a, channels, head_toml, sides, engine),
                                        encoding="utf-8")

        print(f"cut {full} at {layer!r}")
        for t in rewritten:
            what = "the input" if t == inp.name else f"tensor {t!r} (before the cut)"
            print(f"the part after the cut read the shape of {what}: now computed from the features' batch "
                  "and its fixed dims")
        if dropped is not None:
            axis = f" (axis {dropped[1]})" if dropped[0] == "Softmax" else ""
            print(f"dropped the final {dropped[0]}{axis}: the head outputs logits")
        elif last is not None and kind != "classes":
            print(f"note: the graph ends in a {last.op_type}; {'an' if kind == 'embedding' else 'a'} {kind} head keeps it "
                  "(its outputs are what the explanation scores)")
        elif last is not None and args.keep_activation:
            print(f"note: the head keeps the final {last.op_type} (--keep-activation): it outputs probabilities, and "
                  f"scorecam applies [head] activation = \"{head_toml.get('activation')}\" to them again")
        side_text = "".join(f", {sd.name} {fmt_batch_first(sd.dims).replace('N', 'batch', 1)}" for sd in sides)
        print(f"  extractor.onnx: input [batch, {channels}, {h}, {w}] -> features [batch, {', '.join(map(str, f_shape[1:]))}]"
              f"{side_text} (concrete dims declared)")
        if kind == "detection" and head_toml["format"] == "boxes":
            out_text = " and ".join(f"{n} [batch, {', '.join(map(str, d))}]" for n, d in zip(out_names, out_dims))
        else:
            what = {"classes": "logits", "segmentation": f"per-pixel logits ({head_toml.get('layout')})",
                    "embedding": "embedding", "detection": f"logits: raw {head_toml.get('format')} proposals"}[kind]
            out_text = f"{what} [batch, {', '.join(map(str, out_dims))}]"
        head_sides = f" + {len(sides)} side input{'s' if len(sides) > 1 else ''}" if sides else ""
        print(f"  head.onnx:      features{head_sides} -> {out_text}")
        extra = f", grid {a.grid[0]}×{a.grid[1]}, prefix_tokens {a.prefix}" if a.layout == "tokens" else ""
        pre = (f"channels {channels}, " if channels != 3 else "") + f"resize {args.resize}"
        pre += f" (pad_value {args.pad_value})" if args.resize == "letterbox" else ""
        head_text = ", ".join(f"{k} {v}" for k, v in head_toml.items())
        print(f"  model.toml:     layout {a.layout}{extra}, {pre}, resize_filter {args.resize_filter}, "
              f"exif_orientation {args.exif_orientation}; [head] {head_text}")
        if kind == "detection" and (args.resize != "letterbox" or args.resize_filter != "opencv_linear"):
            print("  note: Ultralytics' YOLO models are fed letterboxed photos: --resize letterbox --pad-value 114 "
                  "--resize-filter opencv_linear --mean 0 0 0 --std 1 1 1 (pixels / 255) reproduces their preprocessing")
        if args.exif_orientation == "ignore":
            print("  exif_orientation = \"ignore\": photos are fed as stored, as PIL.Image.open and torchvision give "
                  "them (what pytorch-grad-cam users compare against); --exif-orientation apply turns them upright first")
        print(f"verified with ONNX Runtime on a random batch of 2: max |Δ| = {diff:.3e} "
              f"(allowed: --tolerance {args.tolerance:g} + --rtol {args.rtol:g} × max|output|)")
        written = [n for n in FILES if n != "labels.txt" or labels is not None]
        print(f"wrote {', '.join(written)} to {out}")
        if args.int8:
            return int8_package(args, out)
        return 0
    except SplitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
