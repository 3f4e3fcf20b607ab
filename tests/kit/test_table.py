"""A flow written as a transition table, on the real gateway (BotTester: a real Redis, the
sandbox provider): the pizza order as a transcript, its timeout from the plugin's settings
across a restart, and a row that applies in every state."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict

from bot.conversation import END, OTHERWISE, Context, Keyword, Router, State, States, Transitions
from bot.plugins import Plugin
from bot.storage.redis_server import RedisServer
from bot.testing import BotTester

SIZES = {"S": "small", "M": "medium", "L": "large"}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shop: str = "Pizza"
    order_timeout: timedelta = timedelta(minutes=10)


class Order(States):
    size = State(timeout="order_timeout")
    confirm = State()


async def ask_size(ctx: Context, settings: Settings) -> None:
    ctx.reply(f"{settings.shop}: which size? Reply S, M or L.")


async def sized(ctx: Context, keyword: str) -> None:
    ctx.data["size"] = keyword
    ctx.reply(f"One {SIZES[keyword]} pizza? Reply Y to order.")


async def place(ctx: Context) -> None:
    ctx.reply(f"Order placed: one {SIZES[ctx.data['size']]} pizza. Thank you!")


def pizza() -> Plugin:
    router = Transitions(
        entry={"pizza": (ask_size, Order.size)},
        states={
            Order.size: {
                Keyword(*SIZES): (sized, Order.confirm),
                OTHERWISE: "Please reply S, M or L.",
            },
            Order.confirm: {Keyword("Y", "YES"): (place, END)},
        },
        timeouts={Order.size: ("Your pizza order timed out. Text PIZZA to start again.", END)},
        anywhere={"start over": (ask_size, Order.size)},
    ).register(Router("pizza"))
    return Plugin("pizza", router, settings=Settings)


async def test_a_pizza_order_written_as_a_table(redis_server: RedisServer) -> None:
    config = {"plugin": {"pizza": {"shop": "Luigi's", "order_timeout": 300}}}
    async with BotTester([pizza()], config=config, redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("pizza")
        await phone.expect_reply("Luigi's: which size? Reply S, M or L.", literal=True)
        assert (await bot.flow(phone, "pizza")).state == Order.size
        await phone.send("XL")
        await phone.expect_reply("Please reply S, M or L.", literal=True)
        await phone.send("m")
        await phone.expect_reply("One medium pizza? Reply Y to order.", literal=True)
        await phone.send("start over")
        await phone.expect_reply("Luigi's: which size?")
        await phone.send("L")
        await phone.expect_reply("One large pizza?")
        await phone.send("yes")
        await phone.expect_reply("Order placed: one large pizza. Thank you!", literal=True)
        flow = await bot.flow(phone, "pizza")
        assert (flow.state, dict(flow.data)) == (None, {})

        await phone.send("pizza")  # the settings' 5 minutes, kept across a restart
        await phone.expect_reply("which size")
        await bot.advance(minutes=4)
        await phone.expect_no_reply()
        await bot.restart()
        await bot.advance(minutes=1)
        await phone.expect_reply(
            "Your pizza order timed out. Text PIZZA to start again.", literal=True
        )
        assert (await bot.flow(phone, "pizza")).state is None
        await phone.send("S")  # no order open: no row takes it, and no fallback reply
        await phone.expect_no_reply()
