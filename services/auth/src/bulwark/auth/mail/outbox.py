"""The mail outbox: a Postgres table a mail is written to in the transaction of the change
it tells about, and deleted from once an SMTP server has accepted it.

A request never talks to SMTP: a slow or broken mail server never slows or fails it, and a
mail is never sent for a change that rolled back. `claim_due` leases due mails to one sender
(``FOR UPDATE SKIP LOCKED``, so replicas never send one mail twice at once) for as long as
that sender's round may take; a sender that dies holding a lease leaves the mail to be taken
again when the lease ends (at-least-once).
"""

import uuid
from dataclasses import dataclass

import asyncpg

from bulwark.auth.mail.messages import RenderedMail
from bulwark.common.db import Queryable

#: Attempts before a mail is given up (backoff doubles from 5 s to 1 h: about 20 hours).
MAX_ATTEMPTS = 30
#: The first retry comes soon: a verification or reset code is awaited by a user looking at
#: the app, and a blip of the submission server should cost them seconds, not a minute.
FIRST_RETRY_SECONDS = 5
MAX_RETRY_SECONDS = 3600


@dataclass(frozen=True)
class QueuedMail:
    """A claimed mail: its outbox ``id``, ``attempts`` so far (this one included)."""

    id: int
    attempts: int
    user_id: uuid.UUID | None
    mail: RenderedMail


async def enqueue(conn: Queryable, mail: RenderedMail, *, user_id: uuid.UUID | None) -> None:
    """Queue ``mail`` (about ``user_id``'s account) in the caller's transaction."""
    await conn.execute(
        "INSERT INTO mail_outbox (user_id, recipient, subject, text_body, html_body)"
        " VALUES ($1, $2, $3, $4, $5)",
        user_id,
        mail.recipient,
        mail.subject,
        mail.text_body,
        mail.html_body,
    )


async def claim_due(conn: Queryable, limit: int, *, lease_seconds: float) -> list[QueuedMail]:
    """Lease up to ``limit`` due mails for ``lease_seconds`` (at least as long as the caller
    may take to send them all: no other sender takes one meanwhile), counting an attempt
    each; oldest due first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "UPDATE mail_outbox SET attempts = attempts + 1,"
        " next_attempt_at = now() + make_interval(secs => $2)"
        " WHERE id IN (SELECT id FROM mail_outbox WHERE next_attempt_at <= now()"
        "  ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " RETURNING id, attempts, user_id, recipient, subject, text_body, html_body",
        limit,
        float(lease_seconds),
    )
    return [
        QueuedMail(
            id=row["id"],
            attempts=row["attempts"],
            user_id=row["user_id"],
            mail=RenderedMail(
                recipient=row["recipient"],
                subject=row["subject"],
                text_body=row["text_body"],
                html_body=row["html_body"],
            ),
        )
        for row in rows
    ]


async def remove(conn: Queryable, mail_id: int) -> None:
    """Forget a mail: sent, or given up."""
    await conn.execute("DELETE FROM mail_outbox WHERE id = $1", mail_id)


def retry_delay(attempts: int) -> int:
    """Seconds until the next try after ``attempts`` failed ones: `FIRST_RETRY_SECONDS`
    doubling, at most `MAX_RETRY_SECONDS`."""
    delay: int = FIRST_RETRY_SECONDS * 2 ** max(0, attempts - 1)
    return min(MAX_RETRY_SECONDS, delay)


async def postpone(conn: Queryable, mail_id: int, attempts: int) -> None:
    """Try ``mail_id`` again after `retry_delay` seconds."""
    await conn.execute(
        "UPDATE mail_outbox SET next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1",
        mail_id,
        float(retry_delay(attempts)),
    )


async def forget_user(conn: Queryable, user_id: uuid.UUID) -> None:
    """Drop every mail still queued about ``user_id`` (their account is being deleted: a
    queued link must never arrive after it)."""
    await conn.execute("DELETE FROM mail_outbox WHERE user_id = $1", user_id)
