"""The pages: ``/signin``, ``/device`` (RFC 8628 §3.3 verification) and
``/oauth2/authorize`` (RFC 6749 §4.1.1 sign-in and consent).

Server-rendered HTML with no scripts; every form is a same-site POST with a CSRF token
(`bulwark.auth.pages.browser`); every refusal is a page with its status, never JSON, except
the errors the authorization endpoint sends back to a client's redirect URI.
"""

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency

from bulwark.auth.authorization import rules as authorization
from bulwark.auth.deps import client_context
from bulwark.auth.device import rules as device
from bulwark.auth.pages import browser
from bulwark.auth.pages.forms import read_form, read_query
from bulwark.auth.pages.rendering import (
    forged_post,
    form_action_source,
    message,
    page,
    problem_page,
    redirect,
    scope_descriptions,
)
from bulwark.auth.passwords import PasswordHasher
from bulwark.auth.security_events import SecurityEvent, record
from bulwark.auth.sessions import login as login_flow
from bulwark.auth.sessions.login_limits import LoginLimits
from bulwark.auth.settings import AuthSettings
from bulwark.auth.users.rules import normalise_email
from bulwark.common import rate_limits
from bulwark.common.db import Database
from bulwark.common.problems import EmailNotVerified, Problem, Unauthorized

#: Where a sign-in may send the browser next: our own approval pages only (no open redirect).
_NEXT_PAGES = ("/device", "/oauth2/authorize")
INVALID_CODE = "That code is not valid or has expired."
#: Longest password read, in characters (as ``LoginRequest``'s).
MAX_PASSWORD_LENGTH = 1024
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]+\Z")


def _safe_next(raw: str | None) -> str:
    """``raw`` when it is one of our approval pages, in printable ASCII (it becomes a
    ``Location`` header), else ``/device`` (no open redirect)."""
    if raw and _PRINTABLE_ASCII.match(raw) and raw.startswith(_NEXT_PAGES) and "\\" not in raw:
        rest = raw.removeprefix("/device").removeprefix("/oauth2/authorize")
        if rest == "" or rest.startswith("?"):
            return raw
    return "/device"


def _sign_in_first(path_and_query: str) -> Response[bytes]:
    return redirect("/signin?" + urlencode({"next": path_and_query}))


async def _limit_verification(
    request: Request[Any, Any, State], settings: AuthSettings, user_code: str
) -> None:
    """Count a user-code lookup per IP and per code (brute force, RFC 8628 §5.1).

    Raises:
        TooManyRequests, ServiceUnavailable: refused (fails closed).
    """
    ip = client_context(request).ip or "unknown"
    await rate_limits.enforce(
        request.app.state.ratelimit,
        [
            [("endpoint", "device_verification"), ("remote_address", ip)],
            [("endpoint", "device_verification"), ("user_code", user_code)],
        ],
        fail_open=settings.fails_open("device_verification"),
        request_state=request.scope["state"],
    )


