"""The app's platforms and its versions: Semantic Versioning 2.0.0, parsed strictly.

`python-semver <https://python-semver.readthedocs.io>`_ parses and orders the versions: it
refuses leading zeros (``01.2.3``, ``1.2.3-01``), missing or empty parts (``1.2``, ``1..3``),
signs, a ``v`` prefix, whitespace and non-ASCII digits, and orders pre-releases and ignores
build metadata as SemVer §11 says. The one thing it leaves open is length, bounded here.
"""

from typing import Literal, get_args

import semver

#: The platforms a minimum version may be set for (the ``X-Platform`` values, lower-case).
Platform = Literal["ios", "android"]
PLATFORMS: tuple[Platform, ...] = get_args(Platform)
#: Longest version text accepted, in characters; a longer one is malformed.
MAX_VERSION_LENGTH = 64

Version = semver.Version
_PLATFORM_NAMES: dict[str, Platform] = {platform: platform for platform in PLATFORMS}


class MalformedVersion(ValueError):  # noqa: N818  # reads as a state, like the problems
    """The text is not a SemVer 2.0.0 version of at most `MAX_VERSION_LENGTH` characters."""


def parse_version(text: str) -> Version:
    """``text`` (``"3.10.0"``, ``"1.0.0-beta.2+build.7"``) as a comparable `Version`.

    Versions compare by SemVer 2.0.0 precedence: ``3.10.0 > 3.9.9``, ``1.0.0-alpha <
    1.0.0-alpha.1 < 1.0.0-beta < 1.0.0``; build metadata (``+...``) takes no part in it.

    Raises:
        MalformedVersion: anything else, whitespace and over-long texts included.
    """
    if len(text) > MAX_VERSION_LENGTH:
        raise MalformedVersion(f"longer than {MAX_VERSION_LENGTH} characters")
    try:
        return Version.parse(text)
    except (ValueError, TypeError):
        raise MalformedVersion("not a semantic version such as 3.2.0") from None


def platform_named(name: str) -> Platform | None:
    """``name`` as a `Platform`, ASCII case ignored (``iOS`` is ``ios``), or None."""
    return _PLATFORM_NAMES.get(name.lower())
