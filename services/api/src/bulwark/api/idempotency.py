"""``Idempotency-Key`` on the POSTs that create something, after the IETF draft "The
Idempotency-Key HTTP Header Field" (draft-ietf-httpapi-idempotency-key-header-06).

A create handler takes the ``idempotency_key`` dependency and hands its work to
`create_once`; that is all a route adds (``POST /v1/notes`` is the example)::

    return await create_once(primary, idempotency_key, data, Note, create, as_stored)

``present`` (`as_stored` above) turns the kept body into the answer, on the first request
and on every replay, in the same transaction: ``POST /v1/uploads`` keeps the upload and
signs a new PUT URL each time (a URL is a credential with an expiry: never kept), and only
while the upload is still pending.

Per user (the token's ``sub``) and key, within ``IDEMPOTENCY_KEY_TTL_SECONDS`` (24 h):

- a first request runs ``create`` and keeps its answer (status, JSON body, ``Location``,
  ``ETag``) in ``idempotency_keys``, in the same transaction as the row it created: both
  are written or neither is;
- a retry with the same fingerprint (SHA-256 of method, path and the request body as
  decoded and encoded again, so spacing and key order do not matter) gets that first answer
  again and creates nothing, even when the resource has changed or gone since (§2.5);
- the same key with another fingerprint is 422 (§2.7), another user's same key is a key of
  their own, and a request whose key is still being processed (its transaction holds the
  key's advisory lock) is 409 at once (§2.7), with ``Retry-After: 1``.

Only successful answers are kept. A request refused before ``create`` (a 400 of its body),
and one that failed during it (a 503), changed nothing and rolled back, so its retry runs
again, as a first request: replaying a passing outage would make a client's retries
useless. The draft's "success or an error" (§2.5) is meant for errors that record an
outcome; none of ours does. The key is optional (an old app sends none); when it is absent
the create simply runs. Expired keys are ignored at once, replaced by a new first request,
and deleted by `sweep_forever`.

A key is a Structured Field String (RFC 8941 §3.3.3): ``Idempotency-Key: "8e03978e-..."``,
1 to `MAX_KEY_LENGTH` printable ASCII characters inside the quotes. An unquoted value, an
empty one, a longer one or one with other characters is 400.
"""

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import asyncpg
import http_sf
import msgspec
from litestar import Request, Response
from litestar.datastructures import State
from litestar.di import NamedDependency

from bulwark.common.access_tokens import AccessTokenClaims
from bulwark.common.db import Database, DatabaseUnavailable, Queryable
from bulwark.common.outages import OutageLog
from bulwark.common.problems import BadRequest, Problem

HEADER = "Idempotency-Key"
#: Longest key accepted, in characters (inside the quotes).
MAX_KEY_LENGTH = 255
#: Seconds between two sweeps of expired keys, and what one sweep deletes at most.
SWEEP_SECONDS = 60.0
SWEEP_BATCH = 1000
SWEEP_MAX_BATCHES = 10

T = TypeVar("T", bound=msgspec.Struct)
R = TypeVar("R", bound=msgspec.Struct)


class IdempotencyKeyReused(Problem):
    """422: the key was first used with another request (draft §2.7)."""

    status = 422
    title = "Unprocessable Content"
    type = "urn:bulwark:problem:idempotency-key-reused"

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was already used with a different request.")


class IdempotencyKeyInUse(Problem):
    """409 with ``Retry-After: 1``: a request with this key is still being processed
    (draft §2.7); retrying later gets its answer."""

    status = 409
    title = "Conflict"
    type = "urn:bulwark:problem:idempotency-key-in-use"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry shortly.",
            {"Retry-After": "1"},
        )


@dataclass(frozen=True)
class IdempotencyKey:
    """A request's key, with what scopes and fingerprints it: ``owner_id`` (the caller),
    ``method`` and ``path`` of the request, and ``ttl_seconds`` its answer is kept."""

    key: str
    owner_id: uuid.UUID
    method: str
    path: str
    ttl_seconds: int


