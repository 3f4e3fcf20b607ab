"""What a handler works with: :class:`Context`, and the :class:`Backend` seam under it.

A :class:`Context` is built for one event. It exposes the event (``message``,
``receipt``, timer ``payload``), the handling plugin's own ``state`` and ``data`` (its
*flow*: see :mod:`bot.conversation.flows`), and records what
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

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import EllipsisType, MappingProxyType
from typing import Any, Final, Literal, Protocol

import structlog
from pydantic import BaseModel, ValidationError

from bot.conversation.flows import LEGACY_FLOW, FlowIndex, FlowView, expiry_id, migrate
from bot.conversation.states import State, StateLike, States
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
from bot.storage.timers import TimeoutEvent, TimerEvent, TimerRef, timer_key

__all__ = [
    "DEFAULT_FLOW",
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

DEFAULT_FLOW: Final = "default"
"""The flow of a context built outside an engine with routers (``Engine().context(...)``)."""

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
        flows: Each flow's record by the name of its plugin (its root router):
            ``{"state": ..., "data": {...}, "expiry": ...}`` (see
            :mod:`bot.conversation.flows`). The engine never changes these objects.
        state: The state of a session stored before flows had namespaces (``None``
            otherwise); the engine migrates it into ``flows``.
        data: The shared data of such a session (empty otherwise).
        timers: The keys of the conversation's pending timers (:attr:`TimerRef.key`), so
            that a plugin's ``ctx.cancel(id)`` and ``ctx.schedule(..., id=id)`` also reach
            a timer stored under the bare ``id`` before ids had namespaces.
    """

    flows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    state: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    timers: Collection[str] = ()


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

    def save(
        self,
        flows: dict[str, dict[str, Any]],
        transitions: Sequence[tuple[str, str | None, str | None]],
    ) -> None:
        """Store the session's flows (all of them: the changed ones are new objects, the
        others those :meth:`load` gave), clearing a pre-namespace ``state`` and ``data``.
        ``transitions`` lists the flows whose state changed: ``(flow, from, to)``."""
        ...

    def update_timers(self, scheduled: Sequence[TimerRef], cancelled: Sequence[str]) -> None:
        """Cancel the timers with the keys in ``cancelled``, then create ``scheduled``
        (replacing pending timers of the same :attr:`~TimerRef.key`)."""
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
        flow: The name of the flow being handled: the plugin's (its root router's). The
            engine sets it while it offers the event to that plugin's routers.
        settings: The settings of the handling router (or the engine's): a plugin's
            validated settings model.
        replies: The replies queued so far (:meth:`reply`, :meth:`reply_rcs`).
        scheduled: Timers to create when the event is committed (:meth:`schedule`,
            :meth:`goto`).
        cancelled: Keys (:attr:`TimerRef.key`) of timers to cancel when the event is
            committed (:meth:`cancel`, leaving a state with an expiry).
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
        index: FlowIndex | None = None,
        flow: str = DEFAULT_FLOW,
    ) -> None:
        self.event: Event = event
        self.kind: EventKind = kind_of(event)
        self.backend = backend
        self.settings: Any = settings
        self.segment_budget = segment_budget
        self._clock = clock
        self._index = index if index is not None else FlowIndex()
        self.flow: str = flow
        session = backend.load()
        loaded = session.flows
        if session.state is not None or session.data:
            # Outside an engine with routers, the context's one flow is the session's.
            unowned = LEGACY_FLOW if self._index.names else flow
            loaded = {**migrate(session.state, session.data, self._index, unowned), **loaded}
        self._loaded: Mapping[str, Mapping[str, Any]] = loaded
        self._pending: Collection[str] = session.timers
        """The flows as loaded (never changed: the baseline of what changed)."""
        self._flows: dict[str, _Flow] = {}
        """The flows this event looked at, by name (a flow's data is copied when first read)."""
        self._normalised_text: str | None = None
        """The message text as :class:`~bot.conversation.filters.Keyword` compares it,
        filled in by the first one."""
        self.replies: list[Reply] = []
        self.scheduled: list[TimerRef] = []
        self.cancelled: list[str] = []
        self.writes: list[Write] = []
        self._moves = 0
        """How many times a handler moved a flow (:meth:`goto`, :meth:`end`): a
        transition table's row then leaves the move to it."""

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

    def _flow(self, name: str | None = None) -> _Flow:
        name = self.flow if name is None else name
        found = self._flows.get(name)
        if found is None:
            found = self._flows[name] = _Flow(name, self._loaded.get(name) or _EMPTY)
        return found

    def _enter(self, flow: str) -> None:
        """Handle the event as the flow ``flow`` (the engine calls this per plugin)."""
        self.flow = flow

    @property
    def state(self) -> State | None:
        """The current state of this plugin's flow (``None``: none). A :class:`State`,
        equal to its name: ``ctx.state == Order.size`` and ``ctx.state == "Order:size"``
        both work; ``ctx.state.name`` is the name."""
        return self._index.state(self.flow, self._flow().state)

    @property
    def data(self) -> dict[str, Any]:
        """This plugin's data in the conversation, a JSON object the handler may change in
        place; saved with the event when it differs from what was loaded. No other plugin
        sees it; :meth:`end` empties it. (With a data model declared, :attr:`model` is the
        validated view of it.)"""
        return self._flow().data()

    @data.setter
    def data(self, value: dict[str, Any]) -> None:  # what `ctx.data = {...}` does
        flow = self._flow()
        flow.model = None
        flow.values = value

    @property
    def model(self) -> Any:
        """This plugin's data as the pydantic model its root router declares
        (``Router(..., data=Order)``), validated when first read (an empty flow: the model's
        defaults); changes to it are saved with the event. Handlers of such a router get it
        as their ``data`` argument.

        Raises:
            TypeError: the router declares no data model.
            ValueError: the stored data does not validate (pydantic's ``ValidationError``).
        """
        flow = self._flow()
        if flow.model is None:
            model = self._index.models.get(flow.name)
            if model is None:
                raise TypeError(
                    f"flow {flow.name!r} declares no data model: Router({flow.name!r}, data=...)"
                )
            try:
                flow.model = model.model_validate(flow.data())
            except ValidationError:
                log.error("flow data does not fit its model", flow=flow.name, model=model.__name__)
                raise
        return flow.model

    @property
    def flows(self) -> Mapping[str, FlowView]:
        """Every flow of the conversation with a state or data, by plugin name (this one's
        included), read-only: what another plugin's flow is doing, for the rare handler
        that must know (change only your own: :attr:`state`, :attr:`data`,
        :meth:`end_all`)."""
        views: dict[str, FlowView] = {}
        for name in {**self._loaded, **self._flows}:
            flow = self._flows.get(name)
            if flow is None:
                record = self._loaded[name]
                state, data = record.get("state"), record.get("data") or _EMPTY
            else:
                state, data = flow.state, flow.current()
            if state is not None or data:
                views[name] = FlowView(name, state, MappingProxyType(data))
        return MappingProxyType(views)

    def goto(
        self, state: StateLike, *, timeout: timedelta | float | EllipsisType | None = ...
    ) -> None:
        """Move this plugin's flow to ``state`` (a :class:`State` or a declared name).

        Leaving a state with an expiry pending cancels it; entering one with a timeout
        schedules one (also when re-entering the same state, which restarts the clock).
        The timeout is the state's (fixed, or read from the settings when entering: see
        :class:`State`) unless ``timeout`` gives this transition its own (a
        :class:`~datetime.timedelta` or seconds; ``None``: no expiry this time)::

            ctx.goto(Booking.awaiting)                           # the state's timeout
            ctx.goto(Booking.awaiting, timeout=timedelta(minutes=10))

        The expiry is a timer, stored with the event: durable across restarts, and handled
        by ``@router.timeout(state)`` only while the flow is still in that state.
        """
        target = self._resolve(state)
        flow = self._flow()
        self._moves += 1
        self._leave(flow)
        flow.state = target.name
        duration = target.timeout_for(self.settings) if timeout is ... else _timeout(timeout)
        if duration is not None:
            flow.expiry = expiry_id(flow.name)
            self._add(
                TimerRef(
                    flow.expiry,
                    target.name,
                    self.now() + duration,
                    kind="timeout",
                    flow=flow.name,
                )
            )

    def _resolve(self, state: StateLike) -> State:
        if isinstance(state, str):
            index = self._index
            known = index.states.get(self.flow, {}).get(state) or index.declared.get(
                self.flow, {}
            ).get(state)
            if known is not None:
                return known
        target = States.resolve(state)
        self._index.states.setdefault(self.flow, {}).setdefault(target.name, target)
        return target

    def end(self) -> None:
        """End this plugin's flow: no state, empty data, its state's expiry cancelled.
        Other plugins' flows are not touched. Named timers stay scheduled; cancel them
        explicitly."""
        self._end(self._flow())

    def end_all(self) -> None:
        """End every flow of the conversation, every plugin's (as :meth:`end` does for
        this one): for a handler that speaks for the whole conversation."""
        for name in {**self._loaded, **self._flows}:
            self._end(self._flow(name))

    def _end(self, flow: _Flow) -> None:
        self._moves += 1
        self._leave(flow)
        flow.state = None
        flow.model = None
        if flow.values is None:
            flow.values = {}
        else:
            flow.values.clear()  # a handler's `data` argument is this dict

    def _leave(self, flow: _Flow) -> None:
        if flow.expiry is not None:
            self._cancel_key(flow.expiry)
            flow.expiry = None

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
        timedelta), handled by ``@router.timer(name)`` with ``payload`` (any JSON value),
        of this plugin only (a timer comes back to the flow that scheduled it).

        Ids are this plugin's own: scheduling an ``id`` this plugin has pending replaces
        that timer, and another plugin's timer of the same id is another timer (stored
        under :func:`~bot.storage.timers.timer_key`, ``"<plugin>/<id>"``). Without ``id``
        the timer gets a fresh one; keep ``ref.id`` in ``ctx.data`` to cancel it later::

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
        if id:
            self._cancel_bare(id)  # one stored before namespaces is replaced, as it was
        timer_id = id or uuid.uuid4().hex
        ref = TimerRef(timer_id, name, when, payload, flow=self.flow, key=self._key(timer_id))
        self._add(ref)
        return ref

    def cancel(self, timer: TimerRef | str) -> None:
        """Cancel a timer: its :class:`TimerRef`, or its id among this plugin's timers
        (another plugin's timer of the same id is not touched); unknown ids are ignored.
        A timer of this id stored before ids had namespaces (by its bare id) is cancelled
        too."""
        if isinstance(timer, TimerRef):
            self._cancel_key(timer.key)
            return
        self._cancel_key(self._key(timer))
        self._cancel_bare(timer)

    def _key(self, timer_id: str) -> str:
        return timer_key(self.flow, timer_id)

    def _cancel_bare(self, timer_id: str) -> None:
        """Cancel the timer stored under the bare ``timer_id`` (before ids had namespaces;
        who scheduled it is not known here, so it goes as the one id of the conversation
        it then was), if one is pending."""
        if timer_id in self._pending and timer_id != self._key(timer_id):
            self._cancel_key(timer_id)

    def _cancel_key(self, key: str) -> None:
        self.scheduled = [ref for ref in self.scheduled if ref.key != key]
        if key not in self.cancelled:
            self.cancelled.append(key)

    def _add(self, ref: TimerRef) -> None:
        self.scheduled = [other for other in self.scheduled if other.key != ref.key]
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
        """Whether any flow's state or data differ from what was loaded."""
        return any(flow.changed() for flow in self._flows.values())

    def _commit(self) -> None:
        """Hand every effect to the backend (the engine calls this once dispatch succeeded)."""
        changed = [flow for flow in self._flows.values() if flow.changed()]
        for flow in changed:
            try:
                fastjson.dumps(flow.current())
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"the data of flow {flow.name!r} must be JSON-serialisable: {exc}"
                ) from exc
        for reply in self.replies:
            self.backend.queue(reply)
        if changed:
            flows = {name: dict(record) for name, record in self._loaded.items()}
            transitions: list[tuple[str, str | None, str | None]] = []
            for flow in changed:
                record = flow.record()
                if record:
                    flows[flow.name] = record
                else:
                    flows.pop(flow.name, None)
                before = flow.loaded.get("state")
                if before != flow.state:
                    transitions.append((flow.name, before, flow.state))
            self.backend.save(flows, transitions)
        if self.scheduled or self.cancelled:
            self.backend.update_timers(tuple(self.scheduled), tuple(self.cancelled))
        for write in self.writes:
            self.backend.apply(write)

    def __repr__(self) -> str:
        return f"<Context {self.kind} flow={self.flow!r} state={self._flow().state!r}>"


