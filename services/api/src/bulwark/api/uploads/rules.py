"""Rules for what a client declares about an upload: its filename and content type, and the
``Content-Disposition`` it is downloaded with. Plain functions, no I/O.

The filename is only ever shown back (in ``Content-Disposition``); objects are stored under
keys the server makes (`object_key`). Still, a name is refused when a person or a program
could take it for another: a second extension (``a.php.png``: servers that map types by
any extension, and people, read ``.php``; ``a.png.html``), a trailing dot or space (Windows
drops them: ``a.html.`` saves as ``a.html``), control and format characters (a right-to-left
override shows ``evil\u202egnp.exe`` as ``evilexe.png``), path separators, and names over
`MAX_FILENAME_BYTES`. Dots and separators are also looked for after NFKC normalisation, so a
fullwidth full stop or solidus (U+FF0E, U+FF0F) counts as one, and characters read as a full
stop that NFKC keeps (``a。png.png``) are refused; so are names Windows cannot save
(``CON.png``, ``a:b.png``).
"""

import unicodedata
import uuid
from urllib.parse import quote

from bulwark.api.uploads.config import UploadConfig
from bulwark.common.problems import FieldError, ValidationFailed

#: Longest filename, in UTF-8 bytes (the usual file-system limit).
MAX_FILENAME_BYTES = 255
# Controls, format characters (bidi overrides and isolates, zero-width characters), line and
# paragraph separators, surrogates, private-use and unassigned code points.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_SEPARATORS = frozenset({"/", "\\"})
# Characters Windows refuses in a name (``:`` also names an NTFS stream), and stems it
# reserves for devices whatever the extension (``CON.png``, ``com1.pdf``).
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"{kind}{n}" for kind in ("COM", "LPT") for n in range(10))}
)
# Characters a person reads as a full stop that NFKC leaves as they are: ideographic,
# Armenian, Arabic, Syriac, Ethiopic, Vai, Lisu and stenographic full stops, the Greek ano
# teleia, middle dots and the hyphenation point.
_DOT_LIKE = frozenset(
    "\u3002\u0589\u06d4\u0701\u0702\u1362\ua4ff\ua60e\u2e3c\u0387\u00b7\u2027\u30fb"
)
# What RFC 8187 allows unencoded in an ext-value (attr-char).
_ATTR_CHARS = "!#$&+-.^_`|~"


def filename_problem(name: str) -> str | None:  # noqa: PLR0911  # one return per rule
    """Why ``name`` is refused as an upload's filename, or None when it is acceptable.

    Refused: empty or over `MAX_FILENAME_BYTES` bytes of UTF-8; a character of a category in
    ``_REFUSED_CATEGORIES`` (NUL, controls, bidi and other format characters); a path
    separator; leading or trailing whitespace or a trailing dot; not exactly one dot (an
    ASCII one) with a name before it, also after NFKC, and no other character read as a
    full stop (so no double extension and no hidden file); a character Windows refuses or a
    device name it reserves.
    """
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
        return f"must be 1 to {MAX_FILENAME_BYTES} bytes long"
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in name):
        return "must not contain control, format or invisible characters"
    folded = unicodedata.normalize("NFKC", name)
    if any(char in _SEPARATORS for char in name + folded):
        return "must not contain a path separator"
    if name != name.strip() or name.endswith("."):
        return "must not start or end with a space or end with a dot"
    if any(char in _DOT_LIKE for char in folded) or name.count(".") != 1:
        return "must have exactly one extension, after a name (no double extension)"
    if folded.count(".") != 1 or folded.startswith("."):
        return "must have exactly one extension, after a name (no double extension)"
    if any(char in _WINDOWS_FORBIDDEN for char in folded):
        return 'must not contain any of < > : " | ? *'
    if folded.rsplit(".", 1)[0].upper() in _WINDOWS_DEVICES:
        return "must not be a name Windows reserves for a device (CON, NUL, COM1 ...)"
    return None


def check_declaration(filename: str, content_type: str, size: int, config: UploadConfig) -> None:
    """Check what a client declares for a new upload.

    Raises:
        ValidationFailed: naming each refused field: a bad ``filename`` (`filename_problem`),
            a ``contentType`` not in the allow-list or whose extensions the filename's is not
            among, a ``size`` over ``config.max_bytes``.
    """
    errors: list[FieldError] = []
    problem = filename_problem(filename)
    if problem:
        errors.append(FieldError("filename", problem))
    extensions = config.extensions(content_type)
    if not extensions:
        allowed = ", ".join(config.content_types)
        errors.append(FieldError("contentType", f"must be one of {allowed}"))
    elif not problem and extension_of(filename) not in extensions:
        wanted = ", ".join(sorted(extensions))
        errors.append(FieldError("filename", f"must end in {wanted} for {content_type}"))
    if size > config.max_bytes:
        errors.append(FieldError("size", f"must be at most {config.max_bytes} bytes"))
    if errors:
        raise ValidationFailed(errors)


def extension_of(filename: str) -> str:
    """The extension of an accepted filename, lower-cased, with its dot (``.png``)."""
    return "." + unicodedata.normalize("NFKC", filename).rsplit(".", 1)[-1].lower()


def object_key(owner_id: uuid.UUID, upload_id: uuid.UUID) -> str:
    """Where a client PUTs an upload's bytes: ``uploads/<owner>/<upload id>``, made of the
    server's own ids only (never of the filename)."""
    return f"uploads/{owner_id}/{upload_id}"


def file_key(owner_id: uuid.UUID, upload_id: uuid.UUID) -> str:
    """Where the API keeps the bytes it checked, once complete: ``files/<owner>/<upload
    id>``. No PUT URL is ever signed for it, so a PUT URL still valid after ``complete``
    cannot replace the checked file with another."""
    return f"files/{owner_id}/{upload_id}"


def owner_prefixes(owner_id: uuid.UUID) -> tuple[str, str]:
    """The key prefixes under which every object of ``owner_id`` lives (`object_key` and
    `file_key`): ``("uploads/<owner>/", "files/<owner>/")``."""
    return f"uploads/{owner_id}/", f"files/{owner_id}/"


def content_disposition(filename: str) -> str:
    """``attachment`` with ``filename`` as RFC 6266 §4.3 advises: a plain ASCII
    ``filename`` (anything else, and ``"``, ``\\`` and ``%``, as ``_``) for old clients and
    ``filename*`` with the UTF-8 name percent-encoded (RFC 8187 §3.2.1)."""
    fallback = "".join(
        char if " " <= char <= "~" and char not in '"\\%' else "_" for char in filename
    )
    encoded = quote(filename, safe=_ATTR_CHARS)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