@dataclass(frozen=True)
class Created(Generic[T]):
    """What a create answers: ``body`` (a response struct), ``headers`` (``Location``,
    ``ETag``; never a secret: they are kept for replays) and ``status``."""

    body: T
    headers: Mapping[str, str] = field(default_factory=dict)
    status: int = 201


class StoredAnswer(msgspec.Struct, frozen=True):
    """A kept first answer: the fingerprint of its request, and what was answered."""

    fingerprint: bytes
    status: int
    headers: dict[str, str]
    body: bytes


Verdict = Literal["execute", "replay", "reused"]


def parse_key(values: list[str]) -> str | None:
    """The key in the ``Idempotency-Key`` field lines ``values``, or None without one.
    Parameters after the string are ignored (RFC 8941 §3.1.2).

    Raises:
        BadRequest: not one Structured Field String of 1 to `MAX_KEY_LENGTH` characters.
    """
    if not values:
        return None
    try:
        item = http_sf.parse(", ".join(values).encode("latin-1"), tltype="item")
    except (http_sf.StructuredFieldError, UnicodeEncodeError):
        item = None
    key = item[0] if isinstance(item, tuple) else None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise BadRequest(
            f"{HEADER} must be a quoted string of 1 to {MAX_KEY_LENGTH} printable ASCII"
            ' characters (RFC 8941), for example "8e03978e-40d5-43e8-bc93-6894a57f9324".'
        )
    return key


def fingerprint(method: str, path: str, body: msgspec.Struct) -> bytes:
    """SHA-256 (32 bytes) of ``method``, ``path`` and ``body`` encoded as JSON. ``body`` is
    the request as decoded, so two bodies that differ only in spacing, key order or an
    omitted default have one fingerprint."""
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(msgspec.json.encode(body))
    return digest.digest()


def judge(stored: StoredAnswer | None, request_fingerprint: bytes) -> Verdict:
    """What to do with a keyed request, given the unexpired answer kept for its key."""
    if stored is None:
        return "execute"
    return "replay" if stored.fingerprint == request_fingerprint else "reused"


async def idempotency_key(
    request: Request[Any, Any, Any], caller: NamedDependency[AccessTokenClaims], state: State
) -> IdempotencyKey | None:
    """The ``idempotency_key`` dependency: the caller's key, or None without the header.
    Resolved after ``caller`` (authenticated and rate-limited first).

    Raises:
        BadRequest: a malformed key (`parse_key`).
    """
    key = parse_key(request.headers.getall(HEADER, []))
    if key is None:
        return None
    return IdempotencyKey(
        key=key,
        owner_id=uuid.UUID(caller.sub),
        method=request.method,
        path=request.url.path,
        ttl_seconds=state.settings.idempotency_key_ttl,
    )


async def as_stored(conn: asyncpg.Connection, body: T) -> T:
    """The ``present`` of a create whose kept body is its whole answer."""
    return body


async def create_once(  # noqa: PLR0917  # each argument is named in the module's example
    db: Database,
    key: IdempotencyKey | None,
    request_body: msgspec.Struct,
    answer: type[T],
    create: Callable[[asyncpg.Connection], Awaitable[Created[T]]],
    present: Callable[[asyncpg.Connection, T], Awaitable[R]],
) -> Response[R]:
    """Run ``create`` in a transaction on ``db`` once per key: the answer of its first run
    is kept with what it wrote, and a retry gets it again (decoded as ``answer``). Without
    a key, ``create`` just runs in a transaction. Either way the body answered is
    ``present(conn, kept body)``, run in that transaction (see the module's docstring).

    Raises:
        IdempotencyKeyInUse: a request with this key is being processed (409).
        IdempotencyKeyReused: the key was used with another request (422).
        DatabaseUnavailable: the database failed (503; nothing was written).
        Problem: whatever ``create`` or ``present`` raises (the transaction is rolled back).
    """
    async with db.transaction() as conn:
        if key is None:
            created = await create(conn)
            return _response(created, await present(conn, created.body))
        owner, name = key.owner_id, key.key
        if not await conn.fetchval(_TRY_LOCK, owner, name):
            raise IdempotencyKeyInUse
        stored = await _find(conn, owner, name)
        request_fingerprint = fingerprint(key.method, key.path, request_body)
        verdict = judge(stored, request_fingerprint)
        if stored is not None and verdict == "replay":
            kept = msgspec.json.decode(stored.body, type=answer)
            return Response(
                await present(conn, kept), status_code=stored.status, headers=stored.headers
            )
        if verdict == "reused":
            raise IdempotencyKeyReused
        created = await create(conn)
        status = await conn.execute(
            _STORE,
            owner,
            name,
            request_fingerprint,
            created.status,
            msgspec.json.encode(dict(created.headers)).decode(),
            msgspec.json.encode(created.body),
            float(key.ttl_seconds),
        )
        if status != "INSERT 0 1":  # an unexpired answer appeared: another request has it
            raise IdempotencyKeyInUse
        return _response(created, await present(conn, created.body))


