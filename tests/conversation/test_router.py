"""Routers and the engine: resolution order, state scoping, middleware, argument injection."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bot.conversation import (
    Context,
    Custom,
    Engine,
    Keyword,
    NextHandler,
    Regex,
    Router,
    State,
    States,
    Status,
    TimeoutEvent,
    TimerEvent,
)
from bot.conversation.testing_backend import MemoryBackend, inbound, receipt
from bot.sinch.models import DeliveryReceipt, InboundMessage


class Flow(States, name="router.flow"):
    asking = State(timeout=60)
    confirming = State()
    waiting = State(timeout=timedelta(minutes=5))


def recorder(calls: list[str], name: str) -> Any:
    async def handler() -> None:
        calls.append(name)

    handler.__qualname__ = name
    return handler


async def run(engine: Engine, *texts: str, state: str | None = None) -> list[bool]:
    backend = MemoryBackend(state=state)
    return [await engine.dispatch(inbound(text), backend) for text in texts]


# --------------------------------------------------------------------------- resolution order


async def test_parent_handlers_first_then_children_depth_first() -> None:
    calls: list[str] = []
    root, left, deep, right = Router("root"), Router("left"), Router("deep"), Router("right")
    root.include(left)
    left.include(deep)
    root.include(right)
    # Registered after the children were included: a router's own handlers still come first.
    root.message(Keyword("a"))(recorder(calls, "root-a"))
    left.message(Keyword("b"))(recorder(calls, "left-b"))
    deep.message(Keyword("a", "b", "c"))(recorder(calls, "deep-abc"))
    deep.message()(recorder(calls, "deep-any"))
    right.message(Keyword("c", "d"))(recorder(calls, "right-cd"))
    right.message()(recorder(calls, "right-any"))
    engine = Engine(root)
    assert await run(engine, "a", "b", "c", "d", "e") == [True] * 5
    assert calls == ["root-a", "left-b", "deep-abc", "deep-any", "deep-any"]
    assert [r.name for r in root.walk()] == ["root", "left", "deep", "right"]


async def test_handlers_of_one_router_are_tried_in_registration_order() -> None:
    calls: list[str] = []
    router = Router("r")
    router.message(Regex("^y"))(recorder(calls, "regex"))
    router.message(Keyword("yes"))(recorder(calls, "keyword"))  # shadowed by the regex
    await run(Engine(router), "yes")
    assert calls == ["regex"]


async def test_engine_tries_its_routers_in_order_and_reports_unhandled_events() -> None:
    calls: list[str] = []
    first, second = Router("first"), Router("second")
    first.message(Keyword("one"))(recorder(calls, "first"))
    second.message(Keyword("one", "two"))(recorder(calls, "second"))
    engine = Engine(first, second)
    assert await run(engine, "one", "two", "three") == [True, True, False]
    assert calls == ["first", "second"]
    assert await engine.dispatch(receipt("delivered"), MemoryBackend()) is False
    assert [spec.qualname.rsplit(".", 1)[-1] for spec in engine.handlers()] == [
        "first",
        "second",
    ]


async def test_fallback_handlers_run_only_when_no_router_matched_in_router_order() -> None:
    calls: list[str] = []
    flow, keywords = Router("flow"), Router("keywords")
    nested = flow.include(Router("flow.nested"))
    flow.message(Keyword("y"))(recorder(calls, "flow-y"))
    flow.message(Keyword("maybe"), fallback=True)(recorder(calls, "flow-fallback"))
    nested.message(Keyword("later"), fallback=True)(recorder(calls, "nested-fallback"))
    keywords.message(Keyword("hours"))(recorder(calls, "hours"))
    keywords.message(fallback=True)(recorder(calls, "catch-all"))
    engine = Engine(flow, keywords)
    # "hours" belongs to a later router: a fallback of an earlier one does not take it.
    assert await run(engine, "y", "hours", "maybe", "later", "what") == [True] * 5
    assert calls == ["flow-y", "hours", "flow-fallback", "nested-fallback", "catch-all"]
    assert [spec.qualname.rsplit(".", 1)[-1] for spec in engine.handlers()] == [
        "flow-y",
        "hours",
        "flow-fallback",
        "nested-fallback",
        "catch-all",
    ]
    assert engine.handlers()[2].fallback and "(fallback)" in repr(engine.handlers()[2])
    # Only messages have fallbacks.
    assert await engine.dispatch(receipt("delivered"), MemoryBackend()) is False
    assert flow.handlers("receipt", fallback=True) == ()


async def test_each_kind_has_its_own_handlers() -> None:
    calls: list[str] = []
    router = Router("r")
    router.message()(recorder(calls, "message"))
    router.receipt()(recorder(calls, "receipt"))
    router.timer("tick")(recorder(calls, "tick"))
    router.timeout(Flow.asking)(recorder(calls, "timeout"))
    engine = Engine(router)
    backend = MemoryBackend(state=Flow.asking.name)
    for event in (
        receipt("delivered"),
        inbound("x"),
        TimerEvent("tick"),
        TimerEvent("tock"),
        TimeoutEvent(Flow.asking.name),
    ):
        await engine.dispatch(event, backend)
    assert calls == ["receipt", "message", "tick", "timeout"]


# --------------------------------------------------------------------------- states


async def test_state_scoped_handlers() -> None:
    calls: list[str] = []
    router = Router("r")
    router.message(Keyword("y"), state=Flow.confirming)(recorder(calls, "confirm"))
    router.message(Keyword("y"), state=(Flow.asking, Flow.waiting))(recorder(calls, "early"))
    router.message(Keyword("y"), state=None)(recorder(calls, "idle"))
    router.message(state=Flow)(recorder(calls, "in-flow"))
    router.message()(recorder(calls, "anything"))
    engine = Engine(router)
    for state in (Flow.confirming.name, Flow.asking.name, Flow.waiting.name, None):
        await run(engine, "y", state=state)
    await run(engine, "n", state=Flow.waiting.name)
    await run(engine, "n")
    assert calls == ["confirm", "early", "early", "idle", "in-flow", "anything"]


async def test_a_timeout_handler_runs_only_while_the_conversation_is_in_that_state() -> None:
    calls: list[str] = []
    outer_calls: list[str] = []
    router = Router("r")

    @router.outer_middleware
    async def outer(handler: NextHandler, ctx: Context, arguments: dict[str, Any]) -> Any:
        outer_calls.append(ctx.kind)
        return await handler(ctx, arguments)

    router.timeout(Flow.asking)(recorder(calls, "asking"))
    router.timeout("router.flow:waiting")(recorder(calls, "waiting"))
    engine = Engine(router)
    assert await engine.dispatch(TimeoutEvent(Flow.asking.name), MemoryBackend()) is False
    backend = MemoryBackend(state=Flow.waiting.name)
    assert await engine.dispatch(TimeoutEvent(Flow.asking.name), backend) is False
    assert outer_calls == []  # a stale expiry never reaches the routers
    assert await engine.dispatch(TimeoutEvent(Flow.waiting.name), backend) is True
    assert calls == ["waiting"]
    # a state without a timeout of its own may expire: ctx.goto(state, timeout=...)
    router.timeout(Flow.confirming)(recorder(calls, "confirming"))
    with pytest.raises(ValueError, match="no States group declares"):
        router.timeout("router.flow:nope")
    with pytest.raises(ValueError, match="timer's name"):
        router.timer("")


# --------------------------------------------------------------------------- middleware


def tracing(trace: list[str], name: str) -> Any:
    async def middleware(handler: NextHandler, ctx: Context, arguments: dict[str, Any]) -> Any:
        trace.append(f"{name}>")
        try:
            return await handler(ctx, arguments)
        finally:
            trace.append(f"<{name}")

    return middleware


async def test_outer_middleware_runs_before_filters_inner_around_the_chosen_handler() -> None:
    trace: list[str] = []
    root, child, sibling = Router("root"), Router("child"), Router("sibling")
    root.include(child)
    root.include(sibling)
    for router in (root, child, sibling):
        router.outer_middleware(tracing(trace, f"{router.name}.outer"))
        router.middleware(tracing(trace, f"{router.name}.inner"))

    def probe(name: str) -> Custom:
        def predicate(ctx: Context) -> bool:
            trace.append(f"filter:{name}")
            return ctx.text == name

        return Custom(predicate)

    root.message(probe("root"))(recorder(trace, "root-handler"))
    child.message(probe("child"))(recorder(trace, "child-handler"))
    sibling.message(probe("sibling"))(recorder(trace, "sibling-handler"))
    await run(Engine(root), "child")
    assert trace == [
        "root.outer>",
        "filter:root",
        "child.outer>",
        "filter:child",
        "root.inner>",
        "child.inner>",
        "child-handler",
        "<child.inner",
        "<root.inner",
        "<child.outer",
        "<root.outer",
    ]  # the sibling was never reached
    trace.clear()
    await run(Engine(root), "nothing")
    assert [t for t in trace if t.endswith(">")] == [
        "root.outer>",
        "child.outer>",
        "sibling.outer>",
    ]


async def test_outer_middleware_that_does_not_call_on_stops_the_event() -> None:
    calls: list[str] = []
    root, child = Router("root"), Router("child")
    root.include(child)

    @child.outer_middleware
    async def quiet(handler: NextHandler, ctx: Context, arguments: dict[str, Any]) -> Any:
        if ctx.text == "shh":
            ctx.reply("shh yourself")  # effects of middleware are applied too
            return None
        return await handler(ctx, arguments)

    child.message()(recorder(calls, "child"))
    backend = MemoryBackend()
    engine = Engine(root)
    assert await engine.dispatch(inbound("shh"), backend) is False
    assert calls == []
    assert backend.texts == ["shh yourself"]
    assert await engine.dispatch(inbound("hi"), backend) is True
    assert calls == ["child"]


async def test_inner_middleware_that_does_not_call_on_consumes_the_event() -> None:
    calls: list[str] = []
    router, fallback = Router("r"), Router("fallback")

    @router.middleware
    async def veto(handler: NextHandler, ctx: Context, arguments: dict[str, Any]) -> Any:
        return "vetoed"

    router.message(Keyword("x"))(recorder(calls, "x"))
    fallback.message()(recorder(calls, "fallback"))
    # The matched handler was chosen: the event does not move on to other routers.
    assert await run(Engine(router, fallback), "x") == [False]
    assert calls == []


async def test_middleware_can_add_arguments_and_see_filter_arguments() -> None:
    seen: list[Any] = []
    router = Router("r", provides=["db", "user"])

    @router.outer_middleware
    async def database(handler: NextHandler, ctx: Context, arguments: dict[str, Any]) -> Any:
        assert "keyword" not in arguments  # outer middleware runs before filters
        arguments["db"] = "connection"
        return await handler(ctx, arguments)

    @router.middleware
    async def user(handler: NextHandler, ctx: Context, arguments: dict[str, Any]) -> Any:
        arguments["user"] = f"user-{arguments['keyword']}"
        return await handler(ctx, arguments)

    @router.message(Keyword("hi"))
    async def hello(db: str, user: str, keyword: str) -> str:
        seen.append((db, user, keyword))
        return "result"

    assert await run(Engine(router), "HI!") == [True]
    assert seen == [("connection", "user-hi", "hi")]


async def test_arguments_added_by_middleware_reach_descendants_not_siblings() -> None:
    got: list[Any] = []
    root, first, inner, second = Router("root"), Router("first"), Router("inner"), Router("second")
    root.include(first)
    first.include(inner)
    root.include(second)

    @first.outer_middleware
    async def tag(handler: NextHandler, ctx: Context, arguments: dict[str, Any]) -> Any:
        arguments["tag"] = "first"
        return await handler(ctx, arguments)

    def take(**arguments: Any) -> None:
        got.append(arguments.get("tag"))

    inner.message(Keyword("a"))(take)
    second.message(Keyword("b"))(take)
    await run(Engine(root), "a", "b")
    assert got == ["first", None]


async def test_middleware_result_is_the_handlers() -> None:
    results: list[Any] = []
    router = Router("r")

    @router.outer_middleware
    async def keep(handler: NextHandler, ctx: Context, arguments: dict[str, Any]) -> Any:
        results.append(await handler(ctx, arguments))
        return results[-1]

    router.message(Keyword("x"))(lambda: 42)
    await run(Engine(router), "x", "y")
    assert results == [42, None]


def test_middleware_must_be_callable() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        Router("r").middleware("nope")  # type: ignore[type-var]
    with pytest.raises(TypeError, match="must be callable"):
        Router("r").outer_middleware(None)  # type: ignore[type-var]


# --------------------------------------------------------------------------- injection


async def test_arguments_are_injected_by_name() -> None:
    got: dict[str, Any] = {}
    router = Router("plugin", settings={"greeting": "hi"})

    @router.message(Regex(r"^book (?P<day>\w+)"), state=None)
    async def book(
        ctx: Context,
        message: InboundMessage,
        state: str | None,
        data: dict[str, Any],
        settings: dict[str, str],
        prompt: dict[str, str] | None,
        day: str,
        event: InboundMessage,
        unused: str = "default",
    ) -> None:
        got.update(
            ctx=ctx,
            message=message,
            state=state,
            data=data,
            settings=settings,
            prompt=prompt,
            day=day,
            same_event=event is message,
            unused=unused,
        )
        data["day"] = day

    backend = MemoryBackend()
    message = inbound("book Tuesday")
    await Engine(router).dispatch(message, backend)
    assert got["message"] is message
    assert got["ctx"].message is message
    assert (got["state"], got["settings"], got["prompt"], got["day"]) == (
        None,
        {"greeting": "hi"},
        None,
        "Tuesday",
    )
    assert got["same_event"]
    assert got["unused"] == "default"
    assert backend.flow("plugin").data == {"day": "Tuesday"}


async def test_receipt_timer_and_timeout_handlers_get_their_own_arguments() -> None:
    got: list[Any] = []
    router = Router("r")

    @router.receipt(Status("failed"))
    def failed(receipt: DeliveryReceipt, prompt: dict[str, str] | None) -> None:  # plain def
        got.append((receipt.status, prompt))

    @router.timer("nudge")
    async def nudge(payload: dict[str, int], state: str | None) -> None:
        got.append((payload, state))

    @router.timeout(Flow.asking)
    async def expired(state: str, event: TimeoutEvent) -> None:
        got.append((state, event))

    engine = Engine(router)
    backend = MemoryBackend(state=Flow.asking.name)
    await engine.dispatch(receipt("failed", metadata={"prompt": "p"}), backend)
    await engine.dispatch(TimerEvent("nudge", {"n": 2}), backend)
    await engine.dispatch(TimeoutEvent(Flow.asking.name), backend)
    assert got == [
        ("failed", {"prompt": "p"}),
        ({"n": 2}, Flow.asking.name),
        (Flow.asking.name, TimeoutEvent(Flow.asking.name)),
    ]


async def test_kwargs_receive_every_argument() -> None:
    got: dict[str, Any] = {}
    router = Router("r")

    @router.message(Keyword("yes"))
    async def everything(ctx: Context, **kwargs: Any) -> None:
        got.update(kwargs)

    await run(Engine(router, settings="engine-settings"), "yes")
    assert set(got) == {"event", "message", "state", "data", "settings", "prompt", "keyword"}
    assert (got["settings"], got["keyword"]) == ("engine-settings", "yes")


async def test_settings_come_from_the_nearest_router_or_the_engine() -> None:
    got: list[Any] = []
    root, plugin, inner, bare = (
        Router("root"),
        Router("plugin", settings="plugin"),
        Router("inner"),
        Router("bare"),
    )
    root.include(plugin)
    plugin.include(inner)
    root.include(bare)

    def take(settings: Any, ctx: Context) -> None:
        got.append((settings, ctx.settings))

    inner.message(Keyword("a"))(take)
    bare.message(Keyword("b"))(take)
    await run(Engine(root, settings="engine"), "a", "b")
    assert got == [("plugin", "plugin"), ("engine", "engine")]


def test_unknown_arguments_are_refused_at_registration_naming_the_handler() -> None:
    router = Router("r")

    async def typo(ctx: Context, mesage: InboundMessage) -> None: ...

    with pytest.raises(TypeError) as info:
        router.message()(typo)
    text = str(info.value)
    assert "test_router.test_unknown_arguments_are_refused_at_registration" in text
    assert "parameter 'mesage' of a message handler is never provided" in text
    assert "message, prompt, settings" in text

    async def wrong_kind(receipt: DeliveryReceipt) -> None: ...

    with pytest.raises(TypeError, match="'receipt' of a message handler"):
        router.message()(wrong_kind)
    with pytest.raises(TypeError, match="'payload' of a timeout handler"):
        router.timeout(Flow.asking)(lambda payload: None)
    with pytest.raises(TypeError, match="parameters 'a', 'b'"):
        router.timer("t")(lambda a, b: None)

    async def positional(ctx: Context, /) -> None: ...

    with pytest.raises(TypeError, match="positional-only parameter 'ctx'"):
        router.message()(positional)
    with pytest.raises(TypeError, match="is not a Filter"):
        router.message(lambda ctx: True)(typo)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be callable"):
        router.message()("handler")  # type: ignore[type-var]
    assert router.handlers("message") == ()


def test_filter_and_router_provided_names_are_accepted() -> None:
    router = Router("r", provides=["db"])
    router.message(Regex(r"(?P<day>\w+)"))(lambda day, match, db: None)
    router.message(Custom(lambda ctx: {"x": 1}, provides=["x"]))(lambda x: None)
    router.message()(lambda *args, missing=None, **kwargs: None)
    with pytest.raises(TypeError, match="'x'"):
        router.message(Custom(lambda ctx: {"x": 1}))(lambda x: None)
    assert len(router.handlers("message")) == 3


async def test_a_missing_argument_at_dispatch_names_the_handler() -> None:
    router = Router("r", provides=["db"])  # declared, but no middleware adds it

    @router.message()
    async def needs_db(db: str) -> None: ...

    with pytest.raises(TypeError, match=r"test_router\..*needs_db: no value for parameter 'db'"):
        await run(Engine(router), "x")


# --------------------------------------------------------------------------- wiring


def test_include_and_engine_check_the_tree() -> None:
    root, child = Router("root"), Router("child")
    assert root.include(child) is child
    assert child.chain == (root, child)
    with pytest.raises(ValueError, match="already included"):
        Router("other").include(child)
    with pytest.raises(ValueError, match="cycle"):
        child.include(root)
    with pytest.raises(ValueError, match="cycle"):
        root.include(root)
    with pytest.raises(ValueError, match="give the engine the root"):
        Engine(child)
    with pytest.raises(ValueError, match="twice"):
        Engine(root, root)
    with pytest.raises(TypeError, match="takes routers"):
        Engine("router")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segment_budget"):
        Engine(root, segment_budget=0)
    assert repr(root) == "Router('root')"
    Engine(root)
    Engine(root)  # one router tree may serve several engines


async def test_handler_errors_propagate_and_nothing_is_applied() -> None:
    router = Router("r")

    @router.message()
    async def broken(ctx: Context, data: dict[str, Any]) -> None:
        ctx.reply("half done")
        ctx.goto(Flow.asking)
        ctx.schedule("later", delay=10)
        data["x"] = 1
        raise RuntimeError("boom")

    backend = MemoryBackend(state=Flow.confirming.name, data={"kept": True})
    with pytest.raises(RuntimeError, match="boom"):
        await Engine(router).dispatch(inbound("x"), backend)
    assert (backend.replies, backend.state, backend.data, backend.timers, backend.saves) == (
        [],
        Flow.confirming.name,
        {"kept": True},
        {},
        0,
    )


def test_a_router_name_with_a_slash_is_refused() -> None:
    # The name keys the plugin's timers as "<name>/<id>": "a/b" + "c" would be "a" + "b/c".
    with pytest.raises(ValueError, match="cannot contain '/'"):
        Router("a/b")
