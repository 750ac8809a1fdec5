"""HTTP routes of the account flows under ``/v1/auth`` (docs/account.md).

Each route counts against its limits first (``password_reset``, ``account_code``,
``account_mail``, ``reauthentication``; rules.yaml), all failing closed: they send mail or
check secrets. Handlers are thin: the flows are in `recovery`, `password_change`,
`verification`, `email_change`, `deletion`.
"""

import uuid
from typing import Any

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody

from bulwark.auth.account import deletion, email_change, password_change, recovery, verification
from bulwark.auth.account.limits import limit
from bulwark.auth.account.schemas import (
    Accepted,
    AccountDeletion,
    EmailChangeConfirm,
    EmailChangeRequest,
    EmailChangeUndo,
    EmailVerificationConfirm,
    PasswordChange,
    PasswordResetConfirm,
    PasswordResetRequest,
)
from bulwark.auth.deps import authenticated, client_context
from bulwark.auth.mail.messages import negotiate_locale
from bulwark.auth.users.rules import normalise_email
from bulwark.common.access_tokens import AccessTokenClaims
from bulwark.common.problems import FieldError, Unauthorized, ValidationFailed


def _locale(request: Request[Any, Any, State]) -> str:
    return negotiate_locale(request.headers.get("accept-language"))


def _one_proof(token: str | None, code: str | None, *, code_needs: str) -> None:
    """Exactly one of the link's token or the code (with ``code_needs``)."""
    if (token is None) == (code is None):
        raise ValidationFailed([FieldError("token", f"send either token or {code_needs}")])


class AccountController(Controller):
    """The account routes a signed-out app calls: password reset, verification links."""

    path = "/v1/auth"

    @post(
        "/password-reset",
        operation_id="requestPasswordReset",
        status_code=202,
        opt={"answers": (429,)},
    )
    async def request_password_reset(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[PasswordResetRequest],
        state: State,
    ) -> Accepted:
        """Mail a password reset to the account of ``email``, if there is one: the same 202,
        in the same time, either way. 429 per email and per IP."""
        email = normalise_email(data.email)
        await limit(request, "password_reset", email=email)
        ip = client_context(request).ip
        state.account_work.spawn(
            "password_reset",
            recovery.request_reset(
                state.db, state.settings, email=email, locale=_locale(request), ip=ip
            ),
        )
        return Accepted()

    @post(
        "/password-reset/confirm",
        operation_id="confirmPasswordReset",
        status_code=204,
        opt={"answers": (429,)},
    )
    async def confirm_password_reset(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[PasswordResetConfirm],
        state: State,
    ) -> None:
        """Set a new password with the mailed link's ``token``, or ``email`` and ``code``;
        every session of the account ends. 400 ``invalid or expired`` for any wrong proof."""
        _one_proof(data.token, data.code, code_needs="email and code")
        email = None if data.email is None else normalise_email(data.email)
        if data.code is not None and email is None:
            raise ValidationFailed([FieldError("email", "is required with code")])
        await limit(request, "account_code", **({} if email is None else {"email": email}))
        await recovery.reset_password(
            recovery.ResetProof(token=data.token, email=email, code=data.code),
            data.new_password,
            db=state.db,
            settings=state.settings,
            hasher=state.password_hasher,
            policy=state.password_policy,
            ender=state.session_ender,
            locale=_locale(request),
            ip=client_context(request).ip,
        )

    @post(
        "/email-verification/confirm",
        operation_id="confirmEmailVerification",
        status_code=204,
        opt={"answers": (401, 429)},
    )
    async def confirm_email_verification(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[EmailVerificationConfirm],
        state: State,
    ) -> None:
        """Verify the account's address with the mailed link's ``token``, or with the
        ``code`` and the signed-in user's bearer token. Access tokens minted afterwards
        (refresh) say ``email_verified: true``."""
        _one_proof(data.token, data.code, code_needs="code with a bearer token")
        user_id = None
        if data.code is not None:
            user_id = uuid.UUID((await _caller(request, state)).sub)
        await limit(
            request, "account_code", **({} if user_id is None else {"user_id": str(user_id)})
        )
        await verification.verify(
            state.db,
            state.settings,
            link_token=data.token,
            code=data.code,
            user_id=user_id,
            ip=client_context(request).ip,
        )

    @post(
        "/email-change/confirm",
        operation_id="confirmEmailChange",
        status_code=204,
        opt={"answers": (401, 409, 429)},
    )
    async def confirm_email_change(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[EmailChangeConfirm],
        state: State,
    ) -> None:
        """Make the new address the account's with the link's ``token``, or the ``code`` and
        the signed-in user's bearer token; the old address gets an undo link. 409 when
        another account has taken the address meanwhile."""
        _one_proof(data.token, data.code, code_needs="code with a bearer token")
        user_id = None
        if data.code is not None:
            user_id = uuid.UUID((await _caller(request, state)).sub)
        await limit(
            request, "account_code", **({} if user_id is None else {"user_id": str(user_id)})
        )
        await email_change.confirm_change(
            state.db,
            state.settings,
            link_token=data.token,
            code=data.code,
            user_id=user_id,
            locale=_locale(request),
            ip=client_context(request).ip,
        )

    @post(
        "/email-change/undo",
        operation_id="undoEmailChange",
        status_code=204,
        opt={"answers": (409, 429)},
    )
    async def undo_email_change(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[EmailChangeUndo],
        state: State,
    ) -> None:
        """Give the account back the old address with the link mailed there: every session
        ends and a password reset is mailed to that address."""
        await limit(request, "account_code")
        await email_change.undo_change(
            state.db,
            state.settings,
            state.session_ender,
            link_token=data.token,
            locale=_locale(request),
            ip=client_context(request).ip,
        )


