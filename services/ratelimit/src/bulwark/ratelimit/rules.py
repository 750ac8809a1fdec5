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
no value. The limit is the ``rate_limit`` (or ``backoff``) of the node reached by the last
entry; no node, or a node without either, means the descriptor is not limited.

Per rule options (see docs/ratelimit.md): ``algorithm`` (``sliding_log``, the default;
``sliding_counter``; ``distinct``), ``backoff`` (instead of ``rate_limit``), ``failure_mode``
(``allow``, the default, or ``deny``: the answer when Redis is down or slow),
``shadow_mode`` (decide and log, never deny) and ``normalize: identity``. Values of the keys
in `IDENTITY_KEYS` are always normalised with `normalize_identity`, values of
``remote_address`` with `normalize_address` (an IPv6 client is one /64).

A descriptor whose last entry is ``backoff=reset`` and whose other entries reach a ``backoff``
rule is a reset action on that rule's key; one ending in ``backoff=refund`` that reaches a
``backoff``, ``distinct`` or ``sliding_log`` rule is a refund action (`Match.action`;
docs/ratelimit.md, "Backoff protocol").
"""

import hashlib
import ipaddress
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, cast

import msgspec
import yaml

Entries = Sequence[tuple[str, str]]

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+\Z")]
MAX_WINDOW_SECONDS = 31 * 86400
MAX_REQUESTS = 100_000  # the sliding log keeps one sorted-set member per counted hit
MAX_FAILURES = 1000  # a backoff rule keeps its failures' times in one hash field
IDENTITY_KEYS = frozenset({"email", "identity"})
ADDRESS_KEY = "remote_address"
#: An IPv6 client is limited as its /64: one end site gets a /64 at least (RFC 6177), so
#: rotating addresses inside it must not give fresh buckets.
IPV6_CLIENT_PREFIX = 64
ACTION_KEY = "backoff"
#: Trailing-entry actions: ``backoff=reset`` and ``backoff=refund``.
Action = Literal["reset", "refund"]
_ACTION_KINDS: dict[str, frozenset[str]] = {
    "reset": frozenset({"backoff"}),
    "refund": frozenset({"backoff", "distinct", "sliding_log"}),
}

Algorithm = Literal["sliding_log", "sliding_counter", "distinct"]
FailureMode = Literal["allow", "deny"]


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


class Backoff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``failures`` within ``window_seconds`` start a block of ``block_seconds`` seconds that
    doubles on each repeat up to ``max_block_seconds`` (docs/ratelimit.md, Backoff protocol)."""

    failures: Annotated[int, msgspec.Meta(ge=1, le=MAX_FAILURES)]
    window_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW_SECONDS)]
    block_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW_SECONDS)]
    max_block_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW_SECONDS)]

    def __post_init__(self) -> None:
        """Raises ValueError (a validation error naming the line): max below block."""
        if self.max_block_seconds < self.block_seconds:
            raise ValueError("max_block_seconds must be >= block_seconds")


class DescriptorRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One node of a domain's descriptor tree."""

    key: _Name
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] | None = None
    rate_limit: RateLimit | None = None
    backoff: Backoff | None = None
    algorithm: Algorithm = "sliding_log"
    failure_mode: FailureMode | None = None
    shadow_mode: bool = False
    normalize: Literal["identity"] | None = None
    descriptors: tuple["DescriptorRule", ...] = ()

    def __post_init__(self) -> None:
        """Raises ValueError (reported with the node's line) on contradictory options."""
        if self.rate_limit is not None and self.backoff is not None:
            raise ValueError("a rule has either rate_limit or backoff, not both")
        limited = self.rate_limit is not None or self.backoff is not None
        if not limited and (
            self.failure_mode is not None or self.shadow_mode or self.algorithm != "sliding_log"
        ):
            raise ValueError("algorithm, failure_mode and shadow_mode need a rate_limit or backoff")
        if self.backoff is not None and self.algorithm != "sliding_log":
            raise ValueError("a backoff rule takes no algorithm")


class Policy(NamedTuple):
    """What a matched rule enforces.

    Attributes:
        kind: ``sliding_log``, ``sliding_counter``, ``distinct`` or ``backoff``.
        limit: requests (for backoff: failures) per window; named in responses.
        backoff: the block schedule of a ``backoff`` rule, else None.
        failure_mode: the answer when Redis is down or slow (``allow`` unless configured).
        shadow_mode: decide and log, never deny.
        name: the rule's path in its domain's tree, one ``key`` or ``key=value`` per level,
            e.g. ``endpoint=login/email``: words of the rules file, never a request's values
            (the ``rule`` label of ``bulwark_ratelimit_decisions_total``).
    """

    kind: str
    limit: RateLimit
    backoff: Backoff | None
    failure_mode: FailureMode
    shadow_mode: bool
    name: str = ""


class Match(NamedTuple):
    """A request descriptor resolved against the rules.

    Attributes:
        policy: the rule's `Policy`.
        entries: the descriptor's entries with identity values normalised; for an action,
            without the trailing ``backoff=reset`` or ``backoff=refund`` entry.
        action: None for a descriptor to judge and count; ``reset`` (a ``backoff`` rule's
            key is deleted) or ``refund`` (one counted failure is given back).
    """

    policy: Policy
    entries: list[tuple[str, str]]
    action: Action | None = None


