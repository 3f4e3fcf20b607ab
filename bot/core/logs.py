"""Logging: structlog, JSON in production and readable lines in development, with secrets and
phone numbers redacted before anything is rendered.

Every log line passes :func:`redact`, whatever logged it (structlog or the standard library,
aiohttp's and httpx's loggers included):

- values of secret-looking keys (authorization, secret, token, signature, password, api
  key...) are replaced by ``[redacted]``;
- the configured secret values themselves (:func:`add_secret`: the gateway registers its API
  key and secret, webhook secret, API token and forward secret) are replaced wherever they
  appear, and so are ``?token=``-style query parameters, passwords in URLs
  (``redis://:pw@host``) and ``Bearer``/``Basic`` credentials inside any text;
- anything that looks like a phone number keeps only its last three digits
  (``+********156``), in messages, fields, keys, nested values and tracebacks alike.

No line carries a raw control character from a payload: JSON escapes them all; the console
format writes them as escapes (``\x00``, ``\x1b``, ``\n``, ``\u2028``...,
:func:`escape_controls`) in the event text and every value, so a message can neither end a
line, forge one nor send terminal escapes. Only a traceback keeps its line breaks, its lines
indented under the line they belong to.

Context: whatever is bound with :mod:`structlog.contextvars` is merged into every line (the
inbox binds the conversation, partition and event ids while it handles an event, so the
engine's, the plugins' and the provider client's lines carry them too). Bind context with
``structlog.contextvars.bound_contextvars(...)``, which restores the previous values on exit.

A hot path that would bind many fields per item, and log a line for few of them, uses
:class:`LazyContext` instead: its fields are computed only when a line is logged, and
whatever the code inside binds with :mod:`structlog.contextvars` is dropped on exit.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from types import TracebackType
from typing import Any

import structlog

__all__ = [
    "REDACTED",
    "LazyContext",
    "add_secret",
    "configure",
    "escape_controls",
    "forget_secrets",
    "mask_text",
    "merge_lazy_context",
    "redact",
    "scrub",
]

_SECRET_KEYS = re.compile(
    r"(authorization|secret|token|signature|password|passwd|api_?key|credential|cookie)", re.I
)
# A run of 8 to 15 digits, optionally after a + (or its URL encoding %2B): E.164 and national
# forms. Not followed by ".<digit>" or "-<digit>": timestamps (1795710785.245) and Redis stream
# ids (1795710785242-0) are not phone numbers.
_PHONE = re.compile(r"((?<![\w.])\+?|%2[Bb])(\d{5,12})(\d{3})(?!\w|[.-]\d)")
# Credentials inside free text: a URL's ?token=... (and friends), an Authorization value.
_QUERY_SECRET = re.compile(
    r"([?&;](?:token|secret|signature|sig|password|api_?key|access_token)=)[^&\s\"'#]+", re.I
)
_AUTH_VALUE = re.compile(r"\b(Bearer|Basic|HMAC) +[A-Za-z0-9._~+/=:-]{6,}")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", re.I)
REDACTED = "[redacted]"
# C0 controls (newline and tab included), DEL, C1 controls, the Unicode line and paragraph
# separators, and lone surrogates (bytes that were not UTF-8).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED_CONTROLS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTINUATION = "  "
"""Indent of a console line's continuation lines (a traceback)."""

_FORMATTER_KEYS = frozenset({"_record", "_from_structlog"})
"""The standard library formatter's own entries (removed before rendering)."""
_MIN_SECRET = 6
"""Shorter values are not scrubbed as secrets (they would match ordinary words)."""
_secrets: set[str] = set()


def add_secret(*values: str | None) -> None:
    """Never log these values: every occurrence in any rendered line becomes
    ``[redacted]`` (values shorter than 6 characters are ignored)."""
    for value in values:
        if value and len(value) >= _MIN_SECRET:
            _secrets.add(value)


def forget_secrets() -> None:
    """Forget the values given to :func:`add_secret` (for tests)."""
    _secrets.clear()


def mask_text(text: str) -> str:
    """Mask every phone-number-looking run of digits in ``text`` (keep the last three)."""
    return _PHONE.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)


