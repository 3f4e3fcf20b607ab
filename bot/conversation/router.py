"""Routers: where handlers, their filters and middleware are registered.

A plugin builds one :class:`Router` and decorates its handlers::

    router = Router("appointments")

    @router.message(Keyword("Y"), state=Booking.awaiting)
    async def confirmed(ctx: Context) -> None:
        ctx.reply("Confirmed, thanks!")
        ctx.end()

    @router.timeout(Booking.awaiting)
    async def no_answer(ctx: Context) -> None:
        ctx.reply("Still there? Reply Y to confirm.")

    @router.receipt(Status("failed", "expired"))
    async def undeliverable(receipt: DeliveryReceipt, data: dict[str, Any]) -> None:
        data["undeliverable"] = receipt.status

Handlers are ``async`` (plain functions work too) and get what they name, by parameter name:

* every kind: ``ctx`` (the :class:`~bot.conversation.context.Context`), ``event`` (the event
  itself), ``state`` (the plugin's current :class:`~bot.conversation.states.State`, or
  ``None``), ``data`` (the plugin's data in the conversation: a mutable dict, or the
  validated model when the root router declares one with ``data=``) and ``settings`` (the
  router's settings, or its nearest ancestor's, or the engine's);
* message handlers: ``message`` (the :class:`~bot.sinch.models.InboundMessage`) and
  ``prompt`` (the answered prompt's metadata, or ``None``);
* receipt handlers: ``receipt`` (the :class:`~bot.sinch.models.DeliveryReceipt`) and
  ``prompt`` (the metadata of the prompt it reports on, or ``None``);
* timer handlers: ``payload`` (what the timer was scheduled with);

plus what the handler's filters add (``keyword``, regex groups, ``postback``...) and what
middleware puts in the arguments dict. A ``**kwargs`` parameter receives everything. A
required parameter that nothing provides is a ``TypeError`` when the handler is registered;
names that middleware adds are declared on the handler's router:
``Router("x", provides=["db"])``.

Routers nest with :meth:`Router.include`. An event goes to the first handler whose filters
match: a router's own handlers in registration order, then its children's, depth-first (as
in aiogram). Middleware is ``async def mw(handler, ctx, arguments) -> Any`` and calls
``await handler(ctx, arguments)`` to continue (or does not, to stop the event):

* outer middleware (:meth:`Router.outer_middleware`) runs for every event reaching the
  router, before any filter, around the router's own handlers and its children's;
* inner middleware (:meth:`Router.middleware`) runs around the handler that was chosen, for
  the router's handlers and its descendants', outermost router first.

(aiogram calls the third argument ``data``; here ``arguments["data"]`` is the plugin's data.)
A middleware that does not call on leaves the event unhandled: ``Engine.dispatch`` returns
``False``, and once a handler's filters matched no other handler is tried. Since the first
match wins, catch-all handlers belong last: at the end of their router, in the last router.

A plugin's router is not the last one (other plugins, the keyword replies and the fallback
come after it), so a message handler meant for what nobody else understood is registered
with ``fallback=True``: fallback handlers are tried only when no other handler of any
router matched the message, then in the same order (routers, then registration)::

    @router.message(AnswersPrompt("rating"), fallback=True)
    async def not_a_rating(ctx: Context) -> None:
        ctx.reply("Please reply with a number from 1 to 5.")

A router's outer middleware runs once more for a message that reaches its fallbacks.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pydantic import BaseModel

from bot.conversation.context import Context, EventKind
from bot.conversation.filters import (
    ANY_STATE,
    AllOf,
    Filter,
    FilterResult,
    StateIs,
    StateSpec,
    SyncFilter,
    evaluate,
)
from bot.conversation.states import State, StateLike, States
from bot.storage.timers import TimeoutEvent, TimerEvent

__all__ = [
    "ARGUMENTS",
    "Handler",
    "HandlerSpec",
    "Middleware",
    "NextHandler",
    "Router",
]

Handler = Callable[..., Any]
"""A handler: an async (or plain) function whose parameters name what it needs."""
NextHandler = Callable[[Context, dict[str, Any]], Awaitable[Any]]
"""What a middleware calls to continue: the next middleware, or the handler."""
Middleware = Callable[[NextHandler, Context, dict[str, Any]], Awaitable[Any]]
"""``async def mw(handler, ctx, arguments) -> Any``; ``arguments`` is the dict the handler's
arguments are taken from (add to it to inject values)."""

H = TypeVar("H", bound=Handler)
M = TypeVar("M", bound=Middleware)

KINDS: Final[tuple[EventKind, ...]] = ("message", "receipt", "timeout", "timer")
_COMMON: Final = frozenset({"ctx", "event", "state", "data", "settings"})
ARGUMENTS: Final[dict[EventKind, frozenset[str]]] = {
    "message": _COMMON | {"message", "prompt"},
    "receipt": _COMMON | {"receipt", "prompt"},
    "timeout": _COMMON,
    "timer": _COMMON | {"payload"},
}
"""The arguments the engine provides to handlers of each kind."""


def _qualname(callback: Handler) -> str:
    module = getattr(callback, "__module__", None)
    name = getattr(callback, "__qualname__", None) or repr(callback)
    return f"{module}.{name}" if module else name


@dataclass(frozen=True, eq=False)
class HandlerSpec:
    """A registered handler: its callback, event kind, filters and what it asks for."""

    callback: Handler
    kind: EventKind
    condition: AllOf
    """The handler's filters, all of which must match."""
    router: Router
    parameters: tuple[str, ...]
    """The names of the parameters arguments are injected into."""
    required: frozenset[str]
    """The parameters without a default."""
    takes_all: bool
    """The handler has a ``**kwargs`` parameter."""
    fallback: bool = False
    """Tried only when no other handler of any router matched (see the module docs)."""

    @classmethod
    def build(
        cls,
        callback: Handler,
        kind: EventKind,
        filters: tuple[Filter, ...],
        router: Router,
        *,
        fallback: bool = False,
    ) -> HandlerSpec:
        """Inspect ``callback`` and refuse it if it asks for arguments nothing provides."""
        if not callable(callback):
            raise TypeError(f"a handler must be callable, not {callback!r}")
        try:
            condition = AllOf(*filters)
        except TypeError as exc:
            raise TypeError(f"{_qualname(callback)}: {exc}") from None
        names: list[str] = []
        required: set[str] = set()
        takes_all = False
        for param in inspect.signature(callback).parameters.values():
            if param.kind is param.VAR_KEYWORD:
                takes_all = True
            elif param.kind is param.VAR_POSITIONAL:
                continue
            elif param.kind is param.POSITIONAL_ONLY:
                if param.default is param.empty:
                    raise TypeError(
                        f"{_qualname(callback)}: positional-only parameter {param.name!r} "
                        "cannot be injected; arguments are passed by name"
                    )
            else:
                names.append(param.name)
                if param.default is param.empty:
                    required.add(param.name)
        spec = cls(
            callback,
            kind,
            condition,
            router,
            tuple(names),
            frozenset(required),
            takes_all,
            fallback,
        )
        available = spec.available()
        unknown = required - available
        if unknown:
            raise TypeError(
                f"{spec.qualname}: {_listing(unknown)} of a {kind} handler "
                f"{'is' if len(unknown) == 1 else 'are'} never provided (available: "
                f"{', '.join(sorted(available))}). A filter that adds arguments lists them in "
                "its `provides`; names a middleware adds are declared with "
                "Router(..., provides=[...])."
            )
        return spec

    @property
    def qualname(self) -> str:
        """``module.function``, for messages."""
        return _qualname(self.callback)

    def available(self) -> frozenset[str]:
        """Every argument name this handler can count on."""
        return ARGUMENTS[self.kind] | self.condition.provides | self.router.provides

    async def match(self, ctx: Context) -> dict[str, Any] | None:
        """``None`` unless every filter matches; else the arguments they add."""
        return await evaluate(self.condition, ctx)

    def arguments(self, values: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of a call, picked from ``values`` by name."""
        missing = self.required - values.keys()
        if missing:
            raise TypeError(
                f"{self.qualname}: no value for {_listing(missing)} "
                f"(available: {', '.join(sorted(values))})"
            )
        if self.takes_all:
            return dict(values)
        return {name: values[name] for name in self.parameters if name in values}

    async def __call__(self, values: dict[str, Any]) -> Any:
        result = self.callback(**self.arguments(values))
        if inspect.isawaitable(result):
            result = await result
        return result

    def __repr__(self) -> str:
        fallback = " (fallback)" if self.fallback else ""
        return f"<HandlerSpec {self.kind}{fallback} {self.qualname} in {self.router.name}>"


def _listing(names: Iterable[str]) -> str:
    quoted = ", ".join(repr(name) for name in sorted(names))
    return f"parameter{'s' if ',' in quoted else ''} {quoted}"


class _TimedOut(SyncFilter):
    """A timeout event of ``state``."""

    def __init__(self, state: State) -> None:
        self.target = state
        self.state = state.name

    def check(self, ctx: Context) -> FilterResult:
        return isinstance(ctx.event, TimeoutEvent) and ctx.event.state == self.state

    def __repr__(self) -> str:
        return f"TimedOut({self.state})"


class _TimerNamed(SyncFilter):
    """A timer event called ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def check(self, ctx: Context) -> FilterResult:
        return isinstance(ctx.event, TimerEvent) and ctx.event.name == self.name

    def __repr__(self) -> str:
        return f"TimerNamed({self.name!r})"


def _states_named(flt: Filter) -> Iterator[State]:
    """The states a filter (or a filter expression) names."""
    if isinstance(flt, StateIs):
        yield from flt.states
    elif isinstance(flt, _TimedOut):
        yield flt.target
    for inner in getattr(flt, "filters", ()):
        yield from _states_named(inner)
    inner = getattr(flt, "filter", None)
    if isinstance(inner, Filter):
        yield from _states_named(inner)


def _state_filter(state: StateSpec | Iterable[StateSpec]) -> tuple[Filter, ...]:
    if state == ANY_STATE:
        return ()
    if state is None or isinstance(state, str | type) or not isinstance(state, Iterable):
        return (StateIs(state),)
    return (StateIs(*state),)


class Router:
    """A tree of handlers, filters and middleware; see the module documentation.

    Args:
        name: Shown in logs and errors (a plugin's router: the plugin's name). A root
            router's name is also its flow's: where the session keeps the plugin's state
            and data, so the engine's root routers have different names.
        settings: Injected as ``settings`` into this router's handlers and its descendants'
            (unless a descendant has its own).
        provides: Names of handler arguments that middleware (of this router or of an
            ancestor) adds to the arguments dict, so this router's handlers may ask for them.
        data: A pydantic model of the flow's data (root routers only): handlers then get
            ``data`` as that model, validated (``ctx.model``), and changes to it are saved.
        legacy_keys: Keys of the shared data of sessions stored before each plugin had its
            own, which are this plugin's: moved into its flow when such a session is loaded
            (root routers only; see :mod:`bot.conversation.flows`).
        legacy_states: Names of states of such sessions that are this plugin's although no
            handler and no ``States`` group of it names them any more (a renamed state):
            such a session in one of them moves into this plugin's flow (root routers
            only). States of the plugin's own groups need no claim.

    Attributes:
        name: Shown in logs and errors; a root router's flow.
        settings: Injected as ``settings`` into the handlers (a plugin's router gets its
            validated settings here when the plugin loads).
        provides: The argument names middleware adds.
        data_model: The flow's data model (``None``: a plain dict).
        legacy_keys: The pre-namespace data keys the flow claims.
        legacy_states: The pre-namespace state names the flow claims.
        parent: The router this one is included in (:meth:`include`), or ``None``.
        children: The routers included in this one, in the order they are tried.
        outer: Outer middleware (:meth:`outer_middleware`), outermost first.
        inner: Inner middleware (:meth:`middleware`), outermost first.
    """

    def __init__(
        self,
        name: str,
        *,
        settings: Any = None,
        provides: Iterable[str] = (),
        data: type[BaseModel] | None = None,
        legacy_keys: Iterable[str] = (),
        legacy_states: Iterable[str | State] = (),
    ) -> None:
        if not name:
            raise ValueError("a router needs a name")
        if "/" in name:
            # A root router's name keys its plugin's timers as "<name>/<id>".
            raise ValueError(f"a router's name cannot contain '/': {name!r}")
        if data is not None and not (isinstance(data, type) and issubclass(data, BaseModel)):
            raise TypeError(f"data= takes a pydantic model class, not {data!r}")
        self.name = name
        self.settings = settings
        self.provides = frozenset(provides)
        self.data_model = data
        self.legacy_keys = tuple(legacy_keys)
        self.legacy_states = tuple(str(state) for state in legacy_states)
        self.parent: Router | None = None
        self.children: list[Router] = []
        self.outer: list[Middleware] = []
        self.inner: list[Middleware] = []
        # Tuples, read for every event (registration makes a new one).
        self._handlers: dict[EventKind, tuple[HandlerSpec, ...]] = dict.fromkeys(KINDS, ())
        self._fallbacks: tuple[HandlerSpec, ...] = ()

    def __repr__(self) -> str:
        return f"Router({self.name!r})"

    # -- handlers ------------------------------------------------------------------

    def message(
        self,
        *filters: Filter,
        state: StateSpec | Iterable[StateSpec] = ANY_STATE,
        fallback: bool = False,
    ) -> Callable[[H], H]:
        """Register a handler of inbound messages (SMS, MMS, RCS, opt-out notifications).

        Args:
            filters: All must match.
            state: The states it handles: a state, its name, a group, ``None`` (only
                outside any flow), several of those in a tuple, or ``"*"`` (default: any).
            fallback: Try it only when no other handler of any router matched the
                message (after all of them; see the module documentation).

        ::

            @router.message(Keyword("HELP"))
            async def help(ctx: Context) -> None:
                ctx.reply("Reply Y to confirm, N to cancel.")
        """
        return self._register("message", (*_state_filter(state), *filters), fallback=fallback)

    def receipt(
        self, *filters: Filter, state: StateSpec | Iterable[StateSpec] = ANY_STATE
    ) -> Callable[[H], H]:
        """Register a handler of delivery receipts (``state`` as for :meth:`message`).

        ::

            @router.receipt(Status("delivered"), AnswersPrompt("confirm"))
            async def delivered(ctx: Context) -> None:
                ctx.data["no_reply"] = ctx.schedule("no_reply", delay=7200).id
        """
        return self._register("receipt", (*_state_filter(state), *filters))

    def timeout(self, state: StateLike, *filters: Filter) -> Callable[[H], H]:
        """Register a handler of ``state``'s expiry (its timeout, fixed or from the settings,
        or the one ``ctx.goto(state, timeout=...)`` gave). It runs only if the plugin's flow
        is still in ``state`` when the expiry fires.

        ::

            @router.timeout(Booking.awaiting)
            async def no_answer(ctx: Context) -> None:
                ctx.reply("We did not hear back; your booking is on hold.")
                ctx.end()
        """
        return self._register("timeout", (_TimedOut(States.resolve(state)), *filters))

    def timer(self, name: str, *filters: Filter) -> Callable[[H], H]:
        """Register a handler of the named timer ``name`` (scheduled with
        ``ctx.schedule(name, ...)``); its ``payload`` is an argument.

        ::

            @router.timer("no_reply")
            async def no_reply(ctx: Context, payload: dict[str, Any]) -> None:
                ctx.reply("Reminder: reply Y to confirm.")
        """
        if not name:
            raise ValueError("a timer handler needs the timer's name")
        return self._register("timer", (_TimerNamed(name), *filters))

    def _register(
        self, kind: EventKind, filters: tuple[Filter, ...], *, fallback: bool = False
    ) -> Callable[[H], H]:
        def decorator(callback: H) -> H:
            spec = HandlerSpec.build(callback, kind, filters, self, fallback=fallback)
            if fallback:
                self._fallbacks = (*self._fallbacks, spec)
            else:
                self._handlers[kind] = (*self._handlers[kind], spec)
            return callback

        return decorator

    def states(self) -> tuple[State, ...]:
        """The states this router's own handlers name (``state=``, ``StateIs``,
        ``.timeout``), each once."""
        found: dict[int, State] = {}
        for spec in (*[s for kind in KINDS for s in self._handlers[kind]], *self._fallbacks):
            for state in _states_named(spec.condition):
                found.setdefault(id(state), state)
        return tuple(found.values())

    def handlers(self, kind: EventKind, *, fallback: bool = False) -> tuple[HandlerSpec, ...]:
        """This router's own handlers of ``kind``, in registration order (``fallback``:
        its fallback message handlers instead)."""
        if fallback:
            return self._fallbacks if kind == "message" else ()
        return self._handlers[kind]

    # -- tree ----------------------------------------------------------------------

    def include(self, router: Router) -> Router:
        """Add ``router`` as the last child; returns it. A router has at most one parent.

        ::

            root = Router("root")
            root.include(compliance.router)
            root.include(appointments.router)
        """
        if router.parent is not None:
            raise ValueError(f"{router!r} is already included in {router.parent!r}")
        if router in self.chain:
            raise ValueError(f"including {router!r} in {self!r} would make a cycle")
        router.parent = self
        self.children.append(router)
        return router

    @property
    def chain(self) -> tuple[Router, ...]:
        """This router's ancestors and itself, root first."""
        chain: list[Router] = []
        node: Router | None = self
        while node is not None:
            chain.append(node)
            node = node.parent
        return tuple(reversed(chain))

    def walk(self) -> Iterator[Router]:
        """This router, then its descendants depth-first: the order handlers are tried in."""
        yield self
        for child in self.children:
            yield from child.walk()

    # -- middleware ----------------------------------------------------------------

    def outer_middleware(self, middleware: M) -> M:
        """Add an outer middleware: runs for every event reaching this router, before
        filters (usable as a decorator)::

            @router.outer_middleware
            async def log_events(handler, ctx, arguments):
                started = time.monotonic()
                try:
                    return await handler(ctx, arguments)
                finally:
                    log.info("event", kind=ctx.kind, ms=(time.monotonic() - started) * 1000)
        """
        self.outer.append(_checked(middleware))
        return middleware

    def middleware(self, middleware: M) -> M:
        """Add an inner middleware: wraps the chosen handler of this router or a
        descendant, after its filters matched (usable as a decorator)::

            @router.middleware
            async def count_attempts(handler, ctx, arguments):
                ctx.data["attempts"] = ctx.data.get("attempts", 0) + 1
                return await handler(ctx, arguments)
        """
        self.inner.append(_checked(middleware))
        return middleware


def _checked(middleware: M) -> M:
    if not callable(middleware):
        raise TypeError(f"a middleware must be callable, not {middleware!r}")
    return middleware
