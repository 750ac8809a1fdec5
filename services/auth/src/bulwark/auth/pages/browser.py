"""What the pages know of a browser: its CSRF token and who signed in on it.

CSRF (OWASP CSRF Prevention Cheat Sheet): every form carries the token of the browser's
``csrf`` cookie (double submit); a POST whose field does not equal the cookie, or that the
browser says came from another site (``Sec-Fetch-Site``, ``Origin``), is refused. Cookies
are ``HttpOnly`` and ``SameSite=Lax``; under an https issuer they are ``Secure`` and
``__Host-`` prefixed, so no subdomain can plant one.

A sign-in on the pages is a random token in the ``session`` cookie, stored as its SHA-256
in ``page_sessions`` for ``PAGE_SESSION_TTL_SECONDS``; it is not a device session and
yields no tokens: it only lets its user approve clients.
"""

import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec
from litestar import Request
from litestar.datastructures import Cookie

from bulwark.auth.pages import queries
from bulwark.auth.settings import AuthSettings
from bulwark.common.db import Database

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}\Z")


class SignedIn(msgspec.Struct, frozen=True):
    """The user signed in on this browser."""

    user_id: uuid.UUID
    email: str


def _secure(settings: AuthSettings) -> bool:
    return settings.issuer.startswith("https://")


def cookie_name(settings: AuthSettings, name: str) -> str:
    """``name`` with the ``__Host-`` prefix under an https issuer (RFC 6265bis §4.1.3.2)."""
    return f"__Host-bulwark-{name}" if _secure(settings) else f"bulwark-{name}"


def _cookie(settings: AuthSettings, name: str, value: str, max_age: int | None) -> Cookie:
    return Cookie(
        key=cookie_name(settings, name),
        value=value,
        max_age=max_age,
        path="/",
        secure=_secure(settings),
        httponly=True,
        samesite="lax",
    )


def _cookie_value(request: Request[Any, Any, Any], settings: AuthSettings, name: str) -> str | None:
    value = request.cookies.get(cookie_name(settings, name))
    return value if value and _TOKEN.match(value) else None


def csrf_token(request: Request[Any, Any, Any], settings: AuthSettings) -> tuple[str, list[Cookie]]:
    """The browser's CSRF token for a form, and the cookie to set when it had none."""
    token = _cookie_value(request, settings, "csrf")
    if token is not None:
        return token, []
    token = secrets.token_urlsafe(32)
    return token, [_cookie(settings, "csrf", token, None)]


def same_site_post(
    request: Request[Any, Any, Any], settings: AuthSettings, form: Mapping[str, str]
) -> bool:
    """Whether a POST of ``form`` comes from one of our own pages: its ``csrf_token`` equals
    the browser's cookie, and neither ``Sec-Fetch-Site`` nor ``Origin`` names another site."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in {"same-origin", "none"}:
        return False
    origin = request.headers.get("origin")
    issuer = urlsplit(settings.issuer)
    if origin is not None and origin != f"{issuer.scheme}://{issuer.netloc}":
        return False
    cookie = _cookie_value(request, settings, "csrf")
    field = form.get("csrf_token", "")
    return cookie is not None and secrets.compare_digest(cookie.encode(), field.encode())


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def signed_in(
    request: Request[Any, Any, Any], settings: AuthSettings, db: Database
) -> SignedIn | None:
    """The user signed in on this browser, or None (no cookie, or an expired sign-in)."""
    token = _cookie_value(request, settings, "session")
    if token is None:
        return None
    row = await queries.signed_in_user(db, _hash(token))
    return None if row is None else SignedIn(user_id=row["id"], email=row["email"])


async def sign_in(db: Database, settings: AuthSettings, user_id: uuid.UUID) -> Cookie:
    """Record a sign-in of ``user_id`` on the pages; return the cookie that carries it.

    Raises:
        DatabaseUnavailable: the database cannot answer (503).
    """
    token = secrets.token_urlsafe(32)
    await queries.insert(db, _hash(token), user_id, settings.page_session_ttl)
    return _cookie(settings, "session", token, settings.page_session_ttl)
