"""The feedback survey, driven through the real gateway with sinchbot's testing kit."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sinchbot_feedback import Survey, plugin

from bot.plugins import load_plugins
from bot.testing import BotTester

CONFIG: dict[str, Any] = {"plugin": {"feedback": {"business": "Acme Dental"}}}


async def responses(bot: BotTester) -> list[dict[str, Any]]:
    status, body = await bot.api("GET", "/api/feedback")
    assert status == 200, body
    return list(body["responses"])


async def test_a_survey_from_the_api_is_answered_and_stored(sinchbot_redis: str) -> None:
    async with BotTester([plugin], config=CONFIG, redis_url=sinchbot_redis) as bot:
        happy, unhappy = bot.phone("+61491570156"), bot.phone("+61491570158")
        status, started = await bot.api("POST", "/api/feedback", json={"phone": happy.number})
        assert status == 202, started
        await happy.expect_reply("Thanks for visiting Acme Dental! How did we do?")
        await happy.send("5")
        await happy.expect_reply("^Thank you! See you next time.$")

        await bot.api("POST", "/api/feedback", json={"phone": "0491 570 158"})
        question = await unhappy.expect_reply("How did we do")
        assert question.metadata["prompt"] == "rating"
        await unhappy.send("meh")
        await unhappy.expect_reply("number from 1 .* to 5")
        await unhappy.send(" 2 ")
        await unhappy.expect_reply("What could we do better")
        await unhappy.send("The wait was long.")
        await unhappy.expect_reply("pass it on")

        stored = await responses(bot)
        assert [(r["phone"], r["rating"], r["comment"]) for r in stored] == [
            (happy.number, 5, None),
            (unhappy.number, 2, "The wait was long."),
        ]
        assert stored[0]["survey"] == started["survey"]
        await happy.expect_no_reply()


async def test_no_answer_gets_one_nudge_then_the_survey_expires(sinchbot_redis: str) -> None:
    async with BotTester([plugin], config=CONFIG, redis_url=sinchbot_redis) as bot:
        phone = bot.phone()
        await phone.send("Feedback!")  # the handset starts a survey itself
        await phone.expect_reply("How did we do")
        await bot.settle()  # its "delivered" receipt is handled now, before the clock moves
        assert (await bot.flow(phone, "feedback")).state == Survey.rating.name

        await bot.advance(hours=3)
        await phone.expect_no_reply()
        await bot.restart()  # timers live in Redis, not in the process
        await bot.advance(hours=1, minutes=1)  # 4 hours after the question was delivered
        await phone.expect_reply("Got a second")
        await bot.advance(hours=20)
        await phone.expect_no_reply()
        assert (await bot.flow(phone, "feedback")).state is None
        await phone.send("4")  # too late: nobody is asking any more
        await phone.expect_no_reply()
        assert await responses(bot) == []


async def test_an_undeliverable_question_ends_the_survey(sinchbot_redis: str) -> None:
    async with BotTester([plugin], config=CONFIG, redis_url=sinchbot_redis) as bot:
        phone = bot.phone()
        phone.fail_deliveries()
        await phone.send("feedback")
        await bot.settle()  # the question is sent, and its receipt says "failed"
        statuses = [e["data"].get("status") for e in await bot.timeline(phone)]
        assert "failed" in statuses
        assert (await bot.flow(phone, "feedback")).state is None
        assert (await bot.session(phone)).timers == {}  # no nudge pending
        await bot.advance(days=1)
        await phone.expect_no_reply()


async def test_questions_wait_for_the_end_of_quiet_hours(sinchbot_redis: str) -> None:
    config = {
        **CONFIG,
        "quiet_hours": {"AU": "20:00-09:00", "timezones": {"AU": "Australia/Sydney"}},
    }
    evening = datetime(2030, 1, 7, 21, 0, tzinfo=ZoneInfo("Australia/Sydney"))
    async with BotTester([plugin], config=config, redis_url=sinchbot_redis, start=evening) as bot:
        phone = bot.phone()
        await bot.api("POST", "/api/feedback", json={"phone": phone.number})
        await phone.expect_no_reply()  # a command's send is not a reply: deferred
        await bot.advance(hours=12, minutes=1)  # 09:01
        await phone.expect_reply("How did we do")
        await phone.expect_no_reply()  # the nudge counts from delivery: not yet
        await bot.advance(hours=4, minutes=1)
        await phone.expect_reply("Got a second")
        await phone.send("3")  # a reply goes out at once
        await phone.expect_reply("Thank you")


async def test_bad_input_is_refused_clearly(sinchbot_redis: str) -> None:
    [problem] = load_plugins(["feedback"], {"feedback": {"nudge_after": "soon"}}).problems
    assert problem.startswith("plugin 'feedback': invalid settings: nudge_after:")
    async with BotTester(["feedback"], redis_url=sinchbot_redis) as bot:
        status, body = await bot.api("POST", "/api/feedback", json={"phone": "hello"})
        assert (status, body) == (422, {"error": "phone: 'hello' is not a phone number"})
        status, body = await bot.api("POST", "/api/feedback", json=["+61491570156"])
        assert status == 422
        assert "phone" in body["error"]
