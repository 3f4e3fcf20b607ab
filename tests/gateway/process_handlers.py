"""Event handlers for gateway subprocesses started by the tests.

A subprocess loads one with ``SINCHBOT_HANDLER=tests.gateway.process_handlers:<name>``
(the test puts the repository root on ``PYTHONPATH``).

- :class:`Ack` records every event (as the default handler does), answers each inbound
  message with ``ack <text>``, so a test can match every reply to the message it answers,
  and appends the text to the session's ``texts`` (saved with the version check), so a test
  can tell that each message changed the conversation's state exactly once.
- :class:`SlowAck` does the same after a short pause per inbound message, so a process
  stopped or killed "under load" is caught with work in hand.
"""

from __future__ import annotations

import asyncio

from bot.inbox.handling import EventContext, record_event
from bot.sinch.models import InboundMessage

__all__ = ["ACK_PREFIX", "TEXTS", "Ack", "SlowAck", "ack_text"]

ACK_PREFIX = "ack "
TEXTS = "texts"
"""Session data field: the texts of the inbound messages handled, in handling order."""


def ack_text(text: str) -> str:
    """The reply :class:`Ack` sends to an inbound message ``text``."""
    return f"{ACK_PREFIX}{text}"


class Ack:
    """Record the event; reply ``ack <text>`` to an inbound message and note its text in
    the session."""

    async def handle(self, ctx: EventContext) -> None:
        """Handle one event (see :class:`~bot.inbox.handling.EventHandler`)."""
        record_event(ctx)
        event = ctx.event.event
        if isinstance(event, InboundMessage) and event.kind == "message":
            ctx.reply(ack_text(event.content))
            ctx.session.data.setdefault(TEXTS, []).append(event.content)
            ctx.save()


class SlowAck(Ack):
    """:class:`Ack` taking ``delay`` seconds per inbound message (default 10 ms); receipts
    are handled at once."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay

    async def handle(self, ctx: EventContext) -> None:
        """Wait (for an inbound message), then handle the event as :class:`Ack` does."""
        if isinstance(ctx.event.event, InboundMessage):
            await asyncio.sleep(self.delay)
        await super().handle(ctx)
