"""The appointments plugin among the other routers, through the real gateway (BotTester):
while a question waits for Y, N or R, a keyword another router knows is answered (the
question stays open and Y still confirms), only text nobody understands gets the plugin's
"did not understand", and with two appointments open on one number the texts say which
one a bare answer is for."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.storage.redis_server import RedisServer
from bot.testing import BotTester, Phone
from plugins.appointments import plugin as appointments

OURS = "+61491570157"
HOURS = "We are open 8am-6pm weekdays."
ASK_AGAIN = r"^Sorry, we did not understand\. Please reply Y to confirm your appointment on "


def bot_for(redis_server: RedisServer, **appointment_settings: Any) -> BotTester:
    """Appointments first, then autoreply (HOURS), then a keyword (PING) and a fallback:
    the demo's order."""
    return BotTester(
        plugins=[appointments, "autoreply"],
        config={
            "keywords": {"PING": "PONG"},
            "fallback": 'We got "{text}".',
            "plugin": {
                "appointments": {"from_number": OURS, **appointment_settings},
                "autoreply": {"rules": [{"keyword": ["hours", "open"], "text": HOURS}]},
            },
        },
        redis_url=redis_server.url,
        our_number=OURS,
    )


async def book(bot: BotTester, phone: Phone, name: str, starts_in: timedelta) -> str:
    starts_at = (bot.clock() + starts_in).isoformat()
    status, body = await bot.api(
        "POST",
        "/api/appointments",
        json={"phone": phone.number, "name": name, "starts_at": starts_at},
    )
    assert status == 201, body
    return str(body["id"])


async def status_of(bot: BotTester, appointment: str) -> str:
    await bot.settle()
    status, body = await bot.api("GET", f"/api/appointments/{appointment}")
    assert status == 200, body
    return str(body["status"])


async def test_a_keyword_while_the_reminder_waits_is_answered_and_y_still_confirms(
    redis_server: RedisServer,
) -> None:
    async with bot_for(redis_server) as bot:
        phone = bot.phone("+61491570156")
        appointment = await book(bot, phone, "Sam", timedelta(hours=3))  # reminded at once
        await phone.expect_reply(r"^Hi Sam, reminder of your appointment on .* Reply Y to confirm")
        await phone.send("HOURS")  # linked to the reminder, as a handset's reply is
        assert (await phone.expect_reply()).text == HOURS
        await phone.send("ping")
        assert (await phone.expect_reply()).text == "PONG"
        await phone.expect_no_reply()  # no "did not understand", no repeat of the question
        assert await status_of(bot, appointment) == "reminded"
        await phone.send("Y")
        await phone.expect_reply(r"^Thanks Sam, your appointment on .* is confirmed")
        assert await status_of(bot, appointment) == "confirmed"


async def test_text_nobody_understands_gets_the_question_again_then_the_fallback(
    redis_server: RedisServer,
) -> None:
    async with bot_for(redis_server) as bot:
        phone = bot.phone("+61491570156")
        appointment = await book(bot, phone, "Sam", timedelta(hours=3))
        await phone.expect_reply(r"Reply Y to confirm")
        await phone.send("who is this?")
        again = await phone.expect_reply(ASK_AGAIN)
        assert again.metadata["appointment"] == appointment
        await phone.send("open")  # a keyword still gets its answer
        assert (await phone.expect_reply()).text == HOURS
        await phone.send("still lost")  # asked once already: the fallback's
        await phone.expect_reply(r'^We got "still lost"\.$')
        await phone.send("yes")
        await phone.expect_reply(r"is confirmed")
        assert await status_of(bot, appointment) == "confirmed"


async def test_a_keyword_in_the_reschedule_step_is_not_taken_for_the_preferred_time(
    redis_server: RedisServer,
) -> None:
    async with bot_for(redis_server) as bot:
        phone = bot.phone("+61491570156")
        appointment = await book(bot, phone, "Sam", timedelta(hours=3))
        await phone.expect_reply(r"Reply Y to confirm")
        await phone.send("R")
        await phone.expect_reply(r"What day and time would suit you instead\?")
        await phone.send("hours")
        assert (await phone.expect_reply()).text == HOURS
        await phone.send("Friday morning")
        await phone.expect_reply(r"we have your request to move to Friday morning\.")
        await bot.settle()
        status, doc = await bot.api("GET", f"/api/appointments/{appointment}")
        assert status == 200, doc
        assert (doc["status"], doc["reschedule"]) == (
            "reschedule_requested",
            {"slot": None, "text": "Friday morning"},
        )


async def test_with_two_appointments_open_the_texts_say_which_one_y_answers(
    redis_server: RedisServer,
) -> None:
    async with bot_for(redis_server) as bot:
        phone = bot.phone("+61491570156")
        first = await book(bot, phone, "Sam", timedelta(hours=3))
        reminder = await phone.expect_reply(r"^Hi Sam, reminder of your appointment (on .*?)\. ")
        first_when = reminder.text.split("appointment ", 1)[1].split(".", 1)[0]
        assert "we will ask about" not in reminder.text  # alone: nothing to tell apart
        second = await book(bot, phone, "Kim", timedelta(hours=5))
        other = await phone.expect_reply(r"^Hi Kim, reminder of your appointment (on .*?)\. ")
        second_when = other.text.split("appointment ", 1)[1].split(".", 1)[0]
        assert other.text.endswith(
            f"Your reply is about this one; we will ask about the one {first_when} next."
        )
        assert other.metadata["appointment"] == second
        assert other.segments <= 2

        await phone.send("Y")  # answers the latest message: Kim's reminder
        confirmation = await phone.expect_reply()
        assert confirmation.text == (
            f"Thanks Kim, your appointment {second_when} is confirmed. See you then! "
            f"Next: Sam {first_when}. "
            "Reply Y to confirm, N to cancel, R to reschedule."
        )
        assert confirmation.metadata["appointment"] == first  # the next bare Y is Sam's
        assert (await status_of(bot, second), await status_of(bot, first)) == (
            "confirmed",
            "reminded",
        )
        await phone.send("N", reply_to=None)  # unlinked: the one asked about last
        assert (await phone.expect_reply()).text == (
            f"Thanks Sam, your appointment {first_when} is cancelled."
        )
        assert await status_of(bot, first) == "cancelled"
        assert await status_of(bot, second) == "confirmed"
