"""Time per explanation of each method on a running scorecam server, interleaved photo by
photo (every method on photo 1, then on photo 2, …) so machine drift hits all of them
alike. Reads the server's own `timings_ms.total_ms` and `stats` from JSON answers (cache
off). Not part of the test suite.

    scorecam serve --cache-mib 0 &
    python3 scripts/bench/method_timings.py --url http://127.0.0.1:8080 --images DIR [--photos 5]
"""
import argparse
import json
import pathlib
import statistics
import sys
import urllib.request

METHODS = [
    ("scorecam (official)", "method=scorecam"),
    ("gradcam", "method=gradcam"),
    ("gradcampp", "method=gradcampp"),
    ("reciprocam (cell)", "method=reciprocam&kernel=cell"),
    ("reciprocam (gaussian)", "method=reciprocam&kernel=gaussian"),
    ("ablationcam", "method=ablationcam"),
    ("rise (4000 masks)", "method=rise&masks=4000"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--images", required=True, type=pathlib.Path)
    ap.add_argument("--photos", type=int, default=5)
    args = ap.parse_args()
    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    photos = photos[:: max(1, len(photos) // args.photos)][: args.photos]
    rows = {name: [] for name, _ in METHODS}
    for photo in photos:
        body = photo.read_bytes()
        for name, query in METHODS:
            req = urllib.request.Request(f"{args.url}/explain?format=json&timeout_ms=300000&{query}", data=body,
                                         headers={"Content-Type": "image/jpeg"})
            doc = json.load(urllib.request.urlopen(req, timeout=600))
            s = doc["stats"]
            rows[name].append((doc["timings_ms"]["total_ms"], s["forward_passes"], s.get("head_passes", 0)))
            print(f"{photo.name:40} {name:24} {doc['timings_ms']['total_ms']:9.1f} ms  {s['forward_passes']:5} passes"
                  f"  {s.get('head_passes', 0):5} head", flush=True)
    base = statistics.median(r[0] for r in rows["scorecam (official)"])
    print("\n| method | median ms | passes (median) | head passes (median) | time ÷ Score-CAM |\n|---|---:|---:|---:|---:|")
    for name, _ in METHODS:
        ms = statistics.median(r[0] for r in rows[name])
        print(f"| {name} | {ms:.0f} | {statistics.median(r[1] for r in rows[name]):.0f} | "
              f"{statistics.median(r[2] for r in rows[name]):.0f} | {ms / base:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
