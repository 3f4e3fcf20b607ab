"""Flows: each root router's own state, data and expiry in a conversation; typed data;
timers back to the flow that scheduled them; pre-namespace sessions migrated on load."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from bot.conversation import (
    STATE_TIMEOUT_ID,
    Context,
    Engine,
    Keyword,
    Router,
    State,
    States,
    TimeoutEvent,
    TimerEvent,
    TimerRef,
)
from bot.conversation.flows import LEGACY_FLOW, FlowIndex, migrate
from bot.conversation.testing_backend import MemoryBackend, inbound
from tests.conversation.support import FakeClock


class Ask(States, name="flows.ask"):
    waiting = State(timeout=timedelta(minutes=10))


def asking(name: str) -> Router:
    router = Router(name)

    @router.message(Keyword(f"{name} start"), state=None)
    async def start(ctx: Context) -> None:
        ctx.data["who"] = name
        ctx.goto(Ask.waiting)
        ctx.schedule("nudge", delay=60, id=f"{name}-nudge")

    @router.message(Keyword(f"{name} stop"), state=Ask.waiting)
    async def stop(ctx: Context) -> None:
        ctx.end()

    @router.message(Keyword("everyone stop"))
    async def stop_all(ctx: Context) -> None:
        ctx.end_all()

    @router.timer("nudge")
    async def nudge(ctx: Context) -> None:
        ctx.reply(f"{ctx.data.get('who', 'ended')} nudged")

    @router.timeout(Ask.waiting)
    async def expired(ctx: Context) -> None:
        ctx.reply(f"{ctx.data['who']} expired")
        ctx.end()

    return router


async def test_each_root_router_has_its_own_flow_and_end_ends_only_it() -> None:
    clock = FakeClock()
    engine = Engine(asking("a"), asking("b"), clock=clock)
    backend = MemoryBackend()
    for text in ("a start", "b start"):
        assert await engine.dispatch(inbound(text), backend)
    assert backend.flows == {
        "a": {"state": Ask.waiting.name, "data": {"who": "a"}, "expiry": "state-timeout:a"},
        "b": {"state": Ask.waiting.name, "data": {"who": "b"}, "expiry": "state-timeout:b"},
    }
    assert await engine.dispatch(inbound("a stop"), backend)
    assert set(backend.flows) == {"b"}
    assert set(backend.timers) == {"a/a-nudge", "b/b-nudge", "state-timeout:b"}
    # each named timer goes back to its own flow, whose data the handler reads (a's: ended)
    for ref in backend.due(clock.advance(60)):
        await engine.dispatch(ref.event(), backend)
    assert backend.texts == ["ended nudged", "b nudged"]
    for ref in backend.due(clock.advance(600)):
        await engine.dispatch(ref.event(), backend)
    assert backend.texts[-1] == "b expired"
    assert backend.flows == {}


async def test_end_all_ends_every_flow_and_cancels_their_expiries() -> None:
    engine = Engine(asking("a"), asking("b"))
    backend = MemoryBackend()
    for text in ("a start", "b start", "everyone stop"):
        assert await engine.dispatch(inbound(text), backend)
    assert backend.flows == {}
    assert set(backend.timers) == {"a/a-nudge", "b/b-nudge"}  # named timers stay, as with end()


async def test_flows_shows_the_others_read_only() -> None:
    seen: dict[str, Any] = {}
    watcher = Router("watcher")

    @watcher.message(Keyword("look"))
    async def look(ctx: Context) -> None:
        seen.update({name: (flow.state, dict(flow.data)) for name, flow in ctx.flows.items()})
        with pytest.raises(TypeError):
            ctx.flows["a"].data["who"] = "x"  # type: ignore[index]

    engine = Engine(watcher, asking("a"))
    backend = MemoryBackend()
    await engine.dispatch(inbound("a start"), backend)
    await engine.dispatch(inbound("look"), backend)
    assert seen == {"a": (Ask.waiting.name, {"who": "a"})}


def test_root_routers_need_distinct_names_and_data_belongs_to_the_root() -> None:
    with pytest.raises(ValueError, match="two root routers are named 'a'"):
        Engine(Router("a"), Router("a"))
    with pytest.raises(ValueError, match="reserved"):
        Engine(Router(LEGACY_FLOW))
    root, child = Router("root"), Router("child", legacy_keys=["x"])
    root.include(child)
    with pytest.raises(ValueError, match="root router of its plugin"):
        Engine(root)


class Basket(BaseModel):
    items: list[str] = []


async def test_a_flow_with_a_data_model_gets_it_validated_and_saved() -> None:
    router = Router("basket", data=Basket)

    @router.message(Keyword("add"))
    async def add(data: Basket) -> None:
        data.items.append("tea")

    @router.message(Keyword("count"))
    async def count(ctx: Context) -> None:
        ctx.reply(str(len(ctx.model.items)))

    engine = Engine(router)
    backend = MemoryBackend()
    for text in ("add", "add", "count"):
        await engine.dispatch(inbound(text), backend)
    assert backend.flow("basket").data == {"items": ["tea", "tea"]}
    assert backend.texts == ["2"]
    assert backend.saves == 2  # reading the model changes nothing
    broken = MemoryBackend(flows={"basket": {"data": {"items": "not a list"}}})
    with pytest.raises(ValidationError):
        await engine.dispatch(inbound("count"), broken)
    with pytest.raises(TypeError, match="declares no data model"):
        _ = Engine(Router("plain")).context(inbound("x"), MemoryBackend()).model


def test_migration_gives_each_plugin_its_part() -> None:
    index = FlowIndex()
    index.add("appointments", legacy_keys=["appointments"])
    index.add("asker", [Ask.waiting])
    data = {"appointments": {"1": {}}, "who": "me", "stray": 1}
    assert migrate(Ask.waiting.name, data, index) == {
        "appointments": {"data": {"appointments": {"1": {}}}},
        # the state's owner takes the data nobody claims; its old expiry id to cancel
        "asker": {
            "state": Ask.waiting.name,
            "data": {"who": "me", "stray": 1},
            "expiry": STATE_TIMEOUT_ID,
        },
    }
    assert migrate(None, {"stray": 1}, index) == {LEGACY_FLOW: {"data": {"stray": 1}}}
    assert migrate("gone:state", {}, index) == {
        LEGACY_FLOW: {"state": "gone:state", "expiry": STATE_TIMEOUT_ID}
    }


async def test_a_pre_namespace_session_and_its_pending_expiry_carry_on() -> None:
    engine = Engine(asking("a"), asking("b"))
    backend = MemoryBackend(state=Ask.waiting.name, data={"who": "old"})
    # an expiry scheduled before flows had namespaces names no flow: the flow in that
    # state takes it (the first plugin whose handlers name the state)
    assert await engine.dispatch(TimeoutEvent(Ask.waiting.name), backend)
    assert backend.texts == ["old expired"]
    assert (backend.state, backend.data, backend.flows) == (None, {}, {})
    assert backend.history == [("a", Ask.waiting.name, None)]


async def test_a_stale_expiry_of_one_flow_is_ignored_while_another_is_in_that_state() -> None:
    engine = Engine(asking("a"), asking("b"))
    backend = MemoryBackend()
    await engine.dispatch(inbound("b start"), backend)
    assert not await engine.dispatch(TimeoutEvent(Ask.waiting.name, "a"), backend)
    assert await engine.dispatch(TimeoutEvent(Ask.waiting.name, "b"), backend)


def test_state_timeouts_from_settings_and_per_transition() -> None:
    class Settings(BaseModel):
        wait: timedelta = timedelta(minutes=3)

    class Timed(States, name="flows.timed"):
        from_name = State(timeout="wait")
        from_function = State(timeout=lambda settings: settings.wait * 2)
        missing = State(timeout="nope")

    ctx = Engine(clock=FakeClock(), settings=Settings()).context(inbound("x"), MemoryBackend())
    start = ctx.now()
    ctx.goto(Timed.from_name)
    assert [r.at - start for r in ctx.scheduled] == [timedelta(minutes=3)]
    ctx.goto(Timed.from_function)
    assert [r.at - start for r in ctx.scheduled] == [timedelta(minutes=6)]
    ctx.goto(Timed.from_name, timeout=30)
    assert [r.at - start for r in ctx.scheduled] == [timedelta(seconds=30)]
    ctx.goto(Timed.from_name, timeout=None)
    assert ctx.scheduled == []
    with pytest.raises(TypeError, match=r"settings\.nope"):
        ctx.goto(Timed.missing)
    with pytest.raises(ValueError, match="positive"):
        ctx.goto(Timed.from_name, timeout=0)
    assert repr(Timed.from_name) == "State(flows.timed:from_name, timeout=settings.wait)"


async def test_timer_ids_are_each_plugins_own_and_bare_ids_of_earlier_versions_carry_on() -> None:
    def reminding(name: str) -> Router:
        router = Router(name)

        @router.message(Keyword(f"{name} remind"))
        async def remind(ctx: Context) -> None:
            ctx.schedule("reminder", delay=60, id="reminder", payload=name)

        @router.message(Keyword(f"{name} cancel"))
        async def cancel(ctx: Context) -> None:
            ctx.cancel("reminder")

        @router.timer("reminder")
        async def fired(ctx: Context, payload: str, event: TimerEvent) -> None:
            ctx.reply(f"{name}: {payload} ({event.id})")

        return router

    clock = FakeClock()
    engine = Engine(reminding("a"), reminding("b"), clock=clock)
    backend = MemoryBackend()
    for text in ("a remind", "b remind"):
        assert await engine.dispatch(inbound(text), backend)
    a, b = backend.timer("a", "reminder"), backend.timer("b", "reminder")
    assert a is not None and b is not None
    assert (a.id, a.key, b.id, b.key) == ("reminder", "a/reminder", "reminder", "b/reminder")
    assert TimerRef.from_json(a.to_json()) == a  # the key is stored with the timer
    assert await engine.dispatch(inbound("a cancel"), backend)
    assert set(backend.timers) == {"b/reminder"}
    # A timer stored under its bare id (before ids had namespaces): read back with that key,
    # it fires as it did; a plugin's cancel (or schedule) of that id reaches it.
    old = {"id": "reminder", "name": "reminder", "at": clock().isoformat(), "payload": "old"}
    legacy = TimerRef.from_json(old)
    assert (legacy.key, legacy.flow) == ("reminder", None)
    backend.timers[legacy.key] = legacy
    assert await engine.dispatch(inbound("b cancel"), backend)
    assert backend.timers == {}
    backend.timers[legacy.key] = legacy
    assert await engine.dispatch(inbound("a remind"), backend)
    assert set(backend.timers) == {"a/reminder"}
    backend.timers[legacy.key] = legacy
    for ref in backend.due(clock.advance(60)):
        await engine.dispatch(ref.event(), backend)
    assert backend.texts == ["a: old (reminder)", "a: a (reminder)"]


class Checkout(States, name="flows.checkout"):
    basket = State()
    paying = State(timeout=timedelta(minutes=5))  # only ever entered with ctx.goto


async def test_a_migrated_state_goes_to_the_plugin_whose_groups_declare_it() -> None:
    shop = Router("shop")

    @shop.message(Keyword("buy"), state=Checkout.basket)
    async def buy(ctx: Context) -> None:
        ctx.goto("flows.checkout:paying")  # by name: the plugin's own group's state

    @shop.message(Keyword("paid"))
    async def paid(ctx: Context) -> None:
        ctx.reply(f"paid in {ctx.state} for {ctx.data['basket']}")
        ctx.end()

    renamed = Router("renamed", legacy_states=["flows.old:asked", Checkout.paying])
    engine = Engine(asking("a"), shop, renamed)
    # Checkout:paying is named by no handler: its group makes it the shop's, not _shared's
    index = FlowIndex()
    index.add("shop", shop.states())
    assert migrate(Checkout.paying.name, {"basket": 2}, index) == {
        "shop": {"state": Checkout.paying.name, "data": {"basket": 2}, "expiry": STATE_TIMEOUT_ID}
    }
    backend = MemoryBackend(state=Checkout.paying.name, data={"basket": 2})
    assert await Engine(asking("a"), shop).dispatch(inbound("paid"), backend)
    assert backend.texts == ["paid in flows.checkout:paying for 2"]
    # a claim by name (a state no group declares any more) wins over the groups
    assert engine.index.owner("flows.old:asked") == "renamed"
    assert engine.index.owner(Checkout.paying.name) == "renamed"
    assert engine.index.owner(Checkout.basket.name) == "shop"
    assert engine.index.owner("flows.nobody:knows") is None
    root = Router("root")
    root.include(Router("child", legacy_states=["x:y"]))
    with pytest.raises(ValueError, match="legacy_states="):
        Engine(root)  # a claim belongs to the plugin's root router
