"""The OAuth 2.0 surface: token endpoint, revocation, JWKS and server metadata."""
