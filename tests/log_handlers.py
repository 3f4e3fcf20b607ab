"""An event handler for ``tests/test_log_controls.py``'s gateway subprocess (loaded with
``SINCHBOT_HANDLER=tests.log_handlers:Chatty``): it logs each inbound text as plugins do, in
the event and as values (one structlog leaves unquoted), and fails on a text starting with ``boom``, its exception carrying
the text."""

from __future__ import annotations

import structlog

from bot.inbox.handling import EventContext, record_event
from bot.sinch.models import InboundMessage

__all__ = ["Chatty"]

log = structlog.get_logger("plugins.chatty")


class Chatty:
    """Record the event; log an inbound message's text; fail on ``boom...``."""

    async def handle(self, ctx: EventContext) -> None:
        """Handle one event (see :class:`~bot.inbox.handling.EventHandler`)."""
        record_event(ctx)
        event = ctx.event.event
        if isinstance(event, InboundMessage):
            text = event.content
            # without spaces, quotes, "=" or line breaks, structlog's console format does not
            # quote a value: the rest is written as it is
            compact = "".join(ch for ch in text if ch not in " \t=\r\n\"'")
            log.info(f"got {text}", text=text, compact=compact)
            if text.startswith("boom"):
                raise ValueError(f"cannot handle {text}")
