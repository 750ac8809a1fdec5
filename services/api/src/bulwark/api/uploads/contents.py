"""Checks of an uploaded object's bytes against what was declared. Plain functions, no I/O.

In order, cheapest first: the size; the magic bytes, as puremagic (a maintained, pure-Python
file-type library) reads them, must name the declared type; then an image must decode with
Pillow within `UploadConfig.max_pixels` (its dimensions are read from the header by
``Image.open``, and checked before a pixel is decoded: a decompression bomb costs a header
read), and a PDF must start with ``%PDF-``. An SVG or HTML body is refused whatever it is
declared as: no declared type is text, and a PNG header in front of markup does not decode.

Before decoding, a JPEG's scans are counted and more than `MAX_JPEG_SCANS` are refused (each
scan of a progressive JPEG is decoded over the whole image, however few bytes it takes). A
truncated image is refused: a JPEG must end with EOI, a PNG's chunks must be whole (CRCs and
IEND, ``Image.verify``) and its IDAT stream must inflate to exactly its rows, which Pillow
does not check (it stops quietly where the zlib stream ends). These checks cost no decoding;
the time and memory of decoding itself are bounded by the process it runs in
(`check_process`).
"""

import io
import re
import struct
import warnings
import zlib

import puremagic
from PIL import Image, UnidentifiedImageError

#: Pillow's format name of each image type (the one ``Image.open`` must find).
IMAGE_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/webp": "WEBP"}
#: The most scans (SOS segments) a JPEG may have. A baseline JPEG has one per component at
#: most, libjpeg's progressive script 10 (6 for greyscale); libjpeg-turbo's report on the
#: issue ("Two Issues with the JPEG Standard", LJT-01-003) asks applications to cap the
#: scans (djpeg ``-maxscans``, TurboJPEG ``TJPARAM_SCANLIMIT``), and NVIDIA's decoders cap
#: them at 256 (nvImageCodec) and 500 (DALI). Ours is lower: each scan of a 50-megapixel
#: image costs about 0.05 s of CPU, so 100 stay within the check's deadline.
MAX_JPEG_SCANS = 100

#: A marker in entropy-coded data: 0xFF (and fill bytes) followed by neither 0x00 (a
#: stuffed 0xFF) nor RSTn (ITU T.81 B.1.1.5, F.1.2.3).
_MARKER_IN_SCAN = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")
#: JPEG markers without a length: TEM, RSTn, SOI, EOI (T.81 B.1.1.3).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8})
_SOS, _EOI = 0xDA, 0xD9
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Samples per pixel of each PNG colour type (PNG spec 11.2.2, IHDR).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: Adam7 passes: x and y of the first pixel, x and y steps (PNG spec 8.2).
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


class ContentRejectedError(Exception):
    """The object is not what was declared; the message says why (safe to show a client)."""


def detected_types(data: bytes) -> set[str]:
    """The content types puremagic finds with the highest confidence in ``data``'s leading
    (and trailing) bytes; empty when none."""
    try:
        matches = puremagic.magic_string(data)
    except (puremagic.PureError, ValueError):
        return set()
    best = max((match.confidence for match in matches), default=0.0)
    return {match.mime_type for match in matches if match.confidence == best and match.mime_type}


def check_contents(
    data: bytes,
    *,
    declared_type: str,
    declared_size: int,
    max_pixels: int,
    max_scans: int | None = MAX_JPEG_SCANS,
) -> None:
    """Check ``data`` (the object's first ``declared_size + 1`` bytes at most) against the
    declaration. ``max_scans`` None counts no JPEG scans (for tests of slow decoding).

    Raises:
        ContentRejectedError: the size differs, the magic bytes name another type (or none),
            an image is over ``max_pixels``, a JPEG has over ``max_scans`` scans or no EOI,
            an image is truncated or does not decode, a PDF lacks ``%PDF-``.
    """
    if len(data) != declared_size:
        raise ContentRejectedError("The uploaded size is not the declared size.")
    if declared_type not in detected_types(data):
        raise ContentRejectedError(f"The uploaded bytes are not {declared_type}.")
    if declared_type == "application/pdf":
        if not data.startswith(b"%PDF-"):
            raise ContentRejectedError("The uploaded bytes are not application/pdf.")
        return
    image_format = IMAGE_FORMATS[declared_type]
    if image_format == "JPEG" and max_scans is not None:
        scans = count_jpeg_scans(data, stop_past=max_scans)
        if scans is None:
            raise _invalid(image_format)
        if scans > max_scans:
            raise ContentRejectedError(f"The JPEG image has over {max_scans} scans, the limit.")
    _check_image(data, image_format, max_pixels)


