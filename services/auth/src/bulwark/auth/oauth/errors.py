"""The OAuth error answer (RFC 6749 §5.2, RFC 8628 §3.5), raised by the grants' rules and
rendered by `bulwark.auth.oauth.routes.on_oauth_error`."""

from collections.abc import Mapping


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: ``error`` code, ``description`` for humans, HTTP ``status``,
    and ``headers`` the answer carries besides (a 401's ``WWW-Authenticate``)."""

    def __init__(
        self,
        error: str,
        description: str,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.error, self.description, self.status = error, description, status
        self.headers = dict(headers or {})
