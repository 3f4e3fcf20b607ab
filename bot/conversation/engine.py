"""The engine: runs each event through the routers to the first matching handler.

::

    engine = Engine(compliance.router, appointments.router, segment_budget=2)
    handled = await engine.dispatch(message, backend)

For one event, :meth:`Engine.dispatch` loads the session from the backend, walks the
routers (outer middleware → filters → inner middleware → the handler with its injected
arguments), stops at the first handler whose filters match, and, if nothing raised, hands
the handler's effects (replies, session, timers) to the backend. A message no handler
matched walks the routers once more for their fallback handlers
(``@router.message(..., fallback=True)``), in the same order. It returns whether a
handler ran: with ``False`` the caller falls back (a default reply, for example).
Exceptions propagate, and then nothing of the event is applied: in the gateway the inbox
retries the event and eventually dead-letters it. Before one propagates, the engine's
:attr:`Engine.on_error` hook (if set) is told which root router's handling raised: the
gateway counts errors per router, that is per plugin (``compliance``, ``keywords``, plugin
names), in its metrics.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import structlog

from bot.conversation.context import (
    DEFAULT_FLOW,
    Backend,
    Clock,
    Context,
    Event,
    EventKind,
    utc_now,
)
from bot.conversation.flows import FlowIndex
from bot.conversation.router import KINDS, HandlerSpec, Middleware, NextHandler, Router
from bot.storage.timers import TimeoutEvent, TimerEvent

__all__ = ["DEFAULT_SEGMENT_BUDGET", "Engine", "ErrorHook"]

log = structlog.get_logger(__name__)

DEFAULT_SEGMENT_BUDGET: Final = 3
"""Replies billed above this many SMS segments are logged as warnings."""

ErrorHook = Callable[[str, Exception], None]
"""``on_error(router_name, exc)``: a handler (or a filter, a middleware) of the root router
``router_name`` raised ``exc`` while handling an event."""


@dataclass
class _Run:
    """Where one dispatch stands."""

    kind: EventKind
    chosen: HandlerSpec | None = None
    called: bool = False
    fallback: bool = False
    """Trying the fallback handlers (no other handler matched)."""


def _wrap(middlewares: Iterable[Middleware], handler: NextHandler) -> NextHandler:
    """``handler`` inside ``middlewares``, the first one outermost."""
    for middleware in reversed(tuple(middlewares)):
        handler = functools.partial(middleware, handler)
    return handler


def _arguments(ctx: Context) -> dict[str, Any]:
    values: dict[str, Any] = {"ctx": ctx, "event": ctx.event, "settings": ctx.settings}
    if ctx.kind == "message":
        values.update(message=ctx.message, prompt=ctx.prompt)
    elif ctx.kind == "receipt":
        values.update(receipt=ctx.receipt, prompt=ctx.prompt)
    elif ctx.kind == "timer":
        values["payload"] = ctx.payload
    return values


def _handler_data(ctx: Context) -> Any:
    """The ``data`` argument: the flow's data model if its router declares one."""
    return ctx.model if ctx.flow in ctx._index.models else ctx.data


def _has_fallbacks(root: Router) -> bool:
    return any(router.handlers("message", fallback=True) for router in root.walk())


