"""The durable outbox: every message sinchbot sends is queued here first.

Queuing is an operation in a :class:`~bot.storage.store.Batch` (so a handler's reply is
committed together with the event it answers) that appends the request to its partition's
outbox stream and creates the message's record. The sender drains the streams.

Quiet hours: given a :class:`~bot.outbox.quiet_hours.QuietHours` policy, a request whose
origin the policy applies to (not a reply, not a compliance message) and whose handset is
inside its quiet window is not appended to the outbox but deferred: stored in the
partition's deferred set until the window ends, its record created with status
``deferred``. :class:`~bot.outbox.deferred.DeferredPump` moves it to the outbox then (see
:mod:`bot.outbox.deferred` for the key layout). The caller records the ``deferred``
timeline entry (:func:`deferred_entry`) after the ``outbound`` one.

Sends that do not come from a handler (the management API, the CLI through the server) use
:func:`queue_requests`, which writes one batch per partition.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import datetime

from bot.outbox.deferred import DEFERRED
from bot.outbox.quiet_hours import Deferral, QuietHours, utc_now
from bot.receipts import records, timeline
from bot.storage.events import OutboundRequest
from bot.storage.keys import PartitionKeys, partition_of
from bot.storage.store import Batch, Store


def enqueue(
    batch: Batch,
    keys: PartitionKeys,
    request: OutboundRequest,
    *,
    ttl_ms: int,
    quiet_hours: QuietHours | None = None,
    now: datetime | None = None,
) -> Deferral | None:
    """Queue ``request`` in ``keys``'s outbox and create its record.

    With ``quiet_hours``, a request the policy holds back at ``now`` (aware; default: the
    current time) is deferred instead (see the module documentation); the
    :class:`~bot.outbox.quiet_hours.Deferral` is returned, ``None`` when it was queued."""
    deferral = None
    if quiet_hours is not None and quiet_hours.applies_to(request.origin):
        deferral = quiet_hours.check(request.destination, now or utc_now())
    if deferral is None:
        batch.xadd(keys.outbox, request.to_fields())
        records.create(batch, keys, request, ttl_ms=ttl_ms)
        return None
    fields = [part for pair in request.to_fields().items() for part in pair]
    batch.zadd(keys.deferred, deferral.until_ms, request.gw_id)
    batch.hset(
        keys.deferred_data,
        {request.gw_id: json.dumps(fields, separators=(",", ":"), ensure_ascii=False)},
    )
    records.create(
        batch,
        keys,
        request,
        ttl_ms=ttl_ms,
        status=DEFERRED,
        deferred_until=deferral.until_iso,
        deferred_reason=deferral.reason,
    )
    return deferral


def outbound_entry(request: OutboundRequest) -> dict[str, str]:
    """The timeline data of a queued message (``outbound``)."""
    return {
        "gw_id": request.gw_id,
        "to": request.destination,
        "text": request.text,
        "origin": request.origin,
    }


def deferred_entry(request: OutboundRequest, deferral: Deferral) -> dict[str, str]:
    """The timeline data of a deferred message (``deferred``): ``gw_id``, ``until`` (ISO
    8601 UTC) and ``reason`` (``quiet hours <CC> HH:MM-HH:MM``)."""
    return {"gw_id": request.gw_id, "until": deferral.until_iso, "reason": deferral.reason}


async def queue_requests(
    store: Store,
    partitions: int,
    requests: Sequence[OutboundRequest],
    *,
    ttl_ms: int,
    timeline_max: int,
    quiet_hours: QuietHours | None = None,
    now: datetime | None = None,
) -> dict[str, Deferral]:
    """Queue requests that come from outside a handler (API, CLI): grouped by partition
    (of the destination), each partition's requests are queued with their ``outbound``
    (and, when quiet hours hold them back, ``deferred``) timeline entries in one atomic
    batch, and the partitions' batches are committed together. When this returns, every
    request is durable; when it raises (Redis failed), the requests of some partitions may
    be queued already.

    Returns the deferred requests' :class:`~bot.outbox.quiet_hours.Deferral` by
    ``gw_id`` (empty without ``quiet_hours``)."""
    moment = now or utc_now()
    batches: dict[int, Batch] = {}
    deferred: dict[str, Deferral] = {}
    for request in requests:
        partition = partition_of(request.destination, partitions)
        keys = PartitionKeys(partition)
        batch = batches.setdefault(partition, Batch())
        deferral = enqueue(batch, keys, request, ttl_ms=ttl_ms, quiet_hours=quiet_hours, now=moment)
        entries = [("outbound", outbound_entry(request))]
        if deferral is not None:
            deferred[request.gw_id] = deferral
            entries.append(("deferred", deferred_entry(request, deferral)))
        for kind, data in entries:
            timeline.append(
                batch,
                keys,
                request.conversation,
                kind,
                data,
                maxlen=timeline_max,
                ttl_ms=ttl_ms,
            )
    await asyncio.gather(*(batch.commit(store) for batch in batches.values()))
    return deferred
