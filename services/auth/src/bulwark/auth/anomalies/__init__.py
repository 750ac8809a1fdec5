"""Anomaly detection at login: a login from a new country after a long inactivity
(docs/anomalies.md). Flags are stored for review and never block the user."""
