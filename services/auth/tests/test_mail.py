"""Mail without I/O (docs/mail.md): the language a mail is written in, what each mail says
in each language, the message built from it, ``SMTP_URL`` and its companions, and the
outbox's backoff. Delivery over real SMTP servers: tests/integration/test_mail_delivery.py."""

import string
from datetime import timedelta

import pytest

from bulwark.auth.mail import outbox
from bulwark.auth.mail.catalog import CATALOG, DEFAULT_LOCALE, MailKind
from bulwark.auth.mail.delivery import SmtpSettings, parse_smtp_url
from bulwark.auth.mail.messages import MAX_ACCEPT_LANGUAGE, email_message, negotiate_locale, render
from bulwark.auth.settings import from_env
from bulwark.common.settings import SettingsError

pytestmark = pytest.mark.security(stride="I", asvs=("V12.3",))

CODE = "482913"
LINK = "https://app.example/account/verify-email?token=tok-abc"
VALUES: dict[str, str | int] = {
    "app": "Bulwark",
    "code": CODE,
    "hours": 24,
    "minutes": 30,
    "days": 7,
    "masked_email": "al…@example.com",
}
#: The only values a mail may name: none is a secret but ``code`` (with the link).
ALLOWED_VALUES = {"app", "code", "hours", "minutes", "days", "masked_email"}


# The language


@pytest.mark.parametrize(
    ("header", "locale"),
    [
        (None, "en"),
        ("", "en"),
        ("de", "de"),
        ("DE", "de"),
        ("de-AT", "de"),  # a region falls back to its language
        ("fr-CA, en;q=0.8", "fr"),
        ("en;q=0.5, de;q=0.9, fr;q=0.7", "de"),  # the highest q wins, not the first
        ("fr, de", "fr"),  # equal weights: the first
        ("es, de;q=0.1", "de"),  # a language we lack is skipped
        ("es, it", "en"),  # none we have: the default
        ("*", "en"),
        ("de;q=0, fr;q=0.2", "fr"),  # q=0 means "not this one"
        ("de;q=0", "en"),
        ("de;q=2, fr;q=0.5", "fr"),  # out of range: ignored
        ("de;q=high, fr;q=0.5", "fr"),  # not a number: ignored
        ("\x00;;;,,,==;q=;", "en"),
        ("de-;-;q=1,,,", "de"),
    ],
)
def test_the_locale_comes_from_accept_language(header: str | None, locale: str) -> None:
    assert negotiate_locale(header) == locale


