"""The integration stacks' SMTP sink: each stack has one, its auth service is given its URL,
and tests read what arrived through ``running.mail``."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from .conftest import RunningStack


def test_each_stack_has_a_sink_that_auth_sends_to(stack: RunningStack) -> None:
    assert stack.env["auth"]["SMTP_URL"] == stack.mail.url
    assert stack.mail.url.startswith("smtp://127.0.0.1:")
    assert "SMTP_URL" not in stack.env["api"]
    message = EmailMessage()
    message["From"] = "Bulwark <no-reply@bulwark.localhost>"
    message["To"] = "sink-check@example.com"
    message["Subject"] = "Sink check"
    message.set_content("ok")
    with smtplib.SMTP(stack.mail.host, stack.mail.port, timeout=10) as client:
        client.send_message(message)
    arrived = stack.mail.wait_for("sink-check@example.com", subject_contains="Sink", timeout=5)
    assert arrived.get_content().strip() == "ok"
    assert stack.mail.folder.is_relative_to(stack.log_dir.parent)  # the stack's own folder
