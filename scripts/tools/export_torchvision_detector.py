#!/usr/bin/env python3
"""Export a torchvision detector (Faster R-CNN, RetinaNet, SSD, FCOS...) as a scorecam model package.

torchvision's detectors cannot be cut into an extractor and a head as scorecam's split tool
cuts a classifier: their exported graph takes one image with no batch axis, returns a
data-dependent number of detections after its own non-maximum suppression, and the target
layer pytorch-grad-cam's tutorial uses is not a tensor of the graph at all but a
`reshape_transform` of the backbone's FPN levels (each level's absolute value, resized
bilinearly to the smallest level's size, concatenated along the channels). This tool
exports the model with a wrapper that makes all three fit:

  extractor.onnx   image [1, 3, H, W] (values 0..1) -> cam [1, K, h, w]  (the tutorial's
                   fasterrcnn_reshape_transform of model.backbone's output),
                   boxes [1, D, 4], labels [1, D] (as floats), scores [1, D]: the model's
                   detections (x1, y1, x2, y2 in input pixels) padded with zero rows to D,
                   its box_detections_per_img (detections_per_img for RetinaNet/FCOS/SSD)
  head.onnx        a pass-through: it returns the extractor's boxes, labels and scores as
                   they are (the graph does not separate at the target, so the extractor
                   computes the detections itself)
  model.toml       [input] letterbox to H x W (as Ultralytics does: --pad-value,
                   opencv_linear), mean 0 and std 1 (torchvision's detectors normalise
                   inside the graph); [target_layer] head_reads = false; [head] kind =
                   "detection", format = "torchvision"
  labels.txt       --labels, or torchvision's COCO category names (91 with background)

scorecam then runs one image per pass (the batch axis is fixed at 1) and, because the head
does not read the target layer, refuses methods that run the head alone (ablationcam,
reciprocam, the gradient family): Score-CAM (every preset), SS-CAM, IS-CAM, RISE/D-RISE and
EigenCAM work, as in the library's detector tutorials.

    scripts/tools/export_torchvision_detector.py fasterrcnn_mobilenet_v3_large_320_fpn \\
        --weights my_detector.pt --size 320 --out models/my-detector

--weights is a state_dict saved with torch.save(model.state_dict(), ...); without it the
model has random weights (--seed), which is enough to check exactness but explains nothing.
Needs torch and torchvision (not part of scorecam's build: use the verification venv,
scripts/bench/verify_detectors.sh makes one).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import onnx
import torch
import torchvision
from onnx import TensorProto, helper

def coco_labels() -> list[str]:
    """torchvision's COCO category names (91, with background and the N/A gaps; no download)."""
    return list(torchvision.models.detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


def fasterrcnn_reshape_transform(x: dict) -> torch.Tensor:
    """pytorch-grad-cam's tutorial transform of model.backbone's FPN levels."""
    target_size = x["pool"].size()[-2:] if "pool" in x else list(x.values())[-1].size()[-2:]
    return torch.cat([torch.nn.functional.interpolate(torch.abs(v), target_size, mode="bilinear")
                      for v in x.values()], dim=1)


class Packaged(torch.nn.Module):
    """One image [1, 3, H, W] -> the target activations and the padded detections."""

    def __init__(self, model, detections: int):
        super().__init__()
        self.model, self.detections = model, detections
        self._levels = None
        model.backbone.register_forward_hook(lambda _m, _i, out: setattr(self, "_levels", out))

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        # Concatenate D zero rows, keep the first D: a fixed shape whatever the count.
        zeros = t.new_zeros((self.detections, *t.shape[1:]))
        return torch.cat([t, zeros])[: self.detections].unsqueeze(0)

    def forward(self, x):
        out = self.model(x)[0]
        cam = fasterrcnn_reshape_transform(self._levels)
        return cam, self.pad(out["boxes"]), self.pad(out["labels"].float()), self.pad(out["scores"])


def build(name: str, weights: pathlib.Path | None, seed: int, score_thresh: float | None):
    torch.manual_seed(seed)
    kwargs = dict(weights=None, weights_backbone=None)
    if score_thresh is not None:
        kwargs["box_score_thresh" if "rcnn" in name else "score_thresh"] = score_thresh
    model = getattr(torchvision.models.detection, name)(**kwargs)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu"))
    return model.eval()


def detections_per_image(model) -> int:
    for owner, attr in ((getattr(model, "roi_heads", None), "detections_per_img"), (model, "detections_per_img")):
        if owner is not None and hasattr(owner, attr):
            return int(getattr(owner, attr))
    raise SystemExit("error: cannot find the model's detections per image (roi_heads.detections_per_img)")


def export(model, size: int, out: pathlib.Path) -> None:
    wrapped = Packaged(model, detections_per_image(model)).eval()
    with torch.no_grad():
        torch.onnx.export(wrapped, (torch.rand(1, 3, size, size),), str(out), opset_version=17,
                          input_names=["images"], output_names=["cam", "boxes", "labels", "scores"], dynamo=False)
    fix_output_shapes(out, wrapped, size)


def fix_output_shapes(path: pathlib.Path, wrapped: Packaged, size: int) -> None:
    """Declare the outputs' real, fixed shapes (the exporter leaves the padded count symbolic)."""
    with torch.no_grad():
        shapes = [list(t.shape) for t in wrapped(torch.rand(1, 3, size, size))]
    m = onnx.load(str(path))
    for output, shape in zip(m.graph.output, shapes):
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for d in shape:
            dims.add().dim_value = d
    onnx.save(m, str(path))


def passthrough_head(extractor: pathlib.Path, out: pathlib.Path) -> None:
    """A head that takes the cam (unread) and the detections, and returns the detections."""
    outs = onnx.load(str(extractor), load_external_data=False).graph.output
    inputs = [helper.make_tensor_value_info(o.name, TensorProto.FLOAT, [d.dim_value for d in
                                                                         o.type.tensor_type.shape.dim]) for o in outs]
    nodes = [helper.make_node("Identity", [o.name], [f"{o.name}_out"]) for o in outs[1:]]
    outputs = [helper.make_tensor_value_info(f"{o.name}_out", TensorProto.FLOAT, [d.dim_value for d in
                                                                                   o.type.tensor_type.shape.dim])
               for o in outs[1:]]
    graph = helper.make_graph(nodes, "passthrough_head", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def model_toml(args, cam_shape) -> str:
    return f'''description = "{args.description or args.model + ' (torchvision), target: the backbone FPN levels'}"
source = "{args.source or 'torchvision ' + torchvision.__version__ + ' ' + args.model}"
license = "{args.license}"

[input]
width = {args.size}
height = {args.size}
resize = "letterbox"
pad_value = {args.pad_value}  # the border, 0..255
resize_filter = "opencv_linear"
exif_orientation = "ignore"  # what the model sees of a photo's EXIF rotation
mean = [0.0, 0.0, 0.0]  # pixels / 255: torchvision's detectors normalise inside the graph
std = [1.0, 1.0, 1.0]

[target_layer]
description = "model.backbone with pytorch-grad-cam's fasterrcnn_reshape_transform: |level| resized to the smallest, concatenated ({cam_shape[1]} channels, {cam_shape[2]}x{cam_shape[3]})"
layout = "nchw"
head_reads = false  # the extractor computes the detections; the head passes them through

[head]
kind = "detection"
format = "torchvision"
scores = "probabilities"
score_threshold = {args.score_threshold}
iou_threshold = {args.iou_threshold}
'''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a torchvision.models.detection constructor, e.g. fasterrcnn_resnet50_fpn")
    ap.add_argument("--out", type=pathlib.Path, required=True, help="the package folder to write")
    ap.add_argument("--weights", type=pathlib.Path, help="a state_dict (torch.save(model.state_dict(), f))")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed before building (random weights)")
    ap.add_argument("--size", type=int, default=320, help="the square input size the photo is letterboxed to")
    ap.add_argument("--pad-value", type=int, default=114, help="the letterbox border, 0..255")
    ap.add_argument("--labels", type=pathlib.Path, help="one class name per line (default: COCO's 91)")
    ap.add_argument("--model-score-thresh", type=float,
                    help="the model's own box_score_thresh (detections below it are dropped inside the graph)")
    ap.add_argument("--score-threshold", type=float, default=0.05, help="model.toml's default prediction threshold")
    ap.add_argument("--iou-threshold", type=float, default=0.5, help="model.toml's default NMS IoU threshold")
    ap.add_argument("--description")
    ap.add_argument("--source")
    ap.add_argument("--license", default="see the weights' licence (torchvision's code: BSD-3-Clause)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing package")
    args = ap.parse_args(argv)
    if (args.out / "model.toml").exists() and not args.force:
        print(f"error: {args.out} already holds a package (--force to overwrite)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    model = build(args.model, args.weights, args.seed, args.model_score_thresh)
    extractor = args.out / "extractor.onnx"
    export(model, args.size, extractor)
    passthrough_head(extractor, args.out / "head.onnx")
    cam = [d.dim_value for d in onnx.load(str(extractor), load_external_data=False).graph.output[0].type.tensor_type.shape.dim]
    labels = args.labels.read_text().splitlines() if args.labels else coco_labels()
    (args.out / "labels.txt").write_text("\n".join(labels) + "\n")
    (args.out / "model.toml").write_text(model_toml(args, cam))
    print(f"wrote {args.out}: target {cam} (the backbone's FPN levels), {detections_per_image(model)} detections "
          f"per image, {len(labels)} classes; one image per run, head-only methods refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
