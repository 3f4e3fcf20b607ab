"""``sinchbot chat`` against a whole gateway in-process (:class:`bot.testing.BotTester`: the
real gateway, a real Redis, the sandbox provider over HTTP).

``main`` runs in a thread (it runs its own event loop) with standard input replaced by the
script, while the gateway and the sandbox serve on the test's loop. Each test checks both
sides: what the chat printed, and what the sandbox's handset really sent.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.cli import main
from bot.cli.chat import INDENT, HandsetChat, render
from bot.conversation import Context, Keyword, Router
from bot.core.config import ENV_PREFIX
from bot.sandbox import Sandbox, SandboxConfig
from bot.sinch.client import SinchClient
from bot.storage.redis_server import RedisServer
from bot.testing import BotTester

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d[ T]")
ALICE = "+61491570156"
BOB = "+61491570158"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited SINCHBOT_* variables and no ``.env``."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def bot_router() -> Router:
    router = Router("chatbot")

    @router.message(Keyword("hi"))
    async def hi(ctx: Context) -> None:
        ctx.reply("Hello! Reply Y to confirm your visit.")

    @router.message(Keyword("y"))
    async def yes(ctx: Context) -> None:
        ctx.reply("Confirmed, see you soon.")

    @router.message(Keyword("colour"))
    async def colour(ctx: Context) -> None:
        ctx.reply_rcs("Pick a colour", choices=["Red", "Blue"], fallback_text="Reply RED or BLUE")

    @router.message(Keyword("blue"))
    async def blue(ctx: Context) -> None:
        ctx.reply("You picked blue.")

    @router.message(Keyword("ticket"))
    async def ticket(ctx: Context) -> None:
        ctx.reply("Your ticket", media=["https://example.com/ticket.png"], subject="Ticket")

    return router


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """The chat's lines (without the log lines of the gateway, which runs alongside)."""
        return [line for line in self.out.splitlines() if not LOG_LINE.match(line)]


