"""HTTP routes for users: registration."""

from litestar import Controller, post
from litestar.di import Provide

from bulwark.auth.deps import Connection
from bulwark.auth.passwords import PasswordHasher
from bulwark.auth.users import queries
from bulwark.auth.users.rules import check_registration
from bulwark.auth.users.schemas import User, UserCreate
from bulwark.common.db import provide_connection
from bulwark.common.problems import Conflict


class UserController(Controller):
    """``/v1/users``."""

    path = "/v1/users"
    dependencies = {"conn": Provide(provide_connection)}  # noqa: RUF012  # Litestar's API

    @post(operation_id="registerUser", status_code=201)
    async def register(
        self, data: UserCreate, conn: Connection, password_hasher: PasswordHasher
    ) -> User:
        """Register a user. 400 names invalid or unknown fields; 409 when the email is taken."""
        email, display_name = check_registration(data.email, data.password, data.display_name)
        password_hash = await password_hasher.hash(data.password)
        user_id = await queries.insert_user(conn, email, display_name, password_hash)
        if user_id is None:
            raise Conflict("An account with this email already exists.")
        return User(id=str(user_id), email=email, display_name=display_name)
