"""What a handler works with: :class:`Context`, and the :class:`Backend` seam under it.

A :class:`Context` is built for one event. It exposes the event (``message``,
``receipt``, timer ``payload``), the conversation's ``state`` and ``data``, and records what
the handler wants done: replies (``reply``, ``reply_rcs``), state changes (``goto``,
``end``) and timers (``schedule``, ``cancel``). Nothing happens while the handler runs:
when dispatch succeeds the engine hands every effect to the :class:`Backend` at once
(replies, then the session, then the timers), and when a handler raises, nothing of the
event is applied. In the gateway the backend writes into the event's batch, which commits
atomically with the acknowledgement of the event.

::

    @router.message(Keyword("Y"), AnswersPrompt("confirm"))
    async def confirmed(ctx: Context, prompt: dict[str, str]) -> None:
        ctx.data["confirmed"] = prompt["appointment"]
        ctx.reply("Thanks, see you then!")
        ctx.end()
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import structlog

from bot.conversation.states import StateLike, States
from bot.core import fastjson
from bot.core.clock import Clock, utc_now
from bot.core.sms import SegmentInfo, segments
from bot.sinch.models import (
    DeliveryReceipt,
    Format,
    InboundMessage,
    OutboundMessage,
    RcsCard,
    RcsChoice,
    RcsMessage,
)
from bot.storage.events import OutboundRequest, prepare_rcs, prepare_sms
from bot.storage.keys import handset_of
from bot.storage.timers import STATE_TIMEOUT_ID, TimeoutEvent, TimerEvent, TimerRef

__all__ = [
    "PROMPT_KEY",
    "Backend",
    "Clock",
    "Context",
    "Event",
    "EventKind",
    "Reply",
    "SessionSnapshot",
    "Write",
    "kind_of",
    "utc_now",
]

log = structlog.get_logger(__name__)

PROMPT_KEY = "prompt"
"""Metadata key naming the prompt an outbound message asks (``ctx.reply(..., prompt=...)``);
the provider echoes it on the handset's reply and on receipts."""

Event = InboundMessage | DeliveryReceipt | TimeoutEvent | TimerEvent
"""Everything the engine dispatches."""
EventKind = Literal["message", "receipt", "timeout", "timer"]
"""The kind of an event (:attr:`Context.kind`), which also picks the handlers that may take
it: ``@router.message``, ``.receipt``, ``.timeout`` or ``.timer``."""
Write = Callable[[Any], None]
"""A storage write a handler asks for (:meth:`Context.on_commit`); the gateway calls it
with the event's :class:`~bot.inbox.handling.EventContext`."""


def kind_of(event: Event) -> EventKind:
    """``"message"``, ``"receipt"``, ``"timeout"`` or ``"timer"``."""
    if isinstance(event, InboundMessage):
        return "message"
    if isinstance(event, DeliveryReceipt):
        return "receipt"
    if isinstance(event, TimeoutEvent):
        return "timeout"
    if isinstance(event, TimerEvent):
        return "timer"
    raise TypeError(f"not an event the engine dispatches: {type(event).__name__}")


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """A conversation's stored session, as the engine loads it.

    Attributes:
        state: The current state's name, or ``None`` outside any flow.
        data: The session's data, a JSON object.
    """

    state: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """One outbound message a handler queued, with what it costs.

    Attributes:
        request: The validated request, carrying our ``gw_id`` in its metadata.
        segments: Encoding and SMS segment count of the text the handset reads (for RCS the
            fallback or summary text).
        over_budget: Whether the reply was billed above the engine's segment budget (SMS
            replies and the SMS fallback of RCS replies; MMS is never over budget).
    """

    request: OutboundRequest
    segments: SegmentInfo
    over_budget: bool = False

    @property
    def text(self) -> str:
        """The text sent (for RCS: the text shown, else the fallback or summary text)."""
        return self.request.text

    @property
    def metadata(self) -> dict[str, str]:
        """The outbound metadata, including ``gw_id`` and any ``prompt``."""
        return dict(self.request.body.get("metadata") or {})


