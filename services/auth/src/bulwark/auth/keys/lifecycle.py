"""The key life cycle as plain functions: what ``generate``, ``rotate``, ``retire`` and
``revoke`` change in a folder, and the timing rules they enforce (RFC 7517, RFC 8725).

States: ``next`` (published in the JWKS, not signing) -> ``active`` (signs; exactly one) ->
``retiring`` (published, not signing, until every token it signed has expired) -> removed.
``revoke`` removes a key of any state at once (key compromise).

Timing (all in seconds):

- a ``next`` key may become ``active`` once every verifier has it: ``publish_wait`` after its
  publication (one reload poll of the auth service + one JWKS cache lifetime + 1 s, as the
  recorded times are whole seconds);
- a ``retiring`` key may be removed once every token it signed has expired at every
  verifier: ``retire_wait`` after it stopped signing (reload poll, during which a replica
  may still sign with it + access-token lifetime + verifier clock leeway + one JWKS cache
  lifetime as margin + 1 s).

Each function returns a ``KeyChange`` for ``apply_change``; nothing here does I/O.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from msgspec.structs import replace

from bulwark.auth.keys.files import (
    Algorithm,
    KeyState,
    StoredKey,
    delete_key,
    folder_lock,
    generate_key,
    write_key,
)
from bulwark.common.access_tokens import LEEWAY_SECONDS

#: How often the auth service looks for changes in KEYS_DIR, in seconds.
RELOAD_INTERVAL_SECONDS = 1


class KeyLifecycleError(Exception):
    """An operation is refused; the message tells the operator why and what to do."""


@dataclass(frozen=True)
class KeyTiming:
    """The durations the timing rules depend on, in seconds."""

    jwks_max_age: int
    access_token_ttl: int
    reload_interval: int = RELOAD_INTERVAL_SECONDS
    leeway: int = LEEWAY_SECONDS
    granularity: int = 1  # recorded times are whole seconds

    @property
    def publish_wait(self) -> int:
        """Least age of a ``next`` key before ``rotate`` activates it."""
        return self.reload_interval + self.jwks_max_age + self.granularity

    @property
    def retire_wait(self) -> int:
        """Least time after ``retired_at`` before ``retire`` removes a key."""
        return (
            self.reload_interval
            + self.access_token_ttl
            + self.leeway
            + self.jwks_max_age
            + self.granularity
        )


@dataclass(frozen=True)
class KeyChange:
    """Files to delete (kids) and keys to write, applied in that order by ``apply_change``."""

    deletes: tuple[str, ...] = ()
    writes: tuple[StoredKey, ...] = ()
    messages: tuple[str, ...] = ()


def iso_time(unix_seconds: int) -> str:
    """``unix_seconds`` as an ISO 8601 UTC time, e.g. ``2025-12-01T08:00:00Z``."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_change(directory: Path, change: KeyChange) -> None:
    """Apply ``change`` to ``directory`` under the folder lock: deletes first (a revoked key
    leaves at once), then each write atomically. A reader in between may see a folder without
    exactly one active key; the service then keeps its previous keys (see ``reload``)."""
    with folder_lock(directory):
        for kid in change.deletes:
            delete_key(directory, kid)
        for key in change.writes:
            write_key(directory, key)


def _by_state(keys: list[StoredKey], state: str) -> list[StoredKey]:
    return [key for key in keys if key.state == state]


def _one_active(keys: list[StoredKey]) -> StoredKey:
    active = _by_state(keys, "active")
    if len(active) != 1:
        raise KeyLifecycleError(f"the folder needs exactly one active key, it has {len(active)}")
    return active[0]


def _environment(keys: list[StoredKey], wanted: str | None) -> str:
    found = {key.environment for key in keys}
    if len(found) > 1:
        raise KeyLifecycleError(f"the folder mixes environments {sorted(found)}")
    if wanted is not None and found and found != {wanted}:
        raise KeyLifecycleError(f"the folder holds {found.pop()} keys, not {wanted} keys")
    if wanted is None and not found:
        raise KeyLifecycleError("the folder has no keys; run 'bulwark-auth keys generate'")
    return wanted if wanted is not None else found.pop()


