"""Files for the upload tests, made with Pillow here: good ones and each kind the API must
refuse on ``complete``."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image

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
