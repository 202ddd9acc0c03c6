#!/usr/bin/env python3
"""Soak / load test: mixed traffic past capacity against a scorecam server on loopback.

    scripts/bench/soak.py --spawn --duration 300          # starts target/release/scorecam serve itself
    scripts/bench/soak.py --url http://127.0.0.1:8080 --pid 1234 --duration 120

Python 3 standard library only. Traffic goes to 127.0.0.1 only; the run is bounded in
time (--duration) and in count (--max-requests).

Three groups of client threads run for the whole duration:
  * explain clients (--explain-clients, default 48): valid /explain requests (raw, multipart
    and JSON-base64 bodies; PNG, heatmap and JSON outputs; photos of several sizes). More
    than max_concurrent_jobs + max_queued_jobs (8 + 32 by default), so the server is driven
    past capacity and must answer 429 / 504 rather than fall over.
  * mixed clients (--concurrency, default 8, each at most --mixed-rate requests/s):
    /predict, hostile files from tests/fixtures/hostile, bad parameters, wrong content
    types, malformed JSON and multipart, oversize bodies (over server.max_body_bytes, with
    and without Content-Length), probes, the v2 routes.
  * slow clients (--slow-clients, default 2): bodies trickled in a few bytes at a time,
    half of them never finished (the server must answer 408 at its body-read deadline),
    half finished slowly (an ordinary answer).
  * with --churn-period S (and --spawn, which then serves a models folder of its own,
    re-read every second): the live repository. A package (`churn`, a copy of
    efficientnet-lite0) is added, replaced by another model (the int8 package's files,
    each swapped in whole, model.toml last), and removed, in a cycle of S seconds, while
    --churn-clients clients send it explanations, predictions, KServe V1 and v2 infer
    requests. Each change is timed until the server shows it.

Invariants (exit status 1 if any fails):
  * no 500 (nor any 5xx but 503 / 504);
  * every response is what its request deserves: valid explain → 200 PNG of the upload's
    size (or the JSON document / heatmap asked for), valid predict → 200 JSON with
    predictions; or a deliberate 4xx / 429 / 503 / 504 with the error shape
    {"error": "…", "error_type": "…"} (each request kind lists the statuses it may get);
  * at least one valid explanation and one prediction succeeded;
  * /readyz is 200 after the run;
  * churn requests get 200, or at once 404 (the package is not there) or 503 (between a
    change and its load), or the overload answers; never an answer that took longer than
    --churn-instant-s and then said the model is gone (admitted work must finish on the
    version it started with); every change was seen by the server;
  * the server's RSS (VmRSS, sampled every 0.5 s) after the run and an idle period is
    within --rss-slack-mb of its baseline, or has fallen back by at least half of the
    rise from baseline to peak.
"""
import argparse
import base64
import http.client
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
ERROR_STATUSES = {400, 404, 405, 408, 413, 415, 422, 429, 503, 504}
BUSY = {429, 503, 504}  # deliberate answers of an overloaded server


# ---------------------------------------------------------------------------- images


def png_rgb(width, height, seed):
    """A small gradient PNG written with zlib (no Pillow)."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            rows += bytes(((x * 3 + seed) % 256, (y * 5 + seed * 7) % 256, ((x + y) * 2) % 256))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
            + chunk(b"IEND", b""))


def png_size(data):
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def photos():
    """(name, bytes, (width, height)) of the valid uploads explained."""
    out = []
    for p in [ROOT / "samples/chelsea.png", *sorted((ROOT / "tests/fixtures/reference").glob("*.png"))]:
        data = p.read_bytes()
        out.append((p.name, data, png_size(data)))
    for w, h, seed in [(320, 200, 1), (97, 413, 2)]:
        data = png_rgb(w, h, seed)
        out.append((f"gradient_{w}x{h}.png", data, (w, h)))
    return out


# ---------------------------------------------------------------------------- HTTP


class Result:
    __slots__ = ("kind", "route", "status", "error_type", "latency", "problem")

    def __init__(self, kind, route, status, error_type, latency, problem):
        self.kind, self.route, self.status = kind, route, status
        self.error_type, self.latency, self.problem = error_type, latency, problem


def request(port, method, path, body=None, headers=None, timeout=120):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw_exchange(port, head, body_parts, pause, timeout):
    """Sends a request by hand (head, then body parts with pauses) while a second thread
    reads the response, as a real client does (a server may answer early, e.g. 413 or 408,
    and close while the body is still being sent). Returns (status, headers, body), or None
    when the server closed without answering."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    got = {}

    def reader():
        data = b""
        try:
            while True:
                if b"\r\n\r\n" in data:
                    head_bytes, rest = data.split(b"\r\n\r\n", 1)
                    lines = head_bytes.decode("latin-1").split("\r\n")
                    headers = {}
                    for line in lines[1:]:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                    if len(rest) >= int(headers.get("content-length", "0") or 0):
                        got["response"] = (int(lines[0].split()[1]), headers, rest)
                        return
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
        except OSError:
            return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        sock.sendall(head)
        for part in body_parts:
            if not t.is_alive():
                break
            sock.sendall(part)
            if pause:
                time.sleep(pause)
    except OSError:
        pass  # the server answered early and closed; the reader has what it said
    t.join(timeout)
    sock.close()
    return got.get("response")