class PagesController(Controller):
    """The sign-in, device verification and consent pages."""

    include_in_schema = False

    @get("/signin", operation_id="signinPage", media_type="text/html")
    async def signin_page(self, request: Request[Any, Any, State], state: State) -> Response[bytes]:
        """The sign-in form; ``next`` is the approval page to return to."""
        settings: AuthSettings = state.settings
        token, cookies = browser.csrf_token(request, settings)
        return page(
            "signin.html",
            title="Sign in",
            cookies=cookies,
            csrf_token=token,
            next=_safe_next(read_query(request).get("next")),
            email="",
            error="",
        )

    @post("/signin", operation_id="signin", media_type="text/html", status_code=303)
    async def signin(
        self,
        request: Request[Any, Any, State],
        state: State,
        db: NamedDependency[Database],
        password_hasher: NamedDependency[PasswordHasher],
    ) -> Response[bytes]:
        """Check the password, under the same login limits as ``/v1/auth/login``, and
        remember the sign-in on this browser; then back to ``next``."""
        settings: AuthSettings = state.settings
        form = await read_form(request)
        if not browser.same_site_post(request, settings, form):
            return forged_post()
        next_page = _safe_next(form.get("next"))
        token, _ = browser.csrf_token(request, settings)
        client = client_context(request)

        def retry(error: str, status: int) -> Response[bytes]:
            return page(
                "signin.html",
                title="Sign in",
                status=status,
                csrf_token=token,
                next=next_page,
                email=form.get("email", "")[:255],
                error=error,
            )

        password = form.get("password", "")
        if len(password) > MAX_PASSWORD_LENGTH:  # as /v1/auth/login's schema: no argon2 work
            return retry("The password is too long.", 400)
        try:
            email = normalise_email(form.get("email", ""))
        except Problem:
            return retry("Enter a valid email address.", 400)
        attempt = login_flow.LoginAttempt(
            email=email, password=password, device_name=None, client=client
        )
        limits = LoginLimits(
            state.ratelimit,
            email=email,
            ip=client.ip or "unknown",
            fail_open=settings.fails_open("login"),
            request_state=request.scope["state"],
        )
        try:
            user = await login_flow.authenticate(
                attempt, db=db, hasher=password_hasher, limits=limits, settings=settings
            )
        except (Unauthorized, EmailNotVerified) as refused:  # 401, or 403 (UNVERIFIED_LOGIN)
            return retry(refused.detail, refused.status)
        except Problem as problem:
            return problem_page(problem)
        try:
            cookie = await browser.sign_in(db, settings, user["id"])
            await record(db, SecurityEvent.PAGE_SIGNIN_SUCCEEDED, user_id=user["id"], ip=client.ip)
        except BaseException:
            await limits.abandoned()
            raise
        await limits.succeeded()
        request.scope["state"]["user_id"] = str(user["id"])  # for the access line
        return redirect(next_page, cookies=[cookie])

    @get("/device", operation_id="devicePage", media_type="text/html")
    async def device_page(
        self, request: Request[Any, Any, State], state: State, db: NamedDependency[Database]
    ) -> Response[bytes]:
        """Enter a user code, then see which client asks for what (RFC 8628 §3.3)."""
        settings: AuthSettings = state.settings
        typed = read_query(request).get("user_code")
        user = await browser.signed_in(request, settings, db)
        if user is None:
            return _sign_in_first(
                "/device" + (f"?{urlencode({'user_code': typed})}" if typed else "")
            )
        if typed is None:
            return page(
                "device_code.html",
                title="Connect a device",
                user_code="",
                error="",
                email=user.email,
            )
        user_code = device.normalise_user_code(typed)
        try:
            await _limit_verification(request, settings, user_code or typed[:16])
        except Problem as problem:
            return problem_page(problem)
        pending = await device.pending(db, settings, user_code) if user_code else None
        if pending is None:
            return page(
                "device_code.html",
                title="Connect a device",
                status=400,
                user_code=typed[:16],
                error=INVALID_CODE,
                email=user.email,
            )
        token, cookies = browser.csrf_token(request, settings)
        shown = device.display_user_code(pending.user_code)
        return page(
            "consent.html",
            title="Connect a device",
            cookies=cookies,
            csrf_token=token,
            client_name=pending.client.name,
            scopes=scope_descriptions(pending.scope),
            user_code=shown,
            email=user.email,
            action="/device",
            hidden=[("user_code", shown)],
        )

    @post("/device", operation_id="deviceDecision", media_type="text/html", status_code=200)
    async def device_decision(
        self, request: Request[Any, Any, State], state: State, db: NamedDependency[Database]
    ) -> Response[bytes]:
        """Approve or deny a user code, once."""
        settings: AuthSettings = state.settings
        form = await read_form(request)
        if not browser.same_site_post(request, settings, form):
            return forged_post()
        user = await browser.signed_in(request, settings, db)
        if user is None:
            return _sign_in_first("/device")
        decision = form.get("decision")
        if decision not in {"approve", "deny"}:
            return message("Connect a device", "Choose Approve or Deny.", status=400, error=True)
        try:
            return await _decide_device(
                request, settings, db=db, form=form, user=user, decision=decision
            )
        except Problem as problem:
            return problem_page(problem)

    @get("/oauth2/authorize", operation_id="authorizePage", media_type="text/html")
    async def authorize_page(
        self, request: Request[Any, Any, State], state: State, db: NamedDependency[Database]
    ) -> Response[bytes]:
        """The authorization endpoint (RFC 6749 §4.1.1): sign in, then consent."""
        settings: AuthSettings = state.settings
        params = read_query(request)
        checked = _check_authorization(settings, params)
        if isinstance(checked, Response):
            return checked
        user = await browser.signed_in(request, settings, db)
        if user is None:
            return _sign_in_first("/oauth2/authorize?" + urlencode(params))
        token, cookies = browser.csrf_token(request, settings)
        return page(
            "consent.html",
            title="Allow access",
            cookies=cookies,
            form_targets=[form_action_source(checked.redirect_uri)],
            csrf_token=token,
            client_name=checked.client.name,
            scopes=scope_descriptions(checked.scope),
            user_code="",
            email=user.email,
            action="/oauth2/authorize",
            hidden=list(checked.as_parameters().items()),
        )

    @post(
        "/oauth2/authorize",
        operation_id="authorizeDecision",
        media_type="text/html",
        status_code=303,
    )
    async def authorize_decision(
        self, request: Request[Any, Any, State], state: State, db: NamedDependency[Database]
    ) -> Response[bytes]:
        """The user's answer: a code (approve) or ``access_denied``, sent to the client's
        redirect URI with ``state`` and ``iss`` (RFC 6749 §4.1.2, RFC 9207)."""
        settings: AuthSettings = state.settings
        form = await read_form(request)
        if not browser.same_site_post(request, settings, form):
            return forged_post()
        params = {name: form[name] for name in authorization.REQUEST_PARAMETERS if name in form}
        checked = _check_authorization(settings, params)
        if isinstance(checked, Response):
            return checked
        user = await browser.signed_in(request, settings, db)
        if user is None:
            return _sign_in_first("/oauth2/authorize?" + urlencode(params))
        answer = {"state": checked.state, "iss": settings.issuer}
        if form.get("decision") != "approve":
            ip = client_context(request).ip
            await authorization.record_denial(db, user_id=user.user_id, ip=ip)
            answer = {"error": "access_denied", **answer}
        else:
            code = await authorization.issue_code(
                db, settings, checked, user_id=user.user_id, ip=client_context(request).ip
            )
            answer = {"code": code, **answer}
        return redirect(authorization.redirect_location(checked.redirect_uri, answer))


