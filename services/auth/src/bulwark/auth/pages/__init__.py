"""The HTML pages where users sign in and approve OAuth clients."""
