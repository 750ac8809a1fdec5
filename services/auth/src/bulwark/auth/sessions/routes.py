"""HTTP routes for sessions: login, logout of this device or all, the session list, ending
one session.

Every route but login authenticates its caller first (``deps.authenticated``, a dependency
that holds nothing once it returns); database connections are taken inside the use cases
(`sessions.login`, `sessions.ending`), never by a dependency.
"""

import uuid
from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody

from bulwark.auth.deps import authenticated, client_context
from bulwark.auth.oauth.routes import NO_STORE
from bulwark.auth.passwords import PasswordHasher
from bulwark.auth.sessions import login as login_flow
from bulwark.auth.sessions import queries
from bulwark.auth.sessions.ending import SessionEnder
from bulwark.auth.sessions.login_limits import LoginLimits
from bulwark.auth.sessions.schemas import LoginRequest, Session, SessionList
from bulwark.auth.tokens import TokenResponse
from bulwark.auth.users.rules import check_device_name, normalise_email
from bulwark.common.access_tokens import AccessTokenClaims
from bulwark.common.db import Database
from bulwark.common.problems import FieldError, NotFound, ValidationFailed


class SessionController(Controller):
    """``/v1/auth``."""

    path = "/v1/auth"
    dependencies = {"claims": Provide(authenticated)}  # noqa: RUF012  # Litestar's API

    @post(
        "/login",
        operation_id="login",
        status_code=200,
        response_headers=NO_STORE,
        opt={"answers": (401, 403, 429)},
    )
    async def login(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[LoginRequest],
        state: State,
        db: NamedDependency[Database],
        password_hasher: NamedDependency[PasswordHasher],
    ) -> TokenResponse:
        """Check the password and start a device session; the body is RFC 6749 §5.1.

        Unknown email and wrong password get the same 401 and take the same time; every
        attempt counts against the login limits first (429; ``sessions.login``). With
        ``UNVERIFIED_LOGIN=deny``, the right password of an unverified account is 403
        ``email_not_verified`` and starts no session.
        """
        client = client_context(request)
        if client.device_id is None and request.headers.get("x-device-id") is not None:
            # A session binds to the id sent here: a malformed one must not leave it unbound.
            raise ValidationFailed(
                [FieldError("X-Device-Id", "must be 1 to 128 of A-Z a-z 0-9 . _ : -")]
            )
        attempt = login_flow.LoginAttempt(
            email=normalise_email(data.email),
            password=data.password,
            device_name=check_device_name(data.device),
            client=client,
        )
        limits = LoginLimits(
            state.ratelimit,
            email=attempt.email,
            ip=client.ip or "unknown",
            fail_open=state.settings.fails_open("login"),
            request_state=request.scope["state"],
        )
        logged_in = await login_flow.login(
            attempt,
            db=db,
            hasher=password_hasher,
            limits=limits,
            settings=state.settings,
            keys=state.signing_keys,
        )
        request.scope["state"]["user_id"] = str(logged_in.user_id)  # for the access line
        # Never blocks: schedules the new-country check in the background (docs/anomalies.md).
        state.login_anomalies.observe(user_id=logged_in.user_id, scope=request.scope, ip=client.ip)
        return logged_in.tokens

    @post("/logout", operation_id="logout", status_code=204)
    async def logout(
        self,
        request: Request[Any, Any, State],
        ender: NamedDependency[SessionEnder],
        claims: NamedDependency[AccessTokenClaims],
    ) -> None:
        """End this device's session (the access token's ``sid``)."""
        ip = client_context(request).ip
        await ender.logout(uuid.UUID(claims.sid), uuid.UUID(claims.sub), ip)

    @post("/logout-all", operation_id="logoutAll", status_code=204)
    async def logout_all(
        self,
        request: Request[Any, Any, State],
        ender: NamedDependency[SessionEnder],
        claims: NamedDependency[AccessTokenClaims],
    ) -> None:
        """End every session of the caller, on every device."""
        await ender.logout_all(uuid.UUID(claims.sub), client_context(request).ip)

    @delete("/sessions/{session_id:str}", operation_id="deleteSession", status_code=204)
    async def delete_session(
        self,
        request: Request[Any, Any, State],
        ender: NamedDependency[SessionEnder],
        claims: NamedDependency[AccessTokenClaims],
        session_id: FromPath[str],
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
        if not await ender.delete(family_id, uuid.UUID(claims.sub), client_context(request).ip):
            raise NotFound("No such session.")

    @get("/sessions", operation_id="listSessions", response_headers=NO_STORE)
    async def sessions(
        self, db: NamedDependency[Database], claims: NamedDependency[AccessTokenClaims]
    ) -> SessionList:
        """The caller's live sessions, newest first (at most 100)."""
        rows = await queries.live_families(db, uuid.UUID(claims.sub))
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