async def chat(
    bot: BotTester,
    script: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> Result:
    """Run ``sinchbot chat`` against ``bot``'s sandbox with ``script`` on standard input."""
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    capsys.readouterr()
    argv = ["chat", "--sandbox", bot.sandbox.url, "--wait", "10", *args]
    code = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def receipt(lines: list[str], at: int) -> str:
    """The receipt of the bot message printed at ``lines[at]``: on its line when the
    message was final when first seen, else on a line of its own below its block."""
    for mark in ("✓", "✗"):
        if mark in lines[at]:
            return mark + lines[at].rpartition(mark)[2]
    for line in lines[at + 1 :]:
        if not line.startswith(" "):
            break
        if line.strip().startswith(("✓", "✗")):
            return line.strip()
    raise AssertionError(f"no receipt for {lines[at]!r}:\n" + "\n".join(lines))


def index(lines: list[str], start: str) -> int:
    """The index of the first line starting with ``start``."""
    for number, line in enumerate(lines):
        if line.startswith(start):
            return number
    raise AssertionError(f"no line starts with {start!r}:\n" + "\n".join(lines))


async def test_a_piped_script_sends_each_line_after_the_replies_to_the_last_settle(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with BotTester([bot_router()], redis_url=redis_server.url) as bot:
        result = await chat(bot, "hi\nY\n", monkeypatch, capsys, "--as", ALICE)

        assert result.code == 0, result.err
        assert result.err == ""
        lines = result.lines
        assert lines[0].startswith(f"handset {ALICE} ")
        hello = index(lines, "bot> Hello! Reply Y to confirm your visit.")
        # The receipt follows the reply it belongs to, and Y is sent only after it.
        assert receipt(lines, hello) == "✓ delivered"
        assert index(lines, "you> hi") < hello < index(lines, "you> Y")
        confirmed = index(lines, "bot> Confirmed, see you soon.")
        assert receipt(lines, confirmed) == "✓ delivered"
        assert [m["content"] for m in bot.sandbox.handset(ALICE).sent] == ["hi", "Y"]
        # Y answered the bot's question: the provider linked it to that message.
        asked = bot.sandbox.handset(ALICE).received[0]["message_id"]
        assert bot.sandbox.handset(ALICE).sent[1]["message_id"] == asked


async def test_rcs_choices_are_listed_tapped_with_a_slash_number_and_fall_back_without_rcs(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with BotTester([bot_router()], redis_url=redis_server.url) as bot:
        script = "colour\n/2\n/rcs off\ncolour\n/quit\nhi\n"
        result = await chat(bot, script, monkeypatch, capsys, "--as", BOB, "--to", bot.our_number)

        assert result.code == 0, result.err
        lines = result.lines
        pick = index(lines, "bot> Pick a colour")
        assert lines[pick + 1].strip() == "[1] Red  [2] Blue"
        assert index(lines, "you> [2] Blue") > pick
        assert index(lines, "bot> You picked blue.") > pick
        fallback = index(lines, "bot> Reply RED or BLUE")
        assert receipt(lines, fallback) == "✓ delivered (as SMS)"
        sent = bot.sandbox.handset(BOB).sent
        # The tap is the choice's postback; /quit ended the chat before "hi".
        assert [(m["content"], m["format"]) for m in sent] == [
            ("colour", "SMS"),
            ("Blue", "RCS"),
            ("colour", "SMS"),
        ]
        assert sent[1]["contact_message"]["choice_response_message"]["postback_data"] == "Blue"
        assert bot.sandbox.state.handsets[BOB].rcs is False


async def test_mms_media_are_shown_and_a_failed_delivery_is_marked(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with BotTester([bot_router()], redis_url=redis_server.url) as bot:
        result = await chat(bot, "ticket\n", monkeypatch, capsys, "--as", ALICE)
        assert result.code == 0, result.err
        lines = result.lines
        mms = index(lines, "bot> [MMS: Ticket] Your ticket")
        assert lines[mms + 1].strip() == "media: https://example.com/ticket.png"
        assert receipt(lines, mms) == "✓ delivered"

        bot.phone(BOB).fail_deliveries()
        result = await chat(bot, "hi\n", monkeypatch, capsys, "--as", "0491570158")
        assert result.code == 0, result.err
        lines = result.lines
        hello = index(lines, "bot> Hello!")
        assert receipt(lines, hello) == "✗ failed"
        assert bot.sandbox.handset(BOB).received == []


async def test_a_reply_is_shown_while_in_flight_and_its_receipt_follows_when_final() -> None:
    async with (
        Sandbox(SandboxConfig(port=0, step_delay=0.3)) as sandbox,
        httpx.AsyncClient(base_url=sandbox.url) as http,
        SinchClient(
            api_key=sandbox.api_key, api_secret=sandbox.api_secret, base_url=sandbox.url
        ) as client,
    ):
        await client.send_sms(ALICE, "long before the chat")
        await client.send_sms(ALICE, "before the chat")
        out = io.StringIO()
        handset = HandsetChat(http, ALICE, out=out)
        await handset.start()
        await client.send_sms(ALICE, "first")
        await client.send_sms(ALICE, "second")

        await handset.settle(10.0)

        lines = out.getvalue().splitlines()
        in_flight = r"  \((queued|enroute|submitted)\)$"
        # Of the messages from before the chat only the newest shows (it may be a question).
        assert re.fullmatch(r"bot> before the chat  (\(\w+\)|✓ delivered)$", lines[0]), lines
        assert re.fullmatch(r"bot> first" + in_flight, lines[1]), lines
        assert re.fullmatch(r"bot> second" + in_flight, lines[2]), lines
        # The receipt of a message that is not the last one shown names it.
        receipts = sorted(lines[3:])
        if "delivered" not in lines[0]:
            assert receipts.pop(0) == f"{INDENT}✓ delivered: before the chat"
        assert receipts == [f"{INDENT}✓ delivered: first", f"{INDENT}✓ delivered: second"]
        assert handset.settled


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_sandbox_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    monkeypatch.setenv("SINCHBOT_SANDBOX_PORT", str(port))
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))

    code = main(["chat"])

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"sinchbot: error: cannot reach the sandbox at http://127.0.0.1:{port}: "
        "is `sinchbot serve` running?"
    ]


def test_render_lists_the_choices_of_every_card_of_a_carousel_and_links_are_actions() -> None:
    card = {"title": "Pizza", "description": "Large", "media_message": {"url": "https://e/p"}}
    message = {
        "message_id": "m1",
        "format": "RCS",
        "rcs_message": {
            "carousel_message": {
                "cards": [
                    {
                        **card,
                        "choices": [{"text_message": {"text": "Order"}, "postback_data": "o"}],
                    },
                    {"title": "Pasta"},
                ],
                "choices": [{"url_message": {"title": "Menu", "url": "https://e/menu"}}],
            }
        },
        "fallback": {"format": "SMS", "content": "Pizza or pasta?"},
    }

    lines, choices = render(message, rcs=True)

    assert lines == [
        "card 1: Pizza - Large",
        "media: https://e/p",
        "card 2: Pasta",
        "[1] Order  [2] Menu",
    ]
    assert [(c.label, c.postback, c.action) for c in choices] == [
        ("Order", "o", None),
        ("Menu", None, "https://e/menu"),
    ]
    assert render(message, rcs=False) == (["Pizza or pasta?"], [])
