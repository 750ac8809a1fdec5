"""The password policy: which new passwords are refused, and why (docs/passwords.md).

Presets (``PASSWORD_POLICY``):

- ``brief`` (default): 12 to 128 characters with an upper-case letter, a digit and a
  character that is neither a letter nor a digit (the design brief's policy).
- ``nist``: NIST SP 800-63B-4 §3.1.1.2: at least 15 characters (at most 128), no composition
  rules.

Lengths count code points of the NFKC form, which is what `bulwark.auth.passwords` hashes.
Both presets refuse:

- common passwords: the whole password, case-folded, with look-alikes undone (``0``→o,
  ``1``/``i``→l, ``3``→e, ``4``/``@``→a, ``5``/``$``→s, ``7``→t) and up to 8 digits or
  symbols stripped from either end, is a word of zxcvbn's frequency lists (passwords,
  English words, names, film and TV words; shipped in the ``zxcvbn`` package, read offline,
  once), one short or common unit repeated, or a sequence (``abcdef``, ``7890123``). So
  ``P@ssw0rd2024!`` is refused and ``correct horse battery staple`` is not: a passphrase is
  judged as a whole.
- context-specific passwords: one containing, after the same folding, the email's local part
  or one of its words, a word of the display name, or the app's name (``APP_NAME``), each
  of at least 4 characters.
- with ``BREACHED_PASSWORD_CHECK=hibp``, passwords that Have I Been Pwned lists
  (`breached_passwords`); asked only when every offline rule passed.

Messages name the rule, never the password or any part of it (not even the matched word).
"""

import functools
import itertools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from bulwark.auth.users.breached_passwords import BreachCheckUnavailable, PwnedPasswordsRange
from bulwark.common.logging import get_logger
from bulwark.common.problems import FieldError, ServiceUnavailable, ValidationFailed

PresetName = Literal["brief", "nist"]
UnreachableAnswer = Literal["allow", "deny"]
MAX_LENGTH = 128
#: Most digits and symbols stripped from each end before the list lookup.
MAX_STRIPPED = 8
#: Shortest email, display-name or app-name word that a password may not contain, and
#: shortest stripped core looked up in the lists.
MIN_WORD = 4
#: A password that is one unit repeated is refused when the unit is shorter than this.
MIN_REPEATED_UNIT = 5

COMMON = (
    "must not be a common password, word, repeat or sequence, even disguised with "
    "look-alike characters or added digits and symbols"
)
CONTAINS_EMAIL = "must not contain the email address or a part of it"
CONTAINS_NAME = "must not contain a word of the display name"
CONTAINS_APP_NAME = "must not contain the app's name"
BREACHED = "appears in a known data breach; choose another password"

#: Look-alikes undone before comparing; ``i`` and ``1`` both become ``l``, so one form
#: covers ``1``→l and ``1``→i.
_LOOK_ALIKES = str.maketrans(
    {"0": "o", "1": "l", "i": "l", "3": "e", "4": "a", "@": "a", "5": "s", "$": "s", "7": "t"}
)
_WORD_SEPARATORS = re.compile(r"[\W_]+")
_log = get_logger(__name__)


@dataclass(frozen=True)
class Preset:
    """A preset's length floor (code points after NFKC) and whether composition rules
    (upper-case letter, digit, other character) apply."""

    min_length: int
    composition: bool


PRESETS: dict[PresetName, Preset] = {
    "brief": Preset(min_length=12, composition=True),
    "nist": Preset(min_length=15, composition=False),
}


class PasswordCheckUnavailable(ServiceUnavailable):
    """503 with ``Retry-After``: the breached-password check could not be made and
    ``BREACHED_PASSWORD_UNREACHABLE=deny``."""

    def __init__(self) -> None:
        super().__init__("Passwords cannot be checked right now; retry shortly.")


def _fold(text: str) -> str:
    """NFKC, case-folded, look-alikes undone: the form every comparison is made in."""
    return unicodedata.normalize("NFKC", text).casefold().translate(_LOOK_ALIKES)


