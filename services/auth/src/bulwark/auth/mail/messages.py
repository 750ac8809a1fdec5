"""Building a mail: the language it is written in, its parts, and the RFC 5322 message.

The language comes from the app's ``Accept-Language`` (RFC 9110 §12.5.4) when the catalogue
has one of its languages, else English. The text part and the HTML part (Jinja2 with
autoescaping: a display name or an address is never markup) say the same.
"""

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage

import jinja2

from bulwark.auth.mail.catalog import CATALOG, DEFAULT_LOCALE, MailKind

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("bulwark.auth.mail", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
#: Longest Accept-Language header read, in characters.
MAX_ACCEPT_LANGUAGE = 200


@dataclass(frozen=True)
class RenderedMail:
    """A mail ready for the outbox: ``recipient`` address, ``subject``, and both bodies."""

    recipient: str
    subject: str
    text_body: str
    html_body: str


def negotiate_locale(accept_language: str | None) -> str:
    """The catalogue's locale that ``accept_language`` ranks highest (``q`` weights, a
    region falls back to its language: ``de-AT`` is ``de``); `DEFAULT_LOCALE` when none of
    its languages is acceptable or the header is absent or malformed."""
    if not accept_language:
        return DEFAULT_LOCALE
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept_language[:MAX_ACCEPT_LANGUAGE].split(",")):
        tag, _, params = item.strip().partition(";")
        language = tag.strip().split("-")[0].lower()
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        if language in CATALOG and 0 < weight <= 1:
            ranked.append((-weight, position, language))
    return min(ranked)[2] if ranked else DEFAULT_LOCALE


def render(
    kind: MailKind,
    *,
    recipient: str,
    locale: str,
    values: Mapping[str, str | int],
    link: str | None = None,
) -> RenderedMail:
    """The mail ``kind`` in ``locale`` (`DEFAULT_LOCALE` when unknown), its templates
    filled with ``values`` and its action pointing at ``link``.

    Raises:
        KeyError: a template names a value ``values`` lacks (a bug, not an input).
        ValueError: the mail has an action but no ``link``.
    """
    texts = CATALOG.get(locale, CATALOG[DEFAULT_LOCALE])[kind]
    if texts.action is not None and link is None:
        raise ValueError(f"the {kind} mail needs a link")
    context = {
        "locale": locale if locale in CATALOG else DEFAULT_LOCALE,
        "app": values["app"],
        "subject": texts.subject.format(**values),
        "paragraphs": [paragraph.format(**values) for paragraph in texts.paragraphs],
        "action": None if texts.action is None else texts.action.format(**values),
        "link": link,
    }
    return RenderedMail(
        recipient=recipient,
        subject=str(context["subject"]),
        text_body=_TEMPLATES.get_template("mail.txt").render(context),
        html_body=_TEMPLATES.get_template("mail.html").render(context),
    )


def email_message(mail: RenderedMail, *, sender: str, message_id_domain: str) -> EmailMessage:
    """The RFC 5322 message of ``mail`` from ``sender``: text and HTML alternatives, a
    ``Date``, a ``Message-ID`` and ``Auto-Submitted: auto-generated`` (RFC 3834: no
    out-of-office replies)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.recipient
    message["Subject"] = mail.subject
    message["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=message_id_domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(mail.text_body)
    message.add_alternative(mail.html_body, subtype="html")
    return message
