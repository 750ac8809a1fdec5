"""Rate-limit rules: loading the YAML file and matching request descriptors against it.

The format follows envoyproxy/ratelimit, with windows of any length in seconds::

    domains:
      - domain: bulwark-auth
        descriptors:
          - key: endpoint
            value: login
            descriptors:
              - key: email
                rate_limit: {requests: 5, window_seconds: 900}

A request descriptor is a list of ``(key, value)`` entries. Matching walks the tree one level
per entry; at each level a node whose key *and* value match wins over a node with that key and
no value. The limit is the ``rate_limit`` of the node reached by the last entry; no node, or a
node without ``rate_limit``, means the descriptor is not limited.
"""

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import msgspec
import yaml

Entries = Sequence[tuple[str, str]]

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
MAX_WINDOW_SECONDS = 31 * 86400
MAX_REQUESTS = 100_000  # the sliding log keeps one sorted-set member per counted hit


class RulesError(ValueError):
    """The rules file is unreadable or invalid; the message names the file and the fault."""


class RateLimit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """At most ``requests`` hits in any window of ``window_seconds`` seconds."""

    requests: Annotated[int, msgspec.Meta(ge=1, le=MAX_REQUESTS)]
    window_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW_SECONDS)]

    @property
    def name(self) -> str:
        """Human-readable form, for example ``"5 per 900s"``."""
        return f"{self.requests} per {self.window_seconds}s"


class DescriptorRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One node of a domain's descriptor tree."""

    key: _Name
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] | None = None
    rate_limit: RateLimit | None = None
    descriptors: tuple["DescriptorRule", ...] = ()


class DomainRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The descriptor tree of one domain (``bulwark-auth``, ``bulwark-api``)."""

    domain: _Name
    descriptors: tuple[DescriptorRule, ...]


class _RulesFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    domains: tuple[DomainRules, ...]


class _Node:
    """A descriptor tree level indexed for lookup by ``(key, value)`` then ``(key, None)``."""

    __slots__ = ("children", "rate_limit")

    def __init__(self, rules: Sequence[DescriptorRule], where: str) -> None:
        self.rate_limit: RateLimit | None = None
        self.children: dict[tuple[str, str | None], _Node] = {}
        for rule in rules:
            ident = (rule.key, rule.value)
            label = f"{where} > {rule.key}" + (f"={rule.value}" if rule.value else "")
            if ident in self.children:
                raise RulesError(f"duplicate descriptor {label}")
            child = _Node(rule.descriptors, label)
            child.rate_limit = rule.rate_limit
            self.children[ident] = child


class Rules:
    """Validated rules, ready for matching. Build with `load_rules` or `parse_rules`."""

    def __init__(self, domains: Sequence[DomainRules], source: str = "<rules>") -> None:
        """Index ``domains``.

        Raises:
            RulesError: a domain or a sibling descriptor ``(key, value)`` appears twice.
        """
        self._domains: dict[str, _Node] = {}
        for domain in domains:
            if domain.domain in self._domains:
                raise RulesError(f"{source}: duplicate domain {domain.domain!r}")
            try:
                self._domains[domain.domain] = _Node(domain.descriptors, domain.domain)
            except RulesError as exc:
                raise RulesError(f"{source}: {exc}") from None

    def has_domain(self, domain: str) -> bool:
        """True when ``domain`` is configured."""
        return domain in self._domains

    def match(self, domain: str, entries: Entries) -> RateLimit | None:
        """Return the limit for one request descriptor, or None when it is not limited.

        Args:
            domain: the request's domain; an unknown domain matches nothing.
            entries: the descriptor's ``(key, value)`` pairs, in order.
        """
        node = self._domains.get(domain)
        for key, value in entries:
            if node is None:
                return None
            node = node.children.get((key, value)) or node.children.get((key, None))
        return node.rate_limit if node is not None and entries else None


def parse_rules(text: str, source: str = "<rules>") -> Rules:
    """Parse and validate YAML rules ``text``; ``source`` names it in error messages.

    Raises:
        RulesError: the YAML is malformed, a field is unknown, missing, of the wrong type or
            out of range (the message gives its path, e.g. ``$.domains[0].descriptors[1]``),
            or a domain or sibling descriptor is duplicated.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: invalid YAML: {exc}") from None
    try:
        parsed = msgspec.convert(data, _RulesFile)
    except msgspec.ValidationError as exc:
        raise RulesError(f"{source}: {exc}") from None
    return Rules(parsed.domains, source)


def load_rules(path: Path) -> Rules:
    """Read and validate the YAML rules file at ``path``.

    Raises:
        RulesError: the file cannot be read or is invalid (see `parse_rules`).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read rules: {exc.strerror}") from None
    return parse_rules(text, str(path))


def redis_key(prefix: str, domain: str, entries: Entries) -> str:
    """Return the Redis key of one request descriptor: ``{prefix}{domain}:{sha256 hex}``.

    The digest covers a canonical JSON encoding of the domain and every entry, so hostile
    values can neither inject delimiters nor make keys longer than a fixed size.
    """
    canonical = msgspec.json.encode([domain, [[key, value] for key, value in entries]])
    return f"{prefix}{domain}:{hashlib.sha256(canonical).hexdigest()}"
