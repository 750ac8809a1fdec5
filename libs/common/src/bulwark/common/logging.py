"""Structured JSON logging: one JSON object per line on stdout, secrets redacted.

Both structlog loggers and the standard library's (uvicorn, asyncio, grpc) go through the
same processors, so a traceback from a third-party library is redacted and rendered as JSON
like everything else; so are uncaught exceptions (``sys.excepthook``, threads) and warnings.
A line is pure ASCII: control characters, and every non-ASCII character (U+2028, U+2029,
NEL, bidirectional overrides ...) are written as JSON ``\\uXXXX`` escapes, so no value can
start a new line for any reader (``jq``, ``str.splitlines``, a terminal) or forge a field.
The schema of the lines is in docs/logs.md.

Lines written on every request (the HTTP access line, the rate limiter's per-call line) go
through `line_logger`: the same processors and the same output, written straight to the
handler's stream, without the standard library's ``LogRecord``, ``Formatter`` and handler
chain, which took about a fifth of an empty request's time (docs/benchmarks.md).
"""

import json
import logging
import re
import sys
import threading
import types
from collections.abc import MutableMapping
from typing import Any, TextIO

import msgspec
import structlog
from opentelemetry import trace

from bulwark.common.redaction import redact_event

_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, as JSON requires
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def render_json_line(event: dict[str, Any], **_kwargs: Any) -> str:
    """``event`` as one line of ASCII JSON (non-ASCII characters as ``\\uXXXX`` escapes).

    Only non-ASCII characters inside JSON strings are rewritten (the rest of the document is
    ASCII), so the line stays valid JSON with the same meaning.
    """
    try:
        line = msgspec.json.encode(event, enc_hook=str).decode()
    except UnicodeEncodeError:
        # A lone surrogate (from a bytes value decoded with surrogateescape, say) is not
        # UTF-8: the standard library writes it as a \udXXX escape instead of losing the event.
        return json.dumps(event, default=str, ensure_ascii=True)
    return line if line.isascii() else _NON_ASCII.sub(_escape, line)


def current_trace_ids() -> dict[str, str]:
    """``{"trace_id": 32 lower-case hex, "span_id": 16 hex}`` of the current OpenTelemetry
    span (the W3C Trace Context forms), or ``{}`` when there is no valid current span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


def add_trace_context(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: add `current_trace_ids` to the event.

    Ids the caller put in the event (say, the span of a request that has already ended) are
    kept.
    """
    if "trace_id" not in event_dict:
        event_dict.update(current_trace_ids())
    return event_dict


class _JsonLineHandler(logging.StreamHandler):  # type: ignore[type-arg]  # TextIO stream
    """A stream handler whose failures never print the record.

    The standard ``Handler.handleError`` prints the traceback and the record's message and
    arguments, unredacted, to stderr; this one writes a fixed JSON line instead.
    """

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802  # stdlib name
        """Write ``{"event": "log_record_unwritable", ...}`` naming only the logger."""
        try:
            self.stream.write(
                render_json_line(
                    {"event": "log_record_unwritable", "level": "error", "logger": record.name}
                )
                + self.terminator
            )
            self.flush()
        except Exception:  # noqa: BLE001, S110  # nowhere left to report to
            pass


def configure_logging(service: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every log record of this process as redacted JSON lines to ``stream`` (stdout).

    Also routes uncaught exceptions (main thread and other threads) and ``warnings`` through
    the same pipeline.

    Args:
        service: value of the ``service`` field on every line (``auth``, ``api``, ``ratelimit``).
        level: minimum level name, for example ``INFO`` or ``DEBUG``.
        stream: where lines go; standard output by default.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _add_service(service),
        add_trace_context,
    ]
    final: list[Any] = [
        structlog.processors.format_exc_info,
        redact_event,
        structlog.processors.JSONRenderer(serializer=render_json_line),
    ]
    handler = _JsonLineHandler(stream or sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _drop_color_message,
                *final,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    global _direct  # noqa: PLW0603  # one configuration per process, as the root handler
    _direct = _DirectLines(handler, [*shared, *final])
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(capture=True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    structlog.configure(
        # filter_by_level first: an event below the level costs no processing at all.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _log_uncaught(
    exc_type: type[BaseException],
    exc: BaseException,
    traceback: types.TracebackType | None,
) -> None:
    logging.getLogger("bulwark.uncaught").critical(
        "uncaught_exception", exc_info=(exc_type, exc, traceback)
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def _add_service(service: str) -> Any:
    def processor(_logger: object, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return processor


def _drop_color_message(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """uvicorn adds an ANSI-coloured copy of each message; JSON lines do not need it."""
    event.pop("color_message", None)
    return event


class _DirectLines:
    """Where `LineLogger` writes: the configured handler's stream, through the configured
    processors (the standard library path's, minus its own bookkeeping)."""

    def __init__(self, handler: _JsonLineHandler, processors: list[Any]) -> None:
        self.handler = handler
        self.processors = processors

    def write(self, logger: logging.Logger, method: str, event_dict: dict[str, Any]) -> None:
        """Run the processors over ``event_dict`` and write its line (a failure writes
        ``log_record_unwritable``, as the handler does)."""
        handler = self.handler
        try:
            line: Any = event_dict
            for processor in self.processors:  # the last one renders the line
                line = processor(logger, method, line)
            line += handler.terminator
            with handler.lock:  # type: ignore[union-attr]  # a StreamHandler has its lock
                handler.stream.write(line)
                handler.stream.flush()
        except Exception:  # noqa: BLE001  # as logging.Handler.emit: never raise to the caller
            with handler.lock:  # type: ignore[union-attr]  # its line, whole, as any other
                handler.handleError(logging.makeLogRecord({"name": logger.name}))


_direct: _DirectLines | None = None


class LineLogger:
    """A logger for the lines written on every request or call: ``info(event, **fields)``
    writes the same JSON line as ``get_logger(name).info(event, **fields)`` would (same
    processors: context variables, level, logger name, ``ts``, service, trace ids,
    redaction), straight to the stream `configure_logging` set up. Levels follow the standard
    library's logger ``name``. Before `configure_logging` runs, it hands the event to the
    structlog logger instead.
    """

    def __init__(self, name: str) -> None:
        """Lines carry ``"logger": name``."""
        self._stdlib = logging.getLogger(name)
        self._fallback = structlog.get_logger(name)

    def info(self, event: str, **fields: Any) -> None:
        """Write ``event`` with ``fields`` at INFO, when INFO is enabled for this logger."""
        direct = _direct
        if direct is None:
            self._fallback.info(event, **fields)
        elif self._stdlib.isEnabledFor(logging.INFO):
            fields["event"] = event
            direct.write(self._stdlib, "info", fields)


def line_logger(name: str) -> LineLogger:
    """A `LineLogger` named ``name`` (usually ``"bulwark.access"``)."""
    return LineLogger(name)


def get_logger(name: str | None = None) -> Any:
    """Return a structlog logger bound to ``name`` (usually ``__name__``)."""
    return structlog.get_logger(name)
