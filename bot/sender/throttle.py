"""The provider-call throttle shared by every sinchbot process: at most ``calls`` calls in any
``period`` seconds, per provider connection (the connector allows 100 calls per 60 s).

One Lua script keeps a sliding-window log of calls in a Redis sorted set, using Redis's own
clock, so processes on different machines agree. The provider counts a call when it
*arrives*, which is some time after we take it and before its answer comes back. So a call
is logged from the moment it is taken as *in flight* (its score: now + ``in_flight``, a bound
on how long a call can take), and when its answer comes back (:meth:`Throttle.release`) its
score becomes that moment: a call counts until one ``period`` after its answer. Whenever a
call is allowed, every call that can have arrived in the last ``period`` is still counted,
so no window of the provider's sees more than ``calls`` of ours, however late a call
arrives; and a backlog still uses the limit to its last call (each call holds its place for
the period plus its own duration, not a fixed safety margin). A 429 from the provider sets
a shared pause that every process honours. :class:`Throttle` is the reference
implementation of the sender's :class:`~bot.sender.limiter.RateLimiter` seam.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from contextvars import ContextVar
from typing import Any

from bot.sender.limiter import RateLimiter
from bot.storage.connection import RedisClient

__all__ = ["Throttle", "connection_id"]

# Times are milliseconds with microsecond fractions (Redis's TIME, not rounded down to the
# millisecond), passed to Redis through string.format (Lua's own number format keeps 14
# digits: 0.1 ms, rounded either way),
# and waits are returned in whole microseconds, rounded up (a Lua number returned to Redis
# is truncated to an integer).
#
# Returns 0 when the call may go now (and records it as in flight until now + ARGV[4] ms,
# the most a call can take), else the microseconds to wait: exactly until the oldest call
# leaves the window. A call's score is the time its answer came back (or the in-flight
# bound): it counts until a period after that.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return math.max(1, math.ceil((paused - now) * 1000))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.3f', now - period))
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], string.format('%.3f', now + tonumber(ARGV[4])), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], period + tonumber(ARGV[4]))
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, math.ceil((tonumber(oldest[2]) + period - now) * 1000))
"""

# The call ARGV[1] was answered: it counts from now on (never later than it was logged).
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > now then
  redis.call('ZADD', KEYS[1], 'XX', string.format('%.3f', now), ARGV[1])
end
return 1
"""

# Extends the shared pause to now + ARGV[1] ms (never shortens it).
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local untl = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > current then
  redis.call('SET', KEYS[1], string.format('%.3f', untl), 'PX', tonumber(ARGV[1]) + 1000)
end
return 1
"""

# Microseconds until a call would be allowed (0: now) once ARGV[3] more calls were taken
# (those of batches already waiting for their calls), without taking one: when fewer than
# the limit count, 0, else until the call that many places after the oldest leaves the
# window.
_PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return math.max(1, math.ceil((paused - now) * 1000))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.3f', now - tonumber(ARGV[2])))
local ahead = tonumber(ARGV[3] or '0')
local counted = redis.call('ZCARD', KEYS[1])
local index = counted + ahead - tonumber(ARGV[1])
if index < 0 then
  return 0
end
if index >= counted then
  return math.max(1, math.ceil((tonumber(ARGV[2]) + tonumber(ARGV[4] or '0')) * 1000))
end
local oldest = redis.call('ZRANGE', KEYS[1], index, index, 'WITHSCORES')
return math.max(1, math.ceil((tonumber(oldest[2]) + tonumber(ARGV[2]) - now) * 1000))
"""


def connection_id(base_url: str, api_key: str | None, account: str | None = None) -> str:
    """A stable, secret-free name for one provider connection (host, key, sub-account)."""
    raw = f"{base_url}|{api_key or ''}|{account or ''}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class Throttle(RateLimiter):
    """At most ``calls`` provider calls per ``period`` seconds across all processes, as the
    provider counts them (on arrival; see the module documentation).

    ``await acquire()`` (or ``try_acquire()``) takes a call; ``await release()`` says the
    call this task took last was answered (or failed); a call never released (its process
    died) counts as in flight for ``in_flight`` seconds, then for the period. ``await
    pause(s)`` (after a 429 with ``Retry-After``) stops every process for ``s`` seconds.
    """

    def __init__(
        self,
        redis: RedisClient,
        connection: str,
        *,
        calls: int = 100,
        period: float = 60.0,
        in_flight: float = 60.0,
        max_sleep: float = 1.0,
    ) -> None:
        if calls <= 0 or period <= 0 or in_flight <= 0:
            raise ValueError("calls, period and in_flight must be positive")
        self.calls = calls
        self.period_ms = int(period * 1000)
        self.in_flight_ms = int(in_flight * 1000)
        self._max_sleep = max_sleep
        # The call each task took last and has not released (the sender's loop, an API
        # request): one task makes one provider call at a time.
        self._taken: ContextVar[str | None] = ContextVar(f"throttle-{id(self)}", default=None)
        tag = f"{{throttle:{connection}}}"
        self.log_key = f"sb:{tag}:calls"
        self.pause_key = f"sb:{tag}:paused"
        self._acquire: Any = redis.register_script(_ACQUIRE)
        self._release: Any = redis.register_script(_RELEASE)
        self._pause: Any = redis.register_script(_PAUSE)
        self._peek: Any = redis.register_script(_PEEK)

    async def try_acquire(self) -> float:
        """Take a call if one is free now: returns 0.0, else the seconds to wait."""
        member = uuid.uuid4().hex
        wait_us = await self._acquire(
            keys=[self.log_key, self.pause_key],
            args=[self.calls, self.period_ms, member, self.in_flight_ms],
        )
        if int(wait_us) == 0:
            self._taken.set(member)
        return int(wait_us) / 1e6

    async def release(self) -> None:
        """The call this task took last was answered, or failed: it counts from now."""
        member = self._taken.get()
        if member is None:
            return
        self._taken.set(None)
        await self._release(keys=[self.log_key], args=[member])

    async def acquire(self) -> float:
        """Wait for a free call and take it. Returns the seconds waited.

        Bound the wait with ``asyncio.timeout`` where that matters.
        """
        started = time.monotonic()
        while True:
            wait = await self.try_acquire()
            if wait == 0:
                return time.monotonic() - started
            # Sleep exactly until the oldest call leaves the window (to the microsecond: a
            # backlog's next call goes as soon as the window allows it), a long wait in
            # steps of at most ``max_sleep``, so that a pause set meanwhile is noticed.
            await asyncio.sleep(min(wait, self._max_sleep))

    async def available_in(self, ahead: int = 0) -> float:
        """Seconds until a call would be allowed (0.0: now) once ``ahead`` more calls were
        taken, taking nothing. When ``ahead`` is the limit or more, a bound: the in-flight
        time plus a period."""
        wait_us = await self._peek(
            keys=[self.log_key, self.pause_key],
            args=[self.calls, self.period_ms, max(0, ahead), self.in_flight_ms],
        )
        return int(wait_us) / 1e6

    async def pause(self, seconds: float) -> None:
        """Hold every process's calls for ``seconds`` (the provider said ``Retry-After``)."""
        await self._pause(keys=[self.pause_key], args=[max(1, int(seconds * 1000))])
