"""The mail folder of the local SMTP sink: one ``.eml`` file per message received.

Each file holds the message's bytes as received (RFC 5322, CRLF line ends) after a few header
fields the sink puts in front of it, with what the message itself does not say::

    X-Bulwark-Received-At: 2026-12-01T10:15:02.123456+00:00
    X-Bulwark-Envelope-From: no-reply@bulwark.localhost       (MAIL FROM, RFC 5321 §4.1.1.2)
    X-Bulwark-Envelope-To: alice@example.com                  (one field per RCPT TO)
    X-Bulwark-Tls: TLSv1.3                                    ("none" when sent in clear)
    X-Bulwark-Auth-Login: mailer                              (only after a successful AUTH)

Names sort in arrival order (``<nanoseconds since the epoch>-<sequence>.eml``); a file is
written beside its final name and renamed, so a reader never sees half of one. Files are
readable by their owner only: they carry one-time links. The sink keeps at most ``keep``
files, removing the oldest. ``Mailbox`` reads a folder (the sink's, or one left by an earlier
run), for ``bulwark-dev mail`` and for tests.
"""

from __future__ import annotations

import email.policy
import itertools
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

RECEIVED_AT = "X-Bulwark-Received-At"
ENVELOPE_FROM = "X-Bulwark-Envelope-From"
ENVELOPE_TO = "X-Bulwark-Envelope-To"
TLS = "X-Bulwark-Tls"
AUTH_LOGIN = "X-Bulwark-Auth-Login"

#: At most this many messages are kept; the oldest go first.
KEEP_MESSAGES = 1000
#: How often ``Mailbox.wait_for`` looks at the folder again, in seconds.
POLL_SECONDS = 0.05

_sequence = itertools.count()
_parser = BytesParser(policy=email.policy.default)


class MailNotReceivedError(AssertionError, TimeoutError):
    """No message matching a ``Mailbox.wait_for`` arrived in time; the text lists those that
    did. An ``AssertionError`` (pytest shows it as a failed check) and a ``TimeoutError``."""


def _field(name: str, value: str) -> bytes:
    """One header line, CRLF-terminated; a non-ASCII value (an SMTPUTF8 address) as an RFC
    2047 encoded word, and no CR or LF from the value."""
    value = value.replace("\r", " ").replace("\n", " ")
    if not value.isascii():
        value = Header(value, "utf-8").encode()
    return f"{name}: {value}\r\n".encode("ascii")


def store(
    folder: Path,
    content: bytes,
    *,
    mail_from: str,
    rcpt_tos: Sequence[str],
    tls: str | None = None,
    auth_login: str | None = None,
    keep: int = KEEP_MESSAGES,
) -> Path:
    """Write one received message (``content``: the DATA bytes) into ``folder`` with its
    envelope in front (module docstring), then remove the oldest files beyond ``keep``.

    Returns the new file's path. Raises ``OSError`` when the folder cannot be written.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fields = [
        _field(RECEIVED_AT, datetime.now(UTC).isoformat()),
        _field(ENVELOPE_FROM, mail_from),
        *(_field(ENVELOPE_TO, rcpt) for rcpt in rcpt_tos),
        _field(TLS, tls or "none"),
    ]
    if auth_login is not None:
        fields.append(_field(AUTH_LOGIN, auth_login))
    name = f"{time.time_ns():020d}-{next(_sequence) % 10**6:06d}.eml"
    partial = folder / f".{name}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(b"".join(fields))
        out.write(content)
    path = folder / name
    partial.replace(path)
    for old in Mailbox(folder).paths()[:-keep]:
        old.unlink(missing_ok=True)
    return path


def envelope_to(message: EmailMessage) -> list[str]:
    """The RCPT TO addresses the sink received ``message`` for."""
    return [str(value) for value in message.get_all(ENVELOPE_TO, [])]


def envelope_from(message: EmailMessage) -> str:
    """The MAIL FROM address (``""`` for a null reverse-path)."""
    return str(message.get(ENVELOPE_FROM, ""))


def received_at(message: EmailMessage) -> datetime | None:
    """When the sink received ``message`` (aware, UTC), or None when the field is missing."""
    try:
        return datetime.fromisoformat(str(message[RECEIVED_AT]))
    except (TypeError, ValueError):
        return None


def describe(message: EmailMessage) -> str:
    """One line for a listing: ``to alice@example.com: "Verify your email"``."""
    return f'to {", ".join(envelope_to(message)) or "?"}: "{message.get("Subject", "")}"'


class Mailbox:
    """The messages in ``folder``, oldest first; a folder that does not exist is empty.

    Parsed messages are cached by file name (a stored file never changes), so polling a
    folder of a thousand messages parses each once.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._parsed: dict[str, EmailMessage] = {}

    def paths(self) -> list[Path]:
        """The message files, oldest first."""
        try:
            return sorted(self.folder.glob("*.eml"))
        except OSError:
            return []

    def entries(self) -> list[tuple[Path, EmailMessage]]:
        """Every message with its file, oldest first; a file removed while we read it (the
        sink keeps at most ``keep``) is left out."""
        found: list[tuple[Path, EmailMessage]] = []
        for path in self.paths():
            message = self._parsed.get(path.name)
            if message is None:
                try:
                    message = self.read(path)
                except OSError:
                    continue
            found.append((path, message))
        self._parsed = {path.name: message for path, message in found}
        return found

    def messages(self) -> list[EmailMessage]:
        """Every message (``email.message.EmailMessage``, with the sink's fields), oldest
        first."""
        return [message for _, message in self.entries()]

    @staticmethod
    def read(path: Path) -> EmailMessage:
        """Parse one stored message (``OSError`` when it cannot be read)."""
        message = _parser.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)  # noqa: S101 - policy.default makes one
        return message

    def wait_for(
        self, to: str, *, subject_contains: str | None = None, timeout: float = 10.0
    ) -> EmailMessage:
        """The newest message whose envelope names recipient ``to`` (case-insensitive) and
        whose Subject contains ``subject_contains`` (when given), waiting up to ``timeout``
        seconds for it to arrive.

        Raises ``MailNotReceivedError`` (an ``AssertionError`` and a ``TimeoutError``) listing the
        messages that did arrive.
        """
        wanted = to.casefold()
        part = subject_contains or ""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages()
            found = [
                message
                for message in messages
                if wanted in (rcpt.casefold() for rcpt in envelope_to(message))
                and part in str(message.get("Subject", ""))
            ]
            if found:
                return found[-1]
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        subject = f" with a subject containing {subject_contains!r}" if subject_contains else ""
        arrived = "\n".join(f"  {describe(m)}" for m in messages[-20:]) or "  (none)"
        raise MailNotReceivedError(
            f"no mail to {to}{subject} within {timeout:g} s in {self.folder}; "
            f"{len(messages)} arrived, the last ones:\n{arrived}"
        )
