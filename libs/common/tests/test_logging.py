"""The logging pipeline: one ASCII JSON object per line, redaction of every record (stdlib
ones with arguments and tracebacks included), trace ids, and no raw fallback output."""

import io
import json
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from structlog.stdlib import ProcessorFormatter as Formatter

from bulwark.common import logging as bulwark_logging
from bulwark.common.logging import configure_logging, get_logger, line_logger
from bulwark.common.redaction import REDACTED

pytestmark = pytest.mark.security(stride="R", asvs=("V16.2",))

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
# Every character some reader takes as a line break, or that could spoof a field on screen.
BREAKERS = "\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\u202e"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    saved = sys.excepthook, threading.excepthook
    out = io.StringIO()
    configure_logging("test", stream=out)
    yield out
    sys.excepthook, threading.excepthook = saved
    logging.captureWarnings(capture=False)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    text = stream.getvalue()
    assert text.isascii()
    # str.splitlines breaks at every Unicode line boundary, not only \n.
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.security(stride="T", asvs=("V16.4", "V1.2"))
def test_values_cannot_start_a_line_or_forge_a_field(stream: io.StringIO) -> None:
    forged = f'x{BREAKERS}{{"level":"critical","forged":true}}\n{{"event":"forged"}}'
    get_logger("t").info("login", user_agent=forged, device_id="\u00e9\U0001f600")
    lines = _lines(stream)
    assert len(lines) == 1
    assert lines[0]["user_agent"] == forged  # kept intact, only escaped
    assert lines[0]["device_id"] == "\u00e9\U0001f600"
    assert lines[0]["level"] == "info"
    assert "forged" not in lines[0]


@pytest.mark.security(stride="I", asvs=("V14.2",))
def test_structlog_events_are_redacted(stream: io.StringIO) -> None:
    get_logger("t").info("login", password="p", token=JWT, note=f"sent {JWT}")
    (line,) = _lines(stream)
    assert line["password"] == REDACTED
    assert line["token"] == REDACTED
    assert line["note"] == f"sent {REDACTED}"


@pytest.mark.security(stride="I", asvs=("V14.2",))
def test_stdlib_records_with_arguments_extras_and_tracebacks_are_redacted(
    stream: io.StringIO,
) -> None:
    third_party = logging.getLogger("third.party")
    third_party.warning("sent %s with %r", f"Bearer {JWT}", {"password": "hunter2"})
    third_party.info("extra", extra={"authorization": "Basic dXNlcjpwYXNz"})
    try:
        raise ValueError(f"refresh_token=brt_{'A' * 43} rejected")  # noqa: TRY301
    except ValueError:
        third_party.exception("failed with %s", JWT)
    text = stream.getvalue()
    for secret in (JWT, "hunter2", "dXNlcjpwYXNz", "brt_AAAA"):
        assert secret not in text
    lines = _lines(stream)
    assert len(lines) == 3
    assert lines[1]["authorization"] == REDACTED
    assert "ValueError" in str(lines[2]["exception"])
    assert lines[2]["logger"] == "third.party"


