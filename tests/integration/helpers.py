"""Small client helpers for the integration tests: a mobile user and its calls."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage

import asyncpg
import httpx

PASSWORD = "Correct-Horse-9!"
PROBLEM = "application/problem+json"


@dataclass
class MobileUser:
    """A registered user and the device headers its app sends."""

    email: str
    password: str = PASSWORD
    device_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str = ""

    @property
    def headers(self) -> dict[str, str]:
        """The mobile headers of every request."""
        return {"X-App-Version": "1.4.2", "X-Platform": "ios", "X-Device-Id": self.device_id}


def new_request_id(label: str) -> str:
    """A fresh ``X-Request-ID`` the services keep as sent: letters only after ``label``, since
    an id with a long run of digits can look like a card number and is then replaced."""
    return f"{label}-" + secrets.token_hex(8).translate(str.maketrans("0123456789", "ghijklmnop"))


def random_email() -> str:
    """A fresh address, so tests never share a user or a rate-limit bucket."""
    return f"user-{secrets.token_hex(6)}@example.com"


def register(auth_url: str, email: str | None = None) -> MobileUser:
    """Register a new user (asserting 201) and return it."""
    user = MobileUser(email=email or random_email())
    response = httpx.post(
        f"{auth_url}/v1/users",
        json={"email": user.email, "password": user.password, "displayName": "Test User"},
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    user.user_id = response.json()["id"]
    return user


def login(auth_url: str, user: MobileUser) -> dict[str, object]:
    """Log ``user`` in (asserting 200); return the token response."""
    response = httpx.post(
        f"{auth_url}/v1/auth/login",
        json={"email": user.email, "password": user.password, "device": "Test phone"},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def refresh(auth_url: str, refresh_token: str, user: MobileUser) -> httpx.Response:
    """``POST /oauth2/token`` with ``grant_type=refresh_token``."""
    return httpx.post(
        f"{auth_url}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers=user.headers,
    )


def bearer(token: object, user: MobileUser | None = None) -> dict[str, str]:
    """Authorization header (plus the user's mobile headers)."""
    return {**(user.headers if user else {}), "Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, *statuses: int) -> dict[str, object]:
    """Assert ``response`` is an RFC 9457 problem with one of ``statuses`` and a request id;
    return its body."""
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, object] = response.json()
    assert body["request_id"]
    return body


# Mail and database reads shared by the account tests (docs/account.md).
_MAIL_CODE = re.compile(r"\b(\d{6})\b")
_MAIL_LINK = re.compile(r"(https?://\S+/account/([a-z-]+)\?token=([A-Za-z0-9_-]+))")


def mail_text(message: EmailMessage) -> str:
    """The text/plain part of a mail."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, message
    return str(part.get_content())


def mail_code(message: EmailMessage) -> str:
    """The 6-digit code a mail carries."""
    found = _MAIL_CODE.search(mail_text(message))
    assert found is not None, mail_text(message)
    return found.group(1)


def mail_link(message: EmailMessage) -> tuple[str, str, str]:
    """The link a mail carries: ``(url, page, token)``."""
    found = _MAIL_LINK.search(mail_text(message))
    assert found is not None, mail_text(message)
    return found.group(1), found.group(2), found.group(3)


def mail_token(message: EmailMessage) -> str:
    """The one-time token of the link a mail carries."""
    return mail_link(message)[2]


def claims_of(access_token: object) -> dict[str, object]:
    """The claims of a JWT, unverified (to read what the service put in it)."""
    payload = str(access_token).split(".")[1]
    decoded: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def database_rows(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """The rows ``sql`` answers on the database at ``url`` (one connection, closed)."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())
