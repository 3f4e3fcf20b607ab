"""The timer pump: due conversation timers become inbox events.

Handlers schedule timers (``ctx.schedule``, or ``ctx.goto`` into a state with a timeout);
:class:`~bot.inbox.engine.EventContextBackend` stores them with the event's batch in
the partition's sorted set ``keys.timers`` (member ``<conversation>|<timer key>`` → due time
in ms) and hash ``keys.timer_data`` (same member → the ``TimerRef`` as JSON).

:class:`TimerPump` runs in every worker process. For each partition whose lease this worker
holds it runs, once per tick, ONE script that takes the due timers (by Redis's clock), and
for each appends an inbox entry of kind ``timer`` and removes the timer, atomically, after
checking the lease. So a due timer goes into the inbox exactly once, survives any restart
(it is in Redis until then), and is then handled like any inbox entry: in order with the
conversation's other events, at least once, by whichever worker owns the partition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from bot.storage.keys import PartitionKeys
from bot.storage.store import Store
from bot.streams.leases import WorkerRegistry
from bot.streams.pump import Pump

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


class TimerPump(Pump):
    """Moves due timers of the partitions this worker owns into their inbox streams
    (arguments as for :class:`~bot.streams.pump.Pump`; a newly scheduled timer fires at
    most ``poll`` late)."""

    name = "timer pump"

    def __init__(
        self,
        store: Store,
        registry: WorkerRegistry,
        *,
        poll: float = 0.5,
        retry_delay_max: float = 5.0,
        skew: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(store, registry, poll=poll, retry_delay_max=retry_delay_max, skew=skew)
        self.fired = 0
        """Timers moved into an inbox by this pump so far."""
        self._script: Any = store.redis.register_script(_FIRE)

    async def tick(self) -> float:
        """Fire the due timers of every owned partition once; the seconds until the next
        tick is needed (at most :attr:`poll`; 0 when a partition had more due timers than
        one call moves)."""
        wait = self.poll
        skew_ms = self.skew_ms()
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
            wait = 0.0 if fired >= FIRE_LIMIT else self.next_wait(wait, now, due)
        return wait
