"""What plugin authors use: routers, filters, states, the handler context and the engine.

A two-way confirmation in full::

    from datetime import timedelta
    from bot.conversation import (
        AnswersPrompt, Context, Keyword, Router, State, States, Status,
    )

    router = Router("confirmations")

    class Confirm(States):
        asked = State(timeout=timedelta(hours=2))  # or from the settings: timeout="name"

    @router.message(Keyword("book"))
    async def book(ctx: Context) -> None:
        ctx.reply("Tue 10:00 is free. Reply Y to take it.", prompt="slot",
                  metadata={"slot": "tue-10"})
        ctx.goto(Confirm.asked)

    @router.message(Keyword("Y", "YES"), AnswersPrompt("slot"), state=Confirm.asked)
    async def yes(ctx: Context, prompt: dict[str, str]) -> None:
        ctx.reply(f"Booked: {prompt['slot']}.")
        ctx.end()

    @router.timeout(Confirm.asked)
    async def too_late(ctx: Context) -> None:
        ctx.reply("The slot was released; text BOOK to start again.")
        ctx.end()

    @router.receipt(Status("failed", "expired"), AnswersPrompt("slot"))
    async def unreachable(ctx: Context) -> None:
        ctx.end()

Each root router (each plugin) has its own flow in the conversation: ``ctx.state``,
``ctx.data`` and ``state=`` are its own, and ``ctx.end()`` ends only it (see
:mod:`bot.conversation.flows`). A flow may also be written as a transition table
(:class:`Transitions`, :mod:`bot.conversation.table`), which registers these same
decorators.

The engine runs them: ``await Engine(router).dispatch(event, backend)``; in the gateway,
:class:`bot.inbox.engine.GatewayEngineHandler` does it for every inbox event.
"""

from typing import Any

from bot.conversation.context import (
    PROMPT_KEY,
    Backend,
    Context,
    Event,
    EventKind,
    Reply,
    SessionSnapshot,
)
from bot.conversation.engine import DEFAULT_SEGMENT_BUDGET, Engine
from bot.conversation.filters import (
    ANY_STATE,
    AnswersPrompt,
    ChannelIs,
    Choice,
    Custom,
    Filter,
    FilterResult,
    FromNumber,
    Keyword,
    Regex,
    StateIs,
    Status,
    SyncFilter,
    ToNumber,
    normalise,
)
from bot.conversation.flows import LEGACY_FLOW, FlowView
from bot.conversation.router import Middleware, NextHandler, Router
from bot.conversation.states import State, States
from bot.conversation.table import END, OTHERWISE, Transitions
from bot.conversation.timers import STATE_TIMEOUT_ID, TimeoutEvent, TimerEvent, TimerRef, timer_key

__all__ = [
    "ANY_STATE",
    "DEFAULT_SEGMENT_BUDGET",
    "END",
    "LEGACY_FLOW",
    "OTHERWISE",
    "PROMPT_KEY",
    "STATE_TIMEOUT_ID",
    "AnswersPrompt",
    "Backend",
    "ChannelIs",
    "Choice",
    "Context",
    "Custom",
    "Engine",
    "Event",
    "EventKind",
    "Filter",
    "FilterResult",
    "FlowView",
    "FromNumber",
    "Keyword",
    "Middleware",
    "NextHandler",
    "Regex",
    "Reply",
    "Router",
    "SessionSnapshot",
    "State",
    "StateIs",
    "States",
    "Status",
    "SyncFilter",
    "TimeoutEvent",
    "TimerEvent",
    "TimerRef",
    "ToNumber",
    "Transitions",
    "normalise",
    "timer_key",
]


_MOVED = {"EventContextBackend", "GatewayEngineHandler", "GatewayOutcome"}
"""The gateway's side of the engine, now in :mod:`bot.inbox.engine` (the conversation
package depends on no gateway part); importable from here for one more release."""


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import warnings

        from bot.inbox import engine  # lazy: the gateway imports this package, not the reverse

        warnings.warn(
            f"bot.conversation.{name} moved to bot.inbox.engine.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
