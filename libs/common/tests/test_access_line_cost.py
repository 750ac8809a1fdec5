"""The access line's User-Agent costs bounded work, and still leaks no secret (issue 9).

The header may be as long as the server's head limit (16 KiB); the line keeps 256
characters. Redacting the whole header before cutting it cost 0.33 s per MiB on every
request (and minutes on some texts before redaction was linear); now only a window of 384
characters is redacted, and a whitespace-free token cut by the window is dropped first.
"""

from __future__ import annotations

import pytest

from bulwark.common import http
from bulwark.common.http import logged_user_agent
from bulwark.common.redaction import REDACTED

pytestmark = pytest.mark.security(stride="I", asvs=("V16.2",))

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlX3g"


@pytest.mark.security(stride="D", asvs=("V15.2",))
@pytest.mark.parametrize("length", [300, 16 * 1024, 1024 * 1024])
def test_the_user_agent_is_redacted_in_a_bounded_window(
    monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    redacted: list[int] = []
    real = http.redact_text

    def counting(text: str) -> str:
        redacted.append(len(text))
        return real(text)

    monkeypatch.setattr(http, "redact_text", counting)
    agent = ("Mozilla/5.0 (iPhone; a-b-c-d) " * (length // 30 + 1))[:length]
    logged = logged_user_agent(agent)
    assert logged is not None
    assert len(logged) == 256
    assert logged == agent[:256]
    assert sum(redacted) <= 384


@pytest.mark.parametrize(
    ("agent", "secret"),
    [
        # Starts before the 256 cut, runs past the 384 window: dropped whole.
        ("A" * 200 + " " + JWT * 10, "eyJhbGci"),
        ("A" * 200 + " Bearer " + "t" * 400, "tttt"),
        ("A" * 200 + " token=" + "s" * 400, "ssss"),
        ("A" * 250 + " brt_" + "r" * 400, "brt_rrrr"),
        # Across the 256 cut but inside the window: seen whole, so masked.
        ("C" * 241 + " 4012 8888 8888 1881 " + "x" * 400, "4012"),
        ("C" * 241 + " " + JWT + " " + "x" * 400, "eyJhbGci"),
        ("C" * 250 + " 078-05-1120 " + "x" * 400, "078"),
    ],
)
def test_no_secret_crosses_the_cut(agent: str, secret: str) -> None:
    logged = logged_user_agent(agent)
    assert logged is not None
    assert secret not in logged


def test_a_short_user_agent_is_redacted_whole() -> None:
    assert logged_user_agent(f"App/1.0 {JWT}") == f"App/1.0 {REDACTED}"
    assert logged_user_agent(None) is None
    assert logged_user_agent("") is None


def test_a_long_token_cut_by_the_window_is_dropped_not_kept_in_part() -> None:
    logged = logged_user_agent("App/1.0 " + "x" * 1000)
    assert logged == "App/1.0"
