"""The provider-call throttle shared by every sinchbot process: at most ``calls`` calls in any
``period`` seconds, per provider connection (the connector allows 100 calls per 60 s).

One Lua script keeps a sliding-window log of call times in a Redis sorted set, using Redis's
own clock, so processes on different machines agree and the limit holds exactly in every
window, not just on average. A 429 from the provider sets a shared pause that every process
honours. :class:`Throttle` is the reference implementation of the sender's
:class:`~bot.sender.limiter.RateLimiter` seam.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from bot.sender.limiter import RateLimiter

__all__ = ["Throttle", "connection_id"]

# Returns 0 when the call may go now (and records it), else the milliseconds to wait.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return paused - now
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], period)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + period - now)
"""

# Extends the shared pause to now + ARGV[1] ms (never shortens it).
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untl = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > current then
  redis.call('SET', KEYS[1], untl, 'PX', tonumber(ARGV[1]) + 1000)
end
return untl
"""

# Seconds until a call would be allowed, without taking one.
_PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return paused - now
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + tonumber(ARGV[2]) - now)
"""


def connection_id(base_url: str, api_key: str | None, account: str | None = None) -> str:
    """A stable, secret-free name for one provider connection (host, key, sub-account)."""
    raw = f"{base_url}|{api_key or ''}|{account or ''}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class Throttle(RateLimiter):
    """At most ``calls`` provider calls per ``period`` seconds across all processes.

    ``margin`` (default: 2% of the period, at least 0.5 s) is added to the window so the
    limit also holds where the provider measures it, on arrival.

    ``await acquire()`` waits until a call is allowed and records it; ``await pause(s)``
    (after a 429 with ``Retry-After``) stops every process for ``s`` seconds.
    """

    def __init__(
        self,
        redis: Redis,
        connection: str,
        *,
        calls: int = 100,
        period: float = 60.0,
        margin: float | None = None,
        max_sleep: float = 1.0,
    ) -> None:
        if calls <= 0 or period <= 0:
            raise ValueError("calls and period must be positive")
        if margin is None:
            margin = max(0.5, period * 0.02)
        self.calls = calls
        # A call is counted for a little longer than the period: the provider counts calls
        # when they arrive, and the time between taking a call here and its arrival there
        # varies (scheduling, connection set-up), which would otherwise let arrivals bunch.
        self.period_ms = int((period + margin) * 1000)
        self._max_sleep = max_sleep
        tag = f"{{throttle:{connection}}}"
        self.log_key = f"sb:{tag}:calls"
        self.pause_key = f"sb:{tag}:paused"
        self._acquire: Any = redis.register_script(_ACQUIRE)
        self._pause: Any = redis.register_script(_PAUSE)
        self._peek: Any = redis.register_script(_PEEK)

    async def try_acquire(self) -> float:
        """Take a call if one is free now: returns 0.0, else the seconds to wait."""
        wait_ms = await self._acquire(
            keys=[self.log_key, self.pause_key],
            args=[self.calls, self.period_ms, uuid.uuid4().hex],
        )
        return int(wait_ms) / 1000.0

    async def acquire(self) -> float:
        """Wait for a free call and take it. Returns the seconds waited.

        Bound the wait with ``asyncio.timeout`` where that matters.
        """
        started = time.monotonic()
        while True:
            wait = await self.try_acquire()
            if wait == 0:
                return time.monotonic() - started
            # Sleep in short steps, so the end of a shared pause is noticed soon.
            await asyncio.sleep(min(wait, self._max_sleep))

    async def available_in(self) -> float:
        """Seconds until a call would be allowed (0.0: now), taking nothing."""
        wait_ms = await self._peek(
            keys=[self.log_key, self.pause_key], args=[self.calls, self.period_ms]
        )
        return int(wait_ms) / 1000.0

    async def pause(self, seconds: float) -> None:
        """Hold every process's calls for ``seconds`` (the provider said ``Retry-After``)."""
        await self._pause(keys=[self.pause_key], args=[max(1, int(seconds * 1000))])
