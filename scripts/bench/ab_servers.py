#!/usr/bin/env python3
"""Compares two scorecam servers request by request (e.g. two versions of the code):

    scripts/bench/ab_servers.py http://127.0.0.1:18081 http://127.0.0.1:18082 PHOTO_DIR ROUNDS

Both servers run idle side by side (start the second with --cache-mib 0 when it has a result
cache); every photo and preset is explained by one then the other, so each request has the
machine to itself and the machine's drift between minutes hits both alike. Prints each request
and a table of seconds per photo and per-pair ratios. Python 3 standard library only."""
import json, sys, time, urllib.request, pathlib, statistics
old, new, images, rounds = sys.argv[1], sys.argv[2], sorted(pathlib.Path(sys.argv[3]).glob("*.JPEG")), int(sys.argv[4])
presets = ["official", "pytorch_grad_cam", "torchcam"]
res = {("old", p): [] for p in presets} | {("new", p): [] for p in presets}
def explain(url, body, preset):
    req = urllib.request.Request(f"{url}/explain?format=json&resolution=model&preset={preset}&timeout_ms=300000", data=body, headers={"Content-Type": "image/jpeg"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        doc = json.loads(r.read())
    return time.perf_counter() - t, doc["stats"]["forward_passes"], doc["stats"].get("cache")
for r in range(rounds):
    for img in images:
        body = img.read_bytes()
        for preset in presets:
            order = [("old", old), ("new", new)] if (r + len(preset)) % 2 == 0 else [("new", new), ("old", old)]
            for name, url in order:
                s, n, cache = explain(url, body, preset)
                res[(name, preset)].append((s, n))
                print(f"{r} {img.name} {preset} {name} {s:.3f}s {n} passes cache={cache}", flush=True)
print("\n| preset | old s/photo (mean, median) | new s/photo (mean, median) | new/old (mean of per-pair ratios) |")
print("|---|---|---|---|")
for p in presets:
    o, n = res[("old", p)], res[("new", p)]
    ratios = [b[0] / a[0] for a, b in zip(o, n)]
    print(f"| {p} | {statistics.mean(x[0] for x in o):.3f}, {statistics.median(x[0] for x in o):.3f} | "
          f"{statistics.mean(x[0] for x in n):.3f}, {statistics.median(x[0] for x in n):.3f} | "
          f"{statistics.mean(ratios):.3f} (median {statistics.median(ratios):.3f}, n={len(ratios)}) |")
