"""Mail delivery (docs/mail.md): the outbox in a real, migrated auth database, sent by
``deliver_due`` to real SMTP servers over TCP (``SmtpSink``, with TLS and credentials where
a test says so).

Each test empties the outbox of this module's own database first; the auth services of the
session's stacks have databases of their own, so no other sender takes these mails. The
last test goes through a running auth service whose SMTP sink is stopped, then started.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from bulwark.auth.app import MIGRATIONS
from bulwark.auth.mail import outbox
from bulwark.auth.mail.catalog import MailKind
from bulwark.auth.mail.delivery import (
    BATCH,
    SMTP_TIMEOUT_SECONDS,
    SmtpSettings,
    deliver_due,
)
from bulwark.auth.mail.messages import RenderedMail, render
from bulwark.auth.settings import from_env
from bulwark.common.db import Database, open_database
from bulwark.common.migrations import apply_migrations
from bulwark.devstack.databases import create_databases, drop_databases, unique_names
from bulwark.devstack.mail import SmtpSink, TlsFiles, TlsMode, make_tls_files
from bulwark.devstack.mailbox import AUTH_LOGIN, TLS, envelope_from, envelope_to
from bulwark.devstack.net import free_port

from .conftest import RunningStack, StackFactory
from .helpers import random_email, register

pytestmark = pytest.mark.security(stride="ID", asvs=("V12.3",))

Logs = list[MutableMapping[str, Any]]  # structlog.testing.capture_logs
SENDER = "Bulwark <no-reply@bulwark.example>"
USER, PASSWORD = "mailer", "smtp-Pa55word-never-logged"
LINK = "https://app.example/account/verify-email?token=link-token-abc"


@pytest.fixture(scope="module")
def auth_database(database_server_url: str) -> Iterator[str]:
    """A migrated auth database of this module's own."""
    name = unique_names()["auth"]
    url = asyncio.run(create_databases(database_server_url, [name]))[name]

    async def migrate() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await apply_migrations(conn, MIGRATIONS)
        finally:
            await conn.close()

    try:
        asyncio.run(migrate())
        yield url
    finally:
        asyncio.run(drop_databases(database_server_url, [name]))


@pytest.fixture
def database_url(auth_database: str) -> str:
    """The module's database with an empty outbox."""

    async def empty() -> None:
        conn = await asyncpg.connect(auth_database, timeout=10)
        try:
            await conn.execute("TRUNCATE mail_outbox")
        finally:
            await conn.close()

    asyncio.run(empty())
    return auth_database


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("smtp-tls"))


@asynccontextmanager
async def pool(url: str) -> AsyncIterator[Database]:
    db = await open_database(url, name="mail-test", max_size=2)
    try:
        yield db
    finally:
        await db.close()


def mail(to: str) -> RenderedMail:
    return render(
        MailKind.VERIFY_EMAIL,
        recipient=to,
        locale="en",
        values={"app": "Bulwark", "code": "482913", "hours": 24},
        link=LINK,
    )


async def queue(db: Database, *recipients: str) -> None:
    for to in recipients:
        await outbox.enqueue(db, mail(to), user_id=None)


async def rows(db: Database) -> list[asyncpg.Record]:
    """Every queued mail: recipient, attempts, and seconds until it is due (``wait``)."""
    return await db.fetch(
        "SELECT id, recipient, attempts,"
        " extract(epoch FROM next_attempt_at - now())::float8 AS wait"
        " FROM mail_outbox ORDER BY id"
    )


def smtp(url: str, ca: Path | None = None, *, credentials: bool = True) -> SmtpSettings:
    """The settings ``from_env`` builds for ``url`` with the credentials and ``ca`` in the
    environment, as a deployment gives them."""
    env = {"DATABASE_URL": "postgresql://unused/x", "SMTP_URL": url, "MAIL_FROM": SENDER}
    if credentials:
        env |= {"SMTP_USERNAME": USER, "SMTP_PASSWORD": PASSWORD}
    if ca is not None:
        env["SMTP_CA_FILE"] = str(ca)
    settings = from_env(env).smtp
    assert settings is not None
    return settings


