"""The engine as the gateway's event handler.

:class:`GatewayEngineHandler` implements :class:`~bot.inbox.handling.EventHandler`: for
each inbox event it records the event on the timeline, then dispatches it to the engine over
an :class:`EventContextBackend`, so replies go to the outbox, the session is written with
the gateway's version check, a state change lands on the timeline and timers are stored in
the partition's timer set (fired later by :class:`~bot.inbox.timers.TimerPump` through the
inbox), all in the event's batch::

    consumer = InboxConsumer(..., handler=GatewayEngineHandler(Engine(*routers)))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from bot.conversation.context import Reply, SessionSnapshot, Write
from bot.conversation.engine import Engine
from bot.core import fastjson
from bot.inbox.handling import EventContext, record_event
from bot.storage.keys import timer_member
from bot.storage.timers import TimerRef

__all__ = ["EventContextBackend", "GatewayEngineHandler", "GatewayOutcome"]

log = structlog.get_logger(__name__)


class EventContextBackend:
    """A :class:`~bot.conversation.context.Backend` over the gateway's
    :class:`~bot.inbox.handling.EventContext`: every effect becomes an operation of the
    event's batch."""

    def __init__(self, ctx: EventContext) -> None:
        self.ctx = ctx
        self.scheduled: list[TimerRef] = []
        self.cancelled: list[str] = []

    @property
    def conversation(self) -> str:
        return self.ctx.conversation

    def load(self) -> SessionSnapshot:
        session = self.ctx.session
        return SessionSnapshot(session.flows, session.state, session.data, session.timers.keys())

    def queue(self, reply: Reply) -> None:
        self.ctx.queue(reply.request)

    def save(
        self,
        flows: dict[str, dict[str, Any]],
        transitions: Sequence[tuple[str, str | None, str | None]],
    ) -> None:
        """Store the flows in the session (a pre-namespace ``state`` and ``data`` are
        cleared: migrated), and each state change on the timeline."""
        session = self.ctx.session
        for flow, before, after in transitions:
            self.ctx.record("state", {"flow": flow, "from": before, "to": after})
        session.flows = flows
        session.state, session.data = None, {}
        self.ctx.save()

    def update_timers(self, scheduled: Sequence[TimerRef], cancelled: Sequence[str]) -> None:
        """Store the timer changes in the event's batch (committed atomically with the
        event): the cancellations first, then the schedules (a pending key is replaced)."""
        ctx = self.ctx
        keys = ctx.keys
        pending = ctx.session.timers
        for key in cancelled:
            pending.pop(key, None)
        for ref in scheduled:
            pending[ref.key] = ref.at.isoformat()
        if cancelled or scheduled:
            ctx.save()
        gone = [timer_member(ctx.conversation, key) for key in cancelled]
        ctx.batch.zrem(keys.timers, gone).hdel(keys.timer_data, gone)
        for ref in scheduled:
            member = timer_member(ctx.conversation, ref.key)
            ctx.batch.zadd(keys.timers, round(ref.at.timestamp() * 1000), member)
            ctx.batch.hset(
                keys.timer_data,
                {member: fastjson.dumps(ref.to_json())},
            )
        self.scheduled.extend(scheduled)
        self.cancelled.extend(cancelled)

    def apply(self, write: Write) -> None:
        write(self.ctx)


@dataclass(frozen=True)
class GatewayOutcome:
    """What :meth:`GatewayEngineHandler.process` did with one event."""

    handled: bool
    """A handler ran (``False``: the gateway may fall back)."""
    scheduled: tuple[TimerRef, ...] = ()
    """Timers the handler asked for (stored with the event's batch)."""
    cancelled: tuple[str, ...] = ()
    """Keys (:attr:`~bot.storage.timers.TimerRef.key`) of timers the handler cancelled
    (removed with the event's batch)."""


class GatewayEngineHandler:
    """The gateway's :class:`~bot.inbox.handling.EventHandler` running ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def handle(self, ctx: EventContext) -> None:
        await self.process(ctx)

    async def process(self, ctx: EventContext) -> GatewayOutcome:
        """Record the event, dispatch it (a due timer as its
        :meth:`~bot.conversation.timers.TimerRef.event`) and say what happened."""
        record_event(ctx)
        backend = EventContextBackend(ctx)
        event = ctx.event.event
        if isinstance(event, TimerRef) and event.kind == "command":
            dispatched: Any = event.event()
        elif isinstance(event, TimerRef):
            # Fired into the inbox, but possibly cancelled or replaced since by an event
            # handled before it: it counts only if still pending as it was fired.
            if ctx.session.timers.get(event.key) != event.at.isoformat():
                log.info("stale timer ignored", timer=event.key, name=event.name)
                return GatewayOutcome(False)
            del ctx.session.timers[event.key]
            ctx.save()
            dispatched = event.event()
        else:
            dispatched = event
        handled = await self.engine.dispatch(dispatched, backend)
        return GatewayOutcome(handled, tuple(backend.scheduled), tuple(backend.cancelled))
