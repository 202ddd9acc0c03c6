"""Where the extractor's time goes, per kind of convolution, against the core's FMA peak.

Runs the fp32 extractor under ONNX Runtime's profiler (one thread, batch 1, all graph
optimisations: the service's settings per worker) and sorts each convolution kernel's time
by kind: depthwise, pointwise (1x1), dense (the 3x3 stem), and everything else. Each
kind's multiply-adds come from the shapes the profiler records (NCHWc kernels pad channels
to blocks of 16, so these are the multiply-adds the kernels actually do).

Given the per-core fp32 FMA peak measured by scripts/bench/fma_peak.c, it prints a lower bound
on one pass: every dense and pointwise convolution at that peak, the depthwise ones and
the rest at the time ONNX Runtime takes now. BENCHMARKS.md quotes it.

    scripts/setup/python_tools.sh && .venv-tools/bin/python scripts/bench/profile_extractor.py models/efficientnet-lite0/extractor.onnx --peak-gflops 114
"""

import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort


def kind_and_macs(args):
    """(kind, multiply-adds) of one Conv kernel event, or ("other", 0) for other ops."""
    if args.get("op_name") != "Conv":
        return "other", 0
    shapes = [next(iter(s.values())) for s in args["input_type_shape"]]
    out = next(iter(args["output_type_shape"][0].values()))
    w = shapes[1]  # [out, in/groups, kh, kw]
    macs = int(np.prod(out[1:])) * w[1] * w[2] * w[3]
    if w[1] == 1 and w[0] > 1:
        return "depthwise", macs
    if w[2] == 1 and w[3] == 1:
        return "pointwise", macs
    return "dense", macs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("extractor")
    ap.add_argument("--peak-gflops", type=float, required=True, help="per-core fp32 FMA peak")
    ap.add_argument("--runs", type=int, default=300)
    a = ap.parse_args()

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "prof")
    s = ort.InferenceSession(a.extractor, so, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    for _ in range(a.runs):
        s.run(None, feed)
    with open(s.end_profiling()) as f:
        events = json.load(f)

    us = collections.Counter()
    macs = collections.Counter()
    runs = 0
    for e in events:
        if e.get("cat") == "Session" and e["name"] == "model_run":
            runs += 1
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        kind, m = kind_and_macs(e["args"])
        us[kind] += e["dur"]
        macs[kind] += m
    print(f"{runs} runs, one thread, batch 1")
    print(f"{'kind':<10} {'ms/pass':>8} {'M MAC':>8} {'GFLOP/s':>8}")
    total_ms = 0.0
    for kind in ["dense", "pointwise", "depthwise", "other"]:
        ms = us[kind] / runs / 1000
        mm = macs[kind] / runs / 1e6
        total_ms += ms
        print(f"{kind:<10} {ms:8.2f} {mm:8.1f} {2 * mm / ms if ms else 0:8.1f}")
    all_mm = sum(macs.values()) / runs / 1e6
    print(f"{'total':<10} {total_ms:8.2f} {all_mm:8.1f} {2 * all_mm / total_ms:8.1f}")
    at_peak = sum(2 * macs[k] / runs / 1e6 / a.peak_gflops for k in ("dense", "pointwise"))
    rest = (us["depthwise"] + us["other"]) / runs / 1000
    print(
        f"lower bound: dense + pointwise at {a.peak_gflops:g} GFLOP/s ({at_peak:.2f} ms)"
        f" + depthwise and the rest as measured ({rest:.2f} ms) = {at_peak + rest:.2f} ms/pass"
    )


if __name__ == "__main__":
    main()