@pytest.mark.security(stride="I", asvs=("V14.2",))
def test_a_record_that_cannot_be_formatted_prints_nothing_of_it(
    stream: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # Handed to our handler directly: pytest's own capture handler would raise first.
    ours = next(h for h in logging.getLogger().handlers if isinstance(h.formatter, Formatter))
    record = logging.makeLogRecord(
        {"name": "broken", "levelno": logging.ERROR, "msg": "two %s %s", "args": ("hunter2",)}
    )
    ours.handle(record)
    captured = capsys.readouterr()
    assert "hunter2" not in captured.err + captured.out + stream.getvalue()
    (line,) = _lines(stream)
    assert line == {"event": "log_record_unwritable", "level": "error", "logger": "broken"}


def test_uncaught_exceptions_and_warnings_go_through_the_pipeline(stream: io.StringIO) -> None:
    try:
        raise RuntimeError(f"startup failed: Bearer {JWT}")  # noqa: TRY301
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated {JWT}", UserWarning, stacklevel=1)
    assert JWT not in stream.getvalue()
    uncaught, warned = _lines(stream)
    assert uncaught["event"] == "uncaught_exception"
    assert uncaught["level"] == "critical"
    assert "RuntimeError" in str(uncaught["exception"])
    assert warned["logger"] == "py.warnings"


def test_lines_carry_the_current_span_ids(stream: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")  # a local SDK provider, not the global one
    get_logger("t").info("outside")
    with tracer.start_as_current_span("request") as span:
        get_logger("t").info("inside")
        logging.getLogger("stdlib").warning("inside too")
    context = span.get_span_context()
    outside, inside, stdlib = _lines(stream)
    assert "trace_id" not in outside
    assert "span_id" not in outside
    for line in (inside, stdlib):
        assert line["trace_id"] == f"{context.trace_id:032x}"
        assert line["span_id"] == f"{context.span_id:016x}"
        assert len(str(line["trace_id"])) == 32
        assert len(str(line["span_id"])) == 16


def test_ids_given_by_the_caller_win(stream: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("later"):
        get_logger("t").info("request", trace_id="a" * 32, span_id="b" * 16)
    (line,) = _lines(stream)
    assert (line["trace_id"], line["span_id"]) == ("a" * 32, "b" * 16)


def test_a_lone_surrogate_does_not_lose_the_event(stream: io.StringIO) -> None:
    """A value decoded with ``surrogateescape`` is not UTF-8; the line is still written,
    with its other fields, redacted."""
    value = b"caf\xe9".decode("utf-8", "surrogateescape")
    get_logger("t").warning("odd_value", value=value, token=JWT, note=f"bearer {JWT}")
    (line,) = _lines(stream)
    assert line["event"] == "odd_value"
    assert line["token"] == REDACTED
    assert JWT not in stream.getvalue()


def test_a_line_logger_writes_what_the_structlog_logger_writes(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The access line's direct path (`line_logger`) keeps every field, the order, the
    context variables, the trace ids and the redaction of the standard path, and skips the
    standard library's handler chain (the point of it)."""
    fields = {"route": "/v1/me", "status": 200, "token": JWT, "note": f"sent {JWT}"}
    tracer = TracerProvider().get_tracer("t")
    emitted: list[str] = []
    emit = logging.StreamHandler.emit

    def counted(handler: Any, record: logging.LogRecord) -> None:
        emitted.append(record.name)
        emit(handler, record)

    # Our handler only: pytest adds stream handlers of its own to the root logger.
    monkeypatch.setattr(bulwark_logging._JsonLineHandler, "emit", counted)
    with (
        structlog.contextvars.bound_contextvars(request_id="r1"),
        tracer.start_as_current_span("s"),
    ):
        get_logger("bulwark.access").info("request", **fields)
        line_logger("bulwark.access").info("request", **fields)
    assert emitted == ["bulwark.access"]  # the structlog line only
    standard, direct = _lines(stream)
    assert list(direct) == list(standard)  # the same fields in the same order
    direct.pop("ts"), standard.pop("ts")  # written a moment apart
    assert direct == standard
    assert direct["token"] == REDACTED
    assert direct["request_id"] == "r1"
    assert len(str(direct["trace_id"])) == 32


def test_a_line_logger_follows_the_level_and_reports_a_failed_write(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    logging.getLogger("bulwark.quiet").setLevel(logging.WARNING)
    try:
        line_logger("bulwark.quiet").info("request", status=200)
    finally:
        logging.getLogger("bulwark.quiet").setLevel(logging.NOTSET)
    assert stream.getvalue() == ""
    monkeypatch.setattr(stream, "write", _failing_once(stream.write))
    line_logger("bulwark.access").info("request", password="hunter2")
    text = stream.getvalue()
    assert "hunter2" not in text
    assert [line["event"] for line in _lines(stream)] == ["log_record_unwritable"]


def _failing_once(write: Callable[[str], int]) -> Callable[[str], int]:
    calls = []

    def failing(text: str) -> int:
        calls.append(text)
        if len(calls) == 1:
            raise OSError("disk full")
        return write(text)

    return failing
