"""Redaction: secret field names at any depth and secret-looking values anywhere."""

import io
import json
import logging

from bulwark.common.logging import configure_logging, get_logger
from bulwark.common.redaction import REDACTED, redact_text, redact_value

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
REFRESH = "brt_" + "A" * 43


def test_secret_field_names_are_redacted_case_insensitively_at_any_depth() -> None:
    event = {
        "Password": "hunter2",
        "nested": {"refresh_token": "x", "list": [{"Authorization": "y"}], "ok": "kept"},
        "X-Api-Key": "k",
        "card_number": "4111",
        "CVV": "123",
    }
    redacted = redact_value(event)
    assert redacted["Password"] == REDACTED
    assert redacted["nested"]["refresh_token"] == REDACTED
    assert redacted["nested"]["list"][0]["Authorization"] == REDACTED
    assert redacted["nested"]["ok"] == "kept"
    assert redacted["X-Api-Key"] == REDACTED
    assert redacted["card_number"] == REDACTED
    assert redacted["CVV"] == REDACTED


def test_secret_values_are_redacted_wherever_they_appear() -> None:
    text = (
        f"user sent {JWT} and Bearer abc.def and {REFRESH} card 4111 1111 1111 1111 ssn 078-05-1120"
    )
    cleaned = redact_text(text)
    for secret in (JWT, "abc.def", REFRESH, "4111 1111 1111 1111", "078-05-1120"):
        assert secret not in cleaned
    assert "user sent" in cleaned


def test_numbers_that_fail_luhn_are_kept() -> None:
    assert redact_text("order 1234 5678 9012 3456") == "order 1234 5678 9012 3456"


def test_log_lines_are_json_redacted_and_cannot_be_split() -> None:
    stream = io.StringIO()
    configure_logging("test", stream=stream)
    get_logger("t").info("login", email='a@b.c\n{"forged": true}', password="p", token=JWT)
    logging.getLogger("third.party").error("boom", exc_info=ValueError(f"failed with {JWT}"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["password"] == REDACTED
    assert first["token"] == REDACTED
    assert "forged" not in first
    assert JWT not in stream.getvalue()
    assert "ValueError" in second["exception"]
