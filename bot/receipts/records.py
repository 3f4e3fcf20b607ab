"""Records of outbound messages: what was asked, what the provider said, where it is now.

A record is a hash keyed by our id (``gw_id``) in the conversation's partition, created when
the message is queued and updated when it is sent and as receipts arrive (monotonically,
see :data:`bot.storage.store.RANK_ENROUTE` and friends). The provider's ``message_id`` maps
back to our id.
"""

from __future__ import annotations

import time
from typing import Any

from bot.core.sms import segments
from bot.sinch.models import DeliveryReceipt, DeliveryStatus
from bot.storage.connection import RedisClient
from bot.storage.events import OutboundRequest
from bot.storage.keys import PartitionKeys
from bot.storage.store import (
    RANK_DELIVERED,
    RANK_ENROUTE,
    RANK_ERROR,
    RANK_SENT,
    RANK_SUBMITTED,
    Batch,
    text_map,
)

QUEUED = "queued"
SENT = "sent"
FAILED = "failed"

_RANKS = {
    DeliveryStatus.ENROUTE: RANK_ENROUTE,
    DeliveryStatus.SUBMITTED: RANK_SUBMITTED,
    DeliveryStatus.DELIVERED: RANK_DELIVERED,
    DeliveryStatus.EXPIRED: RANK_ERROR,
    DeliveryStatus.REJECTED: RANK_ERROR,
    DeliveryStatus.FAILED: RANK_ERROR,
}


def receipt_rank(status: DeliveryStatus | str) -> int:
    """Progress rank of a delivery status (0 for statuses we do not know)."""
    return _RANKS.get(status, 0) if isinstance(status, DeliveryStatus) else 0


def create(batch: Batch, keys: PartitionKeys, request: OutboundRequest, *, ttl_ms: int) -> None:
    """The record of a newly queued message."""
    info = segments(request.text)
    batch.hset(
        keys.message(request.gw_id),
        {
            "gw_id": request.gw_id,
            "status": QUEUED,
            "rank": "0",
            "conversation": request.conversation,
            "to": request.destination,
            "channel": request.channel,
            "origin": request.origin,
            "text": request.text[:500],
            "segments": str(info.segments),
            "encoding": str(info.encoding),
            "queued_at": f"{request.created_at:.3f}",
        },
        ttl_ms=ttl_ms,
    )


def mark_sent(
    batch: Batch,
    keys: PartitionKeys,
    gw_id: str,
    message_id: str,
    *,
    ttl_ms: int,
    attempts: int = 1,
) -> None:
    """The provider accepted the message and gave it ``message_id``. The status becomes
    ``sent`` only if no receipt moved it further already (the receipts of a message sent
    twice can arrive before the second copy is recorded)."""
    key = keys.message(gw_id)
    batch.hset(
        key,
        {"message_id": message_id, "sent_at": f"{time.time():.3f}", "attempts": str(attempts)},
        ttl_ms=ttl_ms,
    )
    batch.merge_receipt(key, RANK_SENT, {"status": SENT}, ttl_ms=ttl_ms)
    batch.set(keys.provider_id(message_id), gw_id, ttl_ms=ttl_ms)


def mark_failed(batch: Batch, keys: PartitionKeys, gw_id: str, error: str, *, ttl_ms: int) -> None:
    """The message cannot be sent (the provider rejected it, or it was never valid)."""
    batch.merge_receipt(
        keys.message(gw_id),
        RANK_ERROR,
        {"status": FAILED, "error": error[:500], "failed_at": f"{time.time():.3f}"},
        ttl_ms=ttl_ms,
    )


def merge_receipt(
    batch: Batch, keys: PartitionKeys, gw_id: str, receipt: DeliveryReceipt, *, ttl_ms: int
) -> None:
    """Merge a delivery report into the record: the status only moves forward."""
    rank = receipt_rank(receipt.status)
    if rank == 0:
        return
    fields: dict[str, Any] = {
        "status": str(receipt.status),
        "status_code": "" if receipt.status_code is None else str(receipt.status_code),
        "status_meaning": receipt.status_meaning or "",
        "status_at": f"{time.time():.3f}",
    }
    if receipt.billing_units is not None:
        fields["billing_units"] = str(receipt.billing_units)
    batch.merge_receipt(keys.message(gw_id), rank, fields, ttl_ms=ttl_ms)


async def read(redis: RedisClient, keys: PartitionKeys, gw_id: str) -> dict[str, str] | None:
    """The record, or ``None``."""
    raw = await redis.hgetall(keys.message(gw_id))
    return text_map(raw) or None
