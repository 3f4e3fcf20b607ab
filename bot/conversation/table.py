"""A flow declared as a transition table, in one place, on top of the router's decorators.

:class:`Transitions` maps each state (and the entry, before the flow starts) to its rows:
what the handset may say there, the handler that answers it, and the state it leads to.
:meth:`Transitions.register` turns every row into the ``@router.message`` (or
``@router.timeout``) handler it stands for, so a table is nothing but decorators written
down in one place: the engine, the filters, the handlers' arguments and the states'
timeouts are those of any other handler::

    Transitions(
        entry={"pizza": (ask_size, Order.size)},
        states={Order.size: {Keyword("S", "M", "L"): (place, END), OTHERWISE: ask_again}},
        timeouts={Order.size: (lapsed, END)},
    ).register(router)

A row's key is a keyword (``"pizza"``: ``Keyword("pizza")``), a filter, or
:data:`OTHERWISE` (a fallback handler: what no handler of any router took). Its value is a
handler, or a text to reply, alone (the flow stays where it is) or with the next state
(``(handler, Order.size)``, ``(handler, END)``). The next state is entered with
``ctx.goto``, so its own timeout applies (fixed or from the settings); a handler that calls
``ctx.goto`` or ``ctx.end`` itself decides instead of the table. ``anywhere`` rows apply in
every state of the table (not before the flow starts). The table is checked when it is
built: a next state without rows, and a state that expires without a ``timeouts`` row, are
errors.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any, Final

from bot.conversation.context import Context
from bot.conversation.filters import Filter, Keyword
from bot.conversation.router import Handler, Router
from bot.conversation.states import State

__all__ = ["END", "OTHERWISE", "Transitions"]


class _Mark:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


END: Final = _Mark("END")
"""As a row's next state: end the plugin's flow (``ctx.end()``)."""
OTHERWISE: Final = _Mark("OTHERWISE")
"""As a row's key: a message no other handler of any router took (``fallback=True``)."""

Key = str | Filter | _Mark
"""A row's key: a keyword, a filter, or :data:`OTHERWISE`."""
Next = State | _Mark | None
"""Where a row leads: a state, :data:`END`, or ``None`` (stay)."""
Row = Handler | str | tuple[Handler | str, Next]
"""A row's value: a handler or a text to reply, alone or with the next state."""


class Transitions:
    """A plugin's flow as a table; see the module documentation.

    Args:
        entry: The rows before the flow starts (``state=None``).
        states: Per state, its rows.
        timeouts: Per state, the row run when it expires (its ``@router.timeout``).
        anywhere: Rows that apply in every state of ``states``.

    Raises:
        ValueError: A next state has no rows (nor a ``timeouts`` row), or a state that
            expires has no ``timeouts`` row.
        TypeError: A key or a row is none of the above.

    Attributes:
        entry: The entry rows, each as ``(handler or text, next state)``.
        states: Per state, its rows, each as ``(handler or text, next state)``.
        timeouts: Per state, its expiry's row.
        anywhere: The rows of every state.
    """

    def __init__(
        self,
        *,
        entry: Mapping[Key, Row],
        states: Mapping[State, Mapping[Key, Row]],
        timeouts: Mapping[State, Row] | None = None,
        anywhere: Mapping[Key, Row] | None = None,
    ) -> None:
        self.entry = {key: _row(value) for key, value in entry.items()}
        self.states = {s: {key: _row(v) for key, v in rows.items()} for s, rows in states.items()}
        self.timeouts = {state: _row(value) for state, value in (timeouts or {}).items()}
        self.anywhere = {key: _row(value) for key, value in (anywhere or {}).items()}
        rows = [*self.entry.values(), *self.anywhere.values(), *self.timeouts.values()]
        rows += [row for table in self.states.values() for row in table.values()]
        for _, then in rows:
            if isinstance(then, State) and then not in self.states and then not in self.timeouts:
                raise ValueError(f"rows lead to {then.name}, which has no rows in states=")
        for state in {*self.states, *(t for _, t in rows if isinstance(t, State))}:
            if state.expires and state not in self.timeouts:
                raise ValueError(f"{state.name} expires, but timeouts= has no row for it")
        for key in [*self.entry, *self.anywhere, *(k for t in self.states.values() for k in t)]:
            if not isinstance(key, str | Filter) and key is not OTHERWISE:
                raise TypeError(f"a row's key is a keyword, a filter or OTHERWISE, not {key!r}")

    def register(self, router: Router) -> Router:
        """Register every row as a handler of ``router`` (each state's rows, then the
        ``anywhere`` rows, the entry rows and the timeouts); returns ``router``."""
        for state, table in self.states.items():
            for key, row in table.items():
                _register(router, key, row, state)
        for key, row in self.anywhere.items():
            _register(router, key, row, tuple(self.states))
        for key, row in self.entry.items():
            _register(router, key, row, None)
        for state, row in self.timeouts.items():
            router.timeout(state)(_step(*row))
        return router


def _row(value: Row) -> tuple[Handler | str, Next]:
    action, then = value if isinstance(value, tuple) else (value, None)
    if not (isinstance(action, str) or callable(action)):
        raise TypeError(f"a row is a handler or a text, alone or with a next state: {value!r}")
    if not (then is None or then is END or isinstance(then, State)):
        raise TypeError(f"a row's next state is a State, END or None, not {then!r}")
    return action, then


def _register(router: Router, key: Key, row: tuple[Handler | str, Next], state: Any) -> None:
    step = _step(*row)
    if key is OTHERWISE:
        router.message(state=state, fallback=True)(step)
    else:
        router.message(Keyword(key) if isinstance(key, str) else key, state=state)(step)  # type: ignore[arg-type]


def _step(action: Handler | str, then: Next) -> Handler:
    """``action`` as a handler that then goes where the row says (unless it moved itself);
    it asks for the arguments ``action`` asks for, and ``ctx``."""
    if isinstance(action, str):
        text = action

        def action(ctx: Context) -> None:
            ctx.reply(text)

    signature = inspect.signature(action)
    parameters = list(signature.parameters.values())
    passes_ctx = "ctx" in signature.parameters or any(p.kind is p.VAR_KEYWORD for p in parameters)
    if not passes_ctx:
        parameters.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY))
    handler = action

    async def step(**arguments: Any) -> None:
        ctx: Context = arguments["ctx"] if passes_ctx else arguments.pop("ctx")
        moves = ctx._moves
        result = handler(**arguments)
        if inspect.isawaitable(result):
            await result
        if ctx._moves != moves:
            return  # the handler went somewhere itself
        if then is END:
            ctx.end()
        elif isinstance(then, State):
            ctx.goto(then)

    functools.update_wrapper(step, action)
    setattr(step, "__signature__", signature.replace(parameters=parameters))  # noqa: B010
    return step
