"""The durable outbox: every message sinchbot sends is queued here first.

Queuing is an operation in a :class:`~bot.gateway.store.Batch` (so a handler's reply is
committed together with the event it answers) that appends the request to its partition's
outbox stream and creates the message's record. The sender drains the streams.

Sends that do not come from a handler (the management API, the CLI through the server) use
:func:`queue_requests`, which writes one batch per partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.gateway import records, timeline
from bot.gateway.events import OutboundRequest
from bot.gateway.keys import PartitionKeys, partition_of
from bot.gateway.store import Batch, Store


def enqueue(batch: Batch, keys: PartitionKeys, request: OutboundRequest, *, ttl_ms: int) -> None:
    """Queue ``request`` in ``keys``'s outbox and create its record."""
    batch.xadd(keys.outbox, request.to_fields())
    records.create(batch, keys, request, ttl_ms=ttl_ms)


def outbound_entry(request: OutboundRequest) -> dict[str, str]:
    """The timeline data of a queued message (``outbound``)."""
    return {
        "gw_id": request.gw_id,
        "to": request.destination,
        "text": request.text,
        "origin": request.origin,
    }


async def queue_requests(
    store: Store,
    partitions: int,
    requests: Sequence[OutboundRequest],
    *,
    ttl_ms: int,
    timeline_max: int,
) -> None:
    """Queue requests that come from outside a handler (API, CLI): grouped by partition
    (of the destination), each partition's requests are queued with their ``outbound``
    timeline entries in one atomic batch, and the partitions' batches are committed
    together. When this returns, every request is durable; when it raises (Redis failed),
    the requests of some partitions may be queued already."""
    batches: dict[int, Batch] = {}
    for request in requests:
        partition = partition_of(request.destination, partitions)
        keys = PartitionKeys(partition)
        batch = batches.setdefault(partition, Batch())
        enqueue(batch, keys, request, ttl_ms=ttl_ms)
        timeline.append(
            batch,
            keys,
            request.conversation,
            "outbound",
            outbound_entry(request),
            maxlen=timeline_max,
            ttl_ms=ttl_ms,
        )
    await asyncio.gather(*(batch.commit(store) for batch in batches.values()))