def error_type_of(body):
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str) and isinstance(doc.get("error_type"), str):
        return doc["error_type"]
    return None


def judge(kind, route, status, headers, body, ok_statuses, check_ok):
    """Classifies one response; returns (error_type, problem or None)."""
    if status in ERROR_STATUSES or status >= 500:
        et = error_type_of(body)
        if status >= 500 and status not in (503, 504):
            return et or "?", f"{status} {body[:200]!r}"
        if et is None:
            return "?", f"{status} without the error shape: {body[:200]!r}"
        if status not in ok_statuses:
            return et, f"unexpected {status} {et}: {body[:200]!r}"
        if status in (429, 503) and "retry-after" not in headers:
            return et, f"{status} without Retry-After"
        return et, None
    if status not in ok_statuses:
        return None, f"unexpected {status}: {body[:200]!r}"
    if check_ok is not None:
        problem = check_ok(headers, body)
        if problem:
            return None, problem
    return None, None


# ---------------------------------------------------------------------------- traffic


def multipart(fields, image):
    boundary = "soak%016x" % random.getrandbits(64)
    parts = []
    if image is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
                     f"Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def check_png(size):
    def check(headers, body):
        if headers.get("content-type") != "image/png":
            return f"explain 200 with content-type {headers.get('content-type')}"
        got = png_size(body)
        if got != size:
            return f"explain PNG is {got}, expected {size}"
        if "x-scorecam-target-index" not in headers:
            return "explain PNG without X-Scorecam-Target-Index"
        return None
    return check