def normalize_address(value: str) -> str:
    """Return the bucket form of a client address: an IPv6 address as its /64 network
    (``"2001:db8::1"`` gives ``"2001:db8::/64"``), an IPv4-mapped IPv6 address as the IPv4
    address, anything else (IPv4, or not an address) unchanged."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return value
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(address)


def normalize_identity(value: str) -> str:
    """Return the bucket form of an identity (e.g. an email): NFKC, trimmed, lower-cased.

    ``" Alice@Example.COM "`` and ``"alice@example.com"`` give the same result; so do
    compatibility forms such as fullwidth letters. The same steps as the auth service's
    account key (``bulwark.auth.users.rules.normalise_email``), and deliberately not
    ``casefold()``: that would put two accounts (``straße@x`` and ``strasse@x``) in one
    bucket, so one could spend or clear the other's login failures.
    """
    return unicodedata.normalize("NFKC", value).strip().lower()


def _policy(rule: DescriptorRule) -> Policy | None:
    failure_mode = rule.failure_mode or "allow"
    if rule.backoff is not None:
        limit = RateLimit(rule.backoff.failures, rule.backoff.window_seconds)
        return Policy("backoff", limit, rule.backoff, failure_mode, rule.shadow_mode)
    if rule.rate_limit is not None:
        return Policy(rule.algorithm, rule.rate_limit, None, failure_mode, rule.shadow_mode)
    return None


class DomainRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The descriptor tree of one domain (``bulwark-auth``, ``bulwark-api``)."""

    domain: _Name
    descriptors: tuple[DescriptorRule, ...]


class _RulesFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    domains: tuple[DomainRules, ...]


class _Node:
    """A descriptor tree level indexed for lookup by ``(key, value)`` then ``(key, None)``."""

    __slots__ = ("children", "normalize", "policy")

    def __init__(self, rules: Sequence[DescriptorRule], where: str) -> None:
        self.policy: Policy | None = None
        self.normalize = False
        self.children: dict[tuple[str, str | None], _Node] = {}
        for rule in rules:
            ident = (rule.key, rule.value)
            label = f"{where} > {rule.key}" + (f"={rule.value}" if rule.value else "")
            if ident in self.children:
                raise RulesError(f"duplicate descriptor {label}")
            child = _Node(rule.descriptors, label)
            policy = _policy(rule)
            name = label.partition(" > ")[2].replace(" > ", "/")  # without the domain
            child.policy = None if policy is None else policy._replace(name=name)
            child.normalize = rule.normalize == "identity"
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
        found = self.resolve(domain, entries)
        return None if found is None or found.action else found.policy.limit

    def resolve(self, domain: str, entries: Entries) -> Match | None:
        """Return the `Match` of one request descriptor, or None when it is not limited.

        Identity values (keys in `IDENTITY_KEYS`, or a rule with ``normalize: identity``) are
        normalised before matching and in `Match.entries`. A trailing ``backoff=reset`` entry
        after a descriptor that reaches a ``backoff`` rule gives a reset `Match`; a trailing
        ``backoff=refund`` after one that reaches a ``backoff`` or ``distinct`` rule, a refund.
        """
        if len(entries) >= 2 and entries[-1][0] == ACTION_KEY and entries[-1][1] in _ACTION_KINDS:
            action = cast("Action", entries[-1][1])
            found = self.resolve(domain, entries[:-1])
            if found is not None and found.policy.kind in _ACTION_KINDS[action]:
                return found._replace(action=action)
            return None
        node = self._domains.get(domain)
        normalized: list[tuple[str, str]] = []
        for key, raw in entries:
            if node is None:
                return None
            value = raw
            if key in IDENTITY_KEYS:
                value = normalize_identity(raw)
            elif key == ADDRESS_KEY:
                value = normalize_address(raw)
            node = node.children.get((key, value)) or node.children.get((key, None))
            if node is not None and node.normalize:
                value = normalize_identity(value)
            normalized.append((key, value))
        if node is None or node.policy is None or not entries:
            return None
        return Match(node.policy, normalized)


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
        line = _line_of(text, str(exc))
        where = f"line {line}: " if line else ""
        raise RulesError(f"{source}: {where}{exc}") from None
    return Rules(parsed.domains, source)


_PATH = re.compile(r"at `\$((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)`")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")


def _line_of(text: str, message: str) -> int | None:
    """The 1-based line of the YAML node a msgspec error names (``- at `$.a[0].b` ``).

    Walks the composed node tree (``yaml.compose`` keeps each node's start mark); for an
    unknown field, the line of that field's key. None when the path cannot be followed.
    """
    path = _PATH.search(message)
    try:
        node: Any = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    steps = [(m.group(1), m.group(2)) for m in _STEP.finditer(path.group(1))] if path else []
    unknown = _UNKNOWN.search(message)
    if unknown:
        steps.append((unknown.group(1), None))
    for name, index in steps:
        if isinstance(node, yaml.SequenceNode) and index is not None:
            if int(index) >= len(node.value):
                return None
            node = node.value[int(index)]
        elif isinstance(node, yaml.MappingNode) and name is not None:
            pairs = [(k, v) for k, v in node.value if k.value == name]
            if not pairs:
                return None
            key_node, value_node = pairs[0]
            node = key_node if unknown and name == unknown.group(1) else value_node
        else:
            return None
    if node is None:
        return None
    return int(node.start_mark.line) + 1


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
    """Return the Redis key of one request descriptor: ``{prefix}{domain}:{{sha256 hex}}``.

    The digest covers a canonical JSON encoding of the domain and every entry, so hostile
    values can neither inject delimiters nor make keys longer than a fixed size. The braces
    make the digest the key's Redis Cluster hash tag: keys derived by appending a suffix stay
    in the bucket's slot (docs/ratelimit.md, "Redis Cluster"); the prefix must hold no ``{``.
    """
    canonical = msgspec.json.encode([domain, [[key, value] for key, value in entries]])
    return f"{prefix}{domain}:{{{hashlib.sha256(canonical).hexdigest()}}}"