def test_an_over_long_accept_language_is_read_only_so_far() -> None:
    padding = "es;q=0.9, " * (MAX_ACCEPT_LANGUAGE // 10)
    assert negotiate_locale(padding + "de") == DEFAULT_LOCALE  # past the limit: not read
    assert negotiate_locale("de, " + padding * 100) == "de"
    assert negotiate_locale("x" * 100_000) == DEFAULT_LOCALE


# What each mail says


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_mail_exists_in_every_language_and_names_only_harmless_values() -> None:
    assert DEFAULT_LOCALE == "en"
    assert set(CATALOG) == {"en", "de", "fr"}
    for locale, texts in CATALOG.items():
        assert set(texts) == set(MailKind), locale
        for kind, text in texts.items():
            english = CATALOG["en"][kind]
            named = set().union(*map(_fields, (text.subject, *text.paragraphs)))
            assert named <= ALLOWED_VALUES, (locale, kind)
            # A translation names what the English says, has the same action or none.
            assert named == set().union(*map(_fields, (english.subject, *english.paragraphs)))
            assert (text.action is None) == (english.action is None), (locale, kind)
            # The code is in a mail only with its link.
            assert ("code" in named) <= (text.action is not None), (locale, kind)
            assert "code" not in _fields(text.subject), (locale, kind)


@pytest.mark.parametrize("locale", sorted(CATALOG))
@pytest.mark.parametrize("kind", list(MailKind))
def test_every_mail_renders_in_every_language(kind: MailKind, locale: str) -> None:
    has_action = CATALOG[locale][kind].action is not None
    mail = render(
        kind,
        recipient="alice@example.com",
        locale=locale,
        values=VALUES,
        link=LINK if has_action else None,
    )
    assert mail.recipient == "alice@example.com"
    assert mail.subject.strip()
    assert "\n" not in mail.subject
    assert "Bulwark" in mail.subject
    assert mail.text_body.strip()
    assert mail.html_body.strip()
    assert f'<html lang="{locale}">' in mail.html_body
    assert "{" not in mail.text_body  # every value filled in
    if locale != "en":
        assert (
            mail.subject
            != render(kind, recipient="a@b.example", locale="en", values=VALUES, link=LINK).subject
        )
    if has_action:
        assert LINK in mail.text_body
        assert f'href="{LINK}"' in mail.html_body
    else:
        assert "http" not in mail.text_body
        assert "href" not in mail.html_body
    # No secret but the link and the code: the code only with the link, never in a subject.
    uses_code = "code" in set().union(*map(_fields, CATALOG[locale][kind].paragraphs))
    assert (CODE in mail.text_body) == uses_code
    assert (CODE in mail.html_body) == uses_code
    assert CODE not in mail.subject
    assert "token" not in mail.subject


def test_a_mail_with_an_action_needs_its_link() -> None:
    with pytest.raises(ValueError, match="needs a link"):
        render(MailKind.PASSWORD_RESET, recipient="a@b.example", locale="en", values=VALUES)


def test_an_unknown_locale_is_written_in_english() -> None:
    mail = render(MailKind.PASSWORD_CHANGED, recipient="a@b.example", locale="es", values=VALUES)
    english = render(MailKind.PASSWORD_CHANGED, recipient="a@b.example", locale="en", values=VALUES)
    assert (mail.subject, mail.text_body) == (english.subject, english.text_body)
    assert '<html lang="en">' in mail.html_body


def test_the_html_part_escapes_every_value_the_text_part_keeps_them() -> None:
    hostile = {
        **VALUES,
        "app": "<script>alert(1)</script>",
        "masked_email": "<b>al</b>…@example.com",
    }
    link = 'https://app.example/undo?token=t"><img src=x onerror=alert(1)>'
    mail = render(
        MailKind.EMAIL_CHANGED,
        recipient="a@b.example",
        locale="en",
        values=hostile,
        link=link,
    )
    assert "<script>" not in mail.html_body
    assert "<b>" not in mail.html_body
    assert "<img" not in mail.html_body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html_body
    assert "&lt;b&gt;al&lt;/b&gt;…@example.com" in mail.html_body
    assert "token=t&#34;&gt;&lt;img" in mail.html_body
    # Plain text is not markup: the values are as given.
    assert "<b>al</b>…@example.com" in mail.text_body
    assert link in mail.text_body


def test_the_message_has_both_parts_and_the_headers_of_an_automatic_mail() -> None:
    mail = render(
        MailKind.VERIFY_EMAIL, recipient="alice@example.com", locale="de", values=VALUES, link=LINK
    )
    message = email_message(
        mail, sender="Bulwark <no-reply@auth.example>", message_id_domain="auth.example"
    )
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert message["To"] == "alice@example.com"
    assert message["From"] == "Bulwark <no-reply@auth.example>"
    assert message["Subject"] == mail.subject
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@auth.example>")
    assert message["Date"].datetime.utcoffset() == timedelta(0)  # UTC
    other = email_message(mail, sender="no-reply@auth.example", message_id_domain="auth.example")
    assert other["Message-ID"] != message["Message-ID"]


# SMTP_URL


def _parse(url: str, **kwargs: object) -> SmtpSettings:
    options: dict[str, object] = {"sender": "no-reply@auth.example", "allow_plain": False}
    options.update(kwargs)
    return parse_smtp_url(url, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "security", "port"),
    [
        ("smtps://mail.example", "tls", 465),
        ("smtps://mail.example/", "tls", 465),
        ("smtps://mail.example:2465", "tls", 2465),
        ("smtp+starttls://mail.example", "starttls", 587),
        ("smtp+starttls://mail.example:2587", "starttls", 2587),
        ("smtps://[::1]:465", "tls", 465),
    ],
)
def test_smtp_url_schemes_and_default_ports(url: str, security: str, port: int) -> None:
    settings = _parse(url)
    assert (settings.security, settings.port) == (security, port)
    assert settings.host in {"mail.example", "::1"}


def test_plain_smtp_only_in_development_and_test() -> None:
    with pytest.raises(SettingsError, match="must use TLS"):
        _parse("smtp://mail.example")
    local = _parse("smtp://127.0.0.1", allow_plain=True)
    assert (local.security, local.port) == ("none", 25)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("", "must start with"),
        ("mail.example:465", "must start with"),
        ("http://mail.example", "must start with"),
        ("smtp+ssl://mail.example", "must start with"),
        ("smtps://mailer:hunter2@mail.example", "must not hold credentials"),
        ("smtps://mailer@mail.example", "must not hold credentials"),
        ("smtps://", "scheme://host"),
        ("smtps://mail.example/relay", "scheme://host"),
        ("smtps://mail.example?auth=plain", "scheme://host"),
        ("smtps://mail.example:0", "invalid port"),
        ("smtps://mail.example:99999", "invalid port"),
        ("smtps://mail.example:tls", "invalid port"),
    ],
)
def test_bad_smtp_urls_are_refused(url: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint) as refused:
        _parse(url, allow_plain=True)
    assert "hunter2" not in str(refused.value)


