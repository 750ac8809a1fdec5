"""The auth service's signing keys, kept in KEYS_DIR (a Kubernetes Secret mount), one JSON
file per key (``files``), moved through ``next`` -> ``active`` -> ``retiring`` -> removed by
the ``bulwark-auth keys`` commands (``lifecycle``), and used and reloaded by the running
service (``signing``). See docs/keys.md for the procedures.

Each key is bound to one ``BULWARK_ENV``: a service refuses keys made for another
environment, so a staging key can never sign production tokens. Exactly one key is
``active`` (it signs); every key in the folder is published in the JWKS (RFC 7517).
Development and test generate an ES256 key on first run; staging and production never do.
"""

from bulwark.auth.keys.files import StoredKey, generate_key, read_keys, write_key
from bulwark.auth.keys.signing import KeyFolder, SigningKeys, load_signing_keys

__all__ = [
    "KeyFolder",
    "SigningKeys",
    "StoredKey",
    "generate_key",
    "load_signing_keys",
    "read_keys",
    "write_key",
]
