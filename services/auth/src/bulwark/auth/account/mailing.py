"""The mails of the account flows, queued in the flow's transaction (`mail.outbox`).

Links point at ``ACCOUNT_LINKS_URL`` (``{ISSUER}/account`` by default: the pages that ask
before they use a token, since mail scanners open links): ``…/verify-email``,
``…/reset-password``, ``…/confirm-email-change``, ``…/undo-email-change``, each with
``?token=``. A mail holds no other secret.
"""

import uuid
from collections.abc import Callable
from urllib.parse import urlencode

from bulwark.auth.account import tokens
from bulwark.auth.account.tokens import IssuedToken, Purpose
from bulwark.auth.mail import outbox
from bulwark.auth.mail.catalog import MailKind
from bulwark.auth.mail.messages import render
from bulwark.auth.settings import AuthSettings
from bulwark.common.db import Queryable

#: The page of each mail's link, under ``ACCOUNT_LINKS_URL``.
LINK_PAGES = {
    MailKind.VERIFY_EMAIL: "verify-email",
    MailKind.PASSWORD_RESET: "reset-password",
    MailKind.EMAIL_CHANGE: "confirm-email-change",
    MailKind.EMAIL_CHANGED: "undo-email-change",
}


#: The token each mail with a link carries, and its lifetime in seconds from the settings.
_LINK_TOKENS: dict[MailKind, tuple[Purpose, Callable[[AuthSettings], int]]] = {
    MailKind.VERIFY_EMAIL: (Purpose.VERIFY_EMAIL, lambda s: s.email_verification_ttl),
    MailKind.PASSWORD_RESET: (Purpose.PASSWORD_RESET, lambda s: s.password_reset_ttl),
    MailKind.EMAIL_CHANGE: (Purpose.EMAIL_CHANGE, lambda s: s.email_verification_ttl),
    MailKind.EMAIL_CHANGED: (Purpose.EMAIL_CHANGE_UNDO, lambda s: s.email_change_undo_ttl),
}


def mask_email(email: str) -> str:
    """``al…@example.com``: enough for its owner to recognise, little for anyone else."""
    local, _, domain = email.rpartition("@")
    return f"{local[:2]}…@{domain}"


async def queue(
    conn: Queryable,
    settings: AuthSettings,
    kind: MailKind,
    *,
    user_id: uuid.UUID | None,
    recipient: str,
    locale: str,
    token: IssuedToken | None = None,
    **values: str | int,
) -> None:
    """Queue the mail ``kind`` to ``recipient`` about ``user_id`` (None: a mail that must
    outlive the account's erasure), in ``locale``, with ``token``'s link and code when the
    mail has an action."""
    link = None
    if token is not None:
        query = urlencode({"token": token.link_token})
        link = f"{settings.account_links_url.rstrip('/')}/{LINK_PAGES[kind]}?{query}"
    mail = render(
        kind,
        recipient=recipient,
        locale=locale,
        values={
            "app": settings.app_name,
            "code": "" if token is None else token.code,
            "hours": settings.email_verification_ttl // 3600,
            "minutes": settings.password_reset_ttl // 60,
            "days": settings.email_change_undo_ttl // 86400,
            **values,
        },
        link=link,
    )
    await outbox.enqueue(conn, mail, user_id=user_id)


async def send_link(
    conn: Queryable,
    settings: AuthSettings,
    kind: MailKind,
    *,
    user_id: uuid.UUID,
    recipient: str,
    locale: str,
    **values: str | int,
) -> None:
    """Issue the one-time token of the mail ``kind`` for ``user_id``, proving ``recipient``
    (the user's earlier tokens of its purpose are spent), and queue the mail carrying its
    link and code, in the caller's transaction."""
    purpose, lifetime = _LINK_TOKENS[kind]
    token = await tokens.issue(
        conn,
        user_id=user_id,
        purpose=purpose,
        email=recipient,
        ttl_seconds=lifetime(settings),
        code_key=settings.email_fingerprint_key,
    )
    await queue(
        conn,
        settings,
        kind,
        user_id=user_id,
        recipient=recipient,
        locale=locale,
        token=token,
        **values,
    )
