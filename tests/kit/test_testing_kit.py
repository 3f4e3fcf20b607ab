"""The plugin author's kit drives the real gateway: a handset's message is answered, timers
fire when the clock moves (also across a restart), sessions and timelines are readable, and
a plugin that fails to load is a clear error."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from bot.app.plugins import Plugin
from bot.conversation import Context, Keyword, Router, State, States
from bot.storage.redis_server import RedisServer
from bot.testing import BotTester


class Flow(States):
    waiting = State(timeout=timedelta(hours=2))


def echo_router() -> Router:
    router = Router("echo")

    @router.message(Keyword("ping"))
    async def ping(ctx: Context) -> None:
        ctx.reply("pong")

    @router.message(Keyword("wait"))
    async def wait(ctx: Context) -> None:
        ctx.reply("Waiting for you. Reply DONE within 2 hours.")
        ctx.goto(Flow.waiting)
        ctx.schedule("later", delay=timedelta(days=1), payload={"n": 1}, id="later")

    @router.message(Keyword("done"), state=Flow.waiting)
    async def done(ctx: Context) -> None:
        ctx.reply("Well done.")
        ctx.end()

    @router.timeout(Flow.waiting)
    async def too_late(ctx: Context) -> None:
        ctx.reply("Too late.")
        ctx.end()

    @router.timer("later")
    async def later(ctx: Context, payload: dict[str, int]) -> None:
        ctx.reply(f"A day later ({payload['n']}).")

    return router


async def test_a_message_is_answered_and_the_reply_knows_its_segments(
    redis_server: RedisServer,
) -> None:
    async with BotTester([echo_router()], redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("PING!")
        reply = await phone.expect_reply("^pong$")
        assert reply.segments == 1
        assert reply.encoding.value == "GSM-7"
        await phone.expect_no_reply()
        kinds = [entry["kind"] for entry in await bot.timeline(phone)]
        assert kinds[:2] == ["inbound", "outbound"]
        assert "receipt" in kinds


@pytest.mark.cluster
async def test_moving_the_clock_fires_state_timeouts_and_timers_also_across_a_restart(
    redis_url: str,
) -> None:
    async with BotTester([echo_router()], redis_url=redis_url) as bot:
        phone = bot.phone()
        await phone.send("wait")
        await phone.expect_reply("Waiting")
        assert (await bot.flow(phone, "echo")).state == Flow.waiting.name == "Flow:waiting"
        assert set((await bot.session(phone)).timers) == {"state-timeout:echo", "echo/later"}

        await bot.advance(hours=1)
        await phone.expect_no_reply()
        await bot.restart()  # pending timers live in Redis
        await bot.advance(hours=1, minutes=1)
        await phone.expect_reply("Too late")
        assert (await bot.flow(phone, "echo")).state is None
        await bot.advance(days=1)
        await phone.expect_reply(r"A day later \(1\)")


async def test_expect_reply_names_what_arrived_when_it_does_not_match(
    redis_server: RedisServer,
) -> None:
    async with BotTester([echo_router()], redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("ping")
        with pytest.raises(AssertionError, match="'pong' does not match 'pang'"):
            await phone.expect_reply("pang")
        with pytest.raises(AssertionError, match="got no reply"):
            await phone.expect_reply("anything", timeout=0.2)


async def test_a_plugin_with_invalid_settings_is_refused_with_one_line(
    redis_server: RedisServer,
) -> None:
    from pydantic import BaseModel

    class Settings(BaseModel):
        greeting: str

    plugin = Plugin("greeter", echo_router(), settings=Settings)
    with pytest.raises(RuntimeError, match="plugin 'greeter': invalid settings: greeting"):
        async with BotTester([plugin], redis_url=redis_server.url):
            pass


async def test_expect_reply_fails_fast_when_the_bot_is_idle_with_nothing_on_its_way(
    redis_server: RedisServer,
) -> None:
    async with BotTester([echo_router()], redis_url=redis_server.url) as bot:
        phone = bot.phone()
        loop = asyncio.get_running_loop()
        await phone.send("nobody understands this")  # no handler, and no fallback configured
        started = loop.time()
        with pytest.raises(AssertionError, match="no fallback reply unless the config sets"):
            await phone.expect_reply("Sorry")  # the default timeout is 10 s
        assert loop.time() - started < 3

        await phone.send("wait")
        await phone.expect_reply("Waiting")
        started = loop.time()
        with pytest.raises(AssertionError, match=r"pending timers.*state-timeout.*bot\.advance"):
            await phone.expect_reply("Too late")  # due in 2 hours: only bot.advance fires it
        assert loop.time() - started < 3
        await bot.advance(hours=2)
        await phone.expect_reply("Too late")  # a failed expectation consumed nothing


async def test_expect_reply_fails_fast_on_a_send_deferred_by_quiet_hours(
    redis_server: RedisServer,
) -> None:
    router = Router("reminders")

    @router.message(Keyword("remind me"))
    async def remind(ctx: Context) -> None:
        ctx.reply("OK, in one minute.")
        ctx.schedule("remind", delay=timedelta(minutes=1))

    @router.timer("remind")
    async def fire(ctx: Context) -> None:
        ctx.reply("Your reminder.")  # not a reply to the handset: quiet hours apply

    night = datetime(2030, 1, 10, 12, 0, tzinfo=UTC)  # 23:00 in Sydney
    config = {"quiet_hours": {"AU": "21:00-08:00", "timezones": {"AU": "Australia/Sydney"}}}
    async with BotTester([router], config=config, redis_url=redis_server.url, start=night) as bot:
        phone = bot.phone()
        await phone.send("remind me")
        await phone.expect_reply("OK, in one minute")
        await bot.advance(minutes=2)
        with pytest.raises(
            AssertionError,
            match=r"1 send deferred by quiet hours, the first until 2030-01-10T21:00",
        ):
            await phone.expect_reply("Your reminder")
        await bot.advance(hours=9)  # 08:02 in Sydney
        await phone.expect_reply("Your reminder")


async def test_expect_reply_literal_compares_the_whole_text_exactly(
    redis_server: RedisServer,
) -> None:
    router = Router("sizes")

    @router.message(Keyword("pizza"))
    async def pizza(ctx: Context) -> None:
        ctx.reply("Which size? Reply S, M or L (large: $20.00).")

    async with BotTester([router], redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("pizza")
        text = "Which size? Reply S, M or L (large: $20.00)."
        assert re.search(text, text) is None  # as a regular expression it matches nothing
        assert (await phone.expect_reply(text, literal=True)).text == text

        await phone.send("pizza")
        with pytest.raises(AssertionError, match=r"is not exactly 'which size\?"):
            await phone.expect_reply("which size?", literal=True)  # case and all
