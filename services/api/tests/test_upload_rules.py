"""Upload rules: which filenames, content types and sizes a declaration may carry, and the
Content-Disposition of a download."""

import uuid

import pytest

from bulwark.api.uploads.config import UploadConfig
from bulwark.api.uploads.rules import (
    check_declaration,
    content_disposition,
    filename_problem,
    object_key,
)
from bulwark.common.problems import ValidationFailed

pytestmark = pytest.mark.security(stride="T", asvs=("V5.2",))

CONFIG = UploadConfig(max_bytes=1000)


@pytest.mark.parametrize(
    "name",
    [
        "photo.png",
        "IMG_2041.JPG",
        "scan 2026-12-07.pdf",
        "Fotó d'été.jpeg",
        "写真.webp",
        "a.gif",
    ],
)
def test_ordinary_names_are_accepted(name: str) -> None:
    assert filename_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a.php.png", "double extension"),
        ("a.png.html", "double extension"),
        ("a.php\uff0epng", "double extension behind a fullwidth full stop"),
        ("a.png.", "trailing dot"),
        ("a.png ", "trailing space"),
        (" a.png", "leading space"),
        ("a.png\u3000", "trailing ideographic space"),
        ("a\x00.png", "NUL"),
        ("a\x07b.png", "control character"),
        ("a\nb.png", "line feed"),
        ("a\x7f.png", "DEL"),
        ("evil\u202egnp.exe", "right-to-left override"),
        ("a\u2066b\u2069.png", "bidi isolate"),
        ("a\u200bb.png", "zero-width space"),
        ("a\ufeffb.png", "byte order mark"),
        ("a\u2028b.png", "line separator"),
        ("a\ue000.png", "private use"),
        ("../a.png", "path separator"),
        ("dir/a.png", "slash"),
        ("dir\\a.png", "backslash"),
        ("dir\uff0fa.png", "fullwidth solidus"),
        (".png", "no name before the extension"),
        ("png", "no extension"),
        ("", "empty"),
        ("a" * 252 + ".png", "256 bytes"),
        ("é" * 126 + ".png", "256 bytes of UTF-8 in 130 characters"),
        ("a\u3002png.png", "ideographic full stop, which NFKC keeps"),
        ("a\u0589png.png", "Armenian full stop"),
        ("a\uff0epng", "a fullwidth full stop as the only dot"),
        ("CON.png", "a Windows device name"),
        ("com1.pdf", "a Windows device name, any case"),
        ("a:b.png", "a colon (an NTFS stream)"),
        ('a"b.png', "a quote"),
    ],
)
def test_bad_names_are_refused(name: str, why: str) -> None:
    assert filename_problem(name) is not None, why


def test_longest_name_is_accepted() -> None:
    assert filename_problem("a" * 251 + ".png") is None


def test_extension_must_match_the_content_type() -> None:
    check_declaration("photo.PNG", "image/png", 10, CONFIG)
    check_declaration("photo.jpg", "image/jpeg", 10, CONFIG)
    check_declaration("photo.jpeg", "image/jpeg", 10, CONFIG)
    for name, content_type in [
        ("photo.png", "image/jpeg"),
        ("photo.jpg", "image/png"),
        ("doc.pdf", "image/png"),
        ("photo.svg", "image/png"),
    ]:
        with pytest.raises(ValidationFailed) as refused:
            check_declaration(name, content_type, 10, CONFIG)
        assert [e.field for e in refused.value.errors] == ["filename"]


@pytest.mark.parametrize(
    "content_type",
    ["image/svg+xml", "text/html", "application/octet-stream", "image/png; charset=utf-8", ""],
)
def test_content_types_outside_the_allow_list_are_refused(content_type: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_declaration("a.png", content_type, 10, CONFIG)
    assert [e.field for e in refused.value.errors] == ["contentType"]


def test_allow_list_is_configurable() -> None:
    images_only = UploadConfig(content_types=("image/png",))
    check_declaration("a.png", "image/png", 10, images_only)
    with pytest.raises(ValidationFailed):
        check_declaration("a.pdf", "application/pdf", 10, images_only)


def test_size_limit_and_every_error_named_at_once() -> None:
    check_declaration("a.png", "image/png", 1000, CONFIG)
    with pytest.raises(ValidationFailed) as refused:
        check_declaration("a.php.png", "text/html", 1001, CONFIG)
    assert [e.field for e in refused.value.errors] == ["filename", "contentType", "size"]


@pytest.mark.security(stride="T", asvs=("V5.3",))
def test_object_key_is_made_of_ids_only() -> None:
    owner, upload = uuid.uuid4(), uuid.uuid4()
    assert object_key(owner, upload) == f"uploads/{owner}/{upload}"


@pytest.mark.security(stride="T", asvs=("V5.4", "V3.2"))
def test_content_disposition_forces_a_download_with_a_safe_name() -> None:
    assert content_disposition("photo.png") == (
        "attachment; filename=\"photo.png\"; filename*=UTF-8''photo.png"
    )
    # Non-ASCII, quotes and percent signs: replaced in the plain form, encoded in filename*.
    assert content_disposition('Fotó "1" 100%.png') == (
        'attachment; filename="Fot_ _1_ 100_.png"; '
        "filename*=UTF-8''Fot%C3%B3%20%221%22%20100%25.png"
    )