_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


def _timeout(value: object) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise TypeError(f"timeout= takes a timedelta, seconds or None, not {value!r}")
    duration = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if duration <= timedelta(0):
        raise ValueError(f"a timeout must be positive, not {duration}")
    return duration


class _Flow:
    """One flow as an event handles it: its state and expiry, and its data copied when
    first read (most events read the data of few flows)."""

    __slots__ = ("expiry", "loaded", "model", "name", "state", "values")

    def __init__(self, name: str, loaded: Mapping[str, Any]) -> None:
        self.name = name
        self.loaded = loaded
        self.state: str | None = loaded.get("state")
        self.expiry: str | None = loaded.get("expiry")
        self.values: dict[str, Any] | None = None
        """The working copy of the data (``None``: not read yet, still as loaded)."""
        self.model: BaseModel | None = None
        """The validated data model handed out (:attr:`Context.model`), saved in place of
        the values."""

    def data(self) -> dict[str, Any]:
        if self.values is None:
            raw = self.loaded.get("data")
            # A JSON-level copy: cheaper than copy.deepcopy for what a session can hold.
            self.values = fastjson.loads(fastjson.dumps(raw)) if raw else {}
        return self.values

    def current(self) -> Mapping[str, Any]:
        """The data as it stands (the model's, dumped, if one was handed out)."""
        if self.model is not None:
            return self.model.model_dump(mode="json")
        if self.values is None:
            return self.loaded.get("data") or _EMPTY
        return self.values

    def changed(self) -> bool:
        if self.state != self.loaded.get("state") or self.expiry != self.loaded.get("expiry"):
            return True
        if self.values is None and self.model is None:
            return False
        return self.current() != (self.loaded.get("data") or {})

    def record(self) -> dict[str, Any]:
        """The flow as stored (empty: nothing to store)."""
        record: dict[str, Any] = {}
        if self.state is not None:
            record["state"] = self.state
        data = self.current()
        if data:
            record["data"] = dict(data)
        if self.expiry is not None:
            record["expiry"] = self.expiry
        return record
