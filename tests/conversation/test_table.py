"""Transition tables: a flow declared in one place compiles to the router's own handlers
(state filters, fallbacks, timeouts, injected arguments) and moves the flow as its rows say,
unless a handler moved it itself; a table that leads nowhere is refused when built."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from bot.conversation import (
    END,
    OTHERWISE,
    Context,
    Engine,
    Keyword,
    Regex,
    Router,
    State,
    States,
    Transitions,
)
from bot.conversation.testing_backend import MemoryBackend, inbound
from tests.conversation.support import FakeClock


class Settings(BaseModel):
    shop: str = "Luigi's"
    order_timeout: timedelta = timedelta(minutes=10)


class Order(States, name="table.order"):
    size = State(timeout="order_timeout")
    topping = State()


async def ask_size(ctx: Context, settings: Settings) -> None:
    ctx.reply(f"{settings.shop}: which size?")


async def sized(ctx: Context, keyword: str, data: dict[str, Any]) -> None:
    data["size"] = keyword
    ctx.reply(f"{keyword}. Any topping?")


def topped(match: Any, data: dict[str, Any], ctx: Context) -> None:  # a plain function
    ctx.reply(f"One {data['size']} with {match['topping']}.")


async def only_small_on_mondays(ctx: Context, keyword: str) -> None:
    if keyword == "XL":
        ctx.reply("No XL today.")
        ctx.end()  # the handler moves the flow itself: the table's next state is not used


def router() -> Router:
    built = Router("table", settings=Settings())
    return Transitions(
        entry={"pizza": (ask_size, Order.size)},
        states={
            Order.size: {
                Keyword("XL"): (only_small_on_mondays, Order.topping),
                Keyword("S", "M", "L"): (sized, Order.topping),
                OTHERWISE: "Please reply S, M or L.",  # a text; the flow stays
            },
            Order.topping: {Regex(r"^with (?P<topping>\w+)$"): (topped, END)},
        },
        timeouts={Order.size: ("Your order timed out.", END)},
        anywhere={"restart": (ask_size, Order.size)},
    ).register(built)


async def test_a_table_runs_as_the_handlers_it_registers() -> None:
    clock = FakeClock()
    engine = Engine(router(), clock=clock)
    backend = MemoryBackend()
    assert not await engine.dispatch(inbound("S"), backend)  # no flow yet: no size row
    for text in ("pizza", "XXL", "m"):
        assert await engine.dispatch(inbound(text), backend)
    assert backend.texts == ["Luigi's: which size?", "Please reply S, M or L.", "M. Any topping?"]
    assert backend.flow("table").state == Order.topping.name
    assert backend.timers == {}  # leaving Order.size cancelled its expiry
    assert await engine.dispatch(inbound("restart"), backend)  # in any state of the table
    assert backend.flow("table").state == Order.size.name
    assert await engine.dispatch(inbound("L"), backend)
    assert await engine.dispatch(inbound("with olives"), backend)
    assert backend.texts[-1] == "One L with olives."
    assert (backend.flow("table").state, backend.flows) == (None, {})


async def test_the_timeout_row_runs_when_the_states_own_timeout_from_the_settings_ends() -> None:
    clock = FakeClock()
    engine = Engine(router(), clock=clock)
    backend = MemoryBackend()
    assert await engine.dispatch(inbound("pizza"), backend)
    [expiry] = backend.timers.values()
    assert expiry.at == clock() + timedelta(minutes=10)  # Settings.order_timeout
    assert backend.due(clock.advance(599)) == []
    for ref in backend.due(clock.advance(1)):
        assert await engine.dispatch(ref.event(), backend)
    assert backend.texts[-1] == "Your order timed out."
    assert backend.flows == {}


async def test_a_handler_that_moves_the_flow_itself_decides() -> None:
    engine = Engine(router())
    backend = MemoryBackend()
    for text in ("pizza", "XL"):
        assert await engine.dispatch(inbound(text), backend)
    assert backend.texts[-1] == "No XL today."
    assert backend.flows == {}  # ended by the handler, not moved to Order.topping


def test_the_handlers_are_the_routers_own() -> None:
    built = router()
    kinds = [
        (spec.kind, spec.fallback, spec.qualname.rsplit(".", 1)[-1])
        for spec in Engine(built).handlers()
    ]
    assert ("message", False, "ask_size") in kinds and ("message", True, "action") in kinds
    assert ("timeout", False, "action") in kinds
    assert set(built.states()) == {Order.size, Order.topping}


def test_a_table_that_leads_nowhere_is_refused() -> None:
    with pytest.raises(ValueError, match=r"table\.order:topping, which has no rows"):
        Transitions(entry={"pizza": (ask_size, Order.topping)}, states={})
    with pytest.raises(ValueError, match=r"table\.order:size expires, but timeouts= has no row"):
        Transitions(entry={"pizza": (ask_size, Order.size)}, states={Order.size: {"S": sized}})
    with pytest.raises(TypeError, match="a row's key"):
        Transitions(entry={1: ask_size}, states={})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="next state"):
        Transitions(entry={"pizza": (ask_size, "Order:size")}, states={})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="parameter 'nothing'"):
        Transitions(entry={"x": lambda nothing: None}, states={}).register(Router("t"))
