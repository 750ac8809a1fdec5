"""The forms of the auth service's HTML pages, read and filled in as a person's browser
would: the form is found by its ``id``, every input it has (the hidden ``csrf_token`` and
``next`` included) is sent back, and redirects are followed one at a time, so that each
step's status and ``Location`` can be asserted. For an ``httpx.Client`` that keeps cookies
(``oauth_pages.browser``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx

from .helpers import MobileUser


@dataclass
class Form:
    """One ``<form>``: where it goes, its named inputs and its named submit buttons."""

    action: str
    method: str
    inputs: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, list[str]] = field(default_factory=dict)  # name -> values


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, Form] = {}
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._current = Form(attributes.get("action", ""), attributes.get("method", "get"))
            self.forms[attributes.get("id", "")] = self._current
        elif self._current is not None and "name" in attributes:
            if tag == "button" or attributes.get("type") == "submit":
                values = self._current.buttons.setdefault(attributes["name"], [])
                values.append(attributes.get("value", ""))
            elif tag in {"input", "textarea", "select"}:
                self._current.inputs[attributes["name"]] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def forms(html: str) -> dict[str, Form]:
    """The forms of ``html``, by their ``id``."""
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def form(response: httpx.Response, form_id: str) -> Form:
    """The form ``form_id`` of an HTML ``response`` (asserting 200 and that it is there)."""
    assert response.status_code == 200, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("text/html"), response.headers
    found = forms(response.text)
    assert form_id in found, (form_id, list(found), response.text[:1000])
    return found[form_id]


def submit(
    browser: httpx.Client, page: httpx.Response, form: Form, **values: str
) -> httpx.Response:
    """Submit ``form`` of ``page`` with its inputs (hidden ones included), ``values`` over them."""
    data = {**form.inputs, **values}
    url = urljoin(str(page.url), form.action or str(page.url))
    if form.method.lower() == "post":
        return browser.post(url, data=data)
    return browser.get(url, params=data)


def local(location: str) -> str:
    """``location`` (absolute or not) as a path and query on the same server."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def sign_in(browser: httpx.Client, redirect: httpx.Response, user: MobileUser) -> httpx.Response:
    """From a 303 to ``/signin?next=...``: sign ``user`` in; return the page that ``next``
    names (fetched after the 303 that the sign-in answers)."""
    assert redirect.status_code == 303, (redirect.status_code, redirect.text[:500])
    location = redirect.headers["location"]
    assert local(location).startswith("/signin?next="), location
    page = browser.get(location)
    signin = form(page, "signin")
    assert {"email", "password", "next", "csrf_token"} <= set(signin.inputs), signin
    done = submit(browser, page, signin, email=user.email, password=user.password)
    assert done.status_code == 303, (done.status_code, done.text[:500])
    assert local(done.headers["location"]) == signin.inputs["next"], done.headers
    return browser.get(done.headers["location"])


def decide(browser: httpx.Client, consent: httpx.Response, decision: str) -> httpx.Response:
    """Press ``decision`` (``approve`` or ``deny``) on a consent page."""
    page = form(consent, "consent")
    assert sorted(page.buttons.get("decision", [])) == ["approve", "deny"], page.buttons
    assert page.inputs.get("csrf_token"), page.inputs
    return submit(browser, consent, page, decision=decision)
