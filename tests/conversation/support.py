"""Helpers shared by the conversation tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.conversation import Context, Engine, Event, Filter
from bot.conversation.filters import evaluate
from bot.conversation.testing_backend import MemoryBackend
from bot.sinch.models import InboundMessage
from bot.storage.keys import conversation_key

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


class FakeClock:
    """A clock that only moves when told."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def backend_for(event: Event, state: str | None = None, **data: object) -> MemoryBackend:
    """The conversation ``event`` belongs to (for a message: its numbers' conversation), in
    ``state`` with ``data``."""
    backend = MemoryBackend(state=state, data=dict(data))
    if isinstance(event, InboundMessage):
        backend.conversation = conversation_key(event.destination_number, event.source_number)
    return backend


def context(event: Event, state: str | None = None, **data: object) -> Context:
    """A context for ``event`` in a conversation in ``state`` with ``data``."""
    return Engine().context(event, backend_for(event, state, **data))


async def check(flt: Filter, event: Event, state: str | None = None) -> dict[str, object] | None:
    """What ``flt`` says about ``event``: ``None`` (no match) or the arguments it adds."""
    return await evaluate(flt, context(event, state))
