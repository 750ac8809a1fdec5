"""Benchmarks that print figures (not pass/fail tests); ``make bench`` runs ``python -m bench``."""
