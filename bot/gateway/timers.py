"""The timer pump: due conversation timers become inbox events.

Handlers schedule timers (``ctx.schedule``, or ``ctx.goto`` into a state with a timeout);
:class:`~bot.conversation.adapter.EventContextBackend` stores them with the event's batch in
the partition's sorted set ``keys.timers`` (member ``<conversation>|<timer id>`` → due time
in ms) and hash ``keys.timer_data`` (same member → the ``TimerRef`` as JSON).

:class:`TimerPump` runs in every worker process. For each partition whose lease this worker
holds it runs, once per tick, ONE script that takes the due timers (by Redis's clock), and
for each appends an inbox entry of kind ``timer`` and removes the timer, atomically, after
checking the lease. So a due timer goes into the inbox exactly once, survives any restart
(it is in Redis until then), and is then handled like any inbox entry: in order with the
conversation's other events, at least once, by whichever worker owns the partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from bot.aio import cancel_and_wait
from bot.gateway.keys import PartitionKeys
from bot.gateway.store import Store, text
from bot.gateway.workers import WorkerRegistry

__all__ = ["FIRE_LIMIT", "TimerPump"]

log = structlog.get_logger(__name__)

FIRE_LIMIT = 100
"""Timers moved into a partition's inbox per script call (bounds the time it holds Redis)."""

# KEYS: timers zset, timer data hash, inbox stream, lease. ARGV: limit, worker id, skew ms.
# Returns {fired, now_ms, next_due_ms or ""}; {-1, now_ms, ""} when the lease is not ours.
_FIRE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3])
local nows = string.format('%d', now)
if redis.call('GET', KEYS[4]) ~= ARGV[2] then return {-1, nows, ''} end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nows, 'LIMIT', 0, tonumber(ARGV[1]))
local fired = 0
local stamp = string.format('%d.%03d000', math.floor(now / 1000), now % 1000)
for _, m in ipairs(due) do
  local data = redis.call('HGET', KEYS[2], m)
  local sep = string.find(m, '|', 1, true)
  if data and sep then
    redis.call('XADD', KEYS[3], '*', 'k', 'timer', 'c', string.sub(m, 1, sep - 1),
               't', stamp, 'e', data)
    fired = fired + 1
  end
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {fired, nows, nxt[2] or ''}
"""


class TimerPump:
    """Moves due timers of the partitions this worker owns into their inbox streams.

    Args:
        store: the gateway's Redis.
        registry: whose :attr:`~bot.gateway.workers.WorkerRegistry.owned` partitions to
            serve; the script checks the lease, so a worker that lost a partition fires
            nothing of it.
        poll: longest sleep between ticks (seconds): a newly scheduled timer fires at most
            this late, and a newly acquired partition's due timers at most this late.
        retry_delay_max: longest backoff while Redis is unreachable.
        skew: seconds the engine's clock runs ahead of Redis's (the testing kit moves its
            clock forward; timers are due by the engine's clock). Default: none.
    """

    def __init__(
        self,
        store: Store,
        registry: WorkerRegistry,
        *,
        poll: float = 0.5,
        retry_delay_max: float = 5.0,
        skew: Callable[[], float] | None = None,
    ) -> None:
        if not poll > 0:
            raise ValueError("poll must be positive")
        self.store = store
        self.registry = registry
        self.poll = poll
        self.retry_delay_max = max(poll, retry_delay_max)
        self.skew = skew
        self.fired = 0
        """Timers moved into an inbox by this pump so far."""
        self._script: Any = store.redis.register_script(_FIRE)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        """Start the pump loop (idempotent)."""
        if self._task is not None:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="timer-pump")

    async def stop(self) -> None:
        """Stop the loop. A tick in progress is one script call: it either moved its timers
        into the inbox or did nothing, so cancelling it loses nothing."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        await cancel_and_wait(task)

    async def tick(self) -> float:
        """Fire the due timers of every owned partition once; the seconds until the next
        tick is needed (at most :attr:`poll`; 0 when a partition had more due timers than
        one call moves)."""
        wait = self.poll
        skew_ms = round(self.skew() * 1000) if self.skew is not None else 0
        for partition in sorted(self.registry.owned):
            keys = PartitionKeys(partition)
            fired, now, due = await self._script(
                keys=[keys.timers, keys.timer_data, keys.inbox, keys.lease],
                args=[FIRE_LIMIT, self.registry.worker_id, skew_ms],
            )
            fired = int(fired)
            if fired > 0:
                self.fired += fired
                log.info("timers fired", partition=partition, count=fired)
            if fired >= FIRE_LIMIT:
                wait = 0.0
            elif text(due):
                wait = min(wait, max(0.0, (float(text(due)) - float(text(now))) / 1000))
        return wait

    def wake(self) -> None:
        """Tick now (the testing kit calls it after moving its clock)."""
        self._wake.set()

    async def _loop(self) -> None:
        backoff = 0.0
        while not self._stopping:
            try:
                wait = await self.tick()
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down, a script error...: log, back off, retry
                backoff = min(max(backoff * 2, self.poll), self.retry_delay_max)
                log.warning("timer pump tick failed", error=str(exc), retry_in=backoff)
                wait = backoff
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.001))