@functools.cache
def common_words() -> frozenset[str]:
    """Every word of zxcvbn's frequency lists in `_fold` form (about 94,000), read once."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # noqa: PLC0415  # lazy: 3 MB

    return frozenset(_fold(word) for words in FREQUENCY_LISTS.values() for word in words)


def _cores(casefolded: str) -> set[str]:
    """``casefolded`` and each of its forms with 0 to `MAX_STRIPPED` non-letters stripped
    from either end; stripped forms shorter than `MIN_WORD` are left out."""
    letters = [index for index, char in enumerate(casefolded) if char.isalpha()]
    if not letters:
        return {casefolded}
    first, end = letters[0], letters[-1] + 1
    cores = {casefolded}
    for start in range(min(first, MAX_STRIPPED) + 1):
        for stop in range(len(casefolded), max(end, len(casefolded) - MAX_STRIPPED) - 1, -1):
            core = casefolded[start:stop]
            if len(core) >= MIN_WORD:
                cores.add(core)
    return cores


def _repeated_unit(text: str) -> str | None:
    """The shortest unit whose repetition (at least twice) makes ``text``, or None."""
    period = (text + text).find(text, 1)
    return text[:period] if 0 < period < len(text) else None


def _is_sequence(text: str) -> bool:
    """Whether ``text`` (at least `MIN_WORD` characters) runs up or down one code point at
    a time, digits wrapping around (``abcdef``, ``9876``, ``7890123``)."""
    if len(text) < MIN_WORD:
        return False
    steps = {
        (ord(b) - ord(a)) % 10 if a.isdecimal() and b.isdecimal() else ord(b) - ord(a)
        for a, b in itertools.pairwise(text)
    }
    return steps in ({1}, {-1}, {9})


def is_common(password: str) -> bool:
    """Whether ``password`` is a common password or word in disguise, a repeat or a
    sequence (see the module)."""
    words = common_words()
    for core in _cores(unicodedata.normalize("NFKC", password).casefold()):
        folded = _fold(core)
        unit = _repeated_unit(folded)
        if (
            folded in words
            or _is_sequence(core)
            or (unit is not None and (len(unit) < MIN_REPEATED_UNIT or unit in words))
        ):
            return True
    return False


def _words(value: str) -> set[str]:
    """``value`` and its words, folded, each of at least `MIN_WORD` characters."""
    normalised = unicodedata.normalize("NFKC", value).casefold().strip()
    candidates = {normalised, *_WORD_SEPARATORS.split(normalised)}
    return {_fold(word) for word in candidates if len(word) >= MIN_WORD}


def context_problems(password: str, *, email: str, display_name: str, app_name: str) -> list[str]:
    """The context rules ``password`` breaks: it contains the email's local part (or a word
    of it), a word of the display name, or the app's name."""
    folded = _fold(password)
    local_part = email.rpartition("@")[0] if "@" in email else email
    problems = []
    for words, message in (
        (_words(local_part), CONTAINS_EMAIL),
        (_words(display_name), CONTAINS_NAME),
        (_words(app_name), CONTAINS_APP_NAME),
    ):
        if any(word in folded for word in words):
            problems.append(message)
    return problems


def offline_problems(
    password: str, preset: Preset, *, email: str, display_name: str, app_name: str
) -> list[str]:
    """Every rule of ``preset``, the common list and the context rules that ``password``
    breaks, without any I/O."""
    normalised = unicodedata.normalize("NFKC", password)
    problems = []
    if not preset.min_length <= len(normalised) <= MAX_LENGTH:
        problems.append(f"must be {preset.min_length} to {MAX_LENGTH} characters")
    if preset.composition:
        if not any(char.isupper() for char in normalised):
            problems.append("must contain an upper-case letter")
        if not any(char.isdecimal() for char in normalised):
            problems.append("must contain a digit")
        if all(char.isalnum() for char in normalised):
            problems.append("must contain a character that is neither a letter nor a digit")
    if is_common(normalised):
        problems.append(COMMON)
    problems += context_problems(
        normalised, email=email, display_name=display_name, app_name=app_name
    )
    return problems


class PasswordPolicy:
    """The policy new passwords are held to (registration, reset, change).

    Args:
        preset: ``brief`` or ``nist`` (`PRESETS`).
        app_name: the app's name, refused inside passwords.
        breached: the range API client when ``BREACHED_PASSWORD_CHECK=hibp``, else None;
            the policy owns it and closes it in `aclose`.
        unreachable: when ``breached`` gives no answer: ``allow`` (accept the password, log
            ``breached_password_check_unavailable``) or ``deny`` (`PasswordCheckUnavailable`).
    """

    def __init__(
        self,
        preset: PresetName = "brief",
        *,
        app_name: str = "Bulwark",
        breached: PwnedPasswordsRange | None = None,
        unreachable: UnreachableAnswer = "allow",
    ) -> None:
        common_words()  # read the lists now (about 0.15 s, once per process), not mid-request
        self._preset = PRESETS[preset]
        self._app_name = app_name
        self._breached = breached
        self._unreachable = unreachable

    async def problems(self, password: str, *, email: str, display_name: str) -> list[str]:
        """Every rule ``password`` breaks, as messages naming the rule (``[]``: acceptable).
        The breach check runs only when no offline rule is broken.

        Raises:
            PasswordCheckUnavailable: the breach check could not be made and the answer
                is ``deny`` (503).
        """
        problems = offline_problems(
            password,
            self._preset,
            email=email,
            display_name=display_name,
            app_name=self._app_name,
        )
        if problems or self._breached is None:
            return problems
        try:
            seen = await self._breached.times_seen(password)
        except BreachCheckUnavailable as exc:
            _log.warning(
                "breached_password_check_unavailable", reason=exc.reason, answer=self._unreachable
            )
            if self._unreachable == "deny":
                raise PasswordCheckUnavailable from None
            return []
        return [BREACHED] if seen > 0 else []

    async def check(
        self, password: str, *, email: str, display_name: str, field: str = "password"
    ) -> None:
        """Refuse ``password`` unless it meets every rule.

        Raises:
            ValidationFailed: one `FieldError` on ``field`` per broken rule (400).
            PasswordCheckUnavailable: as in `problems` (503).
        """
        problems = await self.problems(password, email=email, display_name=display_name)
        if problems:
            raise ValidationFailed([FieldError(field, problem) for problem in problems])

    async def aclose(self) -> None:
        """Close the range API client, if any."""
        if self._breached is not None:
            await self._breached.aclose()
