"""The mails of the account flows, queued in the flow's transaction (`mail.outbox`).

Links point at ``ACCOUNT_LINKS_URL`` (``{ISSUER}/account`` by default: the pages that ask
before they use a token, since mail scanners open links): ``…/verify-email``,
``…/reset-password``, ``…/confirm-email-change``, ``…/undo-email-change``, each with
``?token=``. A mail holds no other secret.
"""

import uuid
from urllib.parse import urlencode

from bulwark.auth.account.tokens import IssuedToken
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
