"""Have I Been Pwned's Pwned Passwords range API, by k-anonymity (the API's v3 docs,
``https://haveibeenpwned.com/API/v3#PwnedPasswords``).

Only the first 5 hex digits of the password's SHA-1 leave the process; the answer lists
every known suffix under that prefix (``SUFFIX:COUNT`` lines, CRLF-separated), and the match
is made here. ``Add-Padding: true`` asks for 800 to 1,000 lines whatever the prefix, so the
answer's size does not tell an observer which prefix was asked; padding lines have a count
of 0 and are ignored.
"""

import asyncio
import hashlib
import re
import unicodedata

import httpx

#: Largest answer read, in bytes: a padded answer is about 40 KB.
MAX_ANSWER_BYTES = 1024 * 1024
_LINE = re.compile(r"([0-9A-F]{35}):([0-9]+)")


class BreachCheckUnavailable(Exception):  # noqa: N818  # an outcome, named as the API calls it
    """The range API did not give a usable answer in time (timeout, connection refused,
    non-200 status, oversized or malformed body). ``reason`` names which, never the
    password nor its hash."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sha1_hex(password: str) -> str:
    """The upper-case hex SHA-1 of the NFKC form of ``password`` in UTF-8 (40 characters):
    NFKC is what `bulwark.auth.passwords` hashes, so it is the password that is kept."""
    normalised = unicodedata.normalize("NFKC", password).encode()
    return hashlib.sha1(normalised, usedforsecurity=False).hexdigest().upper()


class PwnedPasswordsRange:
    """One HTTP client for the range API, held for the process's life.

    Args:
        range_url: the API's range endpoint; the 5-digit prefix is appended
            (default in settings: ``https://api.pwnedpasswords.com/range/``).
        timeout_seconds: the longest a whole lookup (connect, send, read every byte) takes.
    """

    def __init__(self, range_url: str, *, timeout_seconds: float) -> None:
        self._range_url = range_url if range_url.endswith("/") else f"{range_url}/"
        self._timeout = timeout_seconds
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            headers={"Add-Padding": "true", "User-Agent": "bulwark-auth"},
            follow_redirects=False,
        )

    async def times_seen(self, password: str) -> int:
        """How many times ``password`` appears in the breaches the API knows (0: never).

        Raises:
            BreachCheckUnavailable: no usable answer within ``timeout_seconds``.
        """
        digest = sha1_hex(password)
        prefix, suffix = digest[:5], digest[5:]
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._answer(prefix)
        except TimeoutError:
            raise BreachCheckUnavailable("timeout") from None
        except httpx.HTTPError as exc:
            raise BreachCheckUnavailable(type(exc).__name__) from None
        return _count(body, suffix)

    async def _answer(self, prefix: str) -> bytes:
        async with self._client.stream("GET", f"{self._range_url}{prefix}") as response:
            if response.status_code != 200:
                raise BreachCheckUnavailable(f"status {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise BreachCheckUnavailable("answer too large")
        return bytes(body)

    async def aclose(self) -> None:
        """Close the HTTP client and its connections."""
        await self._client.aclose()


def _count(body: bytes, suffix: str) -> int:
    """The count of ``suffix`` in a range answer (0 when absent or a padding line).

    Raises:
        BreachCheckUnavailable: a line that is not ``SUFFIX:COUNT``.
    """
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise BreachCheckUnavailable("malformed answer") from None
    found = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _LINE.fullmatch(line.strip().upper())
        if match is None:
            raise BreachCheckUnavailable("malformed answer")
        if match.group(1) == suffix:
            found = int(match.group(2))
    return found
