"""HTTP routes for users: registration."""

from typing import Any

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody

from bulwark.auth.account import verification
from bulwark.auth.deps import client_context
from bulwark.auth.mail.messages import negotiate_locale
from bulwark.auth.passwords import PasswordHasher
from bulwark.auth.users import queries
from bulwark.auth.users.password_policy import PasswordPolicy
from bulwark.auth.users.rules import check_registration
from bulwark.auth.users.schemas import User, UserCreate
from bulwark.common import rate_limits
from bulwark.common.db import Database
from bulwark.common.problems import Conflict


class UserController(Controller):
    """``/v1/users``."""

    path = "/v1/users"

    @post(operation_id="registerUser", status_code=201, opt={"answers": (409, 429)})
    async def register(
        self,
        *,
        request: Request[Any, Any, State],
        data: JSONBody[UserCreate],
        state: State,
        db: NamedDependency[Database],
        password_hasher: NamedDependency[PasswordHasher],
        password_policy: NamedDependency[PasswordPolicy],
    ) -> User:
        """Register a user. 400 names invalid or unknown fields (a refused password names the
        rule it breaks, docs/passwords.md); 409 when the email is taken; 429 when this IP
        registers too fast (by default fails open if the limiter is down); 503 when the
        breached-password check is on, cannot answer, and its answer is ``deny``."""
        ip = client_context(request).ip or "unknown"
        await rate_limits.enforce(
            state.ratelimit,
            [[("endpoint", "register"), ("remote_address", ip)]],
            fail_open=state.settings.fails_open("register"),
            request_state=request.scope["state"],
        )
        email, display_name = await check_registration(
            data.email, data.password, data.display_name, password_policy
        )
        # Hash before taking a database connection: argon2 must not hold a pooled one.
        password_hash = await password_hasher.hash(data.password)
        async with db.transaction() as conn:
            user_id = await queries.insert_user(conn, email, display_name, password_hash)
            if user_id is not None:  # the address is verified by the mailed link or code
                await verification.send_verification(
                    conn,
                    state.settings,
                    user_id=user_id,
                    email=email,
                    locale=negotiate_locale(request.headers.get("accept-language")),
                    ip=client_context(request).ip,
                )
        if user_id is None:
            raise Conflict("An account with this email already exists.")
        return User(id=str(user_id), email=email, display_name=display_name)
