"""Checks of an uploaded object's bytes against what was declared. Plain functions, no I/O.

In order, cheapest first: the size; the magic bytes, as puremagic (a maintained, pure-Python
file-type library) reads them, must name the declared type; then an image must decode with
Pillow within `UploadConfig.max_pixels` (its dimensions are read from the header by
``Image.open``, and checked before a pixel is decoded: a decompression bomb costs a header
read), and a PDF must start with ``%PDF-``. An SVG or HTML body is refused whatever it is
declared as: no declared type is text, and a PNG header in front of markup does not decode.
"""

import io
import warnings

import puremagic
from PIL import Image, UnidentifiedImageError

#: Pillow's format name of each image type (the one ``Image.open`` must find).
IMAGE_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/webp": "WEBP"}


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


def check_contents(data: bytes, *, declared_type: str, declared_size: int, max_pixels: int) -> None:
    """Check ``data`` (the object's first ``declared_size + 1`` bytes at most) against the
    declaration.

    Raises:
        ContentRejectedError: the size differs, the magic bytes name another type (or none),
            an image is over ``max_pixels`` or does not decode, a PDF lacks ``%PDF-``.
    """
    if len(data) != declared_size:
        raise ContentRejectedError("The uploaded size is not the declared size.")
    if declared_type not in detected_types(data):
        raise ContentRejectedError(f"The uploaded bytes are not {declared_type}.")
    if declared_type == "application/pdf":
        if not data.startswith(b"%PDF-"):
            raise ContentRejectedError("The uploaded bytes are not application/pdf.")
        return
    _check_image(data, IMAGE_FORMATS[declared_type], max_pixels)


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
    except Image.DecompressionBombError:
        raise _too_many_pixels("too many", max_pixels) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        # Pillow's ways of saying the bytes do not decode (OSError: truncated or corrupt).
        raise ContentRejectedError(
            f"The uploaded bytes are not a valid {image_format} image."
        ) from None


def _too_many_pixels(size: str, max_pixels: int) -> ContentRejectedError:
    return ContentRejectedError(f"The image has {size} pixels, over the limit of {max_pixels}.")
