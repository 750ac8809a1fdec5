"""Delivering the outbox over SMTP (RFC 5321) with aiosmtplib.

``SMTP_URL`` names the server and how to reach it:

- ``smtps://host[:465]``: implicit TLS (RFC 8314, the recommended form);
- ``smtp+starttls://host[:587]``: STARTTLS (RFC 3207), required: a server that does not
  offer it is never sent to in clear;
- ``smtp://host[:25]``: no TLS, refused outside development and test (the local sink).

Credentials come from ``SMTP_USERNAME`` and ``SMTP_PASSWORD``, never from the URL, and are
only sent over TLS. Certificates and host names are verified, against the system's CAs, or
against the CAs of ``SMTP_CA_FILE`` (PEM) alone when it is set (a private CA: the system's
are then not trusted for this connection).
"""

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import aiosmtplib
import asyncpg

from bulwark.auth.mail import outbox
from bulwark.auth.mail.messages import email_message
from bulwark.common.db import Database, DatabaseUnavailable
from bulwark.common.logging import get_logger
from bulwark.common.outages import OutageLog
from bulwark.common.settings import SettingsError

_log = get_logger(__name__)
Security = Literal["tls", "starttls", "none"]
_SCHEMES: dict[str, tuple[Security, int]] = {
    "smtps": ("tls", 465),
    "smtp+starttls": ("starttls", 587),
    "smtp": ("none", 25),
}
#: Longest one delivery may take (connect, TLS, every command), in seconds.
SMTP_TIMEOUT_SECONDS = 10.0
#: Mails claimed per round; a round sends them one after another.
BATCH = 20
#: Added to a round's longest sending time (``limit`` x `SMTP_TIMEOUT_SECONDS`) to make its
#: lease, for the outbox's own statements between the mails, in seconds.
LEASE_MARGIN_SECONDS = 60.0
#: Pause between rounds that found nothing due, in seconds.
IDLE_SECONDS = 1.0


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how mail is sent: ``host``, ``port``, ``security`` (`Security`), the
    optional ``username``/``password`` (``repr`` hides the password), ``sender`` (the
    ``From`` address, ``MAIL_FROM``) and ``ca_file`` (the only CAs trusted when set, PEM;
    else the system's)."""

    host: str
    port: int
    security: Security
    sender: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @property
    def message_id_domain(self) -> str:
        """The domain of the sender's address, for ``Message-ID``s."""
        return self.sender.rpartition("@")[2].rstrip(">").strip() or "localhost"


def parse_smtp_url(
    url: str,
    *,
    sender: str,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    allow_plain: bool,
) -> SmtpSettings:
    """`SmtpSettings` from ``SMTP_URL``; ``allow_plain`` only in development and test.

    Raises:
        SettingsError: an unknown scheme, no host, credentials or a path in the URL, plain
            SMTP where not allowed, a user name without a password or the reverse (aiosmtplib
            would log in with an empty password, or silently not at all), credentials over
            plain SMTP, or a port that is not a number from 1 to 65535.
    """
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise SettingsError("SMTP_URL must start with smtps://, smtp+starttls:// or smtp://")
    if parts.username or parts.password:
        raise SettingsError("SMTP_URL must not hold credentials: use SMTP_USERNAME, SMTP_PASSWORD")
    if not parts.hostname or parts.path not in {"", "/"} or parts.query:
        raise SettingsError("SMTP_URL must be scheme://host[:port]")
    security, default_port = _SCHEMES[parts.scheme]
    if security == "none" and not allow_plain:
        raise SettingsError("SMTP_URL must use TLS (smtps:// or smtp+starttls://) here")
    if bool(username) != bool(password):
        raise SettingsError("SMTP_USERNAME and SMTP_PASSWORD go together")
    if security == "none" and username:
        raise SettingsError("SMTP credentials are never sent without TLS")
    try:
        port = default_port if parts.port is None else parts.port
    except ValueError:
        port = 0
    if not 0 < port < 65536:  # TCP's port range
        raise SettingsError("SMTP_URL has an invalid port")
    return SmtpSettings(
        host=parts.hostname,
        port=port,
        security=security,
        sender=sender,
        username=username or None,
        password=password or None,
        ca_file=ca_file or None,
    )


async def send(settings: SmtpSettings, queued: outbox.QueuedMail) -> None:
    """Hand one mail to the SMTP server, within `SMTP_TIMEOUT_SECONDS`, for its one
    recipient (``RCPT TO`` is the stored address: a header that parsed into several
    addresses would not add any).

    Raises:
        aiosmtplib.SMTPException: the server refused it or could not be reached.
        TimeoutError: it took too long.
        ValueError: no message can be made of it (a line break in a header).
    """
    tls_context = None
    if settings.security != "none":
        tls_context = ssl.create_default_context(cafile=settings.ca_file)
    message = email_message(
        queued.mail, sender=settings.sender, message_id_domain=settings.message_id_domain
    )
    async with asyncio.timeout(SMTP_TIMEOUT_SECONDS):
        await aiosmtplib.send(
            message,
            # The envelope names the stored address, never what the To header parses into.
            recipients=[queued.mail.recipient],
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password,
            use_tls=settings.security == "tls",
            start_tls=settings.security == "starttls",
            tls_context=tls_context,
            timeout=SMTP_TIMEOUT_SECONDS,
        )


async def deliver_due(db: Database, settings: SmtpSettings, *, limit: int = BATCH) -> int:
    """Claim up to ``limit`` due mails and send each; a sent mail leaves the outbox, a
    failed one is tried again later (`outbox.retry_delay`) or, after `outbox.MAX_ATTEMPTS`,
    given up (``mail_abandoned``). Whatever one mail's sending raises (a server's refusal, an
    outage, a row no message can be made of) is that mail's failure: the others are still
    sent, and the loop of `deliver_forever` goes on. Returns how many were claimed.

    The lease outlasts the round even when every mail takes its whole `SMTP_TIMEOUT_SECONDS`:
    a lease shorter than the round would let another sender take the round's last mails
    while this one still holds them, and both would send them.

    Raises:
        DatabaseUnavailable: Postgres cannot answer.
    """
    claimed = await outbox.claim_due(db, limit, lease_seconds=round_lease_seconds(limit))
    for queued in claimed:
        try:
            await send(settings, queued)
        # A refusal, an outage or a malformed row: this mail's failure, never the round's.
        except Exception as exc:  # noqa: BLE001
            reason = failure_reason(exc)
            if queued.attempts >= outbox.MAX_ATTEMPTS:
                await outbox.remove(db, queued.id)
                _log.error(
                    "mail_abandoned",
                    mail_id=queued.id,
                    attempts=queued.attempts,
                    user_id=_text(queued.user_id),
                    reason=reason,
                )
            else:
                await outbox.postpone(db, queued.id, queued.attempts)
                _log.warning(
                    "mail_delivery_failed",
                    mail_id=queued.id,
                    attempts=queued.attempts,
                    reason=reason,
                )
            continue
        await outbox.remove(db, queued.id)
        _log.info("mail_sent", mail_id=queued.id, user_id=_text(queued.user_id))
    return len(claimed)


def failure_reason(exc: BaseException) -> str:
    """``exc``'s class and those of its causes, e.g. ``SMTPConnectError from
    SSLCertVerificationError`` (aiosmtplib wraps an untrusted certificate and a refused
    connection alike), and the reply code of a server's refusal (``SMTPAuthenticationError
    535``). Never a message: a server's reply may quote the recipient's address."""
    names: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(names) < 3:
        code = getattr(seen, "code", None) if isinstance(seen, aiosmtplib.SMTPException) else None
        names.append(type(seen).__name__ + (f" {code}" if isinstance(code, int) else ""))
        seen = seen.__cause__
    return " from ".join(names)


def round_lease_seconds(limit: int) -> float:
    """How long a round of ``limit`` mails holds them: every one may take
    `SMTP_TIMEOUT_SECONDS`, plus `LEASE_MARGIN_SECONDS`."""
    return limit * SMTP_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS


def _text(value: object) -> str | None:
    return None if value is None else str(value)


async def deliver_forever(db: Database, settings: SmtpSettings | None) -> None:
    """Send the outbox until cancelled: a round right after a full one, else every
    `IDLE_SECONDS`. Without ``settings`` (no ``SMTP_URL``, allowed outside production) mail
    stays queued and a warning says so once. A database outage is logged once."""
    if settings is None:
        _log.warning("mail_not_configured", hint="set SMTP_URL; mail stays in the outbox")
        return
    failures = OutageLog("mail_outbox_unavailable", "mail_outbox_recovered")
    while True:
        claimed = 0
        try:
            claimed = await deliver_due(db, settings)
            failures.succeeded()
        except (DatabaseUnavailable, asyncpg.PostgresError) as exc:
            failures.failed(type(exc).__name__)
        if claimed < BATCH:
            await asyncio.sleep(IDLE_SECONDS)
