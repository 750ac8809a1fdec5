"""The SMTP sink: a real server on a loopback TCP port, talked to with ``smtplib``; what it
stored read back by ``Mailbox`` and by the real ``bulwark-dev mail`` command."""

from __future__ import annotations

import base64
import json
import smtplib
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from email.message import EmailMessage
from pathlib import Path

import pytest

from bulwark.devstack.cli import _mail_env, _mail_sink, build_parser
from bulwark.devstack.mail import MAX_MESSAGE_BYTES, SmtpSink, TlsFiles, make_tls_files
from bulwark.devstack.mailbox import (
    AUTH_LOGIN,
    TLS,
    Mailbox,
    MailNotReceivedError,
    envelope_from,
    envelope_to,
    received_at,
)
from bulwark.devstack.net import tcp_accepts
from bulwark.devstack.ports import choose_ports
from bulwark.devstack.stack import console_script

TIMEOUT = 5.0


def _message(to: str = "alice@example.com", subject: str = "Verify your email") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Bulwark <no-reply@bulwark.localhost>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Your code is 123456.\nhttps://app.example/verify?token=abc\n")
    return message


def _send(sink: SmtpSink, message: EmailMessage, rcpt: list[str] | None = None) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=TIMEOUT) as client:
        client.send_message(message, "no-reply@bulwark.localhost", rcpt or [message["To"]])


def _bulwark_dev_mail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script
        [console_script("bulwark-dev"), "mail", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "mail") as started:
        yield started


def test_a_message_sent_over_tcp_is_stored_with_its_envelope(sink: SmtpSink) -> None:
    assert sink.url == f"smtp://127.0.0.1:{sink.port}"
    message = _message()
    message.add_alternative("<p>Your code is <b>123456</b>.</p>", subtype="html")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    with smtplib.SMTP(sink.host, sink.port, timeout=TIMEOUT) as client:
        client.sendmail("no-reply@bulwark.localhost", ["alice@example.com", "Bob@Example.com"], raw)

    (path,) = Mailbox(sink.folder).paths()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds one-time links
    assert not list(sink.folder.glob(".*"))  # no partial file left
    (stored,) = sink.messages()
    assert envelope_from(stored) == "no-reply@bulwark.localhost"
    assert envelope_to(stored) == ["alice@example.com", "Bob@Example.com"]
    at = received_at(stored)
    assert at is not None
    assert abs(time.time() - at.timestamp()) < 60
    assert stored[TLS] == "none"
    assert AUTH_LOGIN not in stored
    assert stored["Subject"] == "Verify your email"
    body = stored.get_body(preferencelist=("plain",))
    assert body is not None
    assert "123456" in body.get_content()
    # The message's own bytes follow the sink's fields unchanged.
    assert path.read_bytes().endswith(raw)


def test_bulwark_dev_mail_lists_and_shows_what_arrived(sink: SmtpSink) -> None:
    empty = _bulwark_dev_mail("--dir", str(sink.folder))
    assert empty.returncode == 0, empty.stderr
    assert "no mail in" in empty.stdout
    first = _message("carol@example.com", "Reset your password")
    _send(sink, first)
    second = _message("dave@example.com", "Your password was changed")
    second.add_alternative("<p>It was <b>changed</b>.</p>", subtype="html")
    _send(sink, second)

    listed = _bulwark_dev_mail("--dir", str(sink.folder))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    row_1 = next(line for line in lines if "carol@example.com" in line)
    row_2 = next(line for line in lines if "dave@example.com" in line)
    assert row_1.split()[0] == "1"
    assert "Reset your password" in row_1
    assert row_2.split()[0] == "2"  # newest last
    assert lines.index(row_1) < lines.index(row_2)

    shown = _bulwark_dev_mail("show", "1", "--dir", str(sink.folder))
    assert shown.returncode == 0, shown.stderr
    assert "Subject: Reset your password" in shown.stdout
    assert "X-Bulwark-Envelope-To: carol@example.com" in shown.stdout
    assert "https://app.example/verify?token=abc" in shown.stdout
    assert "HTML part" not in shown.stdout
    assert "\r" not in shown.stdout

    last = _bulwark_dev_mail("show", "--last", "--dir", str(sink.folder))
    assert "Subject: Your password was changed" in last.stdout
    assert "it also has an HTML part" in last.stdout
    assert "<b>changed</b>" not in last.stdout  # only with --html
    html = _bulwark_dev_mail("show", "--last", "--html", "--dir", str(sink.folder))
    assert "<b>changed</b>" in html.stdout

    as_json = _bulwark_dev_mail("--json", "--dir", str(sink.folder))
    rows = json.loads(as_json.stdout)
    assert [(r["index"], r["rcpt_tos"], r["subject"]) for r in rows] == [
        (1, ["carol@example.com"], "Reset your password"),
        (2, ["dave@example.com"], "Your password was changed"),
    ]
    one = json.loads(_bulwark_dev_mail("--dir", str(sink.folder), "show", "2", "--json").stdout)
    assert one["html"] == "<p>It was <b>changed</b>.</p>\n"
    assert "123456" in one["text"]

    missing = _bulwark_dev_mail("show", "3", "--dir", str(sink.folder))
    assert missing.returncode == 1
    assert "no message 3: 2 in" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_control_characters_do_not_reach_the_terminal(sink: SmtpSink) -> None:
    _send(sink, _message(subject="Hello \x1b[2J\x1b]0;owned\x07"))
    for args in ([], ["show", "1"]):
        out = _bulwark_dev_mail(*args, "--dir", str(sink.folder)).stdout
        assert "\x1b" not in out
        assert "\x07" not in out
        assert "Hello ?[2J" in out