def no_secret_or_address(logs: Logs, *addresses: str) -> None:
    text = str(logs)
    for address in addresses:
        assert address not in text
    assert PASSWORD not in text
    assert "link-token-abc" not in text
    assert "482913" not in text


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_mail_goes_over_tls_with_credentials_and_leaves_the_outbox(
    mode: TlsMode, database_url: str, tls_files: TlsFiles, tmp_path: Path
) -> None:
    to = random_email()
    sink = SmtpSink(
        tmp_path / "mail",
        tls=mode,
        cert=tls_files.cert,
        key=tls_files.key,
        auth=(USER, PASSWORD),
    )
    settings = smtp(sink.url, tls_files.ca)
    assert settings.security == ("tls" if mode == "implicit" else "starttls")

    async def scenario() -> Logs:
        async with pool(database_url) as db:
            await queue(db, to)
            with structlog.testing.capture_logs() as logs:
                assert await deliver_due(db, settings) == 1
            assert await rows(db) == []  # sent: gone from the outbox
            assert await deliver_due(db, settings) == 0  # and never sent again
        return logs

    with sink:
        logs = asyncio.run(scenario())
        arrived = sink.wait_for(to, subject_contains="Confirm your email", timeout=5)
        assert len(sink.messages()) == 1
    assert arrived[TLS] in {"TLSv1.2", "TLSv1.3"}
    assert arrived[AUTH_LOGIN] == USER
    assert envelope_to(arrived) == [to]
    assert arrived["From"] == SENDER
    assert envelope_from(arrived) == "no-reply@bulwark.example"  # MAIL FROM, from MAIL_FROM
    assert arrived.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in arrived.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert arrived["Message-ID"].endswith("@bulwark.example>")
    assert arrived["Date"]
    assert arrived["Auto-Submitted"] == "auto-generated"
    text = arrived.get_body(preferencelist=("plain",))
    assert text is not None
    assert LINK in text.get_content()
    assert "482913" in text.get_content()
    assert [(line["event"], line["log_level"]) for line in logs] == [("mail_sent", "info")]
    no_secret_or_address(logs, to)


@pytest.mark.parametrize("trust", ["system CAs", "another CA"])
@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_a_server_whose_certificate_is_not_trusted_gets_nothing(
    mode: TlsMode, trust: str, database_url: str, tls_files: TlsFiles, tmp_path: Path
) -> None:
    """Neither the system's CAs nor an ``SMTP_CA_FILE`` of another CA trust the server."""
    to = random_email()
    other_ca = make_tls_files(tmp_path / "other").ca if trust == "another CA" else None
    sink = SmtpSink(
        tmp_path / "mail",
        tls=mode,
        cert=tls_files.cert,
        key=tls_files.key,
        auth=(USER, PASSWORD),
    )
    settings = smtp(sink.url, other_ca)  # neither the system's CAs nor the other signed it

    async def scenario() -> tuple[list[asyncpg.Record], Logs]:
        async with pool(database_url) as db:
            await queue(db, to)
            with structlog.testing.capture_logs() as logs:
                assert await deliver_due(db, settings) == 1
            left = await rows(db)
            assert await deliver_due(db, settings) == 0  # not due again before the backoff
            return left, logs

    with sink:
        (row,), logs = asyncio.run(scenario())
        assert sink.messages() == []
    assert row["attempts"] == 1
    assert outbox.retry_delay(1) - 2 < row["wait"] <= outbox.retry_delay(1)
    assert [(line["event"], line["log_level"]) for line in logs] == [
        ("mail_delivery_failed", "warning")
    ]
    assert str(logs[0]["reason"]).endswith("SSLCertVerificationError")
    assert logs[0]["attempts"] == 1
    no_secret_or_address(logs, to)


