"""Writes seed inputs for the fuzz targets into OUT/decode_image and OUT/request_parsing.

    .venv-tools/bin/python fuzz/make_seeds.py OUT      # needs Pillow (scripts/setup/python_tools.sh)

decode_image: small valid images of every accepted format (EXIF orientations, alpha,
16-bit, grey, palette, CMYK, progressive JPEG, LZW TIFF, animated GIF); scripts/ci/fuzz.sh also
gives libFuzzer tests/fixtures/hostile/ and samples/ as read-only seed folders.
request_parsing: requests in the target's input layout (see
fuzz/fuzz_targets/request_parsing.rs: method, route, content type, flags, query, `\\n`, body)
carrying those images and the hostile files in the three input forms and the v2 forms,
with good and bad parameters, wrong content types and oversize bodies.
The committed corpus (fuzz/corpus/) is these seeds plus what fuzzing found, minimised with
`cargo fuzz cmin`.
"""
import base64
import io
import json
import pathlib
import sys

from PIL import Image

root = pathlib.Path(__file__).resolve().parent.parent
out = pathlib.Path(sys.argv[1])
decode_dir = out / "decode_image"
request_dir = out / "request_parsing"
decode_dir.mkdir(parents=True, exist_ok=True)
request_dir.mkdir(parents=True, exist_ok=True)


def encoded(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def gradient(w, h, mode="RGB"):
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 37) % 256, (y * 53) % 256, ((x + y) * 11) % 256) for y in range(h) for x in range(w)])
    return img.convert(mode)


def exif_orientation(o):
    exif = Image.Exif()
    exif[0x0112] = o
    return exif


small = gradient(12, 8)
images = {
    "rgb.png": encoded(small, "PNG"),
    "rgba.png": encoded(gradient(9, 7, "RGBA"), "PNG"),
    "grey.png": encoded(gradient(10, 10, "L"), "PNG"),
    "grey16.png": encoded(gradient(6, 5, "I;16"), "PNG"),
    "palette.png": encoded(gradient(8, 8, "P"), "PNG"),
    "interlaced.png": encoded(small, "PNG", optimize=False),
    "exif6.png": encoded(small, "PNG", exif=exif_orientation(6)),
    "baseline.jpg": encoded(small, "JPEG", quality=85),
    "progressive.jpg": encoded(gradient(24, 16), "JPEG", quality=70, progressive=True),
    "grey.jpg": encoded(gradient(8, 8, "L"), "JPEG"),
    "cmyk.jpg": encoded(gradient(8, 8, "CMYK"), "JPEG"),
    "exif8.jpg": encoded(small, "JPEG", exif=exif_orientation(8)),
    "exif3.jpg": encoded(small, "JPEG", exif=exif_orientation(3)),
    "lossy.webp": encoded(small, "WEBP", quality=60),
    "lossless.webp": encoded(gradient(9, 7, "RGBA"), "WEBP", lossless=True),
    "still.gif": encoded(gradient(8, 8, "P"), "GIF"),
    "rgb.bmp": encoded(small, "BMP"),
    "palette.bmp": encoded(gradient(8, 8, "P"), "BMP"),
    "rgb.tiff": encoded(small, "TIFF"),
    "lzw.tiff": encoded(small, "TIFF", compression="tiff_lzw"),
    "exif5.tiff": encoded(small, "TIFF", exif=exif_orientation(5)),
    "tiny16.png": encoded(gradient(16, 16), "PNG"),
}
animated = io.BytesIO()
frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
images["animated.gif"] = animated.getvalue()

hostile = {p.name: p.read_bytes() for p in sorted((root / "tests/fixtures/hostile").iterdir())}

# decode_image also reads tests/fixtures/hostile and samples/ directly (scripts/ci/fuzz.sh).
for name, data in images.items():
    (decode_dir / name).write_bytes(data)

# request_parsing: [method, route, content type, flags] + query + b"\n" + body.
POST, GET = 0, 6
EXPLAIN, PREDICT, V2, STREAM, V2_UNKNOWN, MODEL = 0, 1, 2, 3, 5, 6
MULTIPART, PNG, JSON, JPEG, OCTET, TEXT, NONE = 0, 1, 2, 3, 4, 8, 9
ACCEPT_JSON, CHUNKED = 1, 2
BOUNDARY = b"fuzzboundary"


def request(name, route, ctype, query=b"", body=b"", flags=0, method=POST):
    (request_dir / name).write_bytes(bytes([method, route, ctype, flags]) + query + b"\n" + body)


