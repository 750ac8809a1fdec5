"""Request and response bodies of the account flows (camelCase on the wire)."""

from typing import Annotated

import msgspec

from bulwark.common.schemas import Schema

Email = Annotated[str, msgspec.Meta(max_length=320)]
Password = Annotated[str, msgspec.Meta(max_length=1024)]
#: A link token (43 characters when real) or a 6-digit code; longer is never one.
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]


class PasswordResetRequest(Schema, frozen=True):
    """``POST /v1/auth/password-reset``."""

    email: Email


class PasswordResetConfirm(Schema, frozen=True):
    """``POST /v1/auth/password-reset/confirm``: the link's ``token``, or ``email`` and
    ``code``; and the ``newPassword``."""

    new_password: Password
    token: Token | None = None
    email: Email | None = None
    code: Code | None = None


class PasswordChange(Schema, frozen=True):
    """``POST /v1/auth/password``."""

    current_password: Password
    new_password: Password


class EmailVerificationConfirm(Schema, frozen=True):
    """``POST /v1/auth/email-verification/confirm``: the link's ``token``, or the ``code``
    (with the signed-in user's bearer token)."""

    token: Token | None = None
    code: Code | None = None


class Accepted(Schema, frozen=True):
    """The 202 of a request whose mail, if any, is on its way."""

    status: str = "accepted"
    detail: str = "If the account exists, a mail is on its way."


class EmailChangeRequest(Schema, frozen=True):
    """``POST /v1/auth/email-change``: the new address and the current password."""

    new_email: Email
    password: Password


class EmailChangeConfirm(Schema, frozen=True):
    """``POST /v1/auth/email-change/confirm``: the link's ``token``, or the ``code`` (with
    the signed-in user's bearer token)."""

    token: Token | None = None
    code: Code | None = None


class EmailChangeUndo(Schema, frozen=True):
    """``POST /v1/auth/email-change/undo``: the link's ``token`` from the old address."""

    token: Token


class AccountDeletion(Schema, frozen=True):
    """``POST /v1/auth/account-deletion``: the current password."""

    password: Password
