"""Structured JSON logging: one JSON object per line on stdout, secrets redacted.

Both structlog loggers and the standard library's (uvicorn, asyncio, grpc) go through the
same processors, so a traceback from a third-party library is redacted and rendered as JSON
like everything else. Control characters in values cannot start a new line: the JSON
renderer escapes them.
"""

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import msgspec
import structlog

from bulwark.common.redaction import redact_event


def _json_dumps(event: dict[str, Any], **_kwargs: Any) -> str:
    return msgspec.json.encode(event, enc_hook=str).decode()


def configure_logging(service: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every log record of this process as redacted JSON lines to ``stream`` (stdout).

    Args:
        service: value of the ``service`` field on every line (``auth``, ``api``, ``ratelimit``).
        level: minimum level name, for example ``INFO`` or ``DEBUG``.
        stream: where lines go; standard output by default.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _add_service(service),
    ]
    final: list[Any] = [
        structlog.processors.format_exc_info,
        redact_event,
        structlog.processors.JSONRenderer(serializer=_json_dumps),
    ]
    handler = logging.StreamHandler(stream or sys.stdout)
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
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


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


def get_logger(name: str | None = None) -> Any:
    """Return a structlog logger bound to ``name`` (usually ``__name__``)."""
    return structlog.get_logger(name)
