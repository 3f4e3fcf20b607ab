"""Logging: structlog, JSON in production and readable lines in development, with secrets and
phone numbers redacted before anything is rendered.

Every log line passes :func:`redact`: values of secret-looking keys (authorization, secret,
token, signature, password, api key) are replaced, and anything that looks like a phone
number keeps only its last three digits, wherever it appears in a message or a field.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = re.compile(
    r"(authorization|secret|token|signature|password|passwd|api_?key|credential|cookie)", re.I
)
# A run of 8 to 15 digits, optionally with a leading + (E.164 and national forms).
# Not followed by ".<digit>" or "-<digit>": timestamps (1795710785.245) and Redis stream ids
# (1795710785242-0) are not phone numbers.
_PHONE = re.compile(r"(?<![\w.])(\+?)(\d{5,12})(\d{3})(?!\w|[.-]\d)")
REDACTED = "[redacted]"


def mask_text(text: str) -> str:
    """Mask every phone-number-looking run of digits in ``text`` (keep the last three)."""
    return _PHONE.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if depth > 4:
        return value
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEYS.search(k) else _clean(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [_clean(v, depth + 1) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: drop secrets, mask phone numbers."""
    for key in list(event_dict):
        if _SECRET_KEYS.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _clean(event_dict[key])
    return event_dict


def configure(level: str = "INFO", fmt: str = "console", stream: Any = None) -> None:
    """Set up structlog and the standard library's logging (aiohttp's, httpx's) alike."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Per-request access lines would log callback URLs with tokens; keep them quiet.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
