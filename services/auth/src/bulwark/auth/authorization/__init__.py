"""The OAuth 2.0 authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636)."""
