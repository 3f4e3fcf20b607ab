"""Timer events and the timers handlers ask for (plugin authors import them from
:mod:`bot.conversation`).

Two kinds of events do not come from the provider:

* :class:`TimeoutEvent`: the conversation stayed in a state with a ``timeout`` for too long
  (handled by ``@router.timeout(state)``);
* :class:`TimerEvent`: a named timer a handler scheduled with ``ctx.schedule(...)`` fired
  (handled by ``@router.timer(name)``), or a *command* posted into the conversation from
  outside (the management API, a plugin's CLI: :func:`bot.inbox.commands.post_command`),
  handled the same way, in order with the conversation's other events.

A handler never persists a timer itself: ``ctx.schedule`` and ``ctx.goto`` record a
:class:`TimerRef` in ``ctx.scheduled`` and ``ctx.cancel`` records an id in
``ctx.cancelled``; when the handler succeeds the engine hands both lists to the backend,
which applies the cancellations first and then the schedules.

A timer a plugin schedules is stored under its :attr:`TimerRef.key`, ``<plugin>/<id>``
(:func:`timer_key`): ids are the plugin's own, so two plugins' ``"reminder"`` timers are two
timers, each firing to its plugin, and scheduling an id that the same plugin has pending
replaces it. (Timers stored before ids had namespaces keep their bare id as their key.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = ["STATE_TIMEOUT_ID", "TimeoutEvent", "TimerEvent", "TimerRef", "timer_key"]

STATE_TIMEOUT_ID = "state-timeout"
"""The id of a flow's state expiry, followed by ``:<flow>`` (the plugin's name): each flow of
a conversation is in one state at a time, so it has at most one pending expiry, replaced on
every ``goto`` into a state with a timeout. (Sessions stored before flows had namespaces
have their one expiry under this id alone.)"""


def timer_key(flow: str, timer_id: str) -> str:
    """The key a timer of ``flow`` (a plugin's name) with the id ``timer_id`` is stored
    under in the conversation: ``"<flow>/<id>"``.

    >>> timer_key("pizza", "reminder")
    'pizza/reminder'
    """
    return f"{flow}/{timer_id}"


@dataclass(frozen=True, slots=True)
class TimeoutEvent:
    """The conversation's ``state`` (a name) timed out.

    The engine dispatches it only while the conversation is still in that state; a late
    expiry of a state already left is ignored.

    Attributes:
        state: The name of the state that expired.
        flow: The flow (the plugin's name) whose state it is; ``None`` for an expiry
            scheduled before flows had namespaces (the flow in that state then takes it).
    """

    state: str
    flow: str | None = None


@dataclass(frozen=True, slots=True)
class TimerEvent:
    """The timer ``name`` fired, with the ``payload`` it was scheduled with (or a command
    named ``name`` was posted into the conversation).

    Attributes:
        name: The timer's (or command's) name, as ``@router.timer(name)`` takes it.
        payload: What it was scheduled (or posted) with, a JSON value.
        id: The timer's id (``ctx.schedule(..., id=...)``, by default a fresh one).
        flow: The flow (the plugin's name) that scheduled it, the only one it is offered
            to; ``None`` for a command (or a timer scheduled before flows had namespaces):
            offered to every plugin.
    """

    name: str
    payload: Any = None
    id: str = ""
    flow: str | None = None


@dataclass(frozen=True, slots=True)
class TimerRef:
    """A timer to create: when it is ``at`` (UTC), :meth:`event` is dispatched to the
    conversation.

    ``kind`` is ``"timeout"`` for a state expiry (``name`` is then the state's name),
    ``"timer"`` for a named timer and ``"command"`` for a command posted from outside the
    conversation (never pending: it goes straight into the inbox). ``payload`` is any JSON
    value.

    Attributes:
        id: The timer's id as its plugin knows it (``ctx.schedule(..., id=...)``): unique
            per plugin, not per conversation (see :attr:`key`); :meth:`Context.cancel`
            takes it.
        name: The timer's name (for a state expiry: the state's name).
        at: When it is due (UTC).
        payload: What the handler receives as ``payload``, a JSON value.
        kind: ``"timer"``, ``"timeout"`` or ``"command"``.
        flow: The flow (the plugin's name) that scheduled it (``None``: every flow, as for
            commands).
        key: What it is stored under, unique in the conversation: scheduling a key that is
            pending replaces that timer. For a timer a plugin scheduled
            ``"<plugin>/<id>"`` (:func:`timer_key`); for a state expiry (whose id names its
            flow already), a command, or a timer stored before ids had namespaces, the id
            itself (the default: ``""`` is replaced by :attr:`id`).
    """

    id: str
    name: str
    at: datetime
    payload: Any = None
    kind: Literal["timer", "timeout", "command"] = "timer"
    flow: str | None = None
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.id)

    def event(self) -> TimerEvent | TimeoutEvent:
        """The event to dispatch when the timer is due.

        >>> from datetime import UTC
        >>> TimerRef("t1", "nudge", datetime(2030, 1, 1, tzinfo=UTC), {"n": 1}).event()
        TimerEvent(name='nudge', payload={'n': 1}, id='t1')
        """
        if self.kind == "timeout":
            return TimeoutEvent(self.name, self.flow)
        return TimerEvent(self.name, self.payload, self.id, self.flow)

    def to_json(self) -> dict[str, Any]:
        """A JSON object for storage (see :meth:`from_json`)."""
        value: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "at": self.at.isoformat(),
            "payload": self.payload,
            "kind": self.kind,
        }
        if self.flow is not None:
            value["flow"] = self.flow
        if self.key != self.id:
            value["key"] = self.key
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TimerRef:
        """The timer :meth:`to_json` stored."""
        kind = value.get("kind", "timer")
        if kind not in ("timer", "timeout", "command"):
            raise ValueError(f"unknown timer kind {kind!r}")
        return cls(
            id=str(value["id"]),
            name=str(value["name"]),
            at=datetime.fromisoformat(str(value["at"])),
            payload=value.get("payload"),
            kind=kind,
            flow=None if value.get("flow") is None else str(value["flow"]),
            key=str(value.get("key") or ""),
        )
