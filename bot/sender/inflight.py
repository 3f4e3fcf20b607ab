"""The in-flight marker: which messages may have reached the provider when a worker died.

The provider's send API has no idempotency key, so a message whose call may have reached it
can only be sent again or lost; sinchbot sends again, and says so. Before each provider call
the sender writes the gw_ids of its batch to ``sb:inflight:<worker>`` (a JSON list, one key
per worker) and clears it once the outcome is recorded, or narrows it to the messages put
back whose outcome is unknown. After a crash the first worker to take over one of the dead
worker's partitions takes the marker (``GETDEL``: exactly one worker does) and logs
``possible duplicate send after a crash`` with those ids: the batch that was on the wire,
which whoever takes over its partitions sends again. Single-key commands only; a marker
nobody takes expires after a day.
"""

from __future__ import annotations

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
    (unknown outcomes put back) lasts ``unknown_ttl_ms``."""

    def __init__(self, redis: RedisClient, worker_id: str, *, unknown_ttl_ms: int) -> None:
        self.redis = redis
        self.worker_id = worker_id
        self.key = inflight(worker_id)
        self.unknown_ttl_ms = max(unknown_ttl_ms, 1000)

    async def mark(self, gw_ids: Sequence[str]) -> None:
        """The batch of ``gw_ids`` goes on the wire."""
        await self.redis.set(self.key, json.dumps(list(gw_ids)), px=MARKER_TTL_MS)

    async def settle(self, unknown: Sequence[str]) -> None:
        """The batch is recorded: clear the marker, or keep the messages put back whose
        outcome is unknown. A Redis error is logged, not raised."""
        try:
            if unknown:
                await self.redis.set(self.key, json.dumps(list(unknown)), px=self.unknown_ttl_ms)
            else:
                await self.redis.delete(self.key)
        except RedisError as exc:
            log.warning("could not update the in-flight marker", error=str(exc))

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
