"""Upload contents: the stored bytes must be what was declared (size, magic bytes, an image
that decodes whole within the pixel and scan limits, a PDF header), checked in a child
process that is killed at its deadline, on cancellation, and refused past its memory."""

import asyncio
import contextlib
import io
import os
import random
import struct
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bulwark.api.uploads.check_process import CheckLimits, check_in_process, memory_ceiling
from bulwark.api.uploads.contents import (
    MAX_JPEG_SCANS,
    ContentRejectedError,
    check_contents,
    count_jpeg_scans,
)

pytestmark = pytest.mark.security(stride="TD", asvs=("V5.2",))

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


def _progressive_jpeg(size: tuple[int, int] = (64, 64), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, "JPEG", progressive=True, quality=50)
    return buffer.getvalue()


def _many_scans_jpeg(copies: int, size: tuple[int, int] = (2000, 2000)) -> bytes:
    """A valid progressive JPEG whose last scan (an AC refinement of a few bytes, decoded
    over the whole image) is repeated ``copies`` more times before EOI."""
    data = _progressive_jpeg(size, "L")
    last_scan = data[data.rindex(b"\xff\xda") : -2]
    return data[:-2] + last_scan * copies + data[-2:]


def test_a_jpeg_with_many_scans_is_refused_before_decoding() -> None:
    bomb = _many_scans_jpeg(2000)  # about 8 s to decode on one core, 150 kB
    started = time.perf_counter()
    with pytest.raises(ContentRejectedError, match=f"over {MAX_JPEG_SCANS} scans"):
        _check(bomb, "image/jpeg")
    assert time.perf_counter() - started < 0.5


def test_jpeg_scans_are_counted_by_walking_the_segments() -> None:
    assert count_jpeg_scans(_image("JPEG")) == 1
    assert count_jpeg_scans(_progressive_jpeg()) == 10  # libjpeg's progressive script
    assert count_jpeg_scans(_many_scans_jpeg(5, (64, 64))) == 6 + 5
    # The bytes of an SOS marker inside a comment segment are not a scan.
    baseline = _image("JPEG")
    comment = b"\xff\xda\x00\x0c" * 50
    with_comment = baseline[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    assert count_jpeg_scans(with_comment + baseline[2:]) == 1
    # No EOI, or a segment running past the end: not a JPEG.
    assert count_jpeg_scans(baseline[:-2]) is None
    assert count_jpeg_scans(baseline[:30]) is None


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, position = [], 8
    while position < len(png):
        (length,) = struct.unpack_from(">I", png, position)
        chunks.append((png[position + 4 : position + 8], png[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def _png_of(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks
    )
    return b"\x89PNG\r\n\x1a\n" + body


def test_truncated_images_are_refused() -> None:
    chunks = _png_chunks(_image("PNG", (200, 200)))
    # The IDAT stream holds 50 of 200 rows, all chunks whole: Pillow's load() passes it.
    rows = zlib.compress(b"".join(b"\x00" + b"\x0a\x78\xc8" * 200 for _ in range(50)))
    short_idat = _png_of([(k, rows if k == b"IDAT" else d) for k, d in chunks])
    no_iend = _png_of([(k, d) for k, d in chunks if k != b"IEND"])
    for png in (short_idat, no_iend):
        with pytest.raises(ContentRejectedError, match="not a valid PNG"):
            _check(png, "image/png")
    with pytest.raises(ContentRejectedError, match="not a valid JPEG"):
        _check(_progressive_jpeg()[:-2], "image/jpeg")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "1", "I;16", "LA"])
@pytest.mark.parametrize("interlace", [0, 1])
def test_whole_pngs_of_every_kind_pass(mode: str, interlace: int) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (123, 77)).save(buffer, "PNG", interlace=interlace)
    _check(buffer.getvalue(), "image/png")


def _limits(
    seconds: float = 10.0, max_scans: int | None = MAX_JPEG_SCANS, memory_bytes: int | None = None
) -> CheckLimits:
    return CheckLimits(
        seconds=seconds,
        max_pixels=50_000_000,
        max_scans=max_scans,
        memory_bytes=memory_ceiling(50_000_000) if memory_bytes is None else memory_bytes,
    )


def _check_children() -> set[int]:
    """The processes that the fork server of this process has forked (the checks running)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(stat.parent.name)] = int(fields[1])
    servers = set()
    for pid, parent in parents.items():
        if parent == os.getpid():
            with contextlib.suppress(OSError):
                if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    servers.add(pid)
    return {pid for pid, parent in parents.items() if parent in servers}


async def _gone(pids: set[int]) -> bool:
    for _ in range(100):
        if not pids & _check_children():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_checks_in_a_process_pass_genuine_files_and_refuse_bad_ones() -> None:
    png = _image("PNG")
    await check_in_process(png, declared_type="image/png", declared_size=len(png), limits=_limits())
    with pytest.raises(ContentRejectedError, match="not image/jpeg"):
        await check_in_process(
            png, declared_type="image/jpeg", declared_size=len(png), limits=_limits()
        )


async def test_a_check_past_its_deadline_is_killed_and_refused() -> None:
    slow = _many_scans_jpeg(2000)  # about 8 s of decoding with the scans left uncounted
    check = asyncio.create_task(
        check_in_process(
            slow,
            declared_type="image/jpeg",
            declared_size=len(slow),
            limits=_limits(seconds=1.0, max_scans=None),
        )
    )
    running: set[int] = set()
    while not running and not check.done():  # the first check also starts the fork server
        running = _check_children()
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    with pytest.raises(ContentRejectedError, match="longer than 1 seconds"):
        await check
    assert time.perf_counter() - started < 2.0
    assert running
    assert await _gone(running)


async def test_a_cancelled_check_is_killed() -> None:
    slow = _many_scans_jpeg(2000)
    check = asyncio.create_task(
        check_in_process(
            slow,
            declared_type="image/jpeg",
            declared_size=len(slow),
            limits=_limits(max_scans=None),
        )
    )
    running: set[int] = set()
    while not running and not check.done():
        running = _check_children()
        await asyncio.sleep(0.01)
    assert running
    check.cancel()
    with pytest.raises(asyncio.CancelledError):
        await check
    assert await _gone(running)


async def test_a_check_over_its_memory_ceiling_is_refused() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (4000, 4000)).save(buffer, "PNG")  # 64 MB of pixels, 50 kB of PNG
    png = buffer.getvalue()
    with pytest.raises(ContentRejectedError, match="more memory than allowed"):
        await check_in_process(
            png,
            declared_type="image/png",
            declared_size=len(png),
            limits=_limits(memory_bytes=32 * 1024 * 1024),
        )
