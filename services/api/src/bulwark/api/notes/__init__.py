"""Notes: the example owner-only resource of the API."""
