"""Rate-limit rules for benchmarks and tests: the packaged rules with some limits raised.

Deriving them from the packaged ``rules.yaml`` keeps every other rule (per-email login
limits, backoff) exactly as shipped, instead of a copy that drifts.
"""

import importlib.resources
from typing import Any

import yaml

#: The request count used for a raised limit (the limiter's sliding log stays exact).
RAISED = 100_000


def _raise(node: dict[str, Any], keys: frozenset[str], inside: bool) -> None:
    limit = node.get("rate_limit")
    if (inside or node.get("key") in keys) and isinstance(limit, dict):
        limit["requests"] = RAISED
    for child in node.get("descriptors", []):
        _raise(child, keys, inside)


def packaged_rules_with_raised_limits(
    *, keys: frozenset[str] = frozenset(), domains: frozenset[str] = frozenset()
) -> str:
    """The packaged rules as YAML text, with the ``rate_limit`` of every descriptor keyed by
    one of ``keys`` (for example ``remote_address``), and of every rule in ``domains``,
    raised to `RAISED` requests per window. Backoff and distinct rules are left as they are.
    """
    source = importlib.resources.files("bulwark.ratelimit").joinpath("rules.yaml")
    document: dict[str, Any] = yaml.safe_load(source.read_text())
    for domain in document["domains"]:
        for descriptor in domain["descriptors"]:
            _raise(descriptor, keys, domain["domain"] in domains)
    return yaml.safe_dump(document, sort_keys=False)
