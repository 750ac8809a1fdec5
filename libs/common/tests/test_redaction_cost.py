"""Redaction costs time linear in its input, whatever the input (issue 9).

Every pattern used to be tried again at each position of a long run it had already scanned
and failed on, so some texts cost quadratic or cubic time: 16 KiB of ``"a-a-a-..."`` took
a minute, 2 KiB of ``"password-password-..."`` nine seconds. Each text below is one such
shape; each must be redacted within a CPU budget that linear work meets 10 times over and
the old patterns missed by orders of magnitude (the budget is CPU time of this process,
so other load on the machine does not count, and SIGPROF stops a runaway match).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from bulwark.common.redaction import REDACTED, redact_text

pytestmark = pytest.mark.security(stride="ID", asvs=("V16.2", "V15.2"))

SIZE = 64 * 1024
BUDGET_SECONDS = 2.0  # linear redaction of 64 KiB takes 0.02-0.2 s


class _OverBudgetError(Exception):
    pass


@contextmanager
def cpu_budget(seconds: float) -> Iterator[None]:
    """Raise `_OverBudgetError` once the block has used ``seconds`` of CPU time."""

    def over(_signum: int, _frame: object) -> None:
        raise _OverBudgetError

    previous = signal.signal(signal.SIGPROF, over)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def _repeat(unit: str) -> Callable[[int], str]:
    return lambda size: (unit * (size // len(unit) + 1))[:size]


ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "jwt starts": _repeat("eyJ"),  # a JWT may start at each: each scanned to the end
    "name runs split by dashes": _repeat("a-"),  # a word boundary at every dash
    "secret names split by dashes": _repeat("password-"),  # cubic before
    "secret names glued": _repeat("password"),
    "secret names with separators": _repeat("api_key "),
    "url schemes": _repeat("a+"),  # a scheme may start after each +
    "url userinfo": lambda size: "a://" + "b" * (size - 4),
    "unclosed lists": _repeat("password=[ "),
    "unclosed quotes": _repeat('password="x '),
    "unclosed escaped quotes": _repeat('password=\\"x '),
    "bearer words": _repeat("bearer "),
    "cookie words": _repeat("cookie "),
    "digit groups then a letter": lambda size: "1 " * (size // 2 - 1) + "1a",
    "dashed digits": _repeat("1-"),
    "card-like groups": _repeat("4111 "),
    "uuid prefixes": _repeat("12345678-1234-1234-1234-"),
    "refresh token prefixes": _repeat("brt_"),
}


@pytest.mark.parametrize("shape", sorted(ADVERSARIAL))
def test_redaction_of_64_kib_of_an_adversarial_shape_is_linear(shape: str) -> None:
    text = ADVERSARIAL[shape](SIZE)
    assert len(text) == SIZE
    started = time.process_time()
    try:
        with cpu_budget(BUDGET_SECONDS):
            redact_text(text)
    except _OverBudgetError:
        pytest.fail(f"redacting 64 KiB of {shape!r} used over {BUDGET_SECONDS} s of CPU")
    assert time.process_time() - started < BUDGET_SECONDS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A value that is not closed is masked to the end (of its line, for a list): it
        # used to be kept, all or after its first character.
        ("password='correct horse", f"password={REDACTED}"),
        ('password="correct horse\nnext', f"password={REDACTED}"),
        ("password=[hunter2, again\nnext", f"password={REDACTED}\nnext"),
        ('{\\"password\\": \\"hunter2 more', f'{{\\"password\\": {REDACTED}'),
        # Matches that start inside a run keep what comes before them.
        ("xx.eyJhbGciOi.eyJzdWIi.c2ln", f"xx.{REDACTED}"),
        ("abceyJhbGciOi.eyJzdWIi.c2ln", f"abc{REDACTED}"),
        ("see 9.pg://u:Hunter2@db", f"see 9.pg://u:{REDACTED}@db"),
        ("x-api-key: abc123", f"x-api-key: {REDACTED}"),
    ],
)
def test_the_linear_patterns_still_mask_what_they_did(text: str, expected: str) -> None:
    assert redact_text(text) == expected