def scrub(text: str) -> str:
    """``text`` as it may be logged: known secrets, credentials in URLs and headers
    removed, phone numbers masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    text = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", text)
    return mask_text(text)


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with each control character written as its escape, as ``repr`` writes it
    (``\\n``, ``\\x00``, ``\\x1b``, ``\\u2028``, ``\\udcff``); with ``keep_newlines``,
    ``\\n`` stays a line break."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if keep_newlines and char == "\n":
            return char
        code = ord(char)
        return _NAMED_CONTROLS.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")

    return _CONTROL.sub(escape, text)


def _escape_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor (console format): the event text on one line, escaped."""
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = escape_controls(event)
    return event_dict


class _ConsoleRenderer:
    """structlog's console renderer, then every control character left in the line escaped
    (the renderer leaves values without spaces, quotes or newlines unquoted, NUL and escape
    sequences included) but the line breaks of a traceback, whose lines are indented: only a
    line of its own starts at the first column, so an exception's message cannot forge one."""

    def __init__(self) -> None:
        self._render = structlog.dev.ConsoleRenderer(colors=False)

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        text = escape_controls(str(self._render(logger, name, event_dict)), keep_newlines=True)
        return text.rstrip("\n").replace("\n", "\n" + _CONTINUATION)


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes | bytearray):
        return scrub(bytes(value).decode("utf-8", "replace"))
    if depth > 4:
        return scrub(str(value))
    if isinstance(value, Mapping):
        return {
            (_clean(k, depth + 1) if isinstance(k, str) else k): (
                REDACTED if isinstance(k, str) and _SECRET_KEYS.search(k) else _clean(v, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    # Anything else (a model, an exception, a path...) would be rendered with its repr,
    # unredacted: render it here.
    return scrub(str(value))


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: drop secrets, mask phone numbers."""
    for key in list(event_dict):
        if key in _FORMATTER_KEYS:
            continue
        if _SECRET_KEYS.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _clean(event_dict[key])
    return event_dict


_LAZY: contextvars.ContextVar[Callable[[], Mapping[str, Any]] | None] = contextvars.ContextVar(
    "sinchbot_lazy_log_context", default=None
)


class LazyContext:
    """``with LazyContext(fields, base):`` adds ``fields()`` to every log line logged inside
    (computed when a line is logged, not before: nothing is spent on the items that log
    nothing), as :mod:`structlog.contextvars` would; a field bound there or given to the
    call wins. On exit the context is as it was: if the code inside bound anything with
    :mod:`structlog.contextvars` (or changed any other context variable), the structlog
    context is cleared and ``base`` bound again.

    ``structlog.contextvars.get_contextvars()`` does not show ``fields``; the lines do.
    """

    __slots__ = ("_base", "_before", "_fields", "_token")

    def __init__(self, fields: Callable[[], Mapping[str, Any]], base: Mapping[str, Any]) -> None:
        self._fields = fields
        self._base = base

    def __enter__(self) -> None:
        self._before = contextvars.copy_context()
        self._token = _LAZY.set(self._fields)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _LAZY.reset(self._token)
        before = self._before
        after = contextvars.copy_context()
        if len(after) != len(before) or any(
            before.get(var, _LAZY) is not value for var, value in after.items()
        ):
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(**self._base)


def merge_lazy_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The processor adding the fields of the :class:`LazyContext` in force, if any."""
    fields = _LAZY.get()
    if fields is not None:
        for key, value in fields().items():
            event_dict.setdefault(key, value)
    return event_dict


def configure(
    level: str = "INFO", fmt: str = "console", stream: Any = None, *, cache: bool = False
) -> None:
    """Set up structlog and the standard library's logging (aiohttp's, httpx's) alike:
    ``fmt`` ``json`` (one object per line, for production) or ``console`` (readable lines,
    for development).

    ``cache``: each module's logger keeps this configuration once it is first used, so a
    call below ``level`` costs nothing and the others skip rebuilding the logger (for a
    process configured once, as ``sinchbot serve``; every line is still redacted). Off,
    loggers follow a later ``configure`` and ``structlog.testing.capture_logs`` (the
    tests').
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        merge_lazy_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: Any = structlog.processors.JSONRenderer()  # escapes every control character
    if fmt != "json":
        shared.append(_escape_event)
        renderer = _ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=cache,
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