def test_starttls_is_required_a_server_without_it_is_never_sent_to_in_clear(
    database_url: str, tmp_path: Path
) -> None:
    to = random_email()
    sink = SmtpSink(tmp_path / "mail")  # plain SMTP: offers no STARTTLS
    settings = smtp(sink.url.replace("smtp://", "smtp+starttls://"))

    async def scenario() -> tuple[list[asyncpg.Record], Logs]:
        async with pool(database_url) as db:
            await queue(db, to)
            with structlog.testing.capture_logs() as logs:
                assert await deliver_due(db, settings) == 1
            return await rows(db), logs

    with sink:
        (row,), logs = asyncio.run(scenario())
        assert sink.messages() == []
    assert row["attempts"] == 1
    assert row["wait"] > 0
    assert [(line["event"], line["reason"]) for line in logs] == [
        ("mail_delivery_failed", "SMTPException")
    ]
    no_secret_or_address(logs, to)


def test_a_server_that_is_down_gets_the_mail_once_it_is_up_even_after_a_restart(
    database_url: str, tmp_path: Path
) -> None:
    """The sender's process is gone between the failure and the retry: the mail waited in
    Postgres, and a new process sends it once it is due."""
    to = random_email()
    port = free_port()
    sink = SmtpSink(tmp_path / "mail", port=port)  # not started yet: nothing listens
    settings = smtp(sink.url, credentials=False)

    async def first() -> tuple[list[asyncpg.Record], Logs]:
        async with pool(database_url) as db:
            await queue(db, to)
            with structlog.testing.capture_logs() as logs:
                assert await deliver_due(db, settings) == 1
            return await rows(db), logs

    (row,), logs = asyncio.run(first())
    assert row["attempts"] == 1
    assert row["wait"] > 0
    assert [(line["event"], line["reason"]) for line in logs] == [
        ("mail_delivery_failed", "SMTPConnectError from ConnectionRefusedError")
    ]
    no_secret_or_address(logs, to)

    with sink:
        # Up now, but the mail is not due yet: a new process leaves it where it is...
        assert _deliver_in_a_new_process(database_url, sink.url) == "claimed 0"
        assert sink.messages() == []

        async def time_passes() -> None:
            async with pool(database_url) as db:
                await db.execute("UPDATE mail_outbox SET next_attempt_at = now()")

        asyncio.run(time_passes())
        # ...and sends it once it is.
        assert _deliver_in_a_new_process(database_url, sink.url) == "claimed 1"
        arrived = sink.wait_for(to, timeout=5)
        assert len(sink.messages()) == 1
    assert "482913" in str(arrived.get_body(preferencelist=("plain",)))

    async def left() -> list[asyncpg.Record]:
        async with pool(database_url) as db:
            return await rows(db)

    assert asyncio.run(left()) == []


_DELIVER_ONCE = """
import asyncio, os
from bulwark.auth.mail.delivery import deliver_due
from bulwark.auth.settings import from_env
from bulwark.common.db import open_database

async def main():
    settings = from_env(os.environ)
    db = await open_database(settings.database_url, max_size=1)
    try:
        print("claimed", await deliver_due(db, settings.smtp))
    finally:
        await db.close()

asyncio.run(main())
"""