class Backend(Protocol):
    """Where a conversation's session lives and where its effects go.

    The engine reads the session once per event (:meth:`load`) and, only when every
    handler and middleware succeeded, applies the effects: each reply (:meth:`queue`), the
    session if it changed (:meth:`save`), the timers if any were asked for
    (:meth:`update_timers`). :class:`~bot.conversation.testing_backend.MemoryBackend` keeps
    everything in memory; :class:`~bot.inbox.engine.GatewayEngineHandler` runs over
    the gateway's :class:`~bot.inbox.handling.EventContext`.
    """

    @property
    def conversation(self) -> str:
        """The conversation key, ``<our number>:<handset>``."""
        ...

    def load(self) -> SessionSnapshot:
        """The session as stored."""
        ...

    def queue(self, reply: Reply) -> None:
        """Send ``reply`` (in the gateway: queue it in the outbox)."""
        ...

    def save(self, state: str | None, data: dict[str, Any]) -> None:
        """Store the session's new state and data."""
        ...

    def update_timers(self, scheduled: Sequence[TimerRef], cancelled: Sequence[str]) -> None:
        """Cancel the timers with the ids in ``cancelled``, then create ``scheduled``
        (replacing pending timers of the same id)."""
        ...

    def apply(self, write: Write) -> None:
        """Run a handler's storage write (:meth:`Context.on_commit`) against the
        backend's store (in the gateway: ``write(event_context)``, adding operations to
        the event's batch)."""
        ...


def _our_number(conversation: str) -> str | None:
    our = conversation.rsplit(":", 1)[0] if ":" in conversation else ""
    return None if our in ("", "default") else our


