"""Loads tests/security_report.py for every run: the ``security`` marker's checks (a bad mark
stops collection) and the ``--security-report`` option (``make security-report``)."""

pytest_plugins = ["tests.security_report"]
