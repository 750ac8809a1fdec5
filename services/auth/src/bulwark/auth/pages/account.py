"""The pages behind the links in account mails (``ACCOUNT_LINKS_URL``, ``{ISSUER}/account``
by default; `bulwark.auth.account.mailing.LINK_PAGES`): ``/account/verify-email``,
``/account/reset-password``, ``/account/confirm-email-change``,
``/account/undo-email-change``, each opened with ``?token=``.

A GET never uses the token: mail scanners and link previews open links, so the page only
shows a form (the token hidden in it, a CSRF token, a button, and for a reset the new
password). The POST carries the token in its body, checks the form came from this site
(`browser.same_site_post`), counts the ``account_code`` limits, and calls the flow the JSON
route calls (OWASP Forgot Password Cheat Sheet). Neither answer is cached
(``Cache-Control: no-store``) nor sends the URL to another site (``Referrer-Policy:
same-origin``; the pages load nothing from elsewhere). The address bar keeps the link's URL
until the form is sent (replacing it needs a script, and the pages have none); the POST's
URL has no token.
"""

from typing import Any, NamedTuple

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State

from bulwark.auth.account import email_change, recovery, verification
from bulwark.auth.account.limits import limit
from bulwark.auth.account.recovery import InvalidAccountToken
from bulwark.auth.account.tokens import MAX_TOKEN_LENGTH
from bulwark.auth.deps import client_context
from bulwark.auth.mail.messages import negotiate_locale
from bulwark.auth.pages import browser
from bulwark.auth.pages.forms import read_form, read_query
from bulwark.auth.pages.rendering import forged_post, message, page, problem_page
from bulwark.common.problems import Conflict, Problem, ValidationFailed

#: Longest new password read, in characters (as ``PasswordResetConfirm``'s).
MAX_PASSWORD_LENGTH = 1024
_TOKEN_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
BROKEN_LINK = "This link is incomplete. Open it from the mail again, or copy all of it."
INVALID_LINK = (
    "This link is not valid: it was already used, has expired, or a newer mail replaced it."
)


class AccountPage(NamedTuple):
    """What one page says: before (``intro``, ``button``) and after (``done``)."""

    title: str
    intro: str
    button: str
    done_title: str
    done: str
    asks_password: bool = False


#: The page of each link (`bulwark.auth.account.mailing.LINK_PAGES`), by its name.
PAGES = {
    "verify-email": AccountPage(
        title="Confirm your email",
        intro="Confirm that this email address is yours.",
        button="Confirm my email",
        done_title="Email confirmed",
        done="Your email address is confirmed. You can return to the app.",
    ),
    "reset-password": AccountPage(
        title="Choose a new password",
        intro="Choose a new password for your account. Every device signed in to it will be"
        " signed out.",
        button="Set the new password",
        done_title="Password changed",
        done="Your password is changed and every device was signed out. Sign in with the new"
        " password.",
        asks_password=True,
    ),
    "confirm-email-change": AccountPage(
        title="Confirm your new email",
        intro="Make this your account's email address. Your previous address will be told,"
        " with a way to undo the change.",
        button="Use this address",
        done_title="Email changed",
        done="This is now your account's email address. You can return to the app.",
    ),
    "undo-email-change": AccountPage(
        title="Undo the email change",
        intro="Give your account this email address back. Every device signed in to it will"
        " be signed out, the password will stop working, and a mail to choose a new one will"
        " be sent to this address.",
        button="Undo the change",
        done_title="Change undone",
        done="Your account has this email address again, every device was signed out and the"
        " old password no longer works. Check your mail for a link to choose a new one.",
    ),
}
#: The pages' route templates (exempt from the app-version policy: browsers send no app
#: headers).
ACCOUNT_PAGE_PATHS = tuple(f"/account/{name}" for name in PAGES)


def _well_formed(token: str) -> bool:
    """Whether ``token`` could be a link token (43 base64url characters when real)."""
    return 0 < len(token) <= MAX_TOKEN_LENGTH and set(token) <= _TOKEN_ALPHABET


def _named(request: Request[Any, Any, Any]) -> tuple[str, AccountPage]:
    """The page the request's path names (the router admits only `ACCOUNT_PAGE_PATHS`)."""
    name = request.url.path.rstrip("/").rpartition("/")[2]
    return name, PAGES[name]


