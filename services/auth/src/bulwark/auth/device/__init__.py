"""The OAuth 2.0 device authorization grant (RFC 8628)."""
