"""An in-memory :class:`~bot.conversation.context.Backend` and event builders, for tests.

No Redis, no provider: the engine runs over a :class:`MemoryBackend` and the test reads
back what the handlers did::

    backend = MemoryBackend()
    assert await engine.dispatch(inbound("book"), backend)
    assert backend.texts == ["Which day suits you?"]
    assert backend.flow("booking").state == "Booking:day"

    # the handset answers that exact message (its metadata is echoed back):
    await engine.dispatch(inbound("Tue", answering=backend.replies[-1]), backend)
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

from bot.conversation.context import Reply, SessionSnapshot, Write
from bot.conversation.flows import FlowView
from bot.sinch.models import (
    Channel,
    DeliveryReceipt,
    DeliveryStatus,
    InboundMessage,
    RcsChoiceResponse,
    default_code_for,
    status_for_code,
)
from bot.storage.keys import conversation_key
from bot.storage.timers import TimerRef, timer_key

__all__ = ["HANDSET", "OURS", "MemoryBackend", "inbound", "receipt"]

HANDSET = "+61491570156"
"""The default handset (from the provider's range reserved for examples)."""
OURS = "+61491570157"
"""The default number of ours."""

_ids = itertools.count(1)


@dataclass
class MemoryBackend:
    """One conversation kept in memory.

    Attributes:
        conversation: The conversation key.
        flows: The stored flows, by plugin (root router) name: ``{"state": ..., "data":
            ..., "expiry": ...}`` (read one with :meth:`flow`).
        state: The state of a session stored before flows had namespaces (set it, with
            ``data``, to start from such a session; the engine migrates it, and a save
            clears both).
        data: That session's shared data.
        replies: Every reply queued, in order.
        timers: Pending timers by key (:attr:`~bot.storage.timers.TimerRef.key`:
            ``"<plugin>/<id>"`` for a plugin's timer, ``"state-timeout:<plugin>"`` for its
            state's expiry), as the backend applied the handlers' requests; one plugin's
            timer by its id: :meth:`timer`.
        saves: How many times the session was saved.
        history: After each save, the state transitions it made: ``(flow, from, to)``.
        writes: The storage writes handlers asked for (``ctx.on_commit``), not run.
    """

    conversation: str = conversation_key(OURS, HANDSET)
    flows: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    replies: list[Reply] = field(default_factory=list)
    timers: dict[str, TimerRef] = field(default_factory=dict)
    saves: int = 0
    history: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)

    def load(self) -> SessionSnapshot:
        # never changed in place
        return SessionSnapshot(self.flows, self.state, self.data, self.timers.keys())

    def flow(self, name: str) -> FlowView:
        """The stored flow of the plugin ``name`` (no state and no data when it has none)."""
        record = self.flows.get(name, {})
        return FlowView(name, record.get("state"), MappingProxyType(record.get("data", {})))

    def save(
        self,
        flows: dict[str, dict[str, Any]],
        transitions: Sequence[tuple[str, str | None, str | None]],
    ) -> None:
        self.flows = copy.deepcopy(flows)
        self.state, self.data = None, {}
        self.saves += 1
        self.history.extend(transitions)

    def queue(self, reply: Reply) -> None:
        self.replies.append(reply)

    def timer(self, plugin: str, timer_id: str) -> TimerRef | None:
        """The pending timer ``timer_id`` of ``plugin`` (``ctx.schedule(..., id=...)``), or
        ``None``."""
        return self.timers.get(timer_key(plugin, timer_id))

    def update_timers(self, scheduled: Sequence[TimerRef], cancelled: Sequence[str]) -> None:
        for key in cancelled:
            self.timers.pop(key, None)
        for ref in scheduled:
            self.timers[ref.key] = ref

    def apply(self, write: Write) -> None:
        self.writes.append(write)

    @property
    def texts(self) -> list[str]:
        """The text of every reply, in order."""
        return [reply.text for reply in self.replies]

    def due(self, now: datetime) -> list[TimerRef]:
        """Remove and return the timers due at ``now``, earliest first (dispatch
        ``ref.event()`` for each)."""
        ready = sorted((ref for ref in self.timers.values() if ref.at <= now), key=lambda r: r.at)
        for ref in ready:
            del self.timers[ref.key]
        return ready


def inbound(
    text: str = "",
    *,
    handset: str = HANDSET,
    to: str | None = OURS,
    channel: Channel | Literal["SMS", "MMS", "RCS"] = Channel.SMS,
    metadata: dict[str, str] | None = None,
    postback: str | None = None,
    answering: Reply | None = None,
    kind: Literal["message", "opt_out"] = "message",
) -> InboundMessage:
    """An inbound message from ``handset`` to ``to``.

    ``answering`` makes it a reply to that outbound message: its metadata (``gw_id``,
    ``prompt``...) is echoed, as the provider does. ``postback`` makes it an RCS suggested
    reply (its content is the postback data).
    """
    if answering is not None:
        metadata = {**answering.metadata, **(metadata or {})}
    number = next(_ids)
    return InboundMessage(
        event_id=f"test-mo-{number}",
        reply_id=f"test-mo-{number}",
        kind=kind,
        channel=Channel.RCS if postback is not None else Channel(channel),
        source_number=handset,
        destination_number=to,
        content=postback if postback is not None else text,
        metadata=metadata or {},
        choice=None if postback is None else RcsChoiceResponse(postback_data=postback),
    )


def receipt(
    status: DeliveryStatus | str,
    *,
    code: int | None = None,
    of: Reply | None = None,
    metadata: dict[str, str] | None = None,
    recipient: str = HANDSET,
) -> DeliveryReceipt:
    """A delivery receipt with ``status`` (its status code defaults to a typical one), for
    the outbound message ``of`` (its metadata is echoed) or with ``metadata``."""
    status = DeliveryStatus(status) if not isinstance(status, DeliveryStatus) else status
    if code is None:
        code = default_code_for(status)
    elif status_for_code(code) is not status:
        raise ValueError(f"status code {code} does not mean {status}")
    if of is not None:
        metadata = {**of.metadata, **(metadata or {})}
    number = next(_ids)
    return DeliveryReceipt(
        event_id=f"test-dr-{number}",
        delivery_report_id=f"test-dr-{number}",
        message_id=f"test-mt-{number}",
        status=status,
        status_code=code,
        recipient=recipient,
        metadata=metadata or {},
    )
