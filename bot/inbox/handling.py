"""The seam between the gateway and whatever decides what to do with an event.

The inbox consumer hands every event, in order per conversation, to an
:class:`EventHandler` together with an :class:`EventContext`. The handler reads and changes
the conversation's :class:`Session`, queues replies and records what happened; every change
is an operation in the context's batch, committed atomically with the acknowledgement of the
event (and refused as a whole if this worker lost the partition, or the session changed
underneath). Until the conversation engine plugs in, :class:`RecordingHandler` records
events on the timeline and forwards them to subscribers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bot.outbox.quiet_hours import QuietHours, utc_now
from bot.receipts import forwarding, records, timeline
from bot.sinch.models import DeliveryReceipt, InboundMessage, OutboundMessage
from bot.storage.events import GW_ID, InboxEvent, OutboundRequest, prepare_sms
from bot.storage.keys import PartitionKeys, handset_of, our_number_of
from bot.storage.sessions import Session as Session  # the context carries it: importable here too
from bot.storage.store import Batch


@dataclass
class GatewayLimits:
    """Bounds the handlers' writes respect (from settings)."""

    timeline_max: int = 500
    ttl_ms: int = 30 * 86400 * 1000
    forward: bool = False
    """Forward events to subscribers (set when SINCHBOT_FORWARD_URLS is configured; without
    a forwarder running the forward streams would only grow)."""
    quiet_hours: QuietHours | None = None
    """The quiet-hours policy: non-reply sends (``timer``, ``api``...) that fall in the
    handset's quiet window are deferred until it ends (``None``: never deferred)."""
    clock: Callable[[], datetime] = utc_now
    """The current time (aware) quiet hours are judged at."""


@dataclass
class EventContext:
    """What a handler gets for one event. Changes go into ``batch``; nothing is written
    until the consumer commits the batch."""

    event: InboxEvent
    keys: PartitionKeys
    batch: Batch
    session: Session
    limits: GatewayLimits = field(default_factory=GatewayLimits)
    replies: list[OutboundRequest] = field(default_factory=list)
    """Every message queued for this event (deferred ones included)."""
    deferred: list[OutboundRequest] = field(default_factory=list)
    """The queued messages quiet hours held back (also in :attr:`replies`)."""

    @property
    def conversation(self) -> str:
        return self.event.conversation

    @property
    def handset(self) -> str:
        return handset_of(self.event.conversation)

    def record(self, kind: str, data: dict[str, Any]) -> None:
        """Add an entry to the conversation's timeline."""
        timeline.append(
            self.batch,
            self.keys,
            self.conversation,
            kind,
            data,
            maxlen=self.limits.timeline_max,
            ttl_ms=self.limits.ttl_ms,
        )

    def queue(self, request: OutboundRequest) -> None:
        """Queue an outbound message (it leaves through the outbox and the sender; a
        non-reply in the handset's quiet hours waits in the deferred set first)."""
        from bot.outbox import queue as outbox

        policy = self.limits.quiet_hours
        deferral = outbox.enqueue(
            self.batch,
            self.keys,
            request,
            ttl_ms=self.limits.ttl_ms,
            quiet_hours=policy,
            now=self.limits.clock() if policy is not None else None,
        )
        self.record("outbound", outbox.outbound_entry(request))
        if deferral is not None:
            self.record("deferred", outbox.deferred_entry(request, deferral))
            self.deferred.append(request)
        self.replies.append(request)

    def reply(self, text: str, **fields: Any) -> OutboundRequest:
        """Queue an SMS reply to the handset, from the number it wrote to."""
        inbound = self.event.event
        source: str | None = None
        if isinstance(inbound, InboundMessage):
            source = inbound.destination_number
        elif not isinstance(inbound, DeliveryReceipt):
            # A timer: answer from the conversation's number (None: the shared pool).
            source = our_number_of(self.conversation)
        message = OutboundMessage(
            content=text,
            destination_number=self.handset,
            source_number=source,
            **{"delivery_report": True, **fields},
        )
        request = prepare_sms(message, self.conversation, origin="reply")
        self.queue(request)
        return request

    def save(self) -> None:
        """Mark the session to be written (with the version check) at commit."""
        self.session.dirty = True


class EventHandler(Protocol):
    """Decides what happens for each event; see :class:`EventContext`."""

    async def handle(self, ctx: EventContext) -> None: ...


def record_event(ctx: EventContext) -> None:
    """Record an inbound message, a receipt or a due timer on the timeline, merge a receipt
    into its message record, and forward provider events to subscribers."""
    event = ctx.event.event
    if not isinstance(event, InboundMessage | DeliveryReceipt):
        ctx.record(
            "timer",
            {
                "id": event.id,
                "name": event.name,
                "kind": event.kind,
                "at": event.at.isoformat(),
                "payload": event.payload,
            },
        )
        return  # a timer is not a provider event: nothing to forward
    if isinstance(event, DeliveryReceipt):
        gw_id = event.metadata.get(GW_ID)
        if gw_id:
            records.merge_receipt(ctx.batch, ctx.keys, gw_id, event, ttl_ms=ctx.limits.ttl_ms)
        ctx.record(
            "receipt",
            {
                "gw_id": gw_id,
                "message_id": event.message_id,
                "status": str(event.status),
                "status_code": event.status_code,
                "status_meaning": event.status_meaning,
            },
        )
    else:
        ctx.record(
            "inbound",
            {
                "reply_id": event.reply_id,
                "kind": event.kind,
                "channel": str(event.channel),
                "text": event.content,
                "in_reply_to": event.metadata.get(GW_ID),
                "message_id": event.message_id,
                "received_at": time.time(),
            },
        )
    if ctx.limits.forward:
        forwarding.forward_event(ctx.batch, ctx.keys, ctx.event)


class RecordingHandler:
    """The default handler: records every event and does nothing else."""

    async def handle(self, ctx: EventContext) -> None:
        record_event(ctx)


class AutoReplyHandler:
    """Records every event and answers each inbound message with a fixed text: the
    zero-configuration demo's behaviour until a conversation engine is configured."""

    def __init__(self, text: str = "Thanks, we got your message: {text}") -> None:
        self.text = text

    async def handle(self, ctx: EventContext) -> None:
        record_event(ctx)
        event = ctx.event.event
        if isinstance(event, InboundMessage) and event.kind == "message":
            ctx.reply(self.text.format(text=event.content[:100]))