class Context:
    """One event of one conversation, and what its handler does about it.

    Built by the engine for each event; filters, middleware and handlers share it.

    Attributes:
        event: The event being handled: an :class:`~bot.sinch.models.InboundMessage`,
            a :class:`~bot.sinch.models.DeliveryReceipt`, a :class:`TimeoutEvent` or a
            :class:`TimerEvent` (also what :attr:`message`, :attr:`receipt` and
            :attr:`payload` read).
        kind: ``"message"``, ``"receipt"``, ``"timeout"`` or ``"timer"``.
        data: The session's data, a JSON object the handler may change in place; saved
            with the event when it differs from what was loaded. Shared by every plugin of
            the conversation, and emptied by :meth:`end`.
        settings: The settings of the handling router (or the engine's): a plugin's
            validated settings model.
        replies: The replies queued so far (:meth:`reply`, :meth:`reply_rcs`).
        scheduled: Timers to create when the event is committed (:meth:`schedule`,
            :meth:`goto`).
        cancelled: Ids of timers to cancel when the event is committed (:meth:`cancel`).
        writes: Storage writes to run when the event is committed (:meth:`on_commit`).
        backend: Where the session was loaded from and the effects go (the engine's
            :class:`Backend`); handlers do not use it directly.
        segment_budget: Replies billed above this many SMS segments are flagged and logged
            (``None``: no budget); the config file's ``segment_budget``.
    """

    def __init__(
        self,
        event: Event,
        backend: Backend,
        *,
        settings: Any = None,
        clock: Clock = utc_now,
        segment_budget: int | None = None,
    ) -> None:
        self.event: Event = event
        self.kind: EventKind = kind_of(event)
        self.backend = backend
        self.settings: Any = settings
        self.segment_budget = segment_budget
        self._clock = clock
        session = backend.load()
        self._loaded_state = session.state
        # Most conversations have no data: nothing to copy then.
        self._loaded_data = copy.deepcopy(session.data) if session.data else {}
        self._state = session.state
        self.data: dict[str, Any] = copy.deepcopy(self._loaded_data) if session.data else {}
        self._normalised_text: str | None = None
        """The message text as :class:`~bot.conversation.filters.Keyword` compares it,
        filled in by the first one."""
        self.replies: list[Reply] = []
        self.scheduled: list[TimerRef] = []
        self.cancelled: list[str] = []
        self.writes: list[Write] = []

    # -- the event ---------------------------------------------------------------

    @property
    def message(self) -> InboundMessage | None:
        """The inbound message, for a message event."""
        return self.event if isinstance(self.event, InboundMessage) else None

    @property
    def receipt(self) -> DeliveryReceipt | None:
        """The delivery receipt, for a receipt event."""
        return self.event if isinstance(self.event, DeliveryReceipt) else None

    @property
    def payload(self) -> Any:
        """The payload of a timer event (``None`` otherwise)."""
        return self.event.payload if isinstance(self.event, TimerEvent) else None

    @property
    def text(self) -> str:
        """The message's content as the handset typed it (for an RCS choice, its postback
        data); ``""`` for receipts, timers and timeouts. Filters compare it: ``Keyword``
        normalised, ``Regex`` as is."""
        message = self.message
        return message.content if message is not None else ""

    @property
    def prompt(self) -> dict[str, str] | None:
        """The metadata of the prompt this message answers (or this receipt reports on),
        when the outbound message was sent with ``prompt=...``; else ``None``."""
        event = self.event
        if isinstance(event, InboundMessage | DeliveryReceipt) and PROMPT_KEY in event.metadata:
            return dict(event.metadata)
        return None

    @property
    def conversation(self) -> str:
        """The conversation key, ``<our number>:<handset>``."""
        return self.backend.conversation

    @property
    def handset(self) -> str:
        """The handset's number (E.164, ``"+61491570156"``), for every event kind."""
        return handset_of(self.conversation)

    @property
    def our_number(self) -> str | None:
        """Our number in this conversation: the number the handset wrote to, else the
        conversation's; ``None`` for the account's shared pool."""
        message = self.message
        if message is not None and message.destination_number:
            return message.destination_number
        return _our_number(self.conversation)

    def now(self) -> datetime:
        """The engine clock's current time, timezone-aware UTC (in a test: the
        :class:`~bot.testing.BotTester`'s clock, which ``bot.advance`` moves)."""
        return self._clock()

    # -- the session ---------------------------------------------------------------

    @property
    def state(self) -> str | None:
        """The name of the conversation's current state, or ``None``."""
        return self._state

    def goto(self, state: StateLike) -> None:
        """Move the conversation to ``state`` (a :class:`State` or a declared name).

        Leaving a state with a timeout cancels its expiry; entering one schedules it (also
        when re-entering the same state, which restarts the clock)::

            ctx.goto(Booking.awaiting)   # expires in Booking.awaiting.timeout
        """
        target = States.resolve(state)
        self._leave()
        self._state = target.name
        if target.timeout is not None:
            self._add(
                TimerRef(
                    STATE_TIMEOUT_ID,
                    target.name,
                    self.now() + target.timeout,
                    kind="timeout",
                )
            )

    def end(self) -> None:
        """End the conversation's flow: no state, empty data, the state's expiry cancelled.
        Named timers stay scheduled; cancel them explicitly."""
        self._leave()
        self._state = None
        self.data.clear()

    def _leave(self) -> None:
        if self._state is None:
            return
        current = States.get(self._state)
        if current is None or current.timeout is not None:
            self.cancel(STATE_TIMEOUT_ID)

    # -- timers --------------------------------------------------------------------

    def schedule(
        self,
        name: str,
        *,
        at: datetime | None = None,
        delay: timedelta | float | None = None,
        payload: Any = None,
        id: str | None = None,
    ) -> TimerRef:
        """Ask for the timer event ``name`` at ``at`` or after ``delay`` (seconds or a
        timedelta), handled by ``@router.timer(name)`` with ``payload`` (any JSON value).

        Scheduling an ``id`` that is pending replaces that timer. Keep ``ref.id`` in
        ``ctx.data`` to cancel it later::

            ref = ctx.schedule("no_reply", delay=timedelta(hours=2), payload={"n": 1})
            ctx.data["no_reply"] = ref.id
        """
        if not name:
            raise ValueError("a timer needs a name")
        if (at is None) == (delay is None):
            raise ValueError("schedule() needs exactly one of at= or delay=")
        if at is not None:
            if at.tzinfo is None:
                raise ValueError("at= must be timezone-aware (for example datetime.now(UTC))")
            when = at.astimezone(UTC)
        else:
            assert delay is not None
            step = delay if isinstance(delay, timedelta) else timedelta(seconds=delay)
            if step < timedelta(0):
                raise ValueError(f"delay must not be negative, not {step}")
            when = self.now() + step
        try:
            fastjson.dumps(payload)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"a timer's payload must be JSON-serialisable: {exc}") from exc
        ref = TimerRef(id or uuid.uuid4().hex, name, when, payload)
        self._add(ref)
        return ref

    def cancel(self, timer: TimerRef | str) -> None:
        """Cancel a timer (its :class:`TimerRef` or id); unknown ids are ignored."""
        timer_id = timer.id if isinstance(timer, TimerRef) else timer
        self.scheduled = [ref for ref in self.scheduled if ref.id != timer_id]
        if timer_id not in self.cancelled:
            self.cancelled.append(timer_id)

    def _add(self, ref: TimerRef) -> None:
        self.scheduled = [other for other in self.scheduled if other.id != ref.id]
        self.scheduled.append(ref)

    # -- replies -------------------------------------------------------------------

    def reply(
        self,
        text: str,
        *,
        media: Sequence[str] | None = None,
        subject: str | None = None,
        metadata: dict[str, str] | None = None,
        prompt: str | None = None,
        origin: str | None = None,
        **fields: Any,
    ) -> Reply:
        """Send an SMS (an MMS with ``media`` or ``subject``) to the handset, from our number.

        Args:
            text: The message text.
            media: URLs of MMS media.
            subject: MMS subject.
            metadata: Metadata echoed on receipts and on the handset's reply (the gateway
                adds ``gw_id`` and ``gw_conv``; at most 10 pairs in all).
            prompt: Name the question this message asks: the handset's answer then matches
                ``AnswersPrompt(prompt)`` and carries this message's metadata as
                ``prompt``.
            origin: Why the message is sent, which decides the policies that apply to it:
                ``"reply"`` (answering the handset: never deferred by quiet hours),
                ``"timer"`` (a reminder or nudge: deferred during quiet hours), or
                ``"compliance"`` (opt-out/opt-in confirmations and HELP: sent even to a
                suppressed number). Default: ``"timer"`` in timer and timeout handlers
                (and for commands), else ``"reply"``.
            fields: Any other field of :class:`~bot.sinch.models.OutboundMessage`
                (``delivery_report`` defaults to true, so receipts come back).

        Raises:
            ValueError: the message breaks the provider's rules (pydantic's
                ``ValidationError``).

        ::

            ctx.reply("Reply Y to confirm", prompt="confirm", metadata={"appointment": "42"})
        """
        message = OutboundMessage(
            content=text,
            destination_number=self.handset,
            source_number=self.our_number,
            media=list(media) if media is not None else None,
            subject=subject,
            metadata=self._metadata(metadata, prompt),
            **{
                "format": Format.MMS if media or subject is not None else Format.SMS,
                "delivery_report": True,
                **fields,
            },
        )
        request = prepare_sms(message, self.conversation, origin=origin or self._origin)
        billed = text if message.format is Format.SMS else None
        return self._queue(request, billed)

    def reply_rcs(
        self,
        text: str | None = None,
        *,
        card: RcsCard | None = None,
        carousel: Sequence[RcsCard] | None = None,
        choices: Sequence[RcsChoice | str] = (),
        fallback_text: str | None = None,
        metadata: dict[str, str] | None = None,
        prompt: str | None = None,
        origin: str | None = None,
        **fields: Any,
    ) -> Reply:
        """Send an RCS message: exactly one of ``text``, ``card`` or ``carousel``, with
        suggested replies (``choices``: :class:`~bot.sinch.models.RcsChoice` or plain texts,
        whose postback data is the text). ``fallback_text`` goes as SMS to handsets
        without RCS. ``metadata``, ``prompt``, ``origin`` and ``fields`` as for :meth:`reply`.

        ::

            ctx.reply_rcs("Confirm your visit?", choices=["Yes", "No"], prompt="confirm",
                          fallback_text="Reply Y to confirm or N to cancel")
        """
        message = RcsMessage(
            destination_number=self.handset,
            source_number=self.our_number,
            text=text,
            card=card,
            carousel=list(carousel) if carousel is not None else None,
            choices=[RcsChoice(text=c) if isinstance(c, str) else c for c in choices],
            fallback_text=fallback_text,
            metadata=self._metadata(metadata, prompt),
            **{"delivery_report": True, **fields},
        )
        request = prepare_rcs(message, self.conversation, origin=origin or self._origin)
        return self._queue(request, fallback_text)

    @property
    def over_budget(self) -> list[Reply]:
        """The replies billed above the segment budget."""
        return [reply for reply in self.replies if reply.over_budget]

    @property
    def _origin(self) -> str:
        return "timer" if self.kind in ("timer", "timeout") else "reply"

    @staticmethod
    def _metadata(metadata: dict[str, str] | None, prompt: str | None) -> dict[str, str] | None:
        if prompt is None:
            return metadata
        if not prompt:
            raise ValueError("a prompt needs a name")
        return {**(metadata or {}), PROMPT_KEY: prompt}

    def _queue(self, request: OutboundRequest, billed: str | None) -> Reply:
        info = segments(request.text)
        budget = self.segment_budget
        over = False
        if budget is not None and billed is not None:
            billed_info = info if billed == request.text else segments(billed)
            if billed_info.segments > budget:
                over = True
                log.warning(
                    "reply over the segment budget",
                    conversation=self.conversation,
                    gw_id=request.gw_id,
                    segments=billed_info.segments,
                    budget=budget,
                    encoding=billed_info.encoding.value,
                )
        reply = Reply(request, info, over)
        self.replies.append(reply)
        return reply

    # -- storage -------------------------------------------------------------------

    def on_commit(self, write: Write) -> None:
        """Ask for a storage write committed atomically with the event, and only if the
        handler succeeds: in the gateway ``write`` is called with the event's
        :class:`~bot.inbox.handling.EventContext` and adds operations to its batch
        (a suppression, a plugin's record, a forwarded event)::

            ctx.on_commit(lambda gw: gw.batch.set(record_key, json.dumps(record)))
        """
        self.writes.append(write)

    # -- commit --------------------------------------------------------------------

    @property
    def session_changed(self) -> bool:
        """Whether the state or the data differ from what was loaded."""
        return self._state != self._loaded_state or self.data != self._loaded_data

    def _commit(self) -> None:
        """Hand every effect to the backend (the engine calls this once dispatch succeeded)."""
        changed = self.session_changed
        if changed:
            try:
                fastjson.dumps(self.data)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"session data must be JSON-serialisable: {exc}") from exc
        for reply in self.replies:
            self.backend.queue(reply)
        if changed:
            self.backend.save(self._state, self.data)
        if self.scheduled or self.cancelled:
            self.backend.update_timers(tuple(self.scheduled), tuple(self.cancelled))
        for write in self.writes:
            self.backend.apply(write)

    def __repr__(self) -> str:
        return f"<Context {self.kind} state={self._state!r}>"
