"""What ``bulwark-dev mail`` prints: a listing of the sink's folder, or one message.

Text for people (times in local time, control characters shown as ``?`` so a message cannot
drive the terminal), JSON for scripts (times in UTC, ISO 8601).
"""

from __future__ import annotations

import json
from datetime import datetime
from email.message import EmailMessage, MIMEPart
from pathlib import Path
from typing import Any

from bulwark.devstack.mailbox import TLS, envelope_from, envelope_to, received_at

_KEPT = {"\n", "\t"}


def _printable(text: str) -> str:
    """``text`` with control characters other than newline and tab replaced by ``?``."""
    return "".join(
        "?" if (ord(c) < 32 or 127 <= ord(c) < 160) and c not in _KEPT else c for c in text
    )


def _when(message: EmailMessage) -> datetime | None:
    at = received_at(message)
    return None if at is None else at.astimezone()


def _text(part: MIMEPart | None) -> str | None:
    """The decoded text of ``part``, lines ending in ``\\n``; undecodable bytes (an unknown
    charset) replaced."""
    if part is None:
        return None
    try:
        text = str(part.get_content())
    except (LookupError, ValueError, KeyError):
        payload = part.get_payload(decode=True)
        text = payload.decode(errors="replace") if isinstance(payload, bytes) else ""
    return text.replace("\r\n", "\n")


def summary(index: int, path: Path, message: EmailMessage) -> dict[str, Any]:
    """One message as JSON: index (1 = oldest), file, envelope, From/To/Subject."""
    at = received_at(message)
    return {
        "index": index,
        "file": str(path),
        "received_at": None if at is None else at.isoformat(),
        "mail_from": envelope_from(message),
        "rcpt_tos": envelope_to(message),
        "tls": str(message.get(TLS, "")),
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "subject": str(message.get("Subject", "")),
    }


def listing(folder: Path, entries: list[tuple[Path, EmailMessage]], *, as_json: bool) -> str:
    """Every message, oldest first and numbered from 1 (``bulwark-dev mail``)."""
    if as_json:
        return json.dumps([summary(i, p, m) for i, (p, m) in enumerate(entries, 1)], indent=2)
    if not entries:
        return (
            f"no mail in {folder} yet. The SMTP sink of `bulwark-dev run` (`make run`) stores "
            "there what the services send (unless SMTP_URL was set: then mail went there)."
        )
    rows = []
    for index, (_, message) in enumerate(entries, 1):
        when = _when(message)
        to = ", ".join(envelope_to(message))
        rows.append(
            (
                str(index),
                when.strftime("%Y-%m-%d %H:%M:%S") if when else "?",
                to if len(to) <= 36 else to[:35] + "…",
                str(message.get("Subject", "")),
            )
        )
    width = max(len(row[0]) for row in rows)
    lines = [f"{'#':>{width}}  {'received':<19}  {'to':<36}  subject"]
    lines += [f"{n:>{width}}  {when:<19}  {to:<36}  {subject}" for n, when, to, subject in rows]
    lines.append(
        f"{len(rows)} message(s) in {folder}; `bulwark-dev mail show N` prints one "
        "(`--last`: the newest)."
    )
    return _printable("\n".join(lines))


def shown(index: int, path: Path, message: EmailMessage, *, html: bool, as_json: bool) -> str:
    """One message: its header fields, its text/plain part, a note (or, with ``html``, the
    text) of its HTML part, and its attachments (``bulwark-dev mail show N``)."""
    text = _text(message.get_body(preferencelist=("plain",)))
    html_text = _text(message.get_body(preferencelist=("html",)))
    attachments = [
        (part.get_filename() or "(no name)", part.get_content_type(), len(part.as_bytes()))
        for part in message.iter_attachments()
    ]
    if as_json:
        return json.dumps(
            {
                **summary(index, path, message),
                "headers": [[name, str(value)] for name, value in message.items()],
                "text": text,
                "html": html_text,
                "attachments": [
                    {"filename": n, "content_type": t, "bytes": b} for n, t, b in attachments
                ],
            },
            indent=2,
        )
    lines = [f"message {index} ({path})"]
    lines += [f"{name}: {value}" for name, value in message.items()]
    lines += ["", text.rstrip("\n") if text is not None else "(no text/plain part)"]
    if html_text is not None:
        if html:
            lines += ["", "--- text/html part ---", html_text.rstrip("\n")]
        else:
            lines += [
                "",
                f"(it also has an HTML part, {len(html_text)} characters: --html prints it)",
            ]
    lines += [f"attachment: {name} ({kind}, {size} bytes)" for name, kind, size in attachments]
    return _printable("\n".join(lines))
