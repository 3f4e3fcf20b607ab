"""Quiet hours in a running bot: a reminder that falls due at night waits for the morning
(deferred, never dropped), while a reply to the handset goes at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.conversation import Context, Keyword, Router
from bot.storage.redis_server import RedisServer
from bot.testing import BotTester

NIGHT = datetime(2030, 1, 10, 12, 0, tzinfo=UTC)  # 23:00 in Sydney (AEDT, UTC+11)
QUIET = {"AU": "21:00-08:00", "timezones": {"AU": "Australia/Sydney"}}


def reminders() -> Router:
    router = Router("reminders")

    @router.message(Keyword("remind me"))
    async def remind(ctx: Context) -> None:
        ctx.reply("OK, in one minute.")
        ctx.schedule("remind", delay=timedelta(minutes=1))

    @router.timer("remind")
    async def fire(ctx: Context) -> None:
        ctx.reply("Your reminder.")

    return router


async def test_a_reminder_due_at_night_is_delivered_when_quiet_hours_end(
    redis_server: RedisServer,
) -> None:
    async with BotTester(
        [reminders()], config={"quiet_hours": QUIET}, redis_url=redis_server.url, start=NIGHT
    ) as bot:
        phone = bot.phone("+61491570156")
        await phone.send("remind me")
        await phone.expect_reply("OK, in one minute")  # a reply: never deferred

        await bot.advance(minutes=2)  # the timer fires at 23:02: deferred
        await phone.expect_no_reply()
        timeline = await bot.timeline(phone)
        (deferred,) = [e for e in timeline if e["kind"] == "deferred"]
        assert deferred["data"]["until"].startswith("2030-01-10T21:00:00")  # 08:00 Sydney
        assert "quiet hours AU 21:00-08:00" in deferred["data"]["reason"]

        await bot.advance(hours=8, minutes=30)  # 07:32 in Sydney: still quiet
        await phone.expect_no_reply()
        await bot.advance(minutes=30)  # 08:02
        await phone.expect_reply("Your reminder")
