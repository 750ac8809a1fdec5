"""Files for the upload tests, made with Pillow here: good ones and each kind the API must
refuse on ``complete``."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image

from bulwark.api.uploads.contents import count_jpeg_scans

SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>'


def png(width: int = 8, height: int = 8) -> bytes:
    """A small valid PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def pdf() -> bytes:
    """A one-page PDF (Pillow writes it)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PDF")
    return buffer.getvalue()


def html_behind_png_header() -> bytes:
    """The 8-byte PNG signature and an IHDR, then HTML: magic bytes say PNG, it does not
    decode."""
    return png()[:33] + b"<html><body><script>alert(document.cookie)</script></body></html>"


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` pixels (3.6 billion by
    default): a real PNG from Pillow with its IHDR dimensions rewritten (and its CRC)."""
    data = bytearray(png())
    # Signature (8), then the IHDR chunk: length (4), type (4), data (13), CRC (4).
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(data)


def noise_png(width: int, height: int) -> bytes:
    """A PNG of random pixels (incompressible: about 3 bytes a pixel)."""
    pixels = random.Random(width * height).randbytes(width * height * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(buffer, "PNG")
    return buffer.getvalue()


def slow_jpeg(scans: int = 100, side: int = 7000) -> bytes:
    """A valid progressive greyscale JPEG of ``side`` x ``side`` pixels (under the default
    pixel limit) with ``scans`` scans (the default limit): its last scan, an AC refinement of
    75 bytes, repeated. libjpeg decodes each scan over the whole image: about 0.05 s of CPU
    a scan at 7000 x 7000, so some 5 s in all."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, "JPEG", progressive=True, quality=50)
    data = buffer.getvalue()
    last_scan = data[data.rindex(b"\xff\xda") : -2]
    copies = scans - (count_jpeg_scans(data) or 0)
    return data[:-2] + last_scan * copies + data[-2:]
