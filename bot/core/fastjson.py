"""JSON on the message path: orjson when it is installed (``pip install sinchbot[speed]``),
else the standard library, with the same results either way.

:func:`dumps` writes compact JSON text with non-ASCII characters kept (what
``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` writes), :func:`loads`
reads text or bytes. Both backends accept and refuse the same values:

- whatever orjson cannot take the standard library's way (an integer beyond 64 bits, a
  string holding a lone surrogate, ``NaN`` in a document) goes to the standard library, so
  it is written or read exactly as without orjson (orjson would read a long integer as a
  float: a document with a run of 19 digits anywhere is read by the standard library);
- datetimes, dataclasses and other types the standard library does not know go to
  ``default`` on both (orjson is told not to write them itself), so a value that is not JSON
  is a ``TypeError`` on both. (orjson still writes a ``uuid.UUID`` as its string.)

The texts can differ in the spelling of floats (``1e-05`` / ``1e-5``), never in the value.
:func:`use` picks the backend (``SINCHBOT_JSON``: ``auto``, ``orjson`` or ``stdlib``); tests
run the message path with both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final, Literal

try:  # the optional `speed` extra
    import orjson
except ImportError:  # pragma: no cover - the stdlib path is tested with use("stdlib")
    orjson = None  # type: ignore[assignment]

__all__ = ["BACKENDS", "Backend", "backend", "dumps", "dumps_bytes", "loads", "use"]

Backend = Literal["orjson", "stdlib"]
BACKENDS: Final[tuple[str, ...]] = ("auto", "orjson", "stdlib")

_LONG_NUMBER: Final = re.compile(r"\d{19}")
_LONG_NUMBER_BYTES: Final = re.compile(rb"\d{19}")
"""19 digits in a row: maybe an integer beyond 64 bits, which orjson reads as a float."""

_stdlib_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_backend: Backend = "orjson" if orjson is not None else "stdlib"
_OPTIONS: Final = (
    (
        orjson.OPT_NON_STR_KEYS  # {1: x} → {"1": x}, as the standard library writes it
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )
    if orjson is not None
    else 0
)


def use(name: str = "auto") -> Backend:
    """Select the backend: ``orjson``, ``stdlib`` or ``auto`` (orjson when installed).
    Returns the one in use. ``ValueError`` for ``orjson`` when it is not installed."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"JSON backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    if name == "orjson" and orjson is None:
        raise ValueError("orjson is not installed (pip install 'sinchbot[speed]')")
    _backend = "orjson" if name != "stdlib" and orjson is not None else "stdlib"
    return _backend


def backend() -> Backend:
    """The backend in use."""
    return _backend


def _stdlib_dumps(value: Any, default: Callable[[Any], Any] | None) -> str:
    if default is None:
        return _stdlib_encoder.encode(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=default)


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """``value`` as compact JSON text, non-ASCII characters as they are. ``TypeError`` (or
    ``ValueError`` for a circular reference) when it is not JSON."""
    if _backend == "orjson":
        try:
            return orjson.dumps(value, default=default, option=_OPTIONS).decode()
        except orjson.JSONEncodeError:
            pass  # beyond orjson (a huge int, a lone surrogate): the standard library decides
    return _stdlib_dumps(value, default)


def dumps_bytes(value: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """:func:`dumps` as UTF-8 bytes (for an HTTP body)."""
    if _backend == "orjson":
        try:
            return bytes(orjson.dumps(value, default=default, option=_OPTIONS))
        except orjson.JSONEncodeError:
            pass
    return _stdlib_dumps(value, default).encode()


def loads(data: str | bytes | bytearray) -> Any:
    """The value of a JSON document. ``ValueError`` (``json.JSONDecodeError``, or
    ``UnicodeDecodeError`` for bytes that are not UTF-8) when it is not one."""
    if _backend == "orjson":
        long = _LONG_NUMBER if isinstance(data, str) else _LONG_NUMBER_BYTES
        if long.search(data) is None:  # type: ignore[arg-type]
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass  # the standard library reads a little more (NaN, lone surrogates), or says why
    return json.loads(data)