def _form_page(
    name: str, shown: AccountPage, *, csrf_token: str, token: str, errors: list[str], **kw: Any
) -> Response[bytes]:
    return page(
        "account.html",
        title=shown.title,
        intro=shown.intro,
        button=shown.button,
        asks_password=shown.asks_password,
        action=f"/account/{name}",
        csrf_token=csrf_token,
        token=token,
        errors=errors,
        **kw,
    )


class AccountPagesController(Controller):
    """The pages a mailed link opens; the form on each uses the link once."""

    include_in_schema = False

    @get(list(ACCOUNT_PAGE_PATHS), operation_id="accountLinkPage", media_type="text/html")
    async def account_link_page(
        self, request: Request[Any, Any, State], state: State
    ) -> Response[bytes]:
        """The page's form with the link's ``token``; nothing is used or looked up. 400
        page when the token is missing or cannot be one."""
        name, shown = _named(request)
        token = read_query(request).get("token", "")
        if not _well_formed(token):
            return message(shown.title, BROKEN_LINK, status=400, error=True)
        csrf_token, cookies = browser.csrf_token(request, state.settings)
        return _form_page(
            name, shown, csrf_token=csrf_token, token=token, errors=[], cookies=cookies
        )

    @post(
        list(ACCOUNT_PAGE_PATHS),
        operation_id="useAccountLink",
        media_type="text/html",
        status_code=200,
    )
    async def use_account_link(
        self, request: Request[Any, Any, State], state: State
    ) -> Response[bytes]:
        """Use the form's ``token`` (and ``new_password``) once: a result page, 200 or 400
        (invalid, used or expired link), 403 (forged form), 409 (the address is taken),
        429/503 (limits). A reset's refused password shows the form again with the rules it
        broke, never the password, and leaves the link usable."""
        form = await read_form(request)
        if not browser.same_site_post(request, state.settings, form):
            return forged_post()
        name, shown = _named(request)
        token = form.get("token", "")
        if not _well_formed(token):
            return message(shown.title, BROKEN_LINK, status=400, error=True)
        return await _submit(request, state, name, shown, form)


async def _submit(
    request: Request[Any, Any, State],
    state: State,
    name: str,
    shown: AccountPage,
    form: dict[str, str],
) -> Response[bytes]:
    """Use a same-site ``form`` whose ``token`` is well formed; the page that answers."""
    token, csrf_token = form["token"], form["csrf_token"]
    new_password = form.get("new_password", "")
    if len(new_password) > MAX_PASSWORD_LENGTH:  # as the JSON route's schema: no work
        errors = ["The password is too long."]
        return _form_page(
            name, shown, csrf_token=csrf_token, token=token, errors=errors, status=400
        )
    try:
        await limit(request, "account_code")
        await _use(name, request, state, token, new_password)
    except InvalidAccountToken:
        return message(
            "Link not valid",
            INVALID_LINK,
            status=400,
            error=True,
            hint="Ask for a new mail in the app.",
        )
    except ValidationFailed as refused:  # the password policy: the rules, not the value
        errors = [f"The password {error.message}." for error in refused.errors]
        return _form_page(
            name, shown, csrf_token=csrf_token, token=token, errors=errors, status=400
        )
    except Conflict as taken:
        return message("Cannot change the address", taken.detail, status=409, error=True)
    except Problem as problem:
        return problem_page(problem)
    return message(shown.done_title, shown.done)


async def _use(
    name: str, request: Request[Any, Any, State], state: State, token: str, new_password: str
) -> None:
    """Call the flow of page ``name`` with the link ``token``, as its JSON route does.

    Raises:
        InvalidAccountToken, ValidationFailed, Conflict, DatabaseUnavailable: as the flows.
    """
    locale = negotiate_locale(request.headers.get("accept-language"))
    ip = client_context(request).ip
    if name == "verify-email":
        await verification.verify(
            state.db, state.settings, link_token=token, code=None, user_id=None, ip=ip
        )
    elif name == "reset-password":
        await recovery.reset_password(
            recovery.ResetProof(token=token),
            new_password,
            db=state.db,
            settings=state.settings,
            hasher=state.password_hasher,
            policy=state.password_policy,
            ender=state.session_ender,
            locale=locale,
            ip=ip,
        )
    elif name == "confirm-email-change":
        await email_change.confirm_change(
            state.db,
            state.settings,
            link_token=token,
            code=None,
            user_id=None,
            locale=locale,
            ip=ip,
        )
    else:
        await email_change.undo_change(
            state.db, state.settings, state.session_ender, link_token=token, locale=locale, ip=ip
        )
