"""Key files: one JSON document ``<kid>.json`` per key in KEYS_DIR, written atomically.

A file holds a ``StoredKey``; times are Unix seconds (UTC)::

    {"kid": "...", "alg": "ES256", "environment": "production", "state": "active",
     "created_at": 1764460800, "published_at": 1764460800, "activated_at": 1764461200,
     "retired_at": null, "private_jwk": {...}}

Files written by earlier versions (no ``published_at``) read as published when created.
"""

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from bulwark.common.settings import SettingsError

KeyState = Literal["next", "active", "retiring"]
Algorithm = Literal["ES256", "RS256"]
ALGORITHMS: tuple[Algorithm, ...] = ("ES256", "RS256")
#: Smallest RSA modulus accepted, in bits (RFC 7518 §3.3 asks for 2048 or more).
MIN_RSA_BITS = 2048
#: Size of the RSA keys ``generate_key`` makes, in bits.
RSA_BITS = 2048


class StoredKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One key file's content; the ``*_at`` fields are Unix seconds, None when not reached.

    ``published_at``: the key entered the folder (and so the JWKS). ``activated_at``: it became
    the signing key. ``retired_at``: it stopped signing (state ``retiring``).
    """

    kid: str
    alg: Algorithm
    environment: str
    state: KeyState
    created_at: int
    private_jwk: dict[str, Any]
    published_at: int | None = None
    activated_at: int | None = None
    retired_at: int | None = None

    @property
    def published(self) -> int:
        """When the key was published, in Unix seconds (``created_at`` for older files)."""
        return self.created_at if self.published_at is None else self.published_at


def import_private_key(key: StoredKey) -> ECKey | RSAKey:
    """The JOSE key of ``key``, checked against its ``alg``: ES256 is a P-256 EC key,
    RS256 an RSA key of at least ``MIN_RSA_BITS`` bits (RFC 7518 §3.3, §3.4).

    Raises:
        SettingsError: the JWK is malformed, private parts are missing, or it does not fit alg.
    """
    try:
        imported: ECKey | RSAKey = (
            ECKey.import_key(key.private_jwk)
            if key.alg == "ES256"
            else RSAKey.import_key(key.private_jwk)
        )
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        reason = type(exc).__name__
        raise SettingsError(f"key {key.kid}: invalid {key.alg} JWK ({reason})") from None
    if isinstance(imported, ECKey) and imported.as_dict().get("crv") != "P-256":
        raise SettingsError(f"key {key.kid}: ES256 needs a P-256 key")
    if isinstance(imported, RSAKey) and imported.raw_value.key_size < MIN_RSA_BITS:
        raise SettingsError(f"key {key.kid}: RS256 needs at least {MIN_RSA_BITS} bits")
    if not imported.is_private:
        raise SettingsError(f"key {key.kid}: the private part is missing")
    return imported


def generate_key(
    environment: str,
    *,
    alg: Algorithm = "ES256",
    state: KeyState = "active",
    now: int | None = None,
) -> StoredKey:
    """A new key for ``environment``: ES256 on P-256, or RS256 with ``RSA_BITS`` bits.

    The kid is the RFC 7638 JWK thumbprint. ``now`` (Unix seconds, default the clock) is the
    creation and publication time, and the activation time when ``state`` is ``active``.
    """
    at = int(time.time()) if now is None else now
    key = (
        ECKey.generate_key("P-256", parameters={"alg": alg, "use": "sig"}, auto_kid=True)
        if alg == "ES256"
        else RSAKey.generate_key(RSA_BITS, parameters={"alg": alg, "use": "sig"}, auto_kid=True)
    )
    return StoredKey(
        kid=str(key.kid),
        alg=alg,
        environment=environment,
        state=state,
        created_at=at,
        published_at=at,
        activated_at=at if state == "active" else None,
        private_jwk=dict(key.as_dict(private=True)),
    )


def key_path(directory: Path, kid: str) -> Path:
    """Where the key ``kid`` lives: ``directory/<kid>.json``."""
    return directory / f"{kid}.json"


def write_key(directory: Path, key: StoredKey) -> Path:
    """Write ``key`` to ``directory/<kid>.json``, replacing any earlier version atomically.

    The content goes to a temporary file (mode 0600, owner only) that is fsynced and then
    renamed over the target (``os.replace``), so a reader sees the old file or the new one,
    never a partial one. The folder is created with mode 0700 when missing.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = key_path(directory, key.kid)
    temporary = directory / f".{key.kid}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(msgspec.json.encode(key))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return path


def delete_key(directory: Path, kid: str) -> None:
    """Remove the file of key ``kid`` (no error when it is already gone)."""
    key_path(directory, kid).unlink(missing_ok=True)
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_keys(directory: Path) -> list[StoredKey]:
    """Every key file (``*.json``) in ``directory``, by file name; none when it does not exist.

    Raises:
        SettingsError: a file is not a valid key file, or its name is not ``<kid>.json``.
    """
    if not directory.is_dir():
        return []
    keys = []
    for path in sorted(directory.glob("*.json")):
        try:
            key = msgspec.json.decode(path.read_bytes(), type=StoredKey)
        except (msgspec.DecodeError, json.JSONDecodeError, OSError) as exc:
            raise SettingsError(f"key file {path.name} is invalid: {exc}") from None
        if path.name != f"{key.kid}.json":
            raise SettingsError(f"key file {path.name} holds kid {key.kid}; name it <kid>.json")
        keys.append(key)
    return keys


def folder_fingerprint(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    """A cheap summary of the key files: ``(name, mtime_ns, size, inode)`` of each ``*.json``,
    following symbolic links (a Kubernetes Secret mount swaps a ``..data`` link on update).
    Empty when the folder is missing; a file that vanishes while listed is skipped."""
    entries = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for path in sorted(directory.glob("*.json")):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((path.name, stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(entries)


@contextlib.contextmanager
def folder_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` so two CLI runs never interleave writes."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
