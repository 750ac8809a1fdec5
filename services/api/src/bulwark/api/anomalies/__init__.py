"""Anomaly detection in the resource API: bursts of requests far above an account's usual
rate, and repeated attempts at other users' notes (docs/anomalies.md). Flags are stored for
review and never block the user."""
