#!/usr/bin/env python3
"""Overload burst: N explanations at once with a deadline shorter than the burst needs,
against one or more scorecam servers, interleaved round by round on the same machine.

    scripts/bench/burst.py --server old=http://127.0.0.1:18081 --server new=http://127.0.0.1:18082 \\
        --image samples/chelsea.png --n 8 --rounds 2 --deadline-factor 2.5 [--model NAME] [--query max_passes=400]

Start each server with --cache-mib 0 (a repeat of the same photo would be answered from the
result cache) and leave the machine otherwise as it is; say its load. Per round and server,
in alternating order:

  1. alone: one explanation, by itself: T seconds, P passes; the engine's throughput run
     one at a time is P / T passes/s;
  2. burst: N explanations sent at once with timeout_ms = D (D = factor × T of the first
     round's slowest server unless --timeout-ms is given), while one client loops /predict;
     a 429 is retried after its Retry-After (up to --retries times) with the same D.

Printed per round and server: the statuses of the first answers (200/429/504/other), how
fast the 429s came, how many retried 429s ended in 200, goodput (passes of successful
answers per second, from the burst's start to its last 200) against the one-at-a-time
throughput, and /predict p50/p99 during the burst. Python 3 standard library only; loopback
only; bounded by --n, --rounds and --retries."""
import argparse
import json
import pathlib
import statistics
import threading
import time
import urllib.error
import urllib.request


