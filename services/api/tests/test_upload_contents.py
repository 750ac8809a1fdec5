"""Upload contents: the stored bytes must be what was declared (size, magic bytes, an image
that decodes within the pixel limit, a PDF header)."""

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from bulwark.api.uploads.contents import ContentRejectedError, check_contents

MAX_PIXELS = 1_000_000


def _image(image_format: str, size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, image_format)
    return buffer.getvalue()


def _with_dimensions(png: bytes, width: int, height: int) -> bytes:
    """``png`` with its IHDR claiming ``width`` x ``height`` (CRC fixed)."""
    data = bytearray(png)
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _check(data: bytes, declared_type: str, declared_size: int | None = None) -> None:
    check_contents(
        data,
        declared_type=declared_type,
        declared_size=len(data) if declared_size is None else declared_size,
        max_pixels=MAX_PIXELS,
    )


@pytest.mark.parametrize(
    ("image_format", "content_type"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("PDF", "application/pdf"),
    ],
)
def test_genuine_files_pass(image_format: str, content_type: str) -> None:
    _check(_image(image_format), content_type)


def test_size_must_be_the_declared_one() -> None:
    png = _image("PNG")
    with pytest.raises(ContentRejectedError, match="size"):
        _check(png, "image/png", declared_size=len(png) - 1)


@pytest.mark.parametrize(
    ("data", "declared"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "image/png"),
        (b"<!DOCTYPE html><html><script>alert(1)</script></html>", "image/png"),
        (b"<html><body>hello</body></html>", "application/pdf"),
        (_image("PNG"), "image/jpeg"),
        (_image("JPEG"), "image/png"),
        (_image("PNG"), "application/pdf"),
    ],
)
def test_magic_bytes_must_name_the_declared_type(data: bytes, declared: str) -> None:
    with pytest.raises(ContentRejectedError, match="not "):
        _check(data, declared)


def test_png_header_in_front_of_html_is_refused() -> None:
    polyglot = _image("PNG")[:33] + b"<html><script>alert(document.cookie)</script></html>"
    with pytest.raises(ContentRejectedError, match="not a valid PNG"):
        _check(polyglot, "image/png")


@pytest.mark.parametrize(
    ("image_format", "content_type"), [("JPEG", "image/jpeg"), ("PNG", "image/png")]
)
def test_image_whose_pixels_do_not_decode_is_refused(image_format: str, content_type: str) -> None:
    # Its header is whole (it opens), three quarters of its pixel data are there.
    noise = Image.frombytes("RGB", (128, 128), random.Random(0).randbytes(128 * 128 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, image_format)
    whole = buffer.getvalue()
    with pytest.raises(ContentRejectedError, match=f"not a valid {image_format}"):
        _check(whole[: len(whole) * 3 // 4], content_type)


@pytest.mark.parametrize(("width", "height"), [(1001, 1000), (5000, 5000), (60_000, 60_000)])
def test_decompression_bombs_are_refused_from_the_header(width: int, height: int) -> None:
    # Past Pillow's own (global) limit too: the answer is the same.
    with pytest.raises(ContentRejectedError, match="over the limit of 1000000"):
        _check(_with_dimensions(_image("PNG"), width, height), "image/png")


def test_pdf_must_start_with_its_header() -> None:
    with pytest.raises(ContentRejectedError):
        _check(b"\r\n" + _image("PDF"), "application/pdf")
