"""Rendering of the pages: Jinja2 templates with autoescaping, and the headers every page
carries (OWASP: a strict Content-Security-Policy with a per-response nonce for the one
inline stylesheet, no scripts at all, no framing, no referrer to other sites, no caching).

The referrer policy is ``same-origin``, not ``no-referrer``: under ``no-referrer`` a browser
sends ``Origin: null`` with a form's POST (Fetch, "serializing a request origin"), and
`browser.same_site_post` would refuse every form of our own pages."""

import secrets
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import jinja2
from litestar import Response
from litestar.datastructures import Cookie

from bulwark.common.problems import Problem

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("bulwark.auth.pages", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
SERVICE_NAME = "Bulwark"
#: What each scope lets a client do, as the consent page says it.
SCOPE_DESCRIPTIONS = {"api": "Use your account through the app's API: your notes and uploads."}
_NOT_STORED = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def scope_descriptions(scope: str) -> list[str]:
    """The consent page's lines for ``scope`` (space-separated scope tokens)."""
    return [SCOPE_DESCRIPTIONS.get(token, token) for token in scope.split(" ")]


def form_action_source(uri: str) -> str:
    """The CSP source that lets a form's answer redirect to ``uri``: its origin, or its
    scheme for a private-use scheme (RFC 8252 §7.1). Browsers apply ``form-action`` to the
    redirects that follow a form submission."""
    parts = urlsplit(uri)
    if parts.scheme in {"http", "https"}:
        return f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}:"


def security_headers(style_nonce: str, form_targets: Iterable[str] = ()) -> dict[str, str]:
    """The headers of every page; ``form_targets`` are CSP sources forms may end at
    besides this origin (`form_action_source`)."""
    form_action = " ".join(["'self'", *form_targets])
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{style_nonce}'; form-action {form_action};"
            " frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        **_NOT_STORED,
    }


def page(
    template: str,
    *,
    title: str,
    status: int = 200,
    cookies: Iterable[Cookie] = (),
    form_targets: Iterable[str] = (),
    **context: Any,
) -> Response[bytes]:
    """The HTML page ``template`` (in ``templates/``) rendered with ``context``."""
    nonce = secrets.token_urlsafe(16)
    html = _TEMPLATES.get_template(template).render(
        title=title, service_name=SERVICE_NAME, style_nonce=nonce, **context
    )
    return Response(
        html.encode(),
        status_code=status,
        media_type="text/html",  # Litestar adds "; charset=utf-8"
        headers=security_headers(nonce, form_targets),
        cookies=list(cookies),
    )


def message(
    title: str, text: str, *, status: int = 200, error: bool = False, hint: str = ""
) -> Response[bytes]:
    """A page that only says something: a result or an error."""
    return page("message.html", title=title, status=status, message=text, error=error, hint=hint)


def problem_page(problem: Problem) -> Response[bytes]:
    """A refusal (``problem``'s status and detail) as a page; keeps ``Retry-After``."""
    shown = message("Please try again", problem.detail, status=problem.status, error=True)
    shown.headers.update({k: v for k, v in problem.headers.items() if k.lower() == "retry-after"})
    return shown


def forged_post() -> Response[bytes]:
    """403: a form without its CSRF token, or sent from another site
    (`bulwark.auth.pages.browser.same_site_post`)."""
    return message(
        "Please try again",
        "This form has expired or was not sent from this site.",
        status=403,
        error=True,
        hint="Go back, reload the page and try again.",
    )


def redirect(
    location: str, *, cookies: Iterable[Cookie] = (), headers: Mapping[str, str] | None = None
) -> Response[bytes]:
    """A 303 See Other to ``location`` (a form's answer, or a page asking to sign in)."""
    return Response(
        b"",
        status_code=303,
        headers={"Location": location, **_NOT_STORED, **(headers or {})},
        cookies=list(cookies),
        media_type="text/plain",
    )