def count_jpeg_scans(data: bytes, stop_past: int | None = None) -> int | None:
    """The number of SOS segments of the JPEG ``data`` up to its EOI (or ``stop_past`` + 1,
    where counting stops); None when its marker segments do not run whole from SOI to EOI.

    Walks the markers as a decoder does (ITU T.81 B.1): each segment is skipped by its
    length (an APPn or COM may hold the bytes of an SOS marker), and a scan's entropy-coded
    data ends at the first 0xFF that is neither stuffed (0xFF00) nor a RSTn. Bytes between
    segments are skipped to the next marker, as libjpeg does (with a warning).
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    scans, position = 0, 2
    while (at := _next_marker(data, position)) is not None:
        marker, position = data[at], at + 1
        if marker == _EOI:
            return scans
        if marker in _STANDALONE:
            continue
        end = _segment_end(data, position)
        if end is None:
            return None
        position = end
        if marker == _SOS:  # then its entropy-coded data, up to the next marker
            scans += 1
            if stop_past is not None and scans > stop_past:
                return scans
            found = _MARKER_IN_SCAN.search(data, position)
            position = len(data) if found is None else found.start()
    return None


def _next_marker(data: bytes, position: int) -> int | None:
    """Where the code of the marker at or after ``position`` is: past its fill bytes, and
    past stray bytes before it; None at the end of ``data``."""
    if position < len(data) and data[position] != 0xFF:
        found = _MARKER_IN_SCAN.search(data, position)
        if found is None:
            return None
        position = found.start()
    while position < len(data) and data[position] == 0xFF:
        position += 1
    return position if position < len(data) else None


def _segment_end(data: bytes, position: int) -> int | None:
    """The end of the segment whose length field is at ``position``; None past ``data``."""
    if position + 2 > len(data):
        return None
    (length,) = struct.unpack_from(">H", data, position)
    return position + length if length >= 2 and position + length <= len(data) else None


def _check_image(data: bytes, image_format: str, max_pixels: int) -> None:
    try:
        # Our own limit is checked below; Pillow's global one only warns under twice its
        # default (and raises above it: a bomb either way).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[image_format])
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise _too_many_pixels(f"{width}x{height}", max_pixels)
            image.load()
        if image_format == "PNG":
            _check_png_whole(data)
    except Image.DecompressionBombError:
        raise _too_many_pixels("too many", max_pixels) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, zlib.error):
        # Pillow's ways of saying the bytes do not decode (OSError: truncated or corrupt).
        raise _invalid(image_format) from None


def _check_png_whole(data: bytes) -> None:
    """Raise SyntaxError or OSError when a PNG's chunks are not whole up to IEND (CRCs,
    lengths: ``Image.verify``) or its IDAT stream does not inflate to exactly its rows."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as fresh:
        fresh.verify()
    width, height, bit_depth, colour_type, interlace = struct.unpack_from(">IIBBxxB", data, 16)
    bits = bit_depth * _PNG_CHANNELS.get(colour_type, 0)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            expected += rows * (1 + -(-columns * bits // 8))  # a filter byte per row
    inflate, inflated, position = zlib.decompressobj(), 0, len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"IDAT":
            chunk = data[position + 8 : position + 8 + length]
            while chunk and inflated <= expected:
                inflated += len(inflate.decompress(chunk, 1 << 20))
                chunk = inflate.unconsumed_tail
        elif kind == b"IEND":
            break
        position += 12 + length
    if inflated != expected or not inflate.eof:
        raise SyntaxError("the IDAT stream does not hold the whole image")


def _invalid(image_format: str) -> ContentRejectedError:
    return ContentRejectedError(f"The uploaded bytes are not a valid {image_format} image.")


def _too_many_pixels(size: str, max_pixels: int) -> ContentRejectedError:
    return ContentRejectedError(f"The image has {size} pixels, over the limit of {max_pixels}.")
