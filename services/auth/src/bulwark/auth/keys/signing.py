"""The keys a running auth service signs with and publishes, reloaded when KEYS_DIR changes.

``SigningKeys`` holds one validated snapshot of the folder and swaps it whole on ``replace``,
so a token is always signed with a matching (kid, alg, key) triple. ``KeyFolder`` polls the
folder (names, mtimes, sizes, inodes of ``*.json``) and reloads on change; a change that does
not validate is logged and the previous keys stay in use.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, RSAKey

from bulwark.auth.keys.files import (
    StoredKey,
    folder_fingerprint,
    generate_key,
    import_private_key,
    read_keys,
    write_key,
)
from bulwark.auth.keys.lifecycle import RELOAD_INTERVAL_SECONDS
from bulwark.common.logging import get_logger
from bulwark.common.settings import SettingsError

_log = get_logger(__name__)

JoseKey = ECKey | RSAKey


@dataclass(frozen=True)
class _Snapshot:
    active_kid: str
    algorithm: str
    private_key: JoseKey
    public_keys: dict[str, JoseKey]
    jwks: dict[str, list[dict[str, Any]]]


def _snapshot(stored: list[StoredKey], environment: str) -> _Snapshot:
    foreign = [key.kid for key in stored if key.environment != environment]
    if foreign:
        raise SettingsError(f"keys {foreign} belong to another environment than {environment}")
    active = [key for key in stored if key.state == "active"]
    if len(active) != 1:
        raise SettingsError(f"exactly one active signing key is required, found {len(active)}")
    kids = [key.kid for key in stored]
    if len(set(kids)) != len(kids):
        raise SettingsError("two key files have the same kid")
    private = {key.kid: import_private_key(key) for key in stored}
    public: dict[str, JoseKey] = {}
    published = []
    for key in stored:
        jwk = {
            **private[key.kid].as_dict(private=False),
            "kid": key.kid,
            "alg": key.alg,
            "use": "sig",
        }
        public[key.kid] = (ECKey if key.alg == "ES256" else RSAKey).import_key(jwk)
        published.append(jwk)
    return _Snapshot(
        active_kid=active[0].kid,
        algorithm=active[0].alg,
        private_key=private[active[0].kid],
        public_keys=public,
        jwks={"keys": published},
    )


class SigningKeys:
    """The keys of one environment: the active signing key and the public JWKS (RFC 7517).

    Every key of the folder (``next``, ``active``, ``retiring``) is published; only the
    ``active`` one signs.

    Raises (constructor and ``replace``):
        SettingsError: no active key or several, a key of another environment, two files
            with one kid, or a key unfit for its ``alg`` (see ``import_private_key``).
    """

    def __init__(self, stored: list[StoredKey], environment: str) -> None:
        self._environment = environment
        self._current = _snapshot(stored, environment)

    def replace(self, stored: list[StoredKey]) -> None:
        """Swap in the keys ``stored``; on error the current keys stay."""
        self._current = _snapshot(stored, self._environment)

    @property
    def active_kid(self) -> str:
        """The kid of the signing key."""
        return self._current.active_kid

    @property
    def algorithm(self) -> str:
        """The JWS ``alg`` of the signing key: ``ES256`` or ``RS256``."""
        return self._current.algorithm

    @property
    def private_key(self) -> JoseKey:
        """The active key, for signing."""
        return self._current.private_key

    def signer(self) -> tuple[str, str, JoseKey]:
        """``(kid, alg, private key)`` of the active key, taken from one snapshot."""
        current = self._current
        return current.active_kid, current.algorithm, current.private_key

    @property
    def kids(self) -> list[str]:
        """The kids of every published key."""
        return list(self._current.public_keys)

    def public_key(self, kid: str) -> JoseKey | None:
        """The published key with ``kid`` (public part only), or None."""
        return self._current.public_keys.get(kid)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public JWK Set: ``{"keys": [{"kty", "crv"/"n", "x"/"e", ..., "kid", "alg",
        "use"}]}``, without private parts."""
        return self._current.jwks


def load_signing_keys(directory: Path, environment: str, *, generate: bool) -> SigningKeys:
    """Load the keys for ``environment``; with ``generate``, create an active ES256 key if the
    folder is empty (development and test).

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


class KeyFolder:
    """KEYS_DIR as a running service sees it: ``keys`` loaded at start, reloaded on change.

    Raises (constructor): SettingsError, as ``load_signing_keys``.
    """

    def __init__(self, directory: Path, environment: str, *, generate: bool) -> None:
        self._directory = directory
        self._seen = folder_fingerprint(directory)  # before loading: no change is missed
        self.keys = load_signing_keys(directory, environment, generate=generate)
        #: Kids that left the folder and are not yet listed as revoked for verifiers.
        self.removed_kids: set[str] = set()
        # When each kid left the folder (monotonic seconds), for `recently_removed`.
        self._removed_at: dict[str, float] = {}

    def check(self) -> bool:
        """Reload when the folder changed since the last check; True when new keys are in use.

        A folder that does not validate (mid-update, a broken or foreign file) is logged as an
        error and the previous keys stay; the next change is tried again.
        """
        seen = folder_fingerprint(self._directory)
        if seen == self._seen:
            return False
        self._seen = seen
        before = set(self.keys.kids)
        try:
            self.keys.replace(read_keys(self._directory))
        except (SettingsError, OSError) as exc:
            _log.error("signing_keys_reload_failed", error=str(exc), kept=self.keys.kids)
            return False
        _log.info("signing_keys_reloaded", active_kid=self.keys.active_kid, kids=self.keys.kids)
        removed = before - set(self.keys.kids)
        self.removed_kids |= removed
        self._removed_at.update(dict.fromkeys(removed, time.monotonic()))
        return True

    def recently_removed(self, within_seconds: int) -> list[tuple[str, int]]:
        """Kids that left the folder less than ``within_seconds`` ago, each with the seconds
        left of that span (for listing them as revoked again after Redis lost them)."""
        now = time.monotonic()
        self._removed_at = {
            kid: at for kid, at in self._removed_at.items() if now - at < within_seconds
        }
        return [
            (kid, max(1, int(within_seconds - (now - at)))) for kid, at in self._removed_at.items()
        ]

    async def watch(
        self,
        interval: float = RELOAD_INTERVAL_SECONDS,
        publish_removed: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        """Call ``check`` every ``interval`` seconds until cancelled, and hand the kids of
        keys that left the folder (revoked or retired) to ``publish_removed`` so verifiers
        refuse their tokens at once; a publication that raises is logged and retried."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check()
                if self.removed_kids and publish_removed is not None:
                    await publish_removed(sorted(self.removed_kids))
                    self.removed_kids.clear()
            except Exception:  # noqa: BLE001  # the watcher must outlive any surprise
                _log.exception("signing_keys_watch_failed")
