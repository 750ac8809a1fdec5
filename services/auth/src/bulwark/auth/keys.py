"""The auth service's signing keys, loaded from a directory (a Kubernetes Secret mount).

Each key is one JSON file ``<kid>.json``::

    {"kid": "...", "alg": "ES256", "environment": "production", "state": "active",
     "created_at": 1764460800, "private_jwk": {...}}

``environment`` binds the key to one ``BULWARK_ENV``: a service refuses to start with a key
made for another environment, so a staging key can never sign production tokens. Exactly one
key is ``active`` (it signs); every key in the folder is published in the JWKS (RFC 7517).
Development and test generate an ES256 key on first run; staging and production never do.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

import msgspec
from joserfc.jwk import ECKey

from bulwark.common.settings import SettingsError


class StoredKey(msgspec.Struct, frozen=True):
    """One key file's content. ``created_at`` is Unix seconds."""

    kid: str
    alg: str
    environment: str
    state: str
    created_at: int
    private_jwk: dict[str, Any]


class SigningKeys:
    """The keys of one environment: the active signing key and the public JWKS.

    Raises (constructor):
        SettingsError: no active key, several active keys, or a key of another environment.
    """

    def __init__(self, stored: list[StoredKey], environment: str) -> None:
        foreign = [key.kid for key in stored if key.environment != environment]
        if foreign:
            raise SettingsError(f"keys {foreign} belong to another environment than {environment}")
        active = [key for key in stored if key.state == "active"]
        if len(active) != 1:
            raise SettingsError(f"exactly one active signing key is required, found {len(active)}")
        self.active_kid = active[0].kid
        self.algorithm = active[0].alg
        self._private = ECKey.import_key(active[0].private_jwk)
        self._public = {key.kid: ECKey.import_key(key.private_jwk) for key in stored}
        self._algorithms = {key.kid: key.alg for key in stored}

    @property
    def private_key(self) -> ECKey:
        """The active key, for signing."""
        return self._private

    def public_key(self, kid: str) -> ECKey | None:
        """The published key with ``kid`` (public part usable), or None."""
        return self._public.get(kid)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public JWK Set: ``{"keys": [{"kty", "crv", "x", "y", "kid", "alg", "use"}]}``."""
        keys = []
        for kid, key in self._public.items():
            public = dict(key.as_dict(private=False))
            public.update({"kid": kid, "alg": self._algorithms[kid], "use": "sig"})
            keys.append(public)
        return {"keys": keys}


def generate_key(environment: str) -> StoredKey:
    """A new ES256 (P-256) key for ``environment``, in state ``active``."""
    key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"}, auto_kid=True)
    return StoredKey(
        kid=str(key.kid),
        alg="ES256",
        environment=environment,
        state="active",
        created_at=int(time.time()),
        private_jwk=dict(key.as_dict(private=True)),
    )


def write_key(directory: Path, key: StoredKey) -> Path:
    """Write ``key`` to ``directory/<kid>.json`` readable by the owner only (mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{key.kid}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(msgspec.json.encode(key))
    return path


def read_keys(directory: Path) -> list[StoredKey]:
    """Every key file in ``directory`` (none when it does not exist).

    Raises:
        SettingsError: a file is not a valid key file.
    """
    if not directory.is_dir():
        return []
    keys = []
    for path in sorted(directory.glob("*.json")):
        try:
            keys.append(msgspec.json.decode(path.read_bytes(), type=StoredKey))
        except (msgspec.DecodeError, json.JSONDecodeError) as exc:
            raise SettingsError(f"key file {path.name} is invalid: {exc}") from None
    return keys


def load_signing_keys(directory: Path, environment: str, *, generate: bool) -> SigningKeys:
    """Load the keys for ``environment``; with ``generate``, create one if the folder is empty.

    Raises:
        SettingsError: see ``SigningKeys``; or no keys and ``generate`` is false.
    """
    stored = read_keys(directory)
    if not stored:
        if not generate:
            raise SettingsError(f"no signing keys in {directory}; run 'bulwark-auth keys generate'")
        write_key(directory, generate_key(environment))
        stored = read_keys(directory)
    return SigningKeys(stored, environment)
