"""The base of every request and response body: camelCase on the wire, unknown fields refused."""

import msgspec


class Schema(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """Base msgspec Struct for API bodies (mass assignment is refused, not stripped)."""