def multipart(image, **params):
    parts = []
    if image is not None:
        parts.append(
            b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + image + b"\r\n"
        )
    for k, v in params.items():
        parts.append(b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"" + k.encode() + b"\"\r\n\r\n"
                     + str(v).encode() + b"\r\n")
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def as_json(image, **params):
    doc = {"image": {"b64": base64.b64encode(image).decode()}, **params}
    return json.dumps(doc).encode()


png = images["tiny16.png"]
jpg = images["baseline.jpg"]
request("raw_png", EXPLAIN, PNG, b"top_k=2", png)
request("raw_png_json", EXPLAIN, PNG, b"format=json&target=1,3&preset=torchcam&resolution=feature", png)
request("raw_png_accept", EXPLAIN, PNG, b"", images["rgb.png"], flags=ACCEPT_JSON)
request("raw_jpg_chunked", EXPLAIN, JPEG, b"colormap=viridis&alpha=0.3", jpg, flags=CHUNKED)
request("raw_octet", PREDICT, OCTET, b"top_k=3", images["lossy.webp"])
request("multipart", EXPLAIN, MULTIPART, b"", multipart(png, target=2, format="heatmap"))
request("multipart_predict", PREDICT, MULTIPART, b"model=tiny", multipart(images["rgb.bmp"], top_k=5))
request("multipart_noimage", EXPLAIN, MULTIPART, b"", multipart(None, top_k=1))
request("multipart_two_images", EXPLAIN, MULTIPART, b"", multipart(png) [:-len(BOUNDARY) - 6] + multipart(png))
request("json", EXPLAIN, JSON, b"", as_json(png, target=[1, 2], format="json", resolution="model"))
request("json_predict", PREDICT, JSON, b"timeout_ms=1000", as_json(images["rgb.tiff"], top_k=2))
request("json_bad", EXPLAIN, JSON, b"", b'{"image": {"b64": "!!"}, "alpha": [1, {"x": 2}]}')
request("sscam", EXPLAIN, PNG, b"method=sscam&samples=3&sigma=0.5&seed=7&format=json", png)
request("iscam", EXPLAIN, PNG, b"method=iscam&steps=3&metrics=true", png)
request("ablationcam", EXPLAIN, MULTIPART, b"", multipart(png, method="ablationcam", top_k=2))
request("max_channels", EXPLAIN, JSON, b"", as_json(png, max_channels=2, preset="pytorch_grad_cam"))
request("bad_method_params", EXPLAIN, PNG, b"method=sscam&samples=1000000&steps=0&sigma=-1", png)
request("stream", STREAM, PNG, b"top_k=2&metrics=true", png)
request("stream_json", STREAM, JSON, b"", as_json(png, method="iscam", steps=2))
request("bad_params", EXPLAIN, PNG, b"alpha=2&top_k=0&method=gradcam&timeout_ms=0&bogus=1", png)
request("both_targets", EXPLAIN, PNG, b"target=1&top_k=2&target=99", png)
request("timeout_1ms", EXPLAIN, PNG, b"timeout_ms=1", png)
request("unknown_model", PREDICT, PNG, b"model=../../etc/passwd", png)
request("text", EXPLAIN, TEXT, b"", b"hello")
request("no_ctype", PREDICT, NONE, b"", png)
request("get_model", MODEL, NONE, b"", b"", method=GET)
v2_bytes = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                        "data": [base64.b64encode(png).decode()]}], "parameters": {"explain": True}}
request("v2_bytes", V2, JSON, b"", json.dumps(v2_bytes).encode())
v2_uint8 = {"inputs": [{"name": "pixels", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": list(range(12))}],
            "parameters": {"explain": True, "preset": "pytorch_grad_cam", "target": 3}}
request("v2_uint8", V2, JSON, b"", json.dumps(v2_uint8).encode())
v2_fp32 = {"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "FP32",
                       "data": [round(((i * 7) % 13) / 6.0 - 1.0, 2) for i in range(768)]}]}
request("v2_fp32", V2, JSON, b"", json.dumps(v2_fp32).encode())
request("v2_unknown", V2_UNKNOWN, JSON, b"", json.dumps(v2_bytes).encode())
request("oversize", PREDICT, PNG, b"", png + bytes(17 << 10))  # over the target's 16 KiB body limit: 413
request("oversize_chunked", EXPLAIN, PNG, b"", png + bytes(17 << 10), flags=CHUNKED)
for name, data in hostile.items():
    if len(data) <= 4 << 10:
        request("hostile_" + name, EXPLAIN, PNG, b"", data)
