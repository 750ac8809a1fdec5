"""Ending device sessions: logout, logout of every device, deleting one session, RFC 7009
revocation (of a refresh token or an access token), and the families a refresh ends (reuse,
device mismatch).

Each ending commits in Postgres first (the family and its security event, one transaction),
then lists the ended sessions as revoked for the API (``sessions.revocations.publish``)
before the caller answers, so an access token of an ended session fails at the API as soon
as the client has its answer.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from bulwark.auth.authorization import queries as authorization_queries
from bulwark.auth.device import queries as device_queries
from bulwark.auth.pages import queries as page_queries
from bulwark.auth.security_events import SecurityEvent, record
from bulwark.auth.sessions import queries, revocations, rules
from bulwark.common.access_tokens import AccessTokenClaims
from bulwark.common.db import Database
from bulwark.common.revocations import SessionRevocations


async def end_user_sessions(
    conn: asyncpg.Connection, user_id: uuid.UUID, reason: str, *, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """In the caller's transaction, end every live session of ``user_id`` but ``keep``,
    every sign-in on the pages, and every approval not exchanged yet (an approved device
    code is denied, an unused authorization code spent); return the ended sessions' ids,
    for `SessionEnder.publish` once the transaction has committed."""
    ended = await queries.revoke_user_families(conn, user_id, reason, keep=keep)
    await page_queries.delete_for_user(conn, user_id)
    await device_queries.withdraw_approvals(conn, user_id)
    await authorization_queries.spend_unused(conn, user_id)
    return ended


@dataclass(frozen=True)
class SessionEnder:
    """Ends sessions in ``db`` and lists them in ``revocation_set`` for ``access_token_ttl``
    seconds (plus leeway; see `bulwark.common.revocations.entry_lifetime`)."""

    db: Database
    revocation_set: SessionRevocations
    access_token_ttl: int

    async def logout(self, family_id: uuid.UUID, user_id: uuid.UUID, ip: str | None) -> None:
        """End the caller's own session ``family_id`` (idempotent).

        Raises:
            DatabaseUnavailable: the database cannot answer (503; nothing ended).
        """
        async with self.db.transaction() as conn:
            await queries.revoke_family(conn, family_id, "logout")
            await record(conn, SecurityEvent.LOGOUT, user_id=user_id, family_id=family_id, ip=ip)
        await self.publish([family_id])

    async def logout_all(self, user_id: uuid.UUID, ip: str | None) -> None:
        """End every live session of ``user_id``, every sign-in on the pages, and every
        approval not exchanged yet (an approved device code is denied, an unused
        authorization code spent): nothing approved before this starts a session after it.

        Raises:
            DatabaseUnavailable: the database cannot answer (503; nothing ended).
        """
        async with self.db.transaction() as conn:
            ended = await end_user_sessions(conn, user_id, "logout_all")
            await record(conn, SecurityEvent.LOGOUT_ALL, user_id=user_id, ip=ip)
        await self.publish(ended)

    async def delete(self, family_id: uuid.UUID, user_id: uuid.UUID, ip: str | None) -> bool:
        """End ``family_id`` if it is a live session of ``user_id``; False when it is not
        (unknown, ended, or another user's).

        Raises:
            DatabaseUnavailable: the database cannot answer (503; nothing ended).
        """
        async with self.db.transaction() as conn:
            ended = await queries.revoke_own_family(conn, family_id, user_id, "session_deleted")
            if ended:
                await record(
                    conn,
                    SecurityEvent.SESSION_DELETED,
                    user_id=user_id,
                    family_id=family_id,
                    ip=ip,
                )
        if ended:
            await self.publish([family_id])
        return ended

    async def revoke_refresh_token(
        self, refresh_token: str, ip: str | None, *, client_id: str
    ) -> None:
        """End the session of ``refresh_token`` if it was issued to ``client_id`` (RFC 7009
        §2); an unknown token, or another client's, is no error and ends nothing.

        Raises:
            DatabaseUnavailable: the database cannot answer (503; nothing ended).
        """
        async with self.db.transaction() as conn:
            revoked = await rules.revoke_by_refresh_token(conn, refresh_token, client_id)
            if revoked is not None:
                user_id, family_id = revoked
                await record(
                    conn,
                    SecurityEvent.TOKEN_REVOKED,
                    user_id=user_id,
                    family_id=family_id,
                    ip=ip,
                )
        if revoked is not None:
            await self.publish([revoked[1]])

    async def revoke_access_token(self, claims: AccessTokenClaims, ip: str | None) -> None:
        """End the session (``sid``) of a verified access token ``claims``, as revoking its
        refresh token does (RFC 7009 §2.1: the server may revoke the whole grant); a
        session already ended, or not ``sub``'s, is no error.

        Raises:
            DatabaseUnavailable: the database cannot answer (503; nothing ended).
        """
        family_id, user_id = uuid.UUID(claims.sid), uuid.UUID(claims.sub)
        async with self.db.transaction() as conn:
            ended = await queries.revoke_own_family(conn, family_id, user_id, "revoked")
            if ended:
                await record(
                    conn,
                    SecurityEvent.TOKEN_REVOKED,
                    user_id=user_id,
                    family_id=family_id,
                    ip=ip,
                )
        if ended:
            await self.publish([family_id])

    async def publish(self, family_ids: Iterable[uuid.UUID]) -> None:
        """List sessions already ended in Postgres as revoked for the API (never raises;
        see `bulwark.auth.sessions.revocations.publish`)."""
        await revocations.publish(self.revocation_set, self.access_token_ttl, family_ids)