def check_explain_json(size, targets):
    def check(headers, body):
        try:
            doc = json.loads(body)
            exps = doc["explanations"]
            sal = exps[0]["saliency"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return f"explain JSON malformed: {e}"
        if len(exps) != targets or (sal["width"], sal["height"]) != size or len(sal["data"]) != size[0] * size[1]:
            return f"explain JSON has {len(exps)} maps of {sal['width']}x{sal['height']}, expected {targets} of {size}"
        return None
    return check


def check_predict(k):
    def check(headers, body):
        try:
            preds = json.loads(body)["predictions"]
        except (ValueError, KeyError, TypeError) as e:
            return f"predict JSON malformed: {e}"
        if not isinstance(preds, list) or len(preds) != k or not all("index" in p and "score" in p for p in preds):
            return f"predict returned {preds!r:.200}"
        return None
    return check


def explain_request(rng, photos_):
    """A valid explanation in one of the input forms and outputs."""
    name, data, size = rng.choice(photos_)
    form = rng.choice(["raw", "raw", "multipart", "json"])
    output = rng.choice(["png", "png", "png", "heatmap", "json"])
    params = {}
    if output != "png":
        params["format"] = output
    if output == "json":
        params["resolution"] = "model"
    if rng.random() < 0.3:
        params["preset"] = rng.choice(["official", "pytorch_grad_cam", "torchcam"])
    if rng.random() < 0.2:
        params["target"] = str(rng.randrange(1000))
    if output == "json":
        check = check_explain_json((224, 224), 1)
    elif output == "heatmap":
        check = check_png(size)
    else:
        check = check_png(size)
    if form == "raw":
        q = "&".join(f"{k}={v}" for k, v in params.items())
        path = "/explain" + ("?" + q if q else "")
        return "explain_valid", "POST", path, data, {"Content-Type": "image/png"}, check
    if form == "multipart":
        body, ct = multipart(params, data)
        return "explain_valid", "POST", "/explain", body, {"Content-Type": ct}, check
    doc = {"image": {"b64": base64.b64encode(data).decode()}, **params}
    return "explain_valid", "POST", "/explain", json.dumps(doc).encode(), {"Content-Type": "application/json"}, check


def mixed_request(rng, photos_, hostile, max_body):
    """(kind, method, path, body, headers, ok_statuses, check) for one mixed-traffic request."""
    name, data, size = rng.choice(photos_)
    r = rng.random()
    if r < 0.35:
        k = rng.randint(1, 10)
        form = rng.choice(["raw", "multipart", "json"])
        if form == "raw":
            return ("predict_valid", "POST", f"/predict?top_k={k}", data, {"Content-Type": "image/png"},
                    {200} | BUSY, check_predict(k))
        if form == "multipart":
            body, ct = multipart({"top_k": k}, data)
            return "predict_valid", "POST", "/predict", body, {"Content-Type": ct}, {200} | BUSY, check_predict(k)
        doc = json.dumps({"image": {"b64": base64.b64encode(data).decode()}, "top_k": k}).encode()
        return ("predict_valid", "POST", "/predict", doc, {"Content-Type": "application/json"},
                {200} | BUSY, check_predict(k))
    if r < 0.55:
        fname, fdata = rng.choice(hostile)
        route = rng.choice(["/explain", "/predict"])
        if fname.startswith("valid_"):
            ok = {200} | BUSY
            check = check_predict(5) if route == "/predict" else None
            if route == "/explain":
                check = None  # size checked by png header below only for photos; any 200 PNG/JSON is fine
            return "hostile_valid", "POST", route, fdata, {"Content-Type": "application/octet-stream"}, ok, check
        return ("hostile_invalid", "POST", route, fdata, {"Content-Type": "application/octet-stream"},
                {400, 415, 422}, None)
    if r < 0.70:
        bad = rng.choice([
            "alpha=5", "top_k=0", "top_k=11", "target=1000", "target=-1", "target=1&top_k=2", "bogus=1",
            "method=nope", "timeout_ms=0", "timeout_ms=999999999", "resolution=huge", "colormap=rainbow",
            "preset=nope", "format=gif", "model=nope", "target=" + ",".join(str(i) for i in range(11)),
        ])
        # (top_k=11 is valid for /predict, which allows up to the class count: /explain only.)
        route = "/predict" if bad in ("top_k=0", "bogus=1", "timeout_ms=0") and rng.random() < 0.5 else "/explain"
        # Parameters the engine checks (a target past the class count) can meet a full queue first.
        ok = ({404, 422} if "model=" in bad else {422}) | BUSY
        return "bad_params", "POST", f"{route}?{bad}", data, {"Content-Type": "image/png"}, ok, None
    if r < 0.80:
        variant = rng.choice(["text", "xml", "none", "badjson", "jsonarray", "nob64", "noimagepart", "twoimages",
                              "badmultipart", "badquery"])
        route = rng.choice(["/explain", "/predict"])
        if variant == "text":
            return "bad_content_type", "POST", route, b"hello", {"Content-Type": "text/plain"}, {415}, None
        if variant == "xml":
            return "bad_content_type", "POST", route, b"<a/>", {"Content-Type": "application/xml"}, {415}, None
        if variant == "none":
            return "bad_content_type", "POST", route, data, {}, {415}, None
        if variant == "badjson":
            return "bad_body", "POST", route, b'{"image": ', {"Content-Type": "application/json"}, {400}, None
        if variant == "jsonarray":
            return "bad_body", "POST", route, b"[1, 2]", {"Content-Type": "application/json"}, {400}, None
        if variant == "nob64":
            return ("bad_body", "POST", route, b'{"image": {"b64": "@@@"}}', {"Content-Type": "application/json"},
                    {400}, None)
        if variant == "noimagepart":
            body, ct = multipart({"top_k": 1}, None)
            return "bad_body", "POST", route, body, {"Content-Type": ct}, {400}, None
        if variant == "twoimages":
            body, ct = multipart({}, data)
            boundary = ct.split("boundary=")[1].encode()
            extra = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"\r\n\r\n' + data + b"\r\n")
            body = extra + body
            return "bad_body", "POST", route, body, {"Content-Type": ct}, {400}, None
        if variant == "badmultipart":
            return ("bad_body", "POST", route, b"--x\r\ngarbage", {"Content-Type": "multipart/form-data; boundary=x"},
                    {400}, None)
        return "bad_body", "POST", route + "?a=%ZZ&=", data, {"Content-Type": "image/png"}, {400, 422}, None
    if r < 0.85:
        return "oversize", "OVERSIZE", rng.choice(["/explain", "/predict", "/v2/models/efficientnet-lite0/infer"]), \
            max_body + 1 + rng.randrange(1 << 20), None, {413}, None
    if r < 0.93:
        path = rng.choice(["/healthz", "/readyz", "/models", "/models/efficientnet-lite0", "/metrics", "/v2",
                           "/v2/health/ready", "/v2/models/efficientnet-lite0", "/openapi.yaml"])
        return "probe", "GET", path, None, {}, {200}, None
    if r < 0.97:
        path = rng.choice(["/nope", "/models/nope", "/v2/models/nope"])
        return "not_found", "GET", path, None, {}, {404}, None
    doc = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(data).decode()]}]}
    return ("v2_infer", "POST", "/v2/models/efficientnet-lite0/infer", json.dumps(doc).encode(),
            {"Content-Type": "application/json"}, {200} | BUSY, None)