def _deliver_in_a_new_process(database_url: str, smtp_url: str) -> str:
    env = {
        **os.environ,
        "BULWARK_ENV": "test",
        "DATABASE_URL": database_url,
        "SMTP_URL": smtp_url,
        "MAIL_FROM": SENDER,
    }
    done = subprocess.run(  # noqa: S603  # this interpreter, our own code
        [sys.executable, "-c", _DELIVER_ONCE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_mail_is_given_up_after_max_attempts_and_that_is_logged(
    database_url: str,
) -> None:
    last, kept = random_email(), random_email()
    settings = smtp(f"smtp://127.0.0.1:{free_port()}", credentials=False)  # nothing listens

    async def scenario() -> tuple[list[asyncpg.Record], Logs]:
        async with pool(database_url) as db:
            await queue(db, last, kept)
            # One on its last attempt, one on the attempt before it.
            await db.execute(
                "UPDATE mail_outbox"
                " SET attempts = CASE recipient WHEN $1 THEN $2::int ELSE $3::int END",
                last,
                outbox.MAX_ATTEMPTS - 1,
                outbox.MAX_ATTEMPTS - 2,
            )
            with structlog.testing.capture_logs() as logs:
                assert await deliver_due(db, settings) == 2
            return await rows(db), logs

    (row,), logs = asyncio.run(scenario())
    assert row["recipient"] == kept
    assert row["attempts"] == outbox.MAX_ATTEMPTS - 1
    assert row["wait"] > outbox.MAX_RETRY_SECONDS - 5  # the longest backoff by now
    events = sorted((line["event"], line["log_level"], line["attempts"]) for line in logs)
    assert events == [
        ("mail_abandoned", "error", outbox.MAX_ATTEMPTS),
        ("mail_delivery_failed", "warning", outbox.MAX_ATTEMPTS - 1),
    ]
    no_secret_or_address(logs, last, kept)


def test_a_mail_that_cannot_be_sent_stops_neither_the_others_nor_the_loop(
    database_url: str, tmp_path: Path
) -> None:
    """A row no message can be made of (a line break in its address: written by hand, or by
    a bug) fails alone, and is retried and given up like any failure; the mail queued after
    it still goes out, and its forged header never reaches the server."""
    good = random_email()
    sink = SmtpSink(tmp_path / "mail")
    settings = smtp(sink.url, credentials=False)

    async def scenario() -> tuple[list[asyncpg.Record], Logs]:
        async with pool(database_url) as db:
            await queue(db, "victim@example.com\r\nBcc: forged@example.com", good)
            with structlog.testing.capture_logs() as logs:
                assert await deliver_due(db, settings) == 2
            return await rows(db), logs

    with sink:
        (row,), logs = asyncio.run(scenario())
        arrived = sink.wait_for(good, timeout=5)
        messages = sink.messages()
    assert len(messages) == 1
    assert envelope_to(arrived) == [good]
    assert "forged" not in arrived.as_string()
    assert row["attempts"] == 1
    assert row["wait"] > 0
    assert sorted((line["event"], line.get("reason")) for line in logs) == [
        ("mail_delivery_failed", "ValueError"),
        ("mail_sent", None),
    ]
    no_secret_or_address(logs, good, "victim@example.com", "forged@example.com")


def test_a_mail_goes_to_its_stored_address_only(database_url: str, tmp_path: Path) -> None:
    """The envelope's one recipient is the outbox row's address: an address that a To header
    would parse into two (accounts' addresses never are: quoted local parts are refused)
    does not reach the second."""
    sink = SmtpSink(tmp_path / "mail")
    settings = smtp(sink.url, credentials=False)

    async def scenario() -> None:
        async with pool(database_url) as db:
            await queue(db, "victim@example.com, copy@example.com")
            assert await deliver_due(db, settings) == 1

    with sink:
        asyncio.run(scenario())
        received = [envelope_to(message) for message in sink.messages()]
    assert ["copy@example.com"] not in received
    assert all("copy@example.com" not in to for to in received)


def test_two_senders_at_once_never_send_a_mail_twice(database_url: str, tmp_path: Path) -> None:
    recipients = [random_email() for _ in range(12)]
    sink = SmtpSink(tmp_path / "mail")
    settings = smtp(sink.url, credentials=False)

    async def scenario() -> tuple[int, int]:
        async with pool(database_url) as one, pool(database_url) as two:
            await queue(one, *recipients)
            claimed = await asyncio.gather(
                deliver_due(one, settings, limit=8), deliver_due(two, settings, limit=8)
            )
            assert await rows(one) == []
            return claimed

    with sink:
        claimed = asyncio.run(scenario())
        messages = sink.messages()
    assert sum(claimed) == len(recipients)
    assert sorted(to for message in messages for to in envelope_to(message)) == sorted(recipients)


def test_mails_one_sender_holds_are_skipped_by_another_without_waiting(
    database_url: str, tmp_path: Path
) -> None:
    """``FOR UPDATE SKIP LOCKED``: while a sender's claim has not committed, another sender
    neither takes those mails nor waits for them; it takes the others."""
    held, free = random_email(), random_email()
    sink = SmtpSink(tmp_path / "mail")
    settings = smtp(sink.url, credentials=False)

    async def scenario() -> None:
        async with pool(database_url) as db:
            await queue(db, held)
            conn = await asyncpg.connect(database_url, timeout=10)
            try:
                async with conn.transaction():
                    (mine,) = await outbox.claim_due(conn, BATCH, lease_seconds=60)
                    await queue(db, free)
                    async with asyncio.timeout(5):  # waiting for the lock would time out
                        assert await deliver_due(db, settings) == 1
            finally:
                await conn.close()
            assert [row["recipient"] for row in await rows(db)] == [held]
            assert mine.mail.recipient == held

    with sink:
        asyncio.run(scenario())
        messages = sink.messages()
    assert [envelope_to(message) for message in messages] == [[free]]


async def _silent_server(
    connections: list[asyncio.StreamWriter], connected: asyncio.Event
) -> asyncio.Server:
    """Accepts TCP connections and never says a word: every send waits for its timeout."""

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        connected.set()

    return await asyncio.start_server(hold, "127.0.0.1", free_port())


def test_a_round_holds_its_mails_for_as_long_as_it_may_take(
    database_url: str, tmp_path: Path
) -> None:
    """A round of ``BATCH`` mails may take ``BATCH`` x the SMTP timeout when the server hangs:
    its lease lasts that long, so no other sender takes its last mails while it still holds
    them (and both would send them)."""
    sink = SmtpSink(tmp_path / "mail")

    async def scenario() -> None:
        connections: list[asyncio.StreamWriter] = []
        connected = asyncio.Event()
        server = await _silent_server(connections, connected)
        port = server.sockets[0].getsockname()[1]
        hanging = smtp(f"smtp://127.0.0.1:{port}", credentials=False)
        try:
            async with pool(database_url) as db, pool(database_url) as other:
                await queue(db, random_email(), random_email())
                sender = asyncio.create_task(deliver_due(db, hanging))
                try:
                    async with asyncio.timeout(5):  # the round has claimed and is sending
                        await connected.wait()
                    waits = [row["wait"] for row in await rows(other)]
                    assert min(waits) > BATCH * SMTP_TIMEOUT_SECONDS
                    assert await deliver_due(other, smtp(sink.url, credentials=False)) == 0
                finally:
                    sender.cancel()
                    await asyncio.gather(sender, return_exceptions=True)
        finally:
            for writer in connections:
                writer.close()
            server.close()
            await server.wait_closed()

    with sink:
        asyncio.run(scenario())
        assert sink.messages() == []


# Through the running auth service


@pytest.fixture(scope="module")
def mailer(stack_factory: StackFactory) -> RunningStack:
    """An auth service (and its limiter) of this module's own: its sink is stopped here."""
    return stack_factory(services=("ratelimit", "auth"))


@pytest.mark.resilience  # a stack of its own whose SMTP server goes away
def test_the_auth_service_keeps_a_mail_while_smtp_is_down_and_sends_it_when_back(
    mailer: RunningStack,
) -> None:
    mailer.mail.stop()
    try:
        user = register(mailer.auth_url)  # answered at once: mail is never sent inline

        async def queued() -> int:
            conn = await asyncpg.connect(mailer.databases["auth"], timeout=10)
            try:
                count: int = await conn.fetchval(
                    "SELECT count(*) FROM mail_outbox WHERE recipient = $1", user.email
                )
                return count
            finally:
                await conn.close()

        deadline = time.monotonic() + 15
        while '"mail_delivery_failed"' not in mailer.log("auth"):
            assert time.monotonic() < deadline, "no delivery attempt while the sink was down"
            time.sleep(0.2)
        assert asyncio.run(queued()) == 1
    finally:
        mailer.mail.start()  # the same port: the auth service's SMTP_URL is unchanged
    arrived = mailer.mail.wait_for(user.email, subject_contains="Confirm your email", timeout=30)
    assert arrived["Auto-Submitted"] == "auto-generated"
    deadline = time.monotonic() + 5
    while asyncio.run(queued()) != 0:
        assert time.monotonic() < deadline, "the sent mail is still in the outbox"
        time.sleep(0.1)
    failures = [
        line for line in mailer.log("auth").splitlines() if '"mail_delivery_failed"' in line
    ]
    assert failures
    assert not [line for line in failures if user.email in line]
