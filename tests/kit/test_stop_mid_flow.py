"""STOP in the middle of a flow (reliability spec, row 13): the opt-out is handled ahead of
the flow, the handset gets one confirmation (the provider's), and nothing the flow sends
afterwards, answers or timers, leaves for that number until it opts in again; every
suppressed send is on the conversation's timeline."""

from __future__ import annotations

from datetime import timedelta

from bot.conversation import AnswersPrompt, Context, Keyword, Router, State, States
from bot.storage.redis_server import RedisServer
from bot.testing import BotTester


class Booking(States, name="stopflow"):
    asked = State(timeout=timedelta(hours=1))


def booking() -> Router:
    router = Router("booking")

    @router.message(Keyword("book"))
    async def book(ctx: Context) -> None:
        ctx.reply("Tue 10:00 is free. Reply Y to take it.", prompt="slot")
        ctx.goto(Booking.asked)

    @router.message(Keyword("Y"), AnswersPrompt("slot"), state=Booking.asked)
    async def yes(ctx: Context) -> None:
        ctx.reply("Booked.")
        ctx.end()

    @router.timeout(Booking.asked)
    async def expired(ctx: Context) -> None:
        ctx.reply("The slot was released.")
        ctx.end()

    return router


async def test_stop_in_the_middle_of_a_flow_blocks_every_later_send_until_start(
    redis_server: RedisServer,
) -> None:
    async with BotTester([booking()], redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("book")
        await phone.expect_reply("Reply Y")

        await phone.send("STOP")
        await phone.expect_reply("opted out")  # the one confirmation: the provider's
        await bot.settle()
        assert (await bot.flow(phone, "booking")).state == Booking.asked.name  # not run
        sent_to_phone = list(bot.sandbox.messages(phone.number))
        assert not any("unsubscribed" in m.request.content for m in sent_to_phone)

        await phone.send("Y")  # the flow answers, but nothing leaves
        await phone.send("stop!")  # STOP again: no second confirmation
        await bot.advance(hours=2)  # nor does the timeout's message
        await phone.expect_no_reply()
        assert len(bot.sandbox.messages(phone.number)) == len(sent_to_phone)
        timeline = await bot.timeline(phone)
        kinds = [entry["kind"] for entry in timeline]
        assert kinds.count("optout") >= 1
        suppressed = [e for e in timeline if e["kind"] == "suppressed"]
        assert len(suppressed) == 1  # "Booked." ("The slot was released" never: ended)

        await phone.send("START")
        await phone.expect_reply("subscribed|resubscribed|welcome back|opted")
        await phone.send("book")
        await phone.expect_reply("Reply Y")
