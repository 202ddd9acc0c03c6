#!/usr/bin/env python3
"""Split a whole ONNX image classifier into a scorecam model package.

scorecam needs a classifier in two pieces: an extractor (image -> the activations of the
target layer) and a head (those activations -> class scores). This tool cuts a single
ONNX graph at one of its intermediate tensors with onnx.utils.Extractor:

  extractor.onnx   graph input -> LAYER      renamed: input -> features
  head.onnx        LAYER -> graph output     renamed: features -> logits
  labels.txt       --labels, or class_0 .. class_{C-1}
  model.toml       input size, resize mode, mean/std, provenance, target layer

Only tensor names change (node inputs/outputs are rewritten; a tensor that already used
one of the new names gets a fresh one); nodes, weights and attributes are kept as they are.

Requirements on the model: one float32 image input N x 3 x H x W, one output N x C, and a
dynamic batch dimension. LAYER must be 4-D (N x K x h x w, a conv feature map) and must
separate the graph: nothing after it may use a tensor computed before it (a skip
connection around the cut is an error). If the graph ends in a Softmax it is dropped from
the head, so the head yields logits (scorecam applies the softmax itself); --keep-softmax
keeps it.

The split is checked with ONNX Runtime on a random batch of 2: head(extractor(x)) must
equal the full model's output (after a softmax when one was dropped) to --tolerance.

Examples:
  python scripts/tools/split_model.py resnet50.onnx --list-layers
  python scripts/tools/split_model.py resnet50.onnx --layer /layer4/layer4.2/relu_2/Relu_output_0 \\
      --out models/resnet50 --labels imagenet_labels.txt --resize shorter_side_crop --crop-from 256

Needs only onnx, onnxruntime and numpy (pip install -r scripts/setup/requirements_tools.txt).
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.checker
import onnx.shape_inference
import onnx.utils
from onnx import TensorProto, helper

INPUT, FEATURES, LOGITS = "input", "features", "logits"
FILES = ("extractor.onnx", "head.onnx", "labels.txt", "model.toml")


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


def is_dynamic(d) -> bool:
    return not isinstance(d, int)


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


def rewrite_image_shape_reads(head: onnx.ModelProto, graph_input: str, cut: str, image_hw) -> int:
    """Replace Shape(image) in the head by [batch of the cut tensor, 3, H, W].

    Exporters turn `x.view(x.size(0), -1)` into Shape(image) -> Gather(0) -> ... -> Reshape,
    so the head reads the image's shape. The image is always N x 3 x H x W with the
    package's fixed H x W, and N is the cut tensor's batch too, so this is exact.
    """
    count = 0
    nodes: list[onnx.NodeProto] = []
    for node in head.graph.node:
        if node.op_type != "Shape" or node.domain not in ("", "ai.onnx") or list(node.input) != [graph_input]:
            nodes.append(node)
            continue
        if image_hw is None:
            raise SplitError(
                "the part after the cut reads the input's shape and the input size is dynamic: give --input-size H W"
            )
        start = next((a.i for a in node.attribute if a.name == "start"), 0)
        end = next((a.i for a in node.attribute if a.name == "end"), None)
        dims = list(range(4))[start:end]
        out = node.output[0]
        p = f"{out}__scorecam_shape{count}"
        h, w = image_hw
        nodes += [
            helper.make_node("Shape", [cut], [f"{p}_cut"]),
            helper.make_node("Constant", [], [f"{p}_zero"], value=helper.make_tensor(f"{p}_zero", TensorProto.INT64, [1], [0])),
            helper.make_node("Gather", [f"{p}_cut", f"{p}_zero"], [f"{p}_batch"], axis=0),
            helper.make_node("Constant", [], [f"{p}_chw"], value=helper.make_tensor(f"{p}_chw", TensorProto.INT64, [3], [3, h, w])),
        ]
        if dims == [0, 1, 2, 3]:
            nodes.append(helper.make_node("Concat", [f"{p}_batch", f"{p}_chw"], [out], axis=0))
        else:
            nodes += [
                helper.make_node("Concat", [f"{p}_batch", f"{p}_chw"], [f"{p}_all"], axis=0),
                helper.make_node("Constant", [], [f"{p}_idx"], value=helper.make_tensor(f"{p}_idx", TensorProto.INT64, [len(dims)], dims)),
                helper.make_node("Gather", [f"{p}_all", f"{p}_idx"], [out], axis=0),
            ]
        count += 1
    if count:
        del head.graph.node[:]
        head.graph.node.extend(nodes)
    return count


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
            "output goes through."
        )


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


# --------------------------------------------------------------------------- the split


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


def graph_io(model: onnx.ModelProto) -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    outputs = list(model.graph.output)
    if len(inputs) != 1:
        raise SplitError(f"the model must have exactly one (image) input; it has {[vi.name for vi in inputs]}")
    if len(outputs) != 1:
        raise SplitError(f"the model must have exactly one (class scores) output; it has {[vi.name for vi in outputs]}")
    return inputs[0], outputs[0]


def value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    return {vi.name: vi for vi in list(g.value_info) + list(g.input) + list(g.output)}


def list_layers(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    vis = value_infos(model)
    rows = []
    for node in model.graph.node:
        for name in node.output:
            if name and name in vis:
                dims = dims_of(vis[name])
                if dims is not None and len(dims) == 4:
                    rows.append((name, node.op_type, fmt_dims(dims)))
    return rows


def split(model: onnx.ModelProto, layer: str, keep_softmax: bool, full_name: str, image_hw=None):
    graph = model.graph
    inp, out = graph_io(model)
    producers = {n: node for node in graph.node for n in node.output if n}
    vis = value_infos(model)

    if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise SplitError(f"the input {inp.name!r} must be float32")
    in_dims = dims_of(inp)
    if in_dims is None or len(in_dims) != 4:
        raise SplitError(f"the input {inp.name!r} must be 4-D N×3×H×W; it is {fmt_dims(in_dims)}")
    if not is_dynamic(in_dims[0]):
        raise SplitError(
            f"the batch dimension of the input {inp.name!r} is fixed to {in_dims[0]} ({fmt_dims(in_dims)}); "
            "scorecam runs the model on batches: re-export it with a dynamic batch dimension"
        )
    if isinstance(in_dims[1], int) and in_dims[1] != 3:
        raise SplitError(f"the input {inp.name!r} must have 3 (RGB) channels; it is {fmt_dims(in_dims)}")

    if layer == inp.name:
        raise SplitError(f"tensor {layer!r} is the model's input; cut at an intermediate tensor")
    if layer == out.name:
        raise SplitError(f"tensor {layer!r} is the model's output; cut at an intermediate tensor")
    if layer not in producers:
        close = difflib.get_close_matches(layer, list(producers), n=5, cutoff=0.5)
        hint = f" Close names: {', '.join(repr(c) for c in close)}." if close else ""
        raise SplitError(
            f"tensor {layer!r} is not produced by any node of {full_name}.{hint} "
            "Run with --list-layers to see the 4-D tensors."
        )
    if layer not in vis:
        raise SplitError(
            f"shape inference could not work out the shape of tensor {layer!r}; "
            "it must be a 4-D N×K×h×w feature map with a dynamic batch dimension"
        )
    f_dims = dims_of(vis[layer])
    if vis[layer].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise SplitError(f"tensor {layer!r} must be float32")
    if f_dims is None or len(f_dims) != 4:
        raise SplitError(
            f"tensor {layer!r} has shape {fmt_dims(f_dims)}; the target layer must be 4-D "
            "N×K×h×w (a convolutional feature map)"
        )
    if not is_dynamic(f_dims[0]):
        raise SplitError(
            f"tensor {layer!r} has a fixed batch dimension {f_dims[0]} ({fmt_dims(f_dims)}); "
            "the batch dimension must be dynamic"
        )

    head_out = out.name
    dropped_softmax = None
    last = producers.get(out.name)
    if last is not None and last.op_type == "Softmax" and last.domain in ("", "ai.onnx") and not keep_softmax:
        head_out = last.input[0]
        axis = next((a.i for a in last.attribute if a.name == "axis"), None)
        dropped_softmax = -1 if axis is None else axis
        if head_out == layer:
            raise SplitError(f"tensor {layer!r} is the input of the final Softmax; cut earlier")
    if head_out not in vis or dims_of(vis[head_out]) is None or len(dims_of(vis[head_out])) != 2:
        shape = fmt_dims(dims_of(vis[head_out])) if head_out in vis else "unknown shape"
        raise SplitError(f"the class scores {head_out!r} must be 2-D N×C; they are {shape}")

    ex = onnx.utils.Extractor(model)
    extractor = ex.extract_model([inp.name], [layer])
    head = ex.extract_model([layer], [head_out])
    shape_reads = rewrite_image_shape_reads(head, inp.name, layer, image_hw)
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
    rename_to(extractor, {inp.name: INPUT, layer: FEATURES})
    rename_to(head, {layer: FEATURES, head_out: LOGITS})
    for part, what in ((extractor, "extractor"), (head, "head")):
        try:
            onnx.checker.check_model(part, full_check=True)
        except Exception as e:  # noqa: BLE001
            raise SplitError(f"the extracted {what} does not pass the ONNX checker: {e}") from e
    return extractor, head, f_dims, dropped_softmax, shape_reads


def save(model: onnx.ModelProto, path: Path) -> None:
    if model.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(model, str(path))


# --------------------------------------------------------------------------- verification


def softmax(z: np.ndarray, axis: int) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def verify(full_path: Path, parts: dict, input_name: str, shape: tuple[int, ...], softmax_axis, tol: float, seed: int):
    """parts: {"extractor": ModelProto or Path, "head": ModelProto or Path}."""
    import onnxruntime as ort

    def session(m):
        src = m.SerializeToString() if isinstance(m, onnx.ModelProto) else str(m)
        return ort.InferenceSession(src, providers=["CPUExecutionProvider"])

    full, ext, head = session(full_path), session(parts["extractor"]), session(parts["head"])
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    want = full.run(None, {input_name: x})[0]
    f = ext.run([FEATURES], {INPUT: x})[0]
    if f.ndim != 4 or f.shape[0] != shape[0]:
        raise SplitError(f"extractor produced features of shape {f.shape} for a batch of {shape[0]}")
    got = head.run([LOGITS], {FEATURES: f})[0]
    if got.ndim != 2 or got.shape[0] != shape[0]:
        raise SplitError(f"head produced logits of shape {got.shape} for a batch of {shape[0]}")
    cmp = softmax(got, softmax_axis) if softmax_axis is not None else got
    if cmp.shape != want.shape:
        raise SplitError(f"split output shape {cmp.shape} differs from the full model's {want.shape}")
    diff = float(np.abs(cmp - want.astype(np.float64)).max())
    if not diff <= tol:
        raise SplitError(f"head(extractor(x)) differs from the full model by max |Δ| = {diff:.3e} > {tol:g}")
    return f.shape, got.shape, diff


# --------------------------------------------------------------------------- package files


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def toml_floats(xs) -> str:
    return "[" + ", ".join(repr(float(x)) for x in xs) + "]"


def model_toml(args, width: int, height: int, layer: str) -> str:
    lines = [
        f"description = {toml_str(args.description)}",
        f"source = {toml_str(args.source)}",
        f"license = {toml_str(args.license)}",
        "",
        "[input]",
        f"width = {width}",
        f"height = {height}",
        f"resize = {toml_str(args.resize)}",
    ]
    if args.resize == "shorter_side_crop":
        lines.append(f"crop_from = {args.crop_from}")
    lines += [
        f"mean = {toml_floats(args.mean)}  # applied after scaling pixels to 0..1",
        f"std = {toml_floats(args.std)}",
        "",
        "[target_layer]",
        f"description = {toml_str(layer)}",
        "",
    ]
    return "\n".join(lines)


def read_labels(path: Path) -> list[str]:
    labels = path.read_text(encoding="utf-8").splitlines()
    while labels and not labels[-1].strip():
        labels.pop()
    if any(not s.strip() for s in labels):
        raise SplitError(f"{path} has blank lines among the labels")
    return labels


# --------------------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="split_model.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", type=Path, metavar="FULL.onnx", help="the whole classifier (one image input, one class-score output)")
    ap.add_argument("--layer", metavar="TENSOR_NAME", help="the intermediate tensor to cut at (the Score-CAM target layer, 4-D N×K×h×w)")
    ap.add_argument("--list-layers", action="store_true", help="print the model's 4-D intermediate tensors (candidates for --layer) and exit")
    ap.add_argument("--out", type=Path, metavar="DIR", help="output package folder, e.g. models/NAME")
    ap.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                    help="input height and width; needed when the model's input size is dynamic, must agree when it is fixed")
    ap.add_argument("--labels", type=Path, metavar="FILE", help="class names, one a line, as many as the model has classes (default: class_0 .. class_{C-1})")
    ap.add_argument("--mean", type=float, nargs=3, default=[0.485, 0.456, 0.406], metavar=("R", "G", "B"),
                    help="per-channel mean, applied after scaling pixels to 0..1 (default: ImageNet %(default)s)")
    ap.add_argument("--std", type=float, nargs=3, default=[0.229, 0.224, 0.225], metavar=("R", "G", "B"),
                    help="per-channel std (default: ImageNet %(default)s)")
    ap.add_argument("--resize", choices=["stretch", "shorter_side_crop"], default="stretch",
                    help="stretch: whole image to W×H; shorter_side_crop: shorter side to --crop-from, then centre crop (default: %(default)s)")
    ap.add_argument("--crop-from", type=int, metavar="PX", help="shorter side before the centre crop (shorter_side_crop only; default: round(max(H, W) / 0.875), 256 for 224)")
    ap.add_argument("--description", help="model.toml description (default: derived from the file name)")
    ap.add_argument("--source", help="model.toml source (default: the file name and this script)")
    ap.add_argument("--license", default="unknown: not stated when this package was made; fill in the original model's licence",
                    help="model.toml license (default: 'unknown ...')")
    ap.add_argument("--keep-softmax", action="store_true", help="keep a final Softmax in the head (by default it is dropped so the head outputs logits)")
    ap.add_argument("--tolerance", type=float, default=1e-5, help="max |Δ| allowed between head(extractor(x)) and the full model (default: %(default)g)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random verification input (default: %(default)s)")
    ap.add_argument("--force", action="store_true", help="overwrite package files already in --out")
    args = ap.parse_args(argv)
    if not args.list_layers and (args.layer is None or args.out is None):
        ap.error("--layer and --out are required (or use --list-layers)")
    if args.crop_from is not None and args.resize != "shorter_side_crop":
        ap.error("--crop-from only applies to --resize shorter_side_crop")
    for name in ("mean", "std"):
        if not all(math.isfinite(v) for v in getattr(args, name)):
            ap.error(f"--{name} values must be finite")
    if not all(v > 0 for v in args.std):
        ap.error("--std values must be positive")
    if args.input_size is not None and min(args.input_size) <= 0:
        ap.error("--input-size values must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    full: Path = args.model
    try:
        if not full.is_file():
            raise SplitError(f"{full} does not exist")
        model = load_inferred(full)
        if args.list_layers:
            rows = list_layers(model)
            if not rows:
                print("no 4-D intermediate tensors with inferred shapes")
            width = max((len(r[0]) for r in rows), default=0)
            for name, op, shape in rows:
                print(f"{name:{width}s}  {op:20s} {shape}")
            return 0

        out: Path = args.out
        existing = [n for n in FILES if (out / n).exists()]
        if existing and not args.force:
            raise SplitError(f"{out} already has {', '.join(existing)}; use --force to overwrite")

        in_dims = dims_of(graph_io(model)[0]) or [None] * 4
        h, w = (in_dims[2], in_dims[3]) if len(in_dims) == 4 else (None, None)
        if args.input_size is not None:
            ih, iw = args.input_size
            for what, fixed, given in (("height", h, ih), ("width", w, iw)):
                if isinstance(fixed, int) and fixed != given:
                    raise SplitError(f"--input-size {what} {given} disagrees with the model's fixed input {what} {fixed}")
            h, w = ih, iw
        image_hw = (h, w) if isinstance(h, int) and isinstance(w, int) else None

        extractor, head, f_dims, softmax_axis, shape_reads = split(model, args.layer, args.keep_softmax, str(full), image_hw)
        if image_hw is None:
            raise SplitError(f"the model's input size is dynamic ({fmt_dims(in_dims)}): give --input-size H W")

        if args.resize == "shorter_side_crop" and args.crop_from is None:
            args.crop_from = int(round(max(h, w) / 0.875))
        if args.resize == "shorter_side_crop" and args.crop_from < max(h, w):
            raise SplitError(f"--crop-from {args.crop_from} is smaller than the input size {h}×{w}")
        if args.description is None:
            args.description = f"{full.stem} (split at {args.layer} by scripts/tools/split_model.py)"
        if args.source is None:
            args.source = f"{full.name}, split at tensor {args.layer} by scripts/tools/split_model.py"

        labels = read_labels(args.labels) if args.labels else None

        big = max(extractor.ByteSize(), head.ByteSize()) > onnx.checker.MAXIMUM_PROTOBUF
        out.mkdir(parents=True, exist_ok=True)
        if big:  # too big to hand to ONNX Runtime from memory: write first
            save(extractor, out / "extractor.onnx")
            save(head, out / "head.onnx")
            parts = {"extractor": out / "extractor.onnx", "head": out / "head.onnx"}
        else:
            parts = {"extractor": extractor, "head": head}
        graph_input = graph_io(model)[0].name
        f_shape, l_shape, diff = verify(full, parts, graph_input, (2, 3, h, w), softmax_axis, args.tolerance, args.seed)
        classes = l_shape[1]
        if labels is None:
            labels = [f"class_{i}" for i in range(classes)]
        elif len(labels) != classes:
            raise SplitError(f"{args.labels} has {len(labels)} labels but the model has {classes} classes")
        if not big:
            save(extractor, out / "extractor.onnx")
            save(head, out / "head.onnx")
        (out / "labels.txt").write_text("\n".join(labels), encoding="utf-8")
        (out / "model.toml").write_text(model_toml(args, w, h, args.layer), encoding="utf-8")

        print(f"cut {full} at {args.layer!r} {fmt_dims(f_dims)}")
        if shape_reads:
            print(f"the part after the cut read the input's shape ({shape_reads}× Shape): now computed as "
                  f"[batch of the features, 3, {h}, {w}]")
        if softmax_axis is not None:
            print(f"dropped the final Softmax (axis {softmax_axis}): the head outputs logits")
        print(f"  extractor.onnx: input [N, 3, {h}, {w}] -> features {list(f_shape[1:])} per image")
        print(f"  head.onnx:      features -> logits [N, {classes}]")
        print(f"verified with ONNX Runtime on a random batch of 2: max |Δ| = {diff:.3e} (tolerance {args.tolerance:g})")
        print(f"wrote {', '.join(FILES)} to {out}")
        return 0
    except SplitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