def test_a_message_over_one_mib_is_refused_and_not_stored(sink: SmtpSink) -> None:
    big = _message()
    big.set_content(("x" * 63 + "\n") * (MAX_MESSAGE_BYTES // 64))
    # smtplib announces the size (SIZE, RFC 1870): refused at MAIL FROM.
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        _send(sink, big)
    assert refused.value.smtp_code == 552
    # A client that does not announce it is refused at the end of DATA.
    with smtplib.SMTP(sink.host, sink.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.mail("no-reply@bulwark.localhost")[0] == 250
        assert client.rcpt("alice@example.com")[0] == 250
        code, _ = client.data(big.as_bytes(policy=big.policy.clone(linesep="\r\n")))
    assert code == 552
    assert sink.messages() == []
    fits = _message()
    fits.set_content(("x" * 63 + "\n") * (MAX_MESSAGE_BYTES // 66))  # 97 % of it, in CRLF
    _send(sink, fits)
    assert len(sink.messages()) == 1


def test_only_the_newest_messages_are_kept(tmp_path: Path) -> None:
    with SmtpSink(tmp_path / "mail", keep=3) as sink:
        for n in range(5):
            _send(sink, _message(subject=f"message {n}"))
        subjects = [m["Subject"] for m in sink.messages()]
    assert subjects == ["message 2", "message 3", "message 4"]
    assert len(list((tmp_path / "mail").iterdir())) == 3


def test_wait_for_returns_the_newest_match_or_says_what_arrived(sink: SmtpSink) -> None:
    _send(sink, _message("erin@example.com", "Verify your email"))
    _send(sink, _message("erin@example.com", "Reset your password"))
    _send(sink, _message("frank@example.com", "Reset your password"))
    assert sink.wait_for("ERIN@example.com")["Subject"] == "Reset your password"
    found = sink.wait_for("erin@example.com", subject_contains="Verify")
    assert found["Subject"] == "Verify your email"

    started = time.monotonic()
    with pytest.raises(MailNotReceivedError) as missing:
        sink.wait_for("erin@example.com", subject_contains="deleted", timeout=0.3)
    assert time.monotonic() - started < 2
    assert isinstance(missing.value, TimeoutError)
    assert isinstance(missing.value, AssertionError)
    text = str(missing.value)
    assert "3 arrived" in text
    assert 'to frank@example.com: "Reset your password"' in text
    with pytest.raises(MailNotReceivedError):
        sink.wait_for("nobody@example.com", timeout=0)


def test_wait_for_sees_a_message_that_arrives_while_it_waits(sink: SmtpSink) -> None:
    mailbox = Mailbox(sink.folder)
    with pytest.raises(MailNotReceivedError):
        mailbox.wait_for("grace@example.com", timeout=0.1)
    _send(sink, _message("grace@example.com"))
    assert mailbox.wait_for("grace@example.com", timeout=TIMEOUT)["To"] == "grace@example.com"


def test_a_message_that_cannot_be_stored_is_a_transient_failure(sink: SmtpSink) -> None:
    sink.folder.rmdir()
    sink.folder.write_text("a file where the folder was")
    with pytest.raises(smtplib.SMTPDataError) as failed:
        _send(sink, _message(subject="lost"))
    assert failed.value.smtp_code == 451
    sink.folder.unlink()
    _send(sink, _message(subject="kept"))  # the sink still serves
    assert [m["Subject"] for m in sink.messages()] == ["kept"]


def test_stops_and_starts_again_on_the_same_port(tmp_path: Path) -> None:
    sink = SmtpSink(tmp_path / "mail").start()
    try:
        _send(sink, _message(subject="before"))
        sink.stop()
        sink.stop()  # idempotent
        assert not tcp_accepts(sink.host, sink.port)
        sink.start()
        _send(sink, _message(subject="after"))
    finally:
        sink.stop()
    assert [m["Subject"] for m in sink.messages()] == ["before", "after"]


def test_a_taken_port_is_an_os_error(sink: SmtpSink, tmp_path: Path) -> None:
    with pytest.raises(OSError, match="in use"):
        SmtpSink(tmp_path / "other", port=sink.port).start()
    _send(sink, _message())  # the first one still serves
    assert len(sink.messages()) == 1


def test_tls_needs_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs cert and key"):
        SmtpSink(tmp_path, tls="starttls")
    with pytest.raises(ValueError, match="tls must be"):
        SmtpSink(tmp_path, tls="ssl")  # type: ignore[arg-type]


def test_starttls_sink_requires_tls_then_auth(tmp_path: Path, tls_files: TlsFiles) -> None:
    with SmtpSink(
        tmp_path / "mail",
        tls="starttls",
        cert=tls_files.cert,
        key=tls_files.key,
        auth=("mailer", "s3cret"),
    ) as sink:
        assert sink.url == f"smtp+starttls://127.0.0.1:{sink.port}"
        with smtplib.SMTP(sink.host, sink.port, timeout=TIMEOUT) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            assert not client.has_extn("auth")  # not offered before TLS
            plain = base64.b64encode(b"\0mailer\0s3cret").decode()
            code, text = client.docmd("AUTH", f"PLAIN {plain}")
            assert (code, b"STARTTLS" in text) == (530, True)
            assert client.mail("no-reply@bulwark.localhost")[0] == 530
            client.starttls(context=tls_files.client_context())  # checks 127.0.0.1 too
            client.ehlo()
            assert client.has_extn("auth")
            assert client.mail("no-reply@bulwark.localhost")[0] == 530  # AUTH first
            client.rset()
            with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
                client.login("mailer", "wrong")
            assert wrong.value.smtp_code == 535
            client.login("mailer", "s3cret")
            client.send_message(_message())
        (stored,) = sink.messages()
    assert str(stored[TLS]).startswith("TLSv1.")
    assert stored[AUTH_LOGIN] == "mailer"


def test_starttls_refuses_a_client_that_does_not_trust_its_ca(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    with SmtpSink(tmp_path / "mail", tls="starttls", cert=tls_files.cert, key=tls_files.key) as s:
        with smtplib.SMTP(s.host, s.port, timeout=TIMEOUT) as client:
            client.ehlo()
            with pytest.raises(ssl.SSLCertVerificationError):
                client.starttls(context=ssl.create_default_context())
        assert s.messages() == []


def test_implicit_tls_sink_speaks_tls_from_the_first_byte(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    with SmtpSink(
        tmp_path / "mail",
        tls="implicit",
        cert=tls_files.cert,
        key=tls_files.key,
        auth=("mailer", "s3cret"),
    ) as sink:
        assert sink.url == f"smtps://127.0.0.1:{sink.port}"
        with (
            pytest.raises((smtplib.SMTPServerDisconnected, TimeoutError)),
            smtplib.SMTP(sink.host, sink.port, timeout=1.0),
        ):
            pass  # no greeting in clear
        with smtplib.SMTP_SSL(
            sink.host, sink.port, context=tls_files.client_context(), timeout=TIMEOUT
        ) as client:
            client.ehlo()
            assert client.mail("no-reply@bulwark.localhost")[0] == 530  # AUTH first
            client.rset()
            client.login("mailer", "s3cret")
            client.send_message(_message())
        (stored,) = sink.messages()
    assert str(stored[TLS]).startswith("TLSv1.")
    assert stored[AUTH_LOGIN] == "mailer"


def test_a_sink_without_tls_never_takes_credentials(tmp_path: Path) -> None:
    with SmtpSink(tmp_path / "mail", auth=("mailer", "s3cret")) as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=TIMEOUT) as client:
            client.ehlo()
            assert not client.has_extn("auth")
            plain = base64.b64encode(b"\0mailer\0s3cret").decode()
            assert client.docmd("AUTH", f"PLAIN {plain}")[0] == 538
            assert client.docmd("AUTH", "LOGIN")[0] == 538
            assert client.mail("no-reply@bulwark.localhost")[0] == 530
        assert sink.messages() == []


def test_run_starts_a_sink_unless_smtp_url_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = build_parser().parse_args(["run"])
    ports = choose_ports({}, {})
    monkeypatch.setenv("SMTP_URL", "smtps://mail.example:465")
    monkeypatch.setenv("SMTP_USERNAME", "mailer")
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret")
    with ExitStack() as cleanup:
        assert _mail_sink(args, ports, tmp_path / "mail", cleanup) is None
    assert not (tmp_path / "mail").exists()
    assert _mail_env(None) == {"SMTP_USERNAME": "mailer", "SMTP_PASSWORD": "s3cret"}

    monkeypatch.delenv("SMTP_URL")
    with ExitStack() as cleanup:
        sink = _mail_sink(args, ports, tmp_path / "mail", cleanup)
        assert sink is not None
        assert sink.port not in {port for _, port in ports.labelled()}
        assert tcp_accepts(sink.host, sink.port)
        assert _mail_env(sink) == {}  # our credentials are not for the sink
    assert not tcp_accepts(sink.host, sink.port)  # stopped with the run