async def _decide_device(
    request: Request[Any, Any, State],
    settings: AuthSettings,
    *,
    db: Database,
    form: Mapping[str, str],
    user: browser.SignedIn,
    decision: str,
) -> Response[bytes]:
    """Record ``user``'s ``decision`` (approve or deny) on the form's user code, once.

    Raises:
        TooManyRequests, ServiceUnavailable: the verification limits refused (fail closed).
    """
    typed = form.get("user_code", "")
    user_code = device.normalise_user_code(typed)
    await _limit_verification(request, settings, user_code or typed[:16])
    decided = user_code is not None and await device.decide(
        db,
        user_code,
        approved=decision == "approve",
        user_id=user.user_id,
        ip=client_context(request).ip,
    )
    if not decided:
        return message("Connect a device", INVALID_CODE, status=400, error=True)
    if decision == "approve":
        return message("Device connected", "Device connected. You can return to your device.")
    return message("Request denied", "Request denied. The device was not connected.")


def _check_authorization(
    settings: AuthSettings, params: Mapping[str, str]
) -> authorization.AuthorizationRequest | Response[bytes]:
    """The valid request, or the answer to an invalid one: a page when the client or its
    redirect URI cannot be trusted, else a redirect carrying the error (RFC 6749 §4.1.2.1)."""
    try:
        return authorization.check_request(settings, params)
    except authorization.ShownError as shown:
        return message("Cannot continue", str(shown), status=400, error=True)
    except authorization.RedirectedError as refused:
        answer = {
            "error": refused.error,
            "error_description": refused.description,
            "state": refused.state,
            "iss": settings.issuer,
        }
        return redirect(authorization.redirect_location(refused.redirect_uri, answer))