# ---------------------------------------------------------------------------- the live repository

CHURN = "churn"
PACKAGE_FILES = ("extractor.onnx", "head.onnx", "labels.txt", "model.toml")
GONE = ("unknown_model", "model_unavailable")  # how the server says the model is not there


def churn_request(rng, photos_):
    """(kind, method, path, body, headers, ok_statuses, check) for one request to the churning model."""
    name, data, size = rng.choice(photos_)
    b64 = base64.b64encode(data).decode()
    ok = {200, 404, 503} | BUSY
    r = rng.random()
    if r < 0.4:
        return ("churn_explain", "POST", f"/explain?model={CHURN}&format=json&resolution=model&max_channels=64",
                data, {"Content-Type": "image/png"}, ok, check_explain_json((224, 224), 1))
    if r < 0.6:
        return ("churn_predict", "POST", f"/predict?model={CHURN}&top_k=3", data, {"Content-Type": "image/png"},
                ok, check_predict(3))
    if r < 0.8:
        doc = {"instances": [{"image": {"b64": b64}}], "parameters": {"top_k": 2}}
        return ("churn_v1", "POST", f"/v1/models/{CHURN}:predict", json.dumps(doc).encode(),
                {"Content-Type": "application/json"}, ok, None)
    doc = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]}
    return ("churn_v2", "POST", f"/v2/models/{CHURN}/infer", json.dumps(doc).encode(),
            {"Content-Type": "application/json"}, ok, None)


def install_package(source, target):
    """Puts a package's files into `target`, each swapped in whole (written beside, then
    renamed over the old), model.toml last: a server reading the folder at any moment sees
    every file whole, old or new."""
    target.mkdir(parents=True, exist_ok=True)
    for f in PACKAGE_FILES:
        staged = target / f".{f}.staged"
        shutil.copyfile(source / f, staged)
        os.replace(staged, target / f)


def model_version(port):
    """The churning model's (state, version) in GET /models, or None when it is not listed."""
    try:
        status, _, body = request(port, "GET", "/models", timeout=10)
        if status != 200:
            return None
        for m in json.loads(body)["models"]:
            if m["name"] == CHURN:
                return m["state"], m["version"]
    except (OSError, ValueError, KeyError):
        return None
    return None


# ---------------------------------------------------------------------------- the run


