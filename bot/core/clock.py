"""The one clock: every part of the gateway that needs "now" takes a :data:`Clock` (tests and
the plugin kit pass a fake one) and defaults to :func:`utc_now`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utc_now"]

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware."""


def utc_now() -> datetime:
    """The current time, aware, in UTC (the default :data:`Clock`)."""
    return datetime.now(UTC)
