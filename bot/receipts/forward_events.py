"""Forward events: what the forwarder sends downstream, and how a subscriber checks it.

When an inbound message, an opt-out or a delivery receipt is handled, the handler adds a
:func:`forward` operation to its batch, so the forward event is committed atomically with
the handling of the provider event (once, whatever the redeliveries). The event lands in
the partition's forward stream, which :class:`~bot.receipts.forwarding.Forwarder` delivers.

Event types
    ``message.received`` (an SMS, MMS or RCS message from a handset),
    ``message.opt_out`` (the provider's opt-out notification) and
    ``receipt.<status>`` for delivery receipts (``receipt.enroute``, ``receipt.submitted``,
    ``receipt.delivered``, ``receipt.failed``, ``receipt.expired``, ``receipt.rejected``...).

The request
    ``POST <url>`` with ``Content-Type: application/json`` and the body
    ``{"id": "evt_…", "type": "receipt.delivered", "created": 1732636800.123, "data": {…}}``
    (``created`` in Unix seconds). Headers:

    * ``X-Sinchbot-Event-Id``: the event's id, identical on every retry: subscribers dedupe
      on it (delivery is at least once);
    * ``X-Sinchbot-Event-Type``: the event's type;
    * ``X-Sinchbot-Signature: t=<unix seconds>,v1=<hex>`` when a secret is configured, where
      ``<hex>`` is HMAC-SHA256 keyed with the secret over ``"<t>.<raw body>"`` (the Stripe
      scheme). A subscriber recomputes it over the raw bytes it received, compares in
      constant time and rejects a ``t`` too far from its clock (see :func:`verify`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

from bot.sinch.models import DeliveryReceipt, InboundMessage
from bot.storage.events import GW_ID, InboxEvent
from bot.storage.keys import PartitionKeys
from bot.storage.store import Batch

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "event_for",
    "forward",
    "forward_event",
    "sign",
    "verify",
]

SIGNATURE_HEADER: Final = "X-Sinchbot-Signature"
EVENT_ID_HEADER: Final = "X-Sinchbot-Event-Id"
EVENT_TYPE_HEADER: Final = "X-Sinchbot-Event-Type"


# ------------------------------------------------------------------------------- producing


def forward(
    batch: Batch,
    keys: PartitionKeys,
    event_type: str,
    payload: Mapping[str, Any],
    *,
    event_id: str | None = None,
    created: float | None = None,
) -> str:
    """Add a forward event to ``batch`` (an XADD to the partition's forward stream).

    Only call this when forwarding is configured: without a :class:`Forwarder` nothing
    consumes the stream. Returns the event id (``evt_`` + 32 hex characters).
    """
    event_id = event_id or f"evt_{uuid.uuid4().hex}"
    batch.xadd(
        keys.forward,
        {
            "id": event_id,
            "type": event_type,
            "created": f"{time.time() if created is None else created:.3f}",
            "data": json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str),
        },
    )
    return event_id


def event_for(event: InboxEvent) -> tuple[str, dict[str, Any]]:
    """The forward event type and payload of an inbox event."""
    inner = event.event
    if isinstance(inner, DeliveryReceipt):
        return f"receipt.{inner.status}", {
            "conversation": event.conversation,
            "gw_id": inner.metadata.get(GW_ID),
            "message_id": inner.message_id,
            "delivery_report_id": inner.delivery_report_id,
            "status": str(inner.status),
            "status_code": inner.status_code,
            "status_meaning": inner.status_meaning,
            "recipient": inner.recipient,
            "sender": inner.sender,
            "billing_units": inner.billing_units,
            "metadata": dict(inner.metadata),
            "submitted_at": _iso(inner.submitted_at),
            "received_at": _iso(inner.received_at),
        }
    assert isinstance(inner, InboundMessage)
    kind = "message.opt_out" if inner.kind == "opt_out" else "message.received"
    return kind, {
        "conversation": event.conversation,
        "from": inner.source_number,
        "to": inner.destination_number,
        "channel": str(inner.channel),
        "content": inner.content,
        "reply_id": inner.reply_id,
        "in_reply_to": inner.message_id,
        "gw_id": inner.metadata.get(GW_ID),
        "metadata": dict(inner.metadata),
        "attachments": [a.model_dump(exclude_none=True) for a in inner.attachments],
        "choice": inner.choice.model_dump(exclude_none=True) if inner.choice else None,
        "received_at": _iso(inner.received_at),
    }


def forward_event(batch: Batch, keys: PartitionKeys, event: InboxEvent) -> str:
    """:func:`forward` the inbox event being handled (see :func:`event_for`)."""
    event_type, payload = event_for(event)
    return forward(batch, keys, event_type, payload)


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


# ------------------------------------------------------------------------------- signatures


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Sinchbot-Signature`` value of ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Check a ``X-Sinchbot-Signature`` header as a subscriber should: any ``v1`` matches
    the HMAC of ``"<t>.<body>"`` (constant-time) and ``t`` is within ``tolerance`` seconds."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates)
