"""The deferred pump: sends held back by quiet hours go to the outbox when the window ends.

:func:`bot.outbox.queue.enqueue`, given a :class:`~bot.outbox.quiet_hours.QuietHours`
policy, does not append a request that falls in its handset's quiet hours to the outbox
stream: in the same batch it stores it in the partition's

- sorted set ``keys.deferred`` (``sb:{p<N>}:deferred``): member ``gw_id`` → release time,
  in ms since the epoch (the clock domain of Redis ``TIME``, which the pump compares with);
- hash ``keys.deferred_data`` (``sb:{p<N>}:deferreddata``): ``gw_id`` → the outbox entry's
  fields as a JSON array ``[name, value, name, value, ...]`` (exactly what
  :meth:`~bot.storage.events.OutboundRequest.to_fields` gives);

and creates the message record (``sb:{p<N>}:msg:<gw_id>``) with status ``deferred`` and
``deferred_until`` / ``deferred_reason``, and the caller records a timeline entry of kind
``deferred``. Moving a send's release earlier or later is rewriting its score; tests make a
deferred send due by writing a score in the past.

:class:`DeferredPump` runs in every worker process. For each partition whose lease this
worker holds it runs, once per tick, ONE script that takes the due sends (score ≤ Redis
``TIME``), appends each to the outbox stream with its stored fields, removes it from the
set and the hash, and sets its record back to ``queued`` (with ``released_at``), atomically,
after checking the lease. So a deferred send reaches the outbox exactly once, survives any
restart (it is in Redis until then), and then leaves through the sender like any other,
which still enforces opt-outs at that point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import structlog

from bot.receipts import records
from bot.storage.keys import PartitionKeys
from bot.storage.store import RANK_ERROR, Store
from bot.streams.leases import WorkerRegistry
from bot.streams.pump import Pump

__all__ = ["DEFERRED", "RELEASE_LIMIT", "DeferredPump"]

log = structlog.get_logger(__name__)

DEFERRED: Final = "deferred"
"""Record status of a send waiting for quiet hours to end (then ``queued`` again)."""

RELEASE_LIMIT: Final = 100
"""Deferred sends moved into a partition's outbox per script call (bounds the time it
holds Redis)."""

# KEYS: deferred zset, deferred data hash, outbox stream, lease.
# ARGV: limit, worker id, record key prefix (``sb:{p<N>}:msg:``: records share the
# partition's hash tag, so the script stays in one slot), the deferred, queued and failed
# statuses, the error rank, the skew in ms.
# Returns {released, now_ms, next_due_ms or "", unreadable}; {-1, now_ms, "", 0} when the
# lease is not ours.
_RELEASE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[8])
local nows = string.format('%d', now)
if redis.call('GET', KEYS[4]) ~= ARGV[2] then return {-1, nows, '', 0} end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nows, 'LIMIT', 0, tonumber(ARGV[1]))
local released, unreadable = 0, 0
local stamp = string.format('%d.%03d', math.floor(now / 1000), now % 1000)
-- A record still deferred gets the fields (name, value, ... in long names): a packed
-- record (a JSON object of short names, bot/receipts/records.py) or an earlier version's
-- hash.
local short = {status = 's', rank = 'r', released_at = 'ra', error = 'e', failed_at = 'f'}
local function still_deferred(record, fields)
  if redis.call('TYPE', record)['ok'] == 'hash' then
    if redis.call('HGET', record, 'status') == ARGV[4] then
      redis.call('HSET', record, unpack(fields))
    end
    return
  end
  local raw = redis.call('GET', record)
  if not raw then return end
  local ok, rec = pcall(cjson.decode, raw)
  if not ok or type(rec) ~= 'table' or rec['s'] ~= ARGV[4] then return end
  for i = 1, #fields, 2 do rec[short[fields[i]]] = fields[i + 1] end
  redis.call('SET', record, cjson.encode(rec), 'KEEPTTL')
end
for _, id in ipairs(due) do
  local data = redis.call('HGET', KEYS[2], id)
  local ok, fields = false, nil
  if data then ok, fields = pcall(cjson.decode, data) end
  local record = ARGV[3] .. id
  if ok and type(fields) == 'table' and #fields > 0 and #fields % 2 == 0 then
    redis.call('XADD', KEYS[3], '*', unpack(fields))
    still_deferred(record, {'status', ARGV[5], 'released_at', stamp})
    released = released + 1
  else
    -- Corrupt data cannot be sent: say so on the record rather than leave it "deferred".
    unreadable = unreadable + 1
    still_deferred(record, {'status', ARGV[6], 'rank', ARGV[7],
                            'error', 'deferred entry unreadable', 'failed_at', stamp})
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {released, nows, nxt[2] or '', unreadable}
"""


class DeferredPump(Pump):
    """Moves due deferred sends of the partitions this worker owns into their outbox
    streams (see the module documentation; arguments as for
    :class:`~bot.streams.pump.Pump`: a send is released at most ``poll`` late)."""

    name = "deferred pump"

    def __init__(
        self,
        store: Store,
        registry: WorkerRegistry,
        *,
        poll: float = 1.0,
        retry_delay_max: float = 5.0,
        skew: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(store, registry, poll=poll, retry_delay_max=retry_delay_max, skew=skew)
        self.released = 0
        """Deferred sends moved into an outbox by this pump so far."""
        self.unreadable = 0
        """Deferred entries dropped because their stored fields could not be read (their
        records are marked ``failed``)."""
        self._script: Any = store.redis.register_script(_RELEASE)

    async def tick(self) -> float:
        """Release the due sends of every owned partition once; the seconds until the next
        tick is needed (at most :attr:`poll`; 0 when a partition had more due sends than
        one call moves)."""
        wait = self.poll
        skew_ms = self.skew_ms()
        for partition in sorted(self.registry.owned):
            keys = PartitionKeys(partition)
            released, now, due, unreadable = await self._script(
                keys=[keys.deferred, keys.deferred_data, keys.outbox, keys.lease],
                args=[
                    RELEASE_LIMIT,
                    self.registry.worker_id,
                    keys.message(""),
                    DEFERRED,
                    records.QUEUED,
                    records.FAILED,
                    RANK_ERROR,
                    skew_ms,
                ],
            )
            released, unreadable = int(released), int(unreadable)
            if released > 0:
                self.released += released
                log.info("deferred sends released", partition=partition, count=released)
            if unreadable > 0:
                self.unreadable += unreadable
                log.error(
                    "unreadable deferred sends dropped", partition=partition, count=unreadable
                )
            wait = 0.0 if released + unreadable >= RELEASE_LIMIT else self.next_wait(wait, now, due)
        return wait