async def _caller(request: Request[Any, Any, State], state: State) -> AccessTokenClaims:
    """The signed-in caller, for a route where signing in is optional."""
    if request.headers.get("authorization") is None:
        raise Unauthorized("A code needs the signed-in user's access token.")
    return await authenticated(request, state)


class SignedInAccountController(Controller):
    """The account routes of a signed-in user."""

    path = "/v1/auth"
    dependencies = {"claims": Provide(authenticated)}  # noqa: RUF012  # Litestar's API

    @post("/password", operation_id="changePassword", status_code=204, opt={"answers": (401, 429)})
    async def change_password(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[PasswordChange],
        state: State,
        claims: NamedDependency[AccessTokenClaims],
    ) -> None:
        """Change the password, proven with the current one (400 ``currentPassword`` when
        wrong): every other session ends, this one stays, the address is told."""
        await limit(request, "reauthentication", user_id=claims.sub)
        await password_change.change_password(
            uuid.UUID(claims.sub),
            uuid.UUID(claims.sid),
            data.current_password,
            data.new_password,
            db=state.db,
            settings=state.settings,
            hasher=state.password_hasher,
            policy=state.password_policy,
            ender=state.session_ender,
            locale=_locale(request),
            ip=client_context(request).ip,
        )

    @post(
        "/email-verification",
        operation_id="resendEmailVerification",
        status_code=202,
        opt={"answers": (401, 429)},
    )
    async def resend_email_verification(
        self,
        request: Request[Any, Any, State],
        state: State,
        claims: NamedDependency[AccessTokenClaims],
    ) -> Accepted:
        """Mail a new verification link and code (the earlier ones stop working); nothing
        is sent when the address is already verified."""
        await limit(request, "account_mail", user_id=claims.sub)
        await verification.resend(
            state.db,
            state.settings,
            user_id=uuid.UUID(claims.sub),
            locale=_locale(request),
            ip=client_context(request).ip,
        )
        return Accepted(detail="If the address is not verified yet, a mail is on its way.")

    @post(
        "/email-change",
        operation_id="requestEmailChange",
        status_code=202,
        opt={"answers": (401, 429)},
    )
    async def request_email_change(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[EmailChangeRequest],
        state: State,
        claims: NamedDependency[AccessTokenClaims],
    ) -> Accepted:
        """Mail a link and a code to ``newEmail``, proven with the ``password`` (400 when
        wrong); the account keeps its address until the new one is confirmed."""
        new_email = normalise_email(data.new_email)
        await limit(request, "reauthentication", user_id=claims.sub)
        await limit(request, "account_mail", user_id=claims.sub)
        await email_change.request_change(
            uuid.UUID(claims.sub),
            data.password,
            new_email,
            db=state.db,
            settings=state.settings,
            hasher=state.password_hasher,
            locale=_locale(request),
            ip=client_context(request).ip,
        )
        return Accepted(detail="A mail to the new address is on its way.")

    @post(
        "/account-deletion",
        operation_id="deleteAccount",
        status_code=202,
        opt={"answers": (401, 429)},
    )
    async def delete_account(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[AccountDeletion],
        state: State,
        claims: NamedDependency[AccessTokenClaims],
    ) -> Accepted:
        """Delete the account, proven with the ``password`` (400 when wrong): every session
        ends at once; the account's data in the API is deleted shortly after (202)."""
        await limit(request, "reauthentication", user_id=claims.sub)
        await deletion.delete_account(
            uuid.UUID(claims.sub),
            data.password,
            db=state.db,
            settings=state.settings,
            hasher=state.password_hasher,
            ender=state.session_ender,
            locale=_locale(request),
            ip=client_context(request).ip,
        )
        return Accepted(detail="The account is deleted; its data is being deleted everywhere.")
