"""Sealing a rotated refresh token's successor so that only the rotated token can open it.

A retry of a refresh within the grace window (see ``rules.rotate``) must get the refresh token
that the first attempt issued, or the family would fork or the app would keep a dead token.
Refresh tokens are stored only as hashes, so the successor is kept sealed: AES-256-GCM under
a key derived from the *presented* token (HMAC-SHA256 keyed with it, an input with 256 random
bits), with the family id as associated data. The database alone cannot open it; whoever
holds the predecessor could already exchange it, so nothing new is exposed.
"""

import hashlib
import hmac
import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_INFO = b"bulwark refresh successor v1"
_NONCE_BYTES = 12


def _key(refresh_token: str) -> bytes:
    return hmac.new(refresh_token.encode(), _INFO, hashlib.sha256).digest()


def seal(refresh_token: str, successor: str, family_id: uuid.UUID) -> bytes:
    """``successor`` encrypted for holders of ``refresh_token``: nonce (12 bytes) + ciphertext."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(_key(refresh_token)).encrypt(nonce, successor.encode(), family_id.bytes)


def unseal(refresh_token: str, sealed: bytes, family_id: uuid.UUID) -> str | None:
    """The successor sealed by `seal`, or None when ``sealed`` was not made for this token
    and family (or was altered)."""
    nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    try:
        plain = AESGCM(_key(refresh_token)).decrypt(nonce, ciphertext, family_id.bytes)
    except InvalidTag:
        return None
    return plain.decode()
