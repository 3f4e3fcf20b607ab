"""Each plugin's own flow, on the real gateway (BotTester: a real Redis, the sandbox
provider): two plugins' flows on one number never touch each other's state, data,
expiry or timers (a timer id is the plugin's own; timers stored under a bare id still fire
and cancel); a state's timeout comes from the plugin's settings; a session stored before flows
had namespaces is migrated on load and its plugins carry on with it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from bot.conversation import Context, Keyword, Router, State, States
from bot.plugins import Plugin
from bot.storage.keys import timer_member
from bot.storage.redis_server import RedisServer
from bot.testing import BotTester, Phone
from plugins.appointments import plugin as appointments


def shop(name: str, keyword: str) -> Plugin:
    """An ordering plugin; every shop declares the same states and data keys."""

    class Order(States):  # "Order:size" in every shop
        size = State(timeout=timedelta(minutes=10))

    router = Router(name)

    @router.message(Keyword(keyword), state=None)
    async def start(ctx: Context) -> None:
        ctx.data.update(shop=name, asked=1)
        ctx.reply(f"{name}: which size?")
        ctx.goto(Order.size)

    @router.message(Keyword(f"{keyword} S", f"{keyword} M", f"{keyword} L"), state=Order.size)
    async def sized(ctx: Context, keyword: str) -> None:
        ctx.reply(f"{ctx.data['shop']}: placed {keyword[-1]} (asked {ctx.data['asked']}).")
        ctx.end()

    @router.timeout(Order.size)
    async def lapsed(ctx: Context) -> None:
        ctx.reply(f"{ctx.data['shop']}: your order lapsed.")
        ctx.end()

    return Plugin(name, router)


async def test_two_plugins_flows_on_one_number_never_touch_each_other(
    redis_server: RedisServer,
) -> None:
    pizza, pasta = shop("pizza", "PZ"), shop("pasta", "PA")
    async with BotTester([pizza, pasta], redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("PZ")
        await phone.expect_reply("pizza: which size?", literal=True)
        await bot.advance(minutes=5)
        await phone.send("PA")
        await phone.expect_reply("pasta: which size?", literal=True)
        both = await bot.session(phone)
        assert {name: flow["state"] for name, flow in both.flows.items()} == {
            "pizza": "Order:size",
            "pasta": "Order:size",
        }
        assert both.flows["pizza"]["data"] == {"shop": "pizza", "asked": 1}
        assert both.flows["pasta"]["data"] == {"shop": "pasta", "asked": 1}
        status, view = await bot.api("GET", f"/api/conversations/{phone.conversation}")
        assert (status, view["state"]) == (200, "pizza: Order:size; pasta: Order:size")
        assert set(view["flows"]) == {"pizza", "pasta"}

        # pizza's answer ends pizza's flow only, while pasta waits for its own answer
        await phone.send("PZ M")
        await phone.expect_reply("pizza: placed M (asked 1).", literal=True)
        pizza_flow, pasta_flow = await bot.flow(phone, "pizza"), await bot.flow(phone, "pasta")
        assert (pizza_flow.state, dict(pizza_flow.data)) == (None, {})
        assert (pasta_flow.state, dict(pasta_flow.data)) == (
            "Order:size",
            {"shop": "pasta", "asked": 1},
        )
        assert set((await bot.session(phone)).timers) == {"state-timeout:pasta"}

        # pizza's expiry was cancelled with its flow: only pasta's fires, 10 minutes after PA
        await bot.advance(minutes=5)
        await phone.expect_no_reply()
        await bot.advance(minutes=5)
        await phone.expect_reply("pasta: your order lapsed.", literal=True)
        await phone.expect_no_reply()
        assert (await bot.session(phone)).flows == {}


class Settings(BaseModel):
    order_timeout: timedelta = timedelta(minutes=10)


class Pizza(States):
    size = State(timeout="order_timeout")


def timed_pizza() -> Plugin:
    router = Router("pizza")

    @router.message(Keyword("pizza"), state=None)
    async def start(ctx: Context) -> None:
        ctx.reply("Which size? S, M or L.")
        ctx.goto(Pizza.size)

    @router.message(Keyword("rush"), state=None)
    async def rush(ctx: Context) -> None:
        ctx.reply("Quick! S, M or L?")
        ctx.goto(Pizza.size, timeout=timedelta(minutes=1))

    @router.timeout(Pizza.size)
    async def lapsed(ctx: Context) -> None:
        ctx.reply("Your order lapsed.")
        ctx.end()

    return Plugin("pizza", router, settings=Settings)


async def test_a_states_timeout_comes_from_the_settings_and_survives_a_restart(
    redis_server: RedisServer,
) -> None:
    config = {"plugin": {"pizza": {"order_timeout": 120}}}  # 2 minutes instead of 10
    async with BotTester([timed_pizza()], config=config, redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("pizza")
        await phone.expect_reply("Which size?")
        await bot.advance(seconds=90)
        await phone.expect_no_reply()
        await bot.restart()  # the expiry is stored in Redis with the event
        await bot.advance(seconds=30)
        await phone.expect_reply("Your order lapsed.", literal=True)

        await phone.send("rush")  # this transition's own timeout
        await phone.expect_reply("Quick!")
        await bot.advance(minutes=1)
        await phone.expect_reply("Your order lapsed.", literal=True)
    async with BotTester([timed_pizza()], redis_url=redis_server.url) as bot:
        phone = bot.phone("+61491570158")
        await phone.send("pizza")
        await phone.expect_reply("Which size?")
        await bot.advance(minutes=9)
        await phone.expect_no_reply()  # the settings' default: 10 minutes
        await bot.advance(minutes=1)
        await phone.expect_reply("Your order lapsed.", literal=True)


class Survey(States, name="survey"):
    asked = State()


def survey() -> Plugin:
    router = Router("survey")

    @router.message(Keyword("GOOD", "BAD"), state=Survey.asked)
    async def rated(ctx: Context, keyword: str) -> None:
        ctx.reply(f"Thanks for rating {ctx.data['question']}: {keyword}.")
        ctx.end()

    return Plugin("survey", router)


async def test_a_session_stored_before_flows_is_migrated_and_its_plugins_carry_on(
    redis_server: RedisServer,
) -> None:
    config = {"plugin": {"appointments": {"from_number": "+61491570157"}}}
    async with BotTester(
        [appointments, survey()], config=config, redis_url=redis_server.url
    ) as bot:
        phone = bot.phone()
        starts_at = (bot.clock() + timedelta(days=1, hours=1)).isoformat()
        status, body = await bot.api(
            "POST",
            "/api/appointments",
            json={"phone": phone.number, "name": "Sam", "starts_at": starts_at},
        )
        assert status == 201, body
        await bot.advance(hours=1)
        await phone.expect_reply("^Hi Sam, reminder")
        await bot.settle()

        # Rewrite the session as an earlier version stored it: one state (the survey's, as
        # if it had asked its question), one data object shared by both plugins.
        session = await bot.session(phone)
        docs = session.flows["appointments"]["data"]["appointments"]
        key = bot._keys(phone)[0].session(phone.conversation)
        old = {"appointments": docs, "question": "your visit"}
        await bot.redis.hset(key, mapping={"state": "survey:asked", "data": json.dumps(old)})
        await bot.redis.hdel(key, "flows")
        legacy = await bot.session(phone)
        assert (legacy.flows, legacy.legacy_state) == ({}, "survey:asked")
        assert legacy.state == "survey:asked"  # as stored: no plugin's flow yet

        await phone.send("GOOD")  # the survey's state and its data moved into its flow
        await phone.expect_reply("Thanks for rating your visit: GOOD.", literal=True)
        migrated = await bot.session(phone)
        assert (migrated.legacy_state, migrated.legacy_data) == (None, {})
        assert set(migrated.flows) == {"appointments"}  # the survey ended its own flow only
        assert migrated.flows["appointments"]["data"] == {"appointments": docs}

        await phone.send("Y")  # the appointment still waits for its answer, and gets it
        await phone.expect_reply("^Thanks Sam, your appointment on .* is confirmed")
        await bot.settle()
        [appointment] = docs
        status, doc = await bot.api("GET", f"/api/appointments/{appointment}")
        assert (status, doc["status"]) == (200, "confirmed")


def reminding(name: str) -> Plugin:
    """A plugin with one reminder, always scheduled under the same explicit id."""
    router = Router(name)

    @router.message(Keyword(f"{name} remind"))
    async def remind(ctx: Context) -> None:
        ctx.schedule("reminder", delay=timedelta(minutes=5), id="reminder", payload={"by": name})
        ctx.reply(f"{name}: reminder set")

    @router.message(Keyword(f"{name} cancel"))
    async def cancel(ctx: Context) -> None:
        ctx.cancel("reminder")
        ctx.reply(f"{name}: cancelled")

    @router.timer("reminder")
    async def fired(ctx: Context, payload: dict[str, str]) -> None:
        ctx.reply(f"{name}: reminder ({payload['by']})")

    return Plugin(name, router)


async def replies(phone: Phone, count: int) -> set[str]:
    return {(await phone.expect_reply()).text for _ in range(count)}


async def test_two_plugins_timers_of_one_id_are_two_timers_each_firing_to_its_plugin(
    redis_server: RedisServer,
) -> None:
    async with BotTester([reminding("a"), reminding("b")], redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("a remind")
        await phone.expect_reply("a: reminder set", literal=True)
        await phone.send("b remind")  # the same id, b's own: a's reminder stays
        await phone.expect_reply("b: reminder set", literal=True)
        assert set((await bot.session(phone)).timers) == {"a/reminder", "b/reminder"}
        await bot.advance(minutes=5)
        assert await replies(phone, 2) == {"a: reminder (a)", "b: reminder (b)"}
        await phone.expect_no_reply()

        await phone.send("a remind")
        await phone.expect_reply("a: reminder set", literal=True)
        await phone.send("b remind")
        await phone.expect_reply("b: reminder set", literal=True)
        await phone.send("a cancel")  # a's "reminder" only
        await phone.expect_reply("a: cancelled", literal=True)
        assert set((await bot.session(phone)).timers) == {"b/reminder"}
        await bot.advance(minutes=5)
        await phone.expect_reply("b: reminder (b)", literal=True)
        await phone.expect_no_reply()


async def store_bare_timer(bot: BotTester, phone: Phone, *, flow: str | None, by: str) -> None:
    """Store a pending "reminder" timer as earlier versions did: under its bare id."""
    keys, conversation = bot._keys(phone)
    at = bot.clock() + timedelta(minutes=5)
    ref: dict[str, Any] = {"id": "reminder", "name": "reminder", "at": at.isoformat()}
    ref.update(payload={"by": by}, kind="timer")
    if flow is not None:  # scheduled by a version with flows but without namespaced ids
        ref["flow"] = flow
    member = timer_member(conversation, "reminder")
    await bot.redis.zadd(keys.timers, {member: round(at.timestamp() * 1000)})
    await bot.redis.hset(keys.timer_data, member, json.dumps(ref))
    session = keys.session(conversation)
    timers = json.loads(await bot.redis.hget(session, "timers") or "{}")  # type: ignore[misc]
    await bot.redis.hset(session, "timers", json.dumps({**timers, "reminder": at.isoformat()}))


async def test_timers_stored_under_a_bare_id_still_fire_to_their_plugin_and_cancel(
    redis_server: RedisServer,
) -> None:
    async with BotTester([reminding("a"), reminding("b")], redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("a remind")
        await phone.expect_reply("a: reminder set", literal=True)
        await store_bare_timer(bot, phone, flow="b", by="old b")  # b's, under the bare id
        assert set((await bot.session(phone)).timers) == {"a/reminder", "reminder"}
        await bot.advance(minutes=5)
        assert await replies(phone, 2) == {"a: reminder (a)", "b: reminder (old b)"}
        assert (await bot.session(phone)).timers == {}

        # One from before flows (no flow: offered to every plugin, as then); its plugin's
        # ctx.cancel("reminder") still cancels it
        await store_bare_timer(bot, phone, flow=None, by="older")
        await phone.send("b cancel")
        await phone.expect_reply("b: cancelled", literal=True)
        assert (await bot.session(phone)).timers == {}
        await bot.advance(minutes=5)
        await phone.expect_no_reply()

        # and scheduling that id again replaces it, as scheduling a pending id always did
        await store_bare_timer(bot, phone, flow=None, by="older")
        await phone.send("a remind")
        await phone.expect_reply("a: reminder set", literal=True)
        assert set((await bot.session(phone)).timers) == {"a/reminder"}
        await bot.advance(minutes=5)
        await phone.expect_reply("a: reminder (a)", literal=True)
        await phone.expect_no_reply()


async def test_a_sessions_state_and_data_still_answer_for_one_plugin_deprecated(
    redis_server: RedisServer,
) -> None:
    """Tests written before each plugin had its own flow read ``session.state``/``.data``."""
    async with BotTester([shop("pizza", "PZ")], redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("PZ")
        await phone.expect_reply("pizza: which size?", literal=True)
        session = await bot.session(phone)
        with pytest.warns(DeprecationWarning, match=r"bot\.flow\(phone, 'pizza'\)\)\.state"):
            assert session.state == "Order:size"
        with pytest.warns(DeprecationWarning, match=r"bot\.flow\(phone, 'pizza'\)\)\.data"):
            assert session.data == {"shop": "pizza", "asked": 1}
        flow = await bot.flow(phone, "pizza")
        assert (flow.state, dict(flow.data)) == ("Order:size", {"shop": "pizza", "asked": 1})
    async with BotTester(
        [shop("pizza", "PZ"), shop("pasta", "PA")], redis_url=redis_server.url
    ) as bot:
        phone = bot.phone()
        await phone.send("PZ")
        await phone.expect_reply("pizza: which size?", literal=True)
        session = await bot.session(phone)
        with pytest.raises(TypeError, match=r"pizza, pasta.*bot\.flow\(phone, NAME\)\)\.state"):
            session.state  # noqa: B018 (several plugins: no one state to answer with)
