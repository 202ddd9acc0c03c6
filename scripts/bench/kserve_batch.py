#!/usr/bin/env python3
"""A KServe V1 `:predict` of N instances against N single-instance requests sent one after
another, interleaved round by round on one server (so the machine's drift hits both alike):

    scripts/bench/kserve_batch.py http://127.0.0.1:8080 MODEL PHOTO_DIR ROUNDS [N]

Each round sends the N photos once as one request and once as N requests in turn, in
alternating order, and checks that both give the same predictions. Prints every timing and
a table of medians and the per-round ratio. Python 3 standard library only."""
import base64, json, pathlib, statistics, sys, time, urllib.request

url, model, photos, rounds = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), int(sys.argv[4])
n = int(sys.argv[5]) if len(sys.argv) > 5 else 16
files = sorted(p for p in photos.iterdir() if p.suffix.lower() in {".jpeg", ".jpg", ".png"})[:n]
instances = [{"image": {"b64": base64.b64encode(p.read_bytes()).decode()}} for p in files]


def predict(batch):
    body = json.dumps({"instances": batch, "parameters": {"top_k": 1}}).encode()
    req = urllib.request.Request(f"{url}/v1/models/{model}:predict", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return [p["predictions"][0]["index"] for p in json.loads(r.read())["predictions"]]


def together():
    t = time.perf_counter()
    out = predict(instances)
    return time.perf_counter() - t, out


def one_by_one():
    t = time.perf_counter()
    out = [c for i in instances for c in predict([i])]
    return time.perf_counter() - t, out


predict(instances[:1])  # warm-up
times = {"together": [], "one_by_one": []}
for r in range(rounds):
    order = [("together", together), ("one_by_one", one_by_one)]
    if r % 2:
        order.reverse()
    classes = {}
    for name, run in order:
        s, classes[name] = run()
        times[name].append(s)
        print(f"round {r} {name}: {s:.3f} s", flush=True)
    assert classes["together"] == classes["one_by_one"], "the same predictions either way"
ratios = [a / b for a, b in zip(times["together"], times["one_by_one"])]
print(f"\n| {len(files)} photos | median s | |\n|---|---:|---:|")
print(f"| one `:predict` of {len(files)} instances | {statistics.median(times['together']):.3f} | |")
print(f"| {len(files)} single-instance `:predict`s in turn | {statistics.median(times['one_by_one']):.3f} | |")
print(f"| together / in turn (median of per-round ratios, n={rounds}) | | {statistics.median(ratios):.3f} |")
