"""Password hashing with argon2id (RFC 9106) via argon2-cffi, off the event loop.

Parameters default to OWASP's Password Storage Cheat Sheet minimum for argon2id
(m = 19 MiB, t = 2, p = 1) and can only be raised. Hashing runs in a small dedicated thread
pool (argon2-cffi releases the GIL), so a burst of logins queues there instead of stalling
the event loop; its size bounds memory to ``workers x m``. Passwords are NFKC-normalised
before hashing (NIST SP 800-63B §5.1.1.2), so the same password typed on keyboards that
compose characters differently still matches.
"""

import asyncio
import os
import secrets
import unicodedata
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


class PasswordHasher:
    """Hash and verify passwords; every method that does argon2 work is async."""

    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._hasher = Argon2Hasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="argon2"
        )
        # Verified against when the account does not exist, so both paths cost the same.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        """The encoded argon2id hash of ``password`` (``$argon2id$v=19$m=...``)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, _normalise(password))

    async def verify(self, encoded_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; a None hash burns the same time and is False."""
        loop = asyncio.get_running_loop()
        target = encoded_hash or self._dummy_hash
        try:
            await loop.run_in_executor(
                self._pool, self._hasher.verify, target, _normalise(password)
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return encoded_hash is not None

    def needs_rehash(self, encoded_hash: str) -> bool:
        """True when the hash was made with weaker parameters than the current ones."""
        return self._hasher.check_needs_rehash(encoded_hash)

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
