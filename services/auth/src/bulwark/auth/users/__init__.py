"""User accounts: registration and lookup."""