def plan_generate(
    keys: list[StoredKey], environment: str, *, alg: Algorithm = "ES256", now: int
) -> KeyChange:
    """A new key: ``active`` when the folder has no active key (the first key), else ``next``.

    Raises:
        KeyLifecycleError: the folder belongs to another environment, or already has a
            ``next`` key (rotate or revoke it first).
    """
    _environment(keys, environment)
    if pending := _by_state(keys, "next"):
        raise KeyLifecycleError(
            f"key {pending[0].kid} is already next; run 'rotate' (or 'revoke' it) first"
        )
    state: KeyState = "next" if _by_state(keys, "active") else "active"
    key = generate_key(environment, alg=alg, state=state, now=now)
    if key.kid in {k.kid for k in keys}:  # a thumbprint of a fresh key: not in practice
        raise KeyLifecycleError(f"kid {key.kid} is already in the folder; generate again")
    return KeyChange(writes=(key,), messages=(f"generated {state} {alg} key {key.kid}",))


def plan_rotate(
    keys: list[StoredKey],
    timing: KeyTiming,
    *,
    now: int,
    force: bool = False,
    alg: Algorithm | None = None,
) -> KeyChange:
    """``next`` -> ``active``, ``active`` -> ``retiring``, and a new ``next`` key (of ``alg``,
    default the promoted key's algorithm).

    Raises:
        KeyLifecycleError: not exactly one active key; no next key; or, without ``force``, the
            next key was published less than ``timing.publish_wait`` seconds ago (verifiers
            with an older cached JWKS would reject its tokens).
    """
    environment = _environment(keys, None)
    active = _one_active(keys)
    pending = _by_state(keys, "next")
    if not pending:
        raise KeyLifecycleError(
            "there is no next key: run 'bulwark-auth keys generate', wait "
            f"{timing.publish_wait} s for JWKS caches to take it, then rotate"
        )
    promoted = min(pending, key=lambda key: key.published)
    ready_at = promoted.published + timing.publish_wait
    if now < ready_at and not force:
        raise KeyLifecycleError(
            f"next key {promoted.kid} was published {now - promoted.published} s ago; JWKS "
            f"caches may lack it for up to {ready_at - now} s more (JWKS max-age "
            f"{timing.jwks_max_age} s). Rotate again then, or pass --force to accept that "
            "verifiers with an older cached JWKS reject the new tokens until they refetch"
        )
    successor = generate_key(environment, alg=alg or promoted.alg, state="next", now=now)
    return KeyChange(
        writes=(
            successor,
            replace(active, state="retiring", retired_at=now),
            replace(promoted, state="active", activated_at=now),
        ),
        messages=(
            f"activated {promoted.kid}",
            f"{active.kid} is retiring; 'retire' can remove it from "
            f"{iso_time(now + timing.retire_wait)}",
            f"generated next {successor.alg} key {successor.kid}",
        ),
    )


def plan_retire(keys: list[StoredKey], timing: KeyTiming, *, now: int) -> KeyChange:
    """Remove each ``retiring`` key whose tokens have all expired: ``retired_at +
    timing.retire_wait <= now``. Keys still waiting are named in the messages."""
    deletes, messages = [], []
    for key in _by_state(keys, "retiring"):
        if key.retired_at is None:
            messages.append(f"kept {key.kid}: it has no retired_at; 'revoke' removes it")
            continue
        due = key.retired_at + timing.retire_wait
        if due <= now:
            deletes.append(key.kid)
            messages.append(f"removed {key.kid}")
        else:
            messages.append(f"kept {key.kid}: its tokens may be valid for {due - now} s more")
    return KeyChange(deletes=tuple(deletes), messages=tuple(messages))


def plan_revoke(keys: list[StoredKey], kid: str, *, now: int) -> KeyChange:
    """Remove key ``kid`` at once, whatever its state (key compromise). When it was the active
    key, the ``next`` key becomes active without waiting, or a new key of the same algorithm
    is generated as active when there is no next key.

    Raises:
        KeyLifecycleError: no key ``kid`` in the folder.
    """
    revoked = next((key for key in keys if key.kid == kid), None)
    if revoked is None:
        raise KeyLifecycleError(f"no key {kid} in the folder")
    messages = [f"revoked {kid}: it is no longer published"]
    writes: list[StoredKey] = []
    if revoked.state == "active":
        pending = sorted(_by_state(keys, "next"), key=lambda key: key.published)
        if pending:
            writes.append(replace(pending[0], state="active", activated_at=now))
            messages.append(f"activated next key {pending[0].kid}")
        else:
            fresh = generate_key(revoked.environment, alg=revoked.alg, state="active", now=now)
            writes.append(fresh)
            messages.append(f"generated and activated {fresh.alg} key {fresh.kid}")
        messages.append("run 'bulwark-auth keys generate' for a new next key")
    return KeyChange(deletes=(kid,), writes=tuple(writes), messages=tuple(messages))
