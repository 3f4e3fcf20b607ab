"""A handler for process tests: answers every inbound message with ``ack <text>``."""

from bot.inbox.handling import EventContext, record_event
from bot.sinch.models import InboundMessage


class Ack:
    """Record the event; reply ``ack <text>`` to each inbound message."""

    async def handle(self, ctx: EventContext) -> None:
        record_event(ctx)
        event = ctx.event.event
        if isinstance(event, InboundMessage) and event.kind == "message":
            ctx.reply(f"ack {event.content}")