def test_credentials_go_together_and_never_over_plain_smtp() -> None:
    with pytest.raises(SettingsError, match="never sent without TLS"):
        _parse("smtp://127.0.0.1", allow_plain=True, username="mailer", password="pw")
    with pytest.raises(SettingsError, match="go together"):
        _parse("smtps://mail.example", username="mailer")
    with pytest.raises(SettingsError, match="go together"):
        _parse("smtps://mail.example", password="pw")
    with pytest.raises(SettingsError, match="go together"):
        _parse("smtp://127.0.0.1", allow_plain=True, password="pw")
    settings = _parse("smtps://mail.example", username="mailer", password="pw", ca_file="/ca")
    assert (settings.username, settings.password, settings.ca_file) == ("mailer", "pw", "/ca")
    empty = _parse("smtps://mail.example", username="", password="", ca_file="")
    assert (empty.username, empty.password, empty.ca_file) == (None, None, None)


def test_the_settings_repr_hides_the_password() -> None:
    settings = _parse("smtps://mail.example", username="mailer", password="s3cret-Pa55")
    assert "s3cret-Pa55" not in repr(settings)
    assert "s3cret-Pa55" not in str(settings)
    assert "mailer" in repr(settings)


@pytest.mark.parametrize(
    ("sender", "domain"),
    [
        ("Bulwark <no-reply@auth.example>", "auth.example"),
        ("no-reply@mail.example.org", "mail.example.org"),
        ("nobody", "nobody"),
        ("nobody@", "localhost"),
    ],
)
def test_message_ids_use_the_senders_domain(sender: str, domain: str) -> None:
    assert _parse("smtps://mail.example", sender=sender).message_id_domain == domain


_PRODUCTION = {
    "BULWARK_ENV": "production",
    "DATABASE_URL": "postgresql://x/y",
    "ISSUER": "https://auth.example",
    "KEYS_DIR": "/k",
    "REDIS_URL": "rediss://cache:6380/0",
    "EMAIL_FINGERPRINT_KEY": "k" * 32,
    "APP_VERSIONS_URL": "http://bulwark-api:8000/v1/app-versions",
}


def test_production_requires_smtp_over_tls_and_a_sender() -> None:
    with pytest.raises(SettingsError, match="SMTP_URL"):
        from_env(_PRODUCTION)
    with pytest.raises(SettingsError, match="MAIL_FROM"):
        from_env({**_PRODUCTION, "SMTP_URL": "smtps://mail.example"})
    with_sender = {**_PRODUCTION, "MAIL_FROM": "Bulwark <no-reply@auth.example>"}
    with pytest.raises(SettingsError, match="must use TLS"):
        from_env({**with_sender, "SMTP_URL": "smtp://mail.example"})
    settings = from_env(
        {
            **with_sender,
            "SMTP_URL": "smtp+starttls://mail.example",
            "SMTP_USERNAME": "mailer",
            "SMTP_PASSWORD": "pw",
            "SMTP_CA_FILE": "/etc/bulwark/smtp-ca.pem",
        }
    ).smtp
    assert settings == SmtpSettings(
        host="mail.example",
        port=587,
        security="starttls",
        sender="Bulwark <no-reply@auth.example>",
        username="mailer",
        password="pw",
        ca_file="/etc/bulwark/smtp-ca.pem",
    )


def test_development_may_go_without_smtp_or_use_the_plain_sink() -> None:
    assert from_env({"DATABASE_URL": "postgresql://x/y"}).smtp is None
    sink = from_env({"DATABASE_URL": "postgresql://x/y", "SMTP_URL": "smtp://127.0.0.1:2525"})
    assert sink.smtp is not None
    assert (sink.smtp.security, sink.smtp.port) == ("none", 2525)
    assert sink.smtp.sender == "Bulwark <no-reply@bulwark.localhost>"
    test = from_env(
        {"BULWARK_ENV": "test", "DATABASE_URL": "postgresql://x/y", "SMTP_URL": "smtp://h"}
    )
    assert test.smtp is not None


# The backoff


def test_retries_wait_longer_each_time_up_to_an_hour() -> None:
    delays = [outbox.retry_delay(attempts) for attempts in range(1, outbox.MAX_ATTEMPTS + 1)]
    assert delays[0] == outbox.FIRST_RETRY_SECONDS
    assert delays[1] == 2 * outbox.FIRST_RETRY_SECONDS
    assert delays[2] == 4 * outbox.FIRST_RETRY_SECONDS
    assert delays == sorted(delays)
    assert max(delays) == outbox.MAX_RETRY_SECONDS == 3600
    assert outbox.retry_delay(0) == outbox.FIRST_RETRY_SECONDS
    assert outbox.retry_delay(10_000) == outbox.MAX_RETRY_SECONDS
    # Given up after about a day of trying (docs/mail.md), not within minutes.
    assert 18 * 3600 < sum(delays[:-1]) < 30 * 3600
