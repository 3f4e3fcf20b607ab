"""The provider's call limit, scaled: at most ``calls`` provider API calls in any ``period``
seconds per connection, 429 past it.

The connector allows 100 calls per 60 s; a benchmark or a test gives smaller numbers (20
calls per 2 s) so that a throttled backlog drains in seconds. A connection is an API key and
its ``Account`` header (a sub-account), as the gateway's own throttle counts it. Every
authenticated provider call counts, when it arrives, whatever it asks for; a call refused
with 429 does not take a place in the window (an assumption: the provider does not document
it). The answer past the limit is the provider's 429 ``{"message": "Too many requests"}``
with ``Retry-After``: the seconds, to the millisecond and rounded up, until the oldest call
in the window leaves it.

The window is not scaled by :attr:`~bot.sandbox.config.SandboxConfig.time_scale` (give the
scaled numbers themselves), and :meth:`Sandbox.reset` does not clear it: the calls were
made, and the limit is about time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["CallThrottle", "parse_throttle"]


class CallThrottle:
    """A sliding-window log of call arrivals per connection.

    ``admit(connection)`` records a call and returns 0.0 when it fits in the window, else
    the seconds until a place frees (nothing recorded). :attr:`admitted` and
    :attr:`refused` count the calls so far.
    """

    def __init__(
        self, calls: int, period: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if calls < 1 or not period > 0 or not math.isfinite(period):
            raise ValueError("a throttle needs at least 1 call per a positive, finite period")
        self.calls = calls
        self.period = period
        self._clock = clock
        self._log: dict[str, deque[float]] = {}
        self.admitted = 0
        self.refused = 0

    def admit(self, connection: str) -> float:
        now = self._clock()
        log = self._log.setdefault(connection, deque())
        horizon = now - self.period
        while log and log[0] <= horizon:
            log.popleft()
        if len(log) < self.calls:
            log.append(now)
            self.admitted += 1
            return 0.0
        self.refused += 1
        return max(0.001, math.ceil((log[0] - horizon) * 1000) / 1000)


def parse_throttle(value: str) -> tuple[int, float]:
    """``"CALLS/SECONDS"`` (``"20/2"``, ``"100/60"``) → ``(calls, seconds)``.

    Raises:
        ValueError: not two positive numbers, the first an integer.
    """
    calls, slash, seconds = value.partition("/")
    try:
        parsed = (int(calls), float(seconds))
    except ValueError:
        parsed = (0, 0.0)
    if not slash or parsed[0] < 1 or not parsed[1] > 0 or not math.isfinite(parsed[1]):
        raise ValueError(f"{value!r} is not CALLS/SECONDS (e.g. 20/2): calls ≥ 1, seconds > 0")
    return parsed
