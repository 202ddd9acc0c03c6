"""Writes tests/fixtures/hostile/: files an attacker or a broken client might send, for
tests/hostile.rs. Deterministic; needs Pillow and numpy.

    python scripts/dev/make_hostile_corpus.py
"""
import io
import pathlib
import struct
import zlib

import numpy as np
from PIL import Image

out = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "hostile"
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(7)
photo = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


def save(name, data):
    (out / name).write_bytes(data)


def encoded(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(w, h, idat=b""):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr)
    if idat:
        body += png_chunk(b"IDAT", idat)
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b"")


# Valid but unusual: must be explained (200).
save("valid_1x1.png", encoded(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"))
save("valid_needle_1x2000.png", encoded(Image.new("RGB", (1, 2000), (10, 120, 200)), "PNG"))
save("valid_wide_3000x2.png", encoded(Image.new("RGB", (3000, 2), (90, 90, 10)), "PNG"))
save("valid_cmyk.jpg", encoded(photo.convert("CMYK"), "JPEG", quality=90))
save("valid_grey16.png", encoded(Image.fromarray((np.asarray(photo, dtype=np.uint16) * 257)[:, :, 0]), "PNG"))
frames = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 0, 255)]]
b = io.BytesIO()
frames[0].save(b, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
save("valid_animated.gif", b.getvalue())
save("valid_grey_alpha.png", encoded(photo.convert("LA"), "PNG"))
save("valid_palette.png", encoded(photo.convert("P"), "PNG"))

# Truncated and corrupt files of every format: 422 (or 415 when nothing is recognisable).
for fmt, ext in [("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")]:
    data = encoded(photo, fmt)
    save(f"truncated_header.{ext}", data[:12])
    save(f"truncated_half.{ext}", data[: len(data) // 2])
    corrupt = bytearray(data)
    for i in range(16, len(corrupt), 7):
        corrupt[i] ^= 0xA5
    save(f"corrupt.{ext}", bytes(corrupt))

# Size attacks.
save("huge_header_100000x100000.png", png_header(100000, 100000))
# A decompression bomb: 20000×20000 black pixels in a few hundred kB of zlib.
raw_row = b"\x00" + b"\x00" * (20000 * 3)
bomb = zlib.compressobj(9)
idat = b"".join(bomb.compress(raw_row) for _ in range(20000)) + bomb.flush()
save("bomb_20000x20000.png", png_header(20000, 20000, idat))
save("zero_bytes.png", b"")
save("text.png", b"this is not an image, whatever its name says\n")
save("html.jpg", b"<html><body>hello</body></html>")
print("wrote", len(list(out.iterdir())), "files to", out)