class Soak:
    def __init__(self, args, port, pid):
        self.args, self.port, self.pid = args, port, pid
        self.results = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.count = 0
        self.rss = []  # (t, kib)
        self.photos = photos()
        self.hostile = [(p.name, p.read_bytes()) for p in sorted((ROOT / "tests/fixtures/hostile").iterdir())]
        self.max_body = args.max_body_bytes
        self.changes = []  # (add | replace | remove, seconds until the server showed it, or None)

    def take_ticket(self):
        with self.lock:
            if self.count >= self.args.max_requests:
                self.stop.set()
                return False
            self.count += 1
            return True

    def record(self, res):
        with self.lock:
            self.results.append(res)
        if res.problem and self.args.verbose:
            print(f"PROBLEM {res.kind} {res.route}: {res.problem}", file=sys.stderr)

    def rss_kib(self):
        if self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def sampler(self):
        while not self.sampler_stop.is_set():
            kib = self.rss_kib()
            if kib is not None:
                self.rss.append((time.monotonic(), kib))
            self.sampler_stop.wait(0.5)

    def run_one(self, kind, method, path, body, headers, ok, check, route_label=None):
        """One request, judged and recorded."""
        res = self.exchange(kind, method, path, body, headers, ok, check, route_label)
        self.record(res)
        return res

    def exchange(self, kind, method, path, body, headers, ok, check, route_label):
        """One request, judged: its Result."""
        started = time.monotonic()
        route = route_label or path.split("?")[0]
        try:
            if method == "OVERSIZE":
                size = body
                block = b"\0" * (256 << 10)
                parts = [block] * (size // len(block)) + [b"\0" * (size % len(block))]
                if size % 2:  # no length announced: chunked transfer, cut off once over the limit
                    framing = "Transfer-Encoding: chunked"
                    parts = [b"%x\r\n" % len(p) + p + b"\r\n" for p in parts if p] + [b"0\r\n\r\n"]
                else:
                    framing = f"Content-Length: {size}"
                ctype = "application/json" if "/v2/" in path else "image/png"
                head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {ctype}\r\n"
                        f"{framing}\r\nConnection: close\r\n\r\n").encode()
                resp = raw_exchange(self.port, head, parts, 0, 60)
                if resp is None:
                    return Result(kind, route, "closed", None, time.monotonic() - started,
                                  "connection closed without a response")
                status, rheaders, rbody = resp
            else:
                status, rheaders, rbody = request(self.port, method, path, body, headers)
        except (OSError, http.client.HTTPException) as e:
            return Result(kind, route, "exception", None, time.monotonic() - started, f"{type(e).__name__}: {e}")
        et, problem = judge(kind, route, status, rheaders, rbody, ok, check)
        return Result(kind, route, status, et, time.monotonic() - started, problem)

    def explain_client(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set() and self.take_ticket():
            kind, method, path, body, headers, check = explain_request(rng, self.photos)
            status = self.run_one(kind, method, path, body, headers, {200} | BUSY, check).status
            if status in (429, 503):
                self.stop.wait(0.2 + rng.random() * 0.3)  # Retry-After is 1 s; come back a little sooner

    def mixed_client(self, seed):
        rng = random.Random(seed)
        pace = 1.0 / self.args.mixed_rate if self.args.mixed_rate > 0 else 0.0
        while not self.stop.is_set() and self.take_ticket():
            started = time.monotonic()
            self.run_one(*mixed_request(rng, self.photos, self.hostile, self.max_body))
            left = pace - (time.monotonic() - started)
            if left > 0:
                self.stop.wait(left)

    def slow_client(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set() and self.take_ticket():
            name, data, size = rng.choice(self.photos)
            finish = rng.random() < 0.5
            started = time.monotonic()
            head = (f"POST /predict?top_k=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/png\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
            if finish:
                # The whole body in 8 slices over ~4 s: slow but within the body-read deadline.
                n = 8
                step = -(-len(data) // n)
                parts, pause, kind, ok, check = [data[i:i + step] for i in range(0, len(data), step)], 0.5, \
                    "slow_complete", {200} | BUSY, check_predict(1)
            else:
                # Half the body, then a byte a second, never all of it: the server must cut it off (408).
                half = len(data) // 2
                parts = [data[:half]] + [data[half + i:half + i + 1] for i in range(self.args.trickle_s)]
                pause, kind, ok, check = 1.0, "slow_partial", {408}, None
            try:
                resp = raw_exchange(self.port, head, parts, pause, self.args.trickle_s + 30)
            except OSError as e:
                self.record(Result(kind, "/predict", "exception", None, time.monotonic() - started, repr(e)))
                continue
            if resp is None:
                self.record(Result(kind, "/predict", "closed", None, time.monotonic() - started,
                                   "connection closed without a response"))
                continue
            status, rheaders, rbody = resp
            et, problem = judge(kind, "/predict", status, rheaders, rbody, ok, check)
            self.record(Result(kind, "/predict", status, et, time.monotonic() - started, problem))

    def churn_client(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set() and self.take_ticket():
            kind, method, path, body, headers, ok, check = churn_request(rng, self.photos)
            res = self.run_one(kind, method, path, body, headers, ok, check)
            if res.error_type in GONE and res.latency > self.args.churn_instant_s:
                # Admitted on a version, then told the model is gone: work dropped.
                self.record(Result(kind, res.route, res.status, "dropped", res.latency,
                                   f"{res.status} after {res.latency:.1f} s: admitted work dropped by a repository change"))
            if res.status in (404, 429, 503):
                self.stop.wait(0.2 + rng.random() * 0.3)

    def wait_for(self, done, limit=120):
        """Seconds until done(model_version) holds, or None after `limit`."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if done(model_version(self.port)):
                return time.monotonic() - started
            time.sleep(0.2)
        return None

    def churn_cycle(self):
        """Add, replace, remove the churning package, each seen by the server, until stopped."""
        root, period = self.args.models_dir, self.args.churn_period
        fp32, int8 = ROOT / "models/efficientnet-lite0", ROOT / "models/efficientnet-lite0-int8"
        target = root / CHURN
        while not self.stop.is_set():
            for change, act, done in [
                ("add", lambda: install_package(fp32, target), lambda v: v is not None and v[0] == "ready"),
                ("replace", lambda: install_package(int8, target), None),
                ("remove", lambda: shutil.rmtree(target), lambda v: v is None),
            ]:
                if self.stop.is_set():
                    break
                before = model_version(self.port)
                if done is None:  # a replacement: the version grows and the new load is ready
                    old = before[1] if before else 0
                    done = lambda v, old=old: v is not None and v[0] == "ready" and v[1] > old
                act()
                seen = self.wait_for(done)
                self.changes.append((change, seen))
                if seen is None:
                    self.record(Result("churn_change", change, "unseen", None, 120,
                                       f"the server did not show the {change} within 120 s"))
                self.stop.wait(period / 3)

    def run(self):
        args = self.args
        self.sampler_stop = threading.Event()
        sampler = threading.Thread(target=self.sampler, daemon=True)
        sampler.start()
        time.sleep(2)
        baseline = self.rss_kib()
        threads = []
        for i in range(args.explain_clients):
            threads.append(threading.Thread(target=self.explain_client, args=(args.seed * 1000 + i,), daemon=True))
        for i in range(args.concurrency):
            threads.append(threading.Thread(target=self.mixed_client, args=(args.seed * 2000 + i,), daemon=True))
        for i in range(args.slow_clients):
            threads.append(threading.Thread(target=self.slow_client, args=(args.seed * 3000 + i,), daemon=True))
        if args.churn_period:
            threads.append(threading.Thread(target=self.churn_cycle, daemon=True))
            for i in range(args.churn_clients):
                threads.append(threading.Thread(target=self.churn_client, args=(args.seed * 4000 + i,), daemon=True))
        started = time.monotonic()
        for t in threads:
            t.start()
        while time.monotonic() - started < args.duration and not self.stop.is_set():
            time.sleep(1)
            if args.progress and int(time.monotonic() - started) % 30 == 0:
                with self.lock:
                    n, problems = len(self.results), sum(1 for r in self.results if r.problem)
                print(f"[{time.monotonic() - started:5.0f}s] {n} responses, {problems} problems, "
                      f"RSS {self.rss_kib()} KiB", file=sys.stderr, flush=True)
        self.stop.set()
        traffic_s = time.monotonic() - started
        for t in threads:
            t.join(timeout=args.trickle_s + 150)
        stragglers = sum(t.is_alive() for t in threads)
        drained_s = time.monotonic() - started
        # Idle: let in-flight work finish and the allocator settle, then sample.
        time.sleep(args.idle_s)
        after = self.rss_kib()
        self.sampler_stop.set()
        sampler.join()
        try:
            ready_status, _, ready_body = request(self.port, "GET", "/readyz", timeout=10)
        except OSError as e:
            ready_status, ready_body = None, repr(e).encode()
        return {
            "baseline_kib": baseline, "after_kib": after,
            "peak_kib": max((k for _, k in self.rss), default=None),
            "traffic_s": traffic_s, "drained_s": drained_s, "stragglers": stragglers,
            "ready_status": ready_status, "ready_body": ready_body[:200],
        }


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    i = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[i]


def rss_timeline(samples, step):
    """[(seconds since the first sample, KiB)] every `step` seconds."""
    out, next_t = [], None
    for t, kib in samples:
        if next_t is None or t >= next_t:
            t0 = samples[0][0]
            out.append((round(t - t0, 1), kib))
            next_t = t + step
    return out


def status_class(s):
    return s if isinstance(s, str) else f"{s // 100}xx"


def summarise(soak, info, args):
    results = soak.results
    failures = []
    print(f"\n== scorecam soak: {info['traffic_s']:.0f} s of traffic (all clients done at {info['drained_s']:.0f} s), "
          f"{len(results)} responses ==")
    print(f"clients: {args.explain_clients} explain, {args.concurrency} mixed, {args.slow_clients} slow, "
          f"{args.churn_clients if args.churn_period else 0} churn")

    by_route = {}
    for r in results:
        by_route.setdefault(r.route, {}).setdefault(status_class(r.status), 0)
        by_route[r.route][status_class(r.status)] += 1
    classes = sorted({c for v in by_route.values() for c in v})
    print("\nrequests by route and status class")
    print(f"{'route':42}" + "".join(f"{c:>10}" for c in classes) + f"{'total':>10}")
    for route in sorted(by_route):
        row = by_route[route]
        print(f"{route:42}" + "".join(f"{row.get(c, 0):>10}" for c in classes) + f"{sum(row.values()):>10}")

    by_kind = {}
    for r in results:
        by_kind.setdefault(r.kind, {}).setdefault(r.status, 0)
        by_kind[r.kind][r.status] += 1
    print("\nrequests by kind and status")
    for kind in sorted(by_kind):
        parts = ", ".join(f"{s}: {n}" for s, n in sorted(by_kind[kind].items(), key=lambda x: str(x[0])))
        print(f"  {kind:20} {parts}")

    types = {}
    for r in results:
        if r.error_type:
            types[(r.status, r.error_type)] = types.get((r.status, r.error_type), 0) + 1
    print("\nerror types")
    for (s, t), n in sorted(types.items(), key=lambda x: (str(x[0][0]), x[0][1])):
        print(f"  {s} {t:28} {n}")

    print("\nlatency (s)            count      p50      p99      max")
    lat = {}
    for r in results:
        lat.setdefault(f"{r.kind} {status_class(r.status)}", []).append(r.latency)
    for key in sorted(lat):
        v = lat[key]
        print(f"  {key:22} {len(v):>6} {percentile(v, 50):>8.3f} {percentile(v, 99):>8.3f} {max(v):>8.3f}")

    if args.churn_period:
        print(f"\nlive repository ({args.churn_clients} churn clients, a change every {args.churn_period / 3:.0f} s): "
              "seconds until the server showed each change")
        for change in ("add", "replace", "remove"):
            seen = [t for c, t in soak.changes if c == change]
            shown = sorted(t for t in seen if t is not None)
            spread = f"{shown[0]:.1f} / {percentile(shown, 50):.1f} / {shown[-1]:.1f}" if shown else "–"
            print(f"  {change:8} {len(seen):>3} times, {len(seen) - len(shown)} unseen; min / median / max {spread}")
        for kind in ("churn_explain", "churn_predict", "churn_v1", "churn_v2"):
            if not any(r.kind == kind and r.status == 200 for r in results):
                failures.append(f"no {kind} request succeeded")

    mib = lambda k: "n/a" if k is None else f"{k / 1024:.0f} MiB"
    base, peak, after = info["baseline_kib"], info["peak_kib"], info["after_kib"]
    print(f"\nRSS (VmRSS of pid {soak.pid}): baseline {mib(base)}, peak {mib(peak)}, "
          f"after {args.idle_s:.0f} s idle {mib(after)}")
    print(f"/readyz after the run: {info['ready_status']}")

    fivehundreds = [r for r in results if isinstance(r.status, int) and r.status >= 500 and r.status not in (503, 504)]
    if fivehundreds:
        failures.append(f"{len(fivehundreds)} responses with 5xx other than 503/504")
    problems = [r for r in results if r.problem]
    if problems:
        shown = {}
        for r in problems:
            shown.setdefault((r.kind, r.problem[:160]), 0)
            shown[(r.kind, r.problem[:160])] += 1
        for (kind, p), n in sorted(shown.items(), key=lambda x: -x[1])[:15]:
            print(f"  problem ×{n}: {kind}: {p}")
        failures.append(f"{len(problems)} responses broke an invariant")
    if not any(r.kind == "explain_valid" and r.status == 200 for r in results):
        failures.append("no valid explanation succeeded")
    if not any(r.kind == "predict_valid" and r.status == 200 for r in results):
        failures.append("no prediction succeeded")
    if info["ready_status"] != 200:
        failures.append(f"/readyz after the run: {info['ready_status']} {info['ready_body']!r}")
    if info["stragglers"]:
        failures.append(f"{info['stragglers']} client threads still running after the run")
    if base is not None and after is not None and peak is not None:
        slack = args.rss_slack_mb * 1024
        if after > base + slack and after > base + (peak - base) / 2:
            failures.append(f"RSS after idle {mib(after)} is not near the baseline {mib(base)} (peak {mib(peak)})")
    elif soak.pid is not None:
        failures.append("RSS could not be read")
    if args.json:
        doc = {
            "responses": len(results), "traffic_s": info["traffic_s"], "by_route": by_route,
            "by_kind": {k: {str(s): n for s, n in v.items()} for k, v in by_kind.items()},
            "error_types": {f"{s} {t}": n for (s, t), n in types.items()},
            "latency": {k: {"count": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99), "max": max(v)}
                        for k, v in lat.items()},
            "rss_kib": {"baseline": base, "peak": peak, "after_idle": after},
            "rss_timeline_kib": rss_timeline(soak.rss, 5.0),
            "ready_status": info["ready_status"], "failures": failures,
            "churn_changes": soak.changes,
        }
        pathlib.Path(args.json).write_text(json.dumps(doc, indent=1))
    print()
    if failures:
        for f in failures:
            print(f"FAIL: {f}")
        return 1
    print("PASS: no 500s, every response as expected, ready afterwards, RSS back near its baseline")
    return 0


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server on loopback, e.g. http://127.0.0.1:8080")
    where.add_argument("--spawn", action="store_true", help="start BINARY serve on 127.0.0.1:PORT and stop it after")
    ap.add_argument("--binary", default=str(ROOT / "target/release/scorecam"))
    ap.add_argument("--port", type=int, default=0, help="with --spawn (0 = a free port)")
    ap.add_argument("--pid", type=int, help="with --url: the server's pid, for RSS")
    ap.add_argument("--duration", type=float, default=300, help="seconds of traffic (default 300)")
    ap.add_argument("--max-requests", type=int, default=200_000, help="stop after this many requests")
    ap.add_argument("--concurrency", type=int, default=8, help="mixed-traffic clients (default 8)")
    ap.add_argument("--mixed-rate", type=float, default=25,
                    help="most requests per second of each mixed client (0 = no pause; default 25)")
    ap.add_argument("--explain-clients", type=int, default=48, help="valid-explanation clients (default 48)")
    ap.add_argument("--slow-clients", type=int, default=2, help="slow-body clients (default 2)")
    ap.add_argument("--trickle-s", type=int, default=40,
                    help="how long an unfinished slow body trickles (must exceed the body-read deadline, 30 s)")
    ap.add_argument("--max-body-bytes", type=int, default=8 << 20, help="the server's server.max_body_bytes")
    ap.add_argument("--idle-s", type=float, default=20, help="idle time before the final RSS sample")
    ap.add_argument("--rss-slack-mb", type=float, default=100, help="allowed RSS above baseline after idling")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--progress", action="store_true", help="a line every 30 s on stderr")
    ap.add_argument("--verbose", action="store_true", help="print each problem as it happens")
    ap.add_argument("--churn-period", type=float, default=0,
                    help="with --spawn: add, replace and remove a package in a cycle of this many seconds (0: off)")
    ap.add_argument("--churn-clients", type=int, default=2, help="clients of the churning package (default 2)")
    ap.add_argument("--churn-instant-s", type=float, default=2.0,
                    help="a 404/503 'model gone' answer slower than this counts as dropped admitted work")
    ap.add_argument("serve_args", nargs="*", help="extra `scorecam serve` flags with --spawn (after --)")
    args = ap.parse_args()

    server = None
    args.models_dir = None
    if args.churn_period and not args.spawn:
        sys.exit("--churn-period needs --spawn (the soak serves a models folder of its own)")
    if args.spawn:
        port = args.port or free_port()
        cmd = [args.binary, "serve", "--bind", f"{HOST}:{port}", *args.serve_args]
        if args.churn_period:
            # A folder of its own, re-read every second: the default model, and the churn.
            args.models_dir = pathlib.Path(tempfile.mkdtemp(prefix="scorecam-soak-models-"))
            install_package(ROOT / "models/efficientnet-lite0", args.models_dir / "efficientnet-lite0")
            cmd += ["--models-dir", str(args.models_dir), "--models-poll-s", "1"]
        log = open(os.environ.get("SOAK_SERVER_LOG", os.devnull), "wb")
        server = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
        pid = server.pid
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                sys.exit(f"the server exited with {server.returncode} at start-up ({' '.join(cmd)})")
            try:
                if request(port, "GET", "/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                server.kill()
                sys.exit("the server did not become ready within 180 s")
            time.sleep(0.5)
    else:
        from urllib.parse import urlsplit
        u = urlsplit(args.url)
        if u.hostname not in ("127.0.0.1", "localhost") or u.scheme != "http":
            sys.exit("--url must be http://127.0.0.1:PORT (this test only talks to loopback)")
        port, pid = u.port or 80, args.pid
    code = 1
    try:
        soak = Soak(args, port, pid)
        info = soak.run()
        code = summarise(soak, info, args)
    finally:
        if args.models_dir is not None:
            shutil.rmtree(args.models_dir, ignore_errors=True)
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                rc = server.wait(timeout=60)
                print(f"server exited with {rc} after SIGTERM")
                if rc != 0:
                    print("FAIL: the server did not exit 0 on SIGTERM")
                    code = 1
            except subprocess.TimeoutExpired:
                server.kill()
                print("server did not exit within 60 s of SIGTERM; killed")
                code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