def post(url, body, timeout):
    """(status, seconds, headers, json document or None)."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/octet-stream"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data, status, headers = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:
        data, status, headers = e.read(), e.code, e.headers
    seconds = time.perf_counter() - t
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    return status, seconds, headers, doc


MODEL = ""  # "&model=NAME" when --model is given
EXTRA = ""  # "&..." when --query is given


def explain_url(base, timeout_ms):
    return f"{base}/explain?format=json&resolution=model&timeout_ms={timeout_ms}{MODEL}{EXTRA}"


def passes(doc):
    s = doc["stats"]
    return s["forward_passes"] + s.get("head_passes", 0) + s.get("metric_passes", 0)


def alone(base, body):
    status, seconds, _, doc = post(explain_url(base, 300000), body, 600)
    if status != 200:
        raise SystemExit(f"{base}: the explanation alone answered {status}: {doc}")
    return seconds, passes(doc)


def one_client(base, body, timeout_ms, retries, start, out):
    """One burst client: its first answer, then its retries after Retry-After."""
    status, seconds, headers, doc = post(explain_url(base, timeout_ms), body, timeout_ms / 1000 + 60)
    rec = {"first": status, "first_s": seconds, "final": status, "attempts": 1,
           "retry_after": headers.get("Retry-After"), "error": (doc or {}).get("error")}
    while status == 429 and rec["attempts"] <= retries:
        time.sleep(float(headers.get("Retry-After") or 1))
        status, seconds, headers, doc = post(explain_url(base, timeout_ms), body, timeout_ms / 1000 + 60)
        rec["attempts"] += 1
        rec["final"] = status
    rec["done_at"] = time.perf_counter() - start
    rec["passes"] = passes(doc) if status == 200 else 0
    out.append(rec)


def predictor(base, body, stop, start, out):
    while not stop.is_set():
        status, seconds, _, _ = post(f"{base}/predict?{MODEL[1:]}", body, 120)
        out.append((status, seconds, time.perf_counter() - start))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def burst(base, body, n, timeout_ms, retries):
    records, predictions, stop = [], [], threading.Event()
    start = time.perf_counter()
    clients = [threading.Thread(target=one_client, args=(base, body, timeout_ms, retries, start, records))
               for _ in range(n)]
    watcher = threading.Thread(target=predictor, args=(base, body, stop, start, predictions))
    watcher.start()
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    stop.set()
    watcher.join()
    return records, predictions


def summary(name, t_alone, p_alone, records, predictions, timeout_ms):
    first = [r["first"] for r in records]
    count = lambda xs, s: sum(1 for x in xs if x == s)
    refused = [r for r in records if r["first"] == 429]
    ok = [r for r in records if r["final"] == 200]
    last_ok = max((r["done_at"] for r in ok), default=float("nan"))
    good_passes = sum(r["passes"] for r in ok)
    first_ok = [r for r in records if r["first"] == 200]
    window = max((r["done_at"] for r in first_ok), default=float("nan"))
    pred_ok = [s for st, s, _ in predictions if st == 200]
    # A prediction is one clean pass: successful work too, done in the same window.
    pred_in_window = sum(1 for st, _, at in predictions if st == 200 and at <= window)
    return {
        "server": name, "T": t_alone, "P": p_alone, "D": timeout_ms / 1000,
        "200": count(first, 200), "429": count(first, 429), "504": count(first, 504),
        "other": len(first) - count(first, 200) - count(first, 429) - count(first, 504),
        "429_max_s": max((r["first_s"] for r in refused), default=float("nan")),
        "retry_after": sorted(int(r["retry_after"]) for r in refused if r["retry_after"]),
        "retried_200": sum(1 for r in refused if r["final"] == 200),
        "final_504": sum(1 for r in records if r["final"] == 504),
        "goodput_first": sum(r["passes"] for r in first_ok) / window if first_ok else 0.0,
        "goodput_first_with_predict": (sum(r["passes"] for r in first_ok) + pred_in_window) / window
        if first_ok else 0.0,
        "goodput_all": good_passes / last_ok if ok else 0.0,
        "alone_rate": p_alone / t_alone,
        "predict_n": len(pred_ok), "predict_p50": pct(pred_ok, 0.5), "predict_p99": pct(pred_ok, 0.99),
        "predict_other": len(predictions) - len(pred_ok),
        "errors": sorted({r["error"] for r in records if r["first"] != 200 and r["error"]})[:2],
    }


def at_once(base, body, n):
    """N explanations at once with the server's default deadline, no retries (the
    hostile-input burst): every answer's status and time, and whether the server is
    still ready after."""
    out, start = [], time.perf_counter()

    def one():
        status, seconds, headers, doc = post(f"{base}/explain?format=json{MODEL}{EXTRA}", body, 600)
        out.append({"status": status, "s": round(seconds, 3), "retry_after": headers.get("Retry-After"),
                    "error_type": (doc or {}).get("error_type")})

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = {}
    for r in out:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    refused = [r["s"] for r in out if r["status"] == 429]
    with urllib.request.urlopen(f"{base}/readyz", timeout=10) as r:
        ready = r.status
    summary = {"n": n, "statuses": statuses, "429_max_s": max(refused, default=None),
               "200_s": sorted(r["s"] for r in out if r["status"] == 200),
               "other": [r for r in out if r["status"] not in (200, 429, 503)],
               "wall_s": round(time.perf_counter() - start, 1), "ready_after": ready}
    print(json.dumps(summary), flush=True)
    return not summary["other"] and ready == 200


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", action="append", required=True, help="NAME=URL (repeat)")
    ap.add_argument("--image", default="samples/chelsea.png")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--retries", type=int, default=6)
    ap.add_argument("--deadline-factor", type=float, default=2.5)
    ap.add_argument("--timeout-ms", type=int)
    ap.add_argument("--model", help="a model the servers serve (default: their default model)")
    ap.add_argument("--query", default="", help="more explain parameters, e.g. max_passes=400")
    ap.add_argument("--at-once", type=int, metavar="N",
                    help="instead: N explanations at once with the server's default deadline, no retries; "
                         "exit 1 unless every answer is 200, 429 or 503 and the server is ready after")
    args = ap.parse_args()
    global MODEL, EXTRA
    MODEL = f"&model={args.model}" if args.model else ""
    EXTRA = f"&{args.query}" if args.query else ""
    servers = [tuple(s.split("=", 1)) for s in args.server]
    body = pathlib.Path(args.image).read_bytes()
    if args.at_once:
        raise SystemExit(0 if all([at_once(base, body, args.at_once) for _, base in servers]) else 1)
    timeout_ms = args.timeout_ms
    rows = []
    for r in range(args.rounds):
        order = servers if r % 2 == 0 else servers[::-1]
        for name, base in order:
            t, p = alone(base, body)
            print(f"round {r} {name}: alone {t:.2f} s, {p} passes ({p / t:.1f} passes/s)", flush=True)
            if timeout_ms is None:
                # The first server's T sets D for every server and round (the same test).
                timeout_ms = int(args.deadline_factor * t * 1000)
                print(f"deadline D = {timeout_ms} ms for N = {args.n}", flush=True)
            records, predictions = burst(base, body, args.n, timeout_ms, args.retries)
            row = summary(name, t, p, records, predictions, timeout_ms)
            row["round"] = r
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| round | server | T alone (s) | D (s) | first answers 200 / 429 / 504 / other | 429 answered within (s) "
          "| Retry-After (s) | retried 429 → 200 | goodput first wave / with retries (passes/s) | one at a time "
          "(passes/s) | goodput / one at a time: explanations, + predictions | /predict n, p50, p99 (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for x in rows:
        ra = x["retry_after"]
        ra_s = f"{ra[0]}–{ra[-1]}" if ra else "–"
        print(f"| {x['round']} | {x['server']} | {x['T']:.1f} | {x['D']:.1f} | {x['200']} / {x['429']} / {x['504']} / "
              f"{x['other']} | {x['429_max_s']:.3f} | {ra_s} | {x['retried_200']} of {x['429']} | "
              f"{x['goodput_first']:.1f} / {x['goodput_all']:.1f} | {x['alone_rate']:.1f} | "
              f"{x['goodput_first'] / x['alone_rate']:.2f}, {x['goodput_first_with_predict'] / x['alone_rate']:.2f} | "
              f"{x['predict_n']}, {x['predict_p50'] * 1000:.0f}, {x['predict_p99'] * 1000:.0f} |")


if __name__ == "__main__":
    main()
