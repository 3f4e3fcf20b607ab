"""The in-flight marker: which messages may have reached the provider when a worker died.

The provider's send API has no idempotency key, so a message whose call may have reached it
can only be sent again or lost; sinchbot sends again, and says so. Before each provider call
the sender writes the gw_ids of its batch to ``sb:inflight:<worker>`` (a JSON list, one key
per worker): with more than one call in flight, the key lists the batches of all of them.
A batch's ids leave the key once its outcome is recorded; the messages put back whose
outcome is unknown stay listed (until the next batch is marked). After a crash the first
worker to take over one of the dead worker's partitions takes the marker (``GETDEL``:
exactly one worker does) and logs ``possible duplicate send after a crash`` with those ids:
the batches that were on the wire, which whoever takes over their partitions sends again.
Single-key commands only; a marker nobody takes expires after a day.

Each write is the whole list as this process knows it at that moment, and the writes are
made one at a time (in the order of the changes): whatever the order in which concurrent
batches are marked and settled, the key in Redis names every batch whose :meth:`mark` has
returned and whose :meth:`settle` has not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import structlog
from redis.exceptions import RedisError

from bot.storage.connection import RedisClient
from bot.storage.keys import inflight
from bot.storage.store import text

__all__ = ["MARKER_TTL_MS", "InflightMarker"]

log = structlog.get_logger(__name__)

MARKER_TTL_MS = 24 * 3600 * 1000
"""How long the marker of a batch on the wire outlives a crash nobody recovers from."""


class InflightMarker:
    """The marker of worker ``worker_id`` (see the module docstring); a narrowed marker
    (only unknown outcomes put back left) lasts ``unknown_ttl_ms``."""

    def __init__(self, redis: RedisClient, worker_id: str, *, unknown_ttl_ms: int) -> None:
        self.redis = redis
        self.worker_id = worker_id
        self.key = inflight(worker_id)
        self.unknown_ttl_ms = max(unknown_ttl_ms, 1000)
        self._batches: dict[int, list[str]] = {}
        self._unknown: list[str] = []
        self._lock = asyncio.Lock()

    @property
    def marked(self) -> list[str]:
        """The gw_ids the marker names now (batches on the wire, then unknown outcomes)."""
        named = dict.fromkeys(gw_id for ids in self._batches.values() for gw_id in ids)
        named.update(dict.fromkeys(self._unknown))
        return list(named)

    async def mark(self, gw_ids: Sequence[str], *, batch: int = 0) -> None:
        """The batch ``batch`` (any number unique among the batches on the wire) of
        ``gw_ids`` goes on the wire: once this returns, the marker in Redis names it."""
        self._batches[batch] = list(gw_ids)
        self._unknown = []
        await self._write()

    async def settle(self, unknown: Sequence[str], *, batch: int = 0) -> None:
        """The batch ``batch`` is recorded: its ids leave the marker, except ``unknown``
        (messages put back whose outcome is unknown). A Redis error is logged, not
        raised."""
        self._batches.pop(batch, None)
        self._unknown = list(unknown)
        try:
            await self._write()
        except RedisError as exc:
            log.warning("could not update the in-flight marker", error=str(exc))

    async def _write(self) -> None:
        """Write the marker as it is now (one write at a time, each one the latest)."""
        async with self._lock:
            named = self.marked
            if self._batches:
                await self.redis.set(self.key, json.dumps(named), px=MARKER_TTL_MS)
            elif named:
                await self.redis.set(self.key, json.dumps(named), px=self.unknown_ttl_ms)
            else:
                await self.redis.delete(self.key)

    async def take(self, worker: str) -> list[str]:
        """Take (read and delete) the marker of ``worker``: the gw_ids it had on the wire
        when it stopped; none when it had nothing there."""
        raw: Any = await self.redis.getdel(inflight(worker))
        if raw is None:
            return []
        try:
            listed = json.loads(text(raw))
        except ValueError:
            return []
        return [str(gw_id) for gw_id in listed] if isinstance(listed, list) else []
