"""HTTP routes for sessions: login, logout of this device or all, the session list, ending
one session.

Handlers that end sessions commit their own transaction, then list the ended sessions as
revoked for the API (``sessions.revocations.publish``) before answering, so an access token
of an ended session fails at the API as soon as the client has its answer.
"""

import uuid
from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import JSONBody

from bulwark.auth.deps import Connection, authenticated, client_context
from bulwark.auth.oauth.routes import NO_STORE
from bulwark.auth.passwords import PasswordHasher
from bulwark.auth.security_events import SecurityEvent, email_fingerprint, record
from bulwark.auth.sessions import queries, revocations, rules
from bulwark.auth.sessions.login_limits import LoginLimits
from bulwark.auth.sessions.schemas import LoginRequest, Session, SessionList
from bulwark.auth.tokens import TokenResponse
from bulwark.auth.users import queries as user_queries
from bulwark.auth.users.rules import check_device_name, normalise_email
from bulwark.common.access_tokens import AccessTokenClaims
from bulwark.common.db import provide_connection
from bulwark.common.metrics import count_login_failure
from bulwark.common.problems import FieldError, NotFound, Unauthorized, ValidationFailed


class SessionController(Controller):
    """``/v1/auth``."""

    path = "/v1/auth"
    dependencies = {  # noqa: RUF012  # Litestar's API
        "conn": Provide(provide_connection),
        "claims": Provide(authenticated),
    }

    @post("/login", operation_id="login", status_code=200, response_headers=NO_STORE)
    async def login(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[LoginRequest],
        state: State,
        password_hasher: PasswordHasher,
    ) -> TokenResponse:
        """Check the password and start a device session; the body is RFC 6749 §5.1.

        Unknown email and wrong password get the same 401 and take the same time. Every
        attempt counts against the per-email and per-IP login limits first, and is refused
        while the email or IP is blocked after failures (429; see ``login_limits``). A
        failure is reserved before the password check and given back on success.
        No database connection is held while argon2 runs, so a login flood cannot drain the
        pool.
        """
        email = normalise_email(data.email)
        device_name = check_device_name(data.device)
        client = client_context(request)
        if client.device_id is None and request.headers.get("x-device-id") is not None:
            # A session binds to the id sent here: a malformed one must not leave it unbound.
            raise ValidationFailed(
                [FieldError("X-Device-Id", "must be 1 to 128 of A-Z a-z 0-9 . _ : -")]
            )
        limits = LoginLimits(
            state.ratelimit,
            email=email,
            ip=client.ip or "unknown",
            fail_open=state.settings.fails_open("login"),
            request_state=request.scope["state"],
        )
        await limits.check()
        user = await user_queries.find_by_email(state.pool, email)
        password_hash = user["password_hash"] if user else None
        if not await password_hasher.verify(password_hash, data.password) or user is None:
            await record(
                state.pool,
                SecurityEvent.LOGIN_FAILED,
                user_id=user["id"] if user else None,
                ip=client.ip,
                device_id=client.device_id,
                email_fingerprint=email_fingerprint(state.settings.email_fingerprint_key, email),
            )
            count_login_failure("invalid_credentials")
            raise Unauthorized("The email or password is incorrect.", error=None)
        upgraded_hash = None
        if password_hasher.needs_rehash(user["password_hash"]):
            upgraded_hash = await password_hasher.hash(data.password)
        async with state.pool.acquire() as conn, conn.transaction():
            if upgraded_hash:
                await user_queries.update_password_hash(conn, user["id"], upgraded_hash)
            tokens = await rules.start_session(
                conn,
                state.settings,
                state.signing_keys,
                user_id=user["id"],
                device_name=device_name,
                client=client,
            )
        await limits.succeeded()
        request.scope["state"]["user_id"] = str(user["id"])  # for the access line
        # Never blocks: schedules the new-country check in the background (docs/anomalies.md).
        state.login_anomalies.observe(user_id=user["id"], scope=request.scope, ip=client.ip)
        return tokens

    @post("/logout", operation_id="logout", status_code=204)
    async def logout(
        self, request: Request[Any, Any, State], state: State, claims: AccessTokenClaims
    ) -> None:
        """End this device's session (the access token's ``sid``)."""
        family_id = uuid.UUID(claims.sid)
        async with state.pool.acquire() as conn, conn.transaction():
            await queries.revoke_family(conn, family_id, "logout")
            await record(
                conn,
                SecurityEvent.LOGOUT,
                user_id=uuid.UUID(claims.sub),
                family_id=family_id,
                ip=client_context(request).ip,
            )
        await revocations.publish(state.revocations, state.settings.access_token_ttl, [family_id])

    @post("/logout-all", operation_id="logoutAll", status_code=204)
    async def logout_all(
        self, request: Request[Any, Any, State], state: State, claims: AccessTokenClaims
    ) -> None:
        """End every session of the caller, on every device."""
        user_id = uuid.UUID(claims.sub)
        async with state.pool.acquire() as conn, conn.transaction():
            ended = await queries.revoke_user_families(conn, user_id, "logout_all")
            await record(
                conn, SecurityEvent.LOGOUT_ALL, user_id=user_id, ip=client_context(request).ip
            )
        await revocations.publish(state.revocations, state.settings.access_token_ttl, ended)

    @delete("/sessions/{session_id:str}", operation_id="deleteSession", status_code=204)
    async def delete_session(
        self,
        request: Request[Any, Any, State],
        state: State,
        claims: AccessTokenClaims,
        session_id: str,
    ) -> None:
        """End one of the caller's own live sessions (the current one included).

        Raises:
            NotFound: no live session of the caller has this id: unknown, malformed, already
                ended, or another user's (404 in every case, never 403, so ids of other
                users' sessions cannot be probed).
        """
        try:
            family_id = uuid.UUID(session_id)
        except ValueError:
            raise NotFound("No such session.") from None
        user_id = uuid.UUID(claims.sub)
        async with state.pool.acquire() as conn, conn.transaction():
            ended = await queries.revoke_own_family(conn, family_id, user_id, "session_deleted")
            if ended:
                await record(
                    conn,
                    SecurityEvent.SESSION_DELETED,
                    user_id=user_id,
                    family_id=family_id,
                    ip=client_context(request).ip,
                )
        if not ended:
            raise NotFound("No such session.")
        await revocations.publish(state.revocations, state.settings.access_token_ttl, [family_id])

    @get("/sessions", operation_id="listSessions", response_headers=NO_STORE)
    async def sessions(self, conn: Connection, claims: AccessTokenClaims) -> SessionList:
        """The caller's live sessions, newest first (at most 100)."""
        rows = await queries.live_families(conn, uuid.UUID(claims.sub))
        return SessionList(
            sessions=[
                Session(
                    id=str(row["id"]),
                    device=row["device_name"],
                    device_id=row["device_id"],
                    platform=row["platform"],
                    created_at=row["created_at"],
                    last_used_at=row["last_used_at"],
                    last_ip=row["last_ip"],
                    current=str(row["id"]) == claims.sid,
                )
                for row in rows
            ]
        )
