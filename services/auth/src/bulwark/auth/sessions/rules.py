"""Rules of device sessions: start one at login, rotate its refresh token, end it.

Rotation follows RFC 9700 §4.14.2: each refresh token is used once; presenting a used one
means it was copied, so the whole family is revoked (the attacker's and the user's newest
token alike) and the event recorded. Token and family rows are locked for the rotation, so
concurrent refreshes with one token serialise and at most one of them succeeds.
"""

import uuid
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg
import msgspec

from bulwark.auth.keys import SigningKeys
from bulwark.auth.security_events import SecurityEvent, record
from bulwark.auth.sessions import queries
from bulwark.auth.settings import AuthSettings
from bulwark.auth.tokens import (
    DEFAULT_SCOPE,
    TokenResponse,
    hash_refresh_token,
    is_refresh_token_shaped,
    mint_access_token,
    new_refresh_token,
)


class ClientContext(msgspec.Struct, frozen=True):
    """Where a request came from: client IP and the mobile headers (already sanitised)."""

    ip: str | None
    device_id: str | None
    platform: str | None


class RefreshRejection(StrEnum):
    """Why a refresh token was refused; every one is ``invalid_grant`` to the client."""

    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    REUSED = "reused"


async def _issue(
    conn: asyncpg.Connection,
    settings: AuthSettings,
    keys: SigningKeys,
    *,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    client_id: str,
    now: datetime,
    absolute_expires_at: datetime,
) -> TokenResponse:
    refresh_token, token_hash = new_refresh_token()
    idle_expiry = now + timedelta(seconds=settings.refresh_idle_ttl)
    await queries.insert_token(conn, family_id, token_hash, min(idle_expiry, absolute_expires_at))
    access_token = mint_access_token(
        keys,
        issuer=settings.issuer,
        audience=settings.audience,
        client_id=client_id,
        user_id=user_id,
        family_id=family_id,
        lifetime=settings.access_token_ttl,
    )
    return TokenResponse(
        access_token=access_token,
        token_type="Bearer",  # noqa: S106  # RFC 6750 token type, not a secret
        expires_in=settings.access_token_ttl,
        refresh_token=refresh_token,
        scope=DEFAULT_SCOPE,
    )


async def start_session(
    conn: asyncpg.Connection,
    settings: AuthSettings,
    keys: SigningKeys,
    *,
    user_id: uuid.UUID,
    device_name: str | None,
    client: ClientContext,
) -> TokenResponse:
    """Start a family for a user who just proved their password; return its first tokens."""
    now: datetime = await conn.fetchval("SELECT now()")
    absolute_expires_at = now + timedelta(seconds=settings.refresh_absolute_ttl)
    family_id = await queries.insert_family(
        conn,
        user_id=user_id,
        client_id=settings.client_id,
        device_id=client.device_id,
        device_name=device_name,
        platform=client.platform,
        ip=client.ip,
        absolute_expires_at=absolute_expires_at,
    )
    await record(
        conn,
        SecurityEvent.LOGIN_SUCCEEDED,
        user_id=user_id,
        family_id=family_id,
        ip=client.ip,
        device_id=client.device_id,
    )
    return await _issue(
        conn,
        settings,
        keys,
        user_id=user_id,
        family_id=family_id,
        client_id=settings.client_id,
        now=now,
        absolute_expires_at=absolute_expires_at,
    )


async def rotate(
    conn: asyncpg.Connection,
    settings: AuthSettings,
    keys: SigningKeys,
    *,
    refresh_token: str,
    client: ClientContext,
) -> TokenResponse | RefreshRejection:
    """Exchange a refresh token for a new pair (RFC 6749 §6), one use only.

    Returns the new tokens, or why the token was refused. The caller's transaction must
    commit in both cases: on ``REUSED`` the family revocation and its security event are
    part of the answer.
    """
    if not is_refresh_token_shaped(refresh_token):
        return RefreshRejection.UNKNOWN
    token_hash = hash_refresh_token(refresh_token)
    row = await queries.lock_token(conn, token_hash)
    if row is None:
        return RefreshRejection.UNKNOWN
    family_id: uuid.UUID = row["family_id"]
    if row["revoked_at"] is not None:
        return RefreshRejection.REVOKED
    if row["used_at"] is not None:
        await queries.revoke_family(conn, family_id, RefreshRejection.REUSED.value)
        await record(
            conn,
            SecurityEvent.REFRESH_REUSE_DETECTED,
            user_id=row["user_id"],
            family_id=family_id,
            ip=client.ip,
            device_id=client.device_id,
        )
        return RefreshRejection.REUSED
    now: datetime = row["now"]
    if row["expires_at"] <= now or row["absolute_expires_at"] <= now:
        return RefreshRejection.EXPIRED
    await queries.mark_used(conn, token_hash)
    await queries.touch_family(conn, family_id, client.ip)
    return await _issue(
        conn,
        settings,
        keys,
        user_id=row["user_id"],
        family_id=family_id,
        client_id=row["client_id"],
        now=now,
        absolute_expires_at=row["absolute_expires_at"],
    )


async def revoke_by_refresh_token(conn: asyncpg.Connection, refresh_token: str) -> uuid.UUID | None:
    """End the family of ``refresh_token`` (RFC 7009); return its user id, or None if unknown."""
    if not is_refresh_token_shaped(refresh_token):
        return None
    row = await queries.lock_token(conn, hash_refresh_token(refresh_token))
    if row is None:
        return None
    await queries.revoke_family(conn, row["family_id"], "revoked")
    user_id: uuid.UUID = row["user_id"]
    return user_id
