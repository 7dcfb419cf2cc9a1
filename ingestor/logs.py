"""structlog setup: JSON lines by default, console when on a terminal; secrets scrubbed."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict

_SECRETS: set[str] = set()
REDACTED = "[redacted]"


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line, whatever field it hides in."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _SECRETS:
            if secret in value:
                value = value.replace(secret, REDACTED)
    return value


def _redact(_: Any, __: str, event_dict: EventDict) -> EventDict:
    # Defence in depth: nothing passes a key on purpose, but an exception text might.
    if _SECRETS:
        for key, value in event_dict.items():
            event_dict[key] = _scrub(value)
    return event_dict


def _json(_: Any, __: str, event_dict: EventDict) -> str:
    return orjson.dumps(event_dict, default=str).decode()


def _stdlib_fields(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """A stdlib record (aiohttp, asyncio, alembic) keeps its logger name beside the event."""
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("logger", record.name)
    return event_dict


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Configure structlog, and route stdlib logging (aiohttp's, asyncio's) through the same
    processors, so that every line is one JSON object in JSON mode (a traceback included)."""
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.dev.ConsoleRenderer() if console else _json
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, _redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _stdlib_fields],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