class Engine:
    """Dispatches events to the handlers of ``routers`` (tried in the order given).

    Args:
        routers: Root routers (not included in another router); one router may serve
            several engines.
        settings: Injected as ``settings`` where a router has none of its own.
        segment_budget: Replies billed above this many SMS segments are logged as warnings
            and flagged (``Reply.over_budget``); ``None`` turns the check off.
        clock: The current time, for timers (tests pass a fake clock).
        on_error: Told the root router's name and the exception when handling an event
            raises (before the exception propagates); settable later as :attr:`on_error`.

    Attributes:
        routers: The root routers, in the order they are tried.
        settings: Injected as ``settings`` where a router has none of its own.
        segment_budget: The segment budget of replies (``None``: none).
        clock: The current time, for timers and ``ctx.now()``.
        on_error: The error hook (``None``: none).
        index: The flows (one per root router, named after it), with the states their
            handlers name and their data models.
    """

    def __init__(
        self,
        *routers: Router,
        settings: Any = None,
        segment_budget: int | None = DEFAULT_SEGMENT_BUDGET,
        clock: Clock = utc_now,
        on_error: ErrorHook | None = None,
    ) -> None:
        seen: set[int] = set()
        for router in routers:
            if not isinstance(router, Router):
                raise TypeError(f"Engine takes routers, not {router!r}")
            if router.parent is not None:
                raise ValueError(
                    f"{router!r} is included in {router.parent!r}; give the engine the root"
                )
            for node in router.walk():
                if id(node) in seen:
                    raise ValueError(f"{node!r} is given to the engine twice")
                seen.add(id(node))
                if node.parent is not None and (
                    node.data_model or node.legacy_keys or node.legacy_states
                ):
                    raise ValueError(
                        f"{node!r} declares data=, legacy_keys= or legacy_states=, which "
                        "belong to the root router of its plugin (the flow is the whole tree's)"
                    )
        index = FlowIndex()
        for router in routers:
            states = [state for node in router.walk() for state in node.states()]
            index.add(
                router.name,
                states,
                model=router.data_model,
                legacy_keys=router.legacy_keys,
                legacy_states=router.legacy_states,
            )
        if segment_budget is not None and segment_budget < 1:
            raise ValueError("segment_budget must be at least 1 (or None for no budget)")
        self.routers = routers
        self.index = index
        self.settings = settings
        self.segment_budget = segment_budget
        self.clock = clock
        self.on_error = on_error

    def context(self, event: Event, backend: Backend) -> Context:
        """A fresh :class:`Context` for ``event`` over ``backend`` (what handlers get)."""
        return Context(
            event,
            backend,
            settings=self.settings,
            clock=self.clock,
            segment_budget=self.segment_budget,
            index=self.index,
            flow=self.routers[0].name if self.routers else DEFAULT_FLOW,
        )

    def handlers(self) -> list[HandlerSpec]:
        """Every registered handler, in the order they are tried (per event kind; the
        fallback handlers last)."""
        return [
            spec
            for fallback in (False, True)
            for root in self.routers
            for router in root.walk()
            for kind in KINDS
            for spec in router.handlers(kind, fallback=fallback)
        ]

    async def dispatch(self, event: Event, backend: Backend) -> bool:
        """Handle ``event`` of ``backend``'s conversation; whether a handler ran.

        Each root router sees its own flow (``ctx.state``, ``ctx.data``). A timer or a state
        expiry goes only to the routers of the flow that scheduled it; a
        :class:`~bot.conversation.timers.TimeoutEvent` of a state that flow has already left
        is ignored (``False``).
        """
        ctx = self.context(event, backend)
        routers = self.routers
        if isinstance(event, TimeoutEvent):
            flow = event.flow
            if flow is None:  # scheduled before flows had namespaces: the flow in that state
                flow = next(
                    (view.name for view in ctx.flows.values() if view.state == event.state), None
                )
            view = ctx.flows.get(flow) if flow is not None else None
            if view is None or view.state != event.state:
                log.info("stale state timeout ignored", state=event.state, flow=flow)
                return False
            routers = tuple(router for router in routers if router.name == flow)
        elif isinstance(event, TimerEvent) and event.flow is not None:
            routers = tuple(router for router in routers if router.name == event.flow)
        run = _Run(ctx.kind)
        arguments = _arguments(ctx)
        current = routers[0] if routers else None
        try:
            for router in routers:
                current = router
                self._enter(ctx, router, arguments)
                await self._propagate(router, ctx, arguments, (), run)
                if run.chosen is not None:
                    break
            if run.chosen is None and run.kind == "message":
                run.fallback = True
                for router in routers:
                    if not _has_fallbacks(router):
                        continue
                    current = router
                    self._enter(ctx, router, arguments)
                    await self._propagate(router, ctx, arguments, (), run)
                    if run.chosen is not None:
                        break
            ctx._commit()
        except Exception as exc:
            self._report(current.name if current is not None else "engine", exc)
            raise
        if run.chosen is None:
            log.debug("no handler", kind=ctx.kind)
        elif not run.called:
            log.debug("handler skipped by middleware", kind=ctx.kind, handler=run.chosen.qualname)
        return run.called

    @staticmethod
    def _enter(ctx: Context, root: Router, arguments: dict[str, Any]) -> None:
        """Offer the event to ``root``'s plugin: its flow becomes the context's."""
        ctx._enter(root.name)
        arguments["state"] = ctx.state
        arguments["data"] = ctx.data

    def _report(self, router: str, exc: Exception) -> None:
        if self.on_error is None:
            return
        try:
            self.on_error(router, exc)
        except Exception:  # an observer must not change what the event does
            log.exception("engine on_error hook failed", router=router)

    async def _propagate(
        self,
        router: Router,
        ctx: Context,
        arguments: dict[str, Any],
        inner: tuple[Middleware, ...],
        run: _Run,
    ) -> Any:
        """Offer the event to ``router``'s handlers, then its children's, inside its outer
        middleware; ``inner`` holds its ancestors' inner middleware."""
        # A copy: what this router's middleware adds reaches its descendants, not siblings.
        arguments = dict(arguments)
        if router.settings is not None:
            arguments["settings"] = router.settings
        chain = (*inner, *router.inner)

        async def resolve(ctx: Context, arguments: dict[str, Any]) -> Any:
            ctx.settings = arguments.get("settings")
            for spec in router.handlers(run.kind, fallback=run.fallback):
                extra = await spec.match(ctx)
                if extra is not None:
                    run.chosen = spec
                    return await self._invoke(spec, ctx, {**arguments, **extra}, chain, run)
            for child in router.children:
                result = await self._propagate(child, ctx, arguments, chain, run)
                if run.chosen is not None:
                    return result
            return None

        return await _wrap(router.outer, resolve)(ctx, arguments)

    async def _invoke(
        self,
        spec: HandlerSpec,
        ctx: Context,
        arguments: dict[str, Any],
        inner: tuple[Middleware, ...],
        run: _Run,
    ) -> Any:
        async def call(ctx: Context, arguments: dict[str, Any]) -> Any:
            run.called = True
            # Middleware may have moved the conversation on: hand over the live values.
            arguments.update(state=ctx.state, data=_handler_data(ctx))
            log.debug("handling", kind=run.kind, handler=spec.qualname)
            return await spec(arguments)

        return await _wrap(inner, call)(ctx, arguments)