def _response(created: Created[T], body: R) -> Response[R]:
    return Response(body, status_code=created.status, headers=dict(created.headers))


async def _find(conn: asyncpg.Connection, owner: uuid.UUID, key: str) -> StoredAnswer | None:
    row = await conn.fetchrow(_FIND, owner, key)
    if row is None:
        return None
    return StoredAnswer(
        fingerprint=row["fingerprint"],
        status=row["status"],
        headers=msgspec.json.decode(row["headers"], type=dict[str, str]),
        body=row["body"],
    )


async def purge_expired(db: Queryable, limit: int = SWEEP_BATCH) -> int:
    """Delete up to ``limit`` expired keys (oldest first, skipping rows another sweep has
    locked); return how many were deleted.

    Raises:
        DatabaseUnavailable: the database failed.
    """
    status: str = await db.execute(_PURGE, limit)
    return int(status.rsplit(maxsplit=1)[-1])


async def sweep_forever(db: Database) -> None:
    """Every `SWEEP_SECONDS`, delete expired keys, at most `SWEEP_MAX_BATCHES` batches of
    `SWEEP_BATCH`, until cancelled. Each statement is bounded by ``db``'s timeout; a failing
    sweep (database down, schema not migrated yet) is logged once per outage and retried
    at the next period."""
    failures = OutageLog("idempotency_sweep_failed", "idempotency_sweep_recovered")
    while True:
        try:
            for _ in range(SWEEP_MAX_BATCHES):
                if await purge_expired(db) < SWEEP_BATCH:
                    break
        except (DatabaseUnavailable, asyncpg.PostgresError) as exc:
            failures.failed(type(exc).__name__)
        else:
            failures.succeeded()
        await asyncio.sleep(SWEEP_SECONDS)


# A transaction-scoped advisory lock per (owner, key), held until the first request's
# transaction ends: a concurrent one fails to take it and answers 409 without waiting.
# 64-bit hashes: two different keys share a lock with odds of 2^-64 (a spurious 409).
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended($1::uuid::text || ' ' || $2, 0))"
_FIND = (
    "SELECT fingerprint, status, headers::text AS headers, body FROM idempotency_keys"
    " WHERE owner_id = $1 AND key = $2 AND expires_at > now()"
)
# An expired answer not swept yet is replaced; an unexpired one is left alone (0 rows).
_STORE = (
    "INSERT INTO idempotency_keys (owner_id, key, fingerprint, status, headers, body, expires_at)"
    " VALUES ($1, $2, $3, $4, $5::jsonb, $6, now() + make_interval(secs => $7))"
    " ON CONFLICT (owner_id, key) DO UPDATE SET fingerprint = excluded.fingerprint,"
    " status = excluded.status, headers = excluded.headers, body = excluded.body,"
    " created_at = excluded.created_at, expires_at = excluded.expires_at"
    " WHERE idempotency_keys.expires_at <= now()"
)
_PURGE = (
    "DELETE FROM idempotency_keys WHERE (owner_id, key) IN (SELECT owner_id, key"
    " FROM idempotency_keys WHERE expires_at <= now() ORDER BY expires_at LIMIT $1"
    " FOR UPDATE SKIP LOCKED)"
)
