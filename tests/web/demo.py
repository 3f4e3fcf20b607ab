"""Gateways for the web pages' tests.

:func:`demo_gateway` runs the zero-configuration demo (the in-process sandbox provider) on a
real Redis with a small plugin that answers with RCS choices, a card and an MMS: ``colour``
→ an RCS "Pick one" with the choices Red and Blue (and the state ``webtest.picking:choosing``,
whose one-hour expiry is a pending timer); tapping a choice → "You picked <postback>" (state
``webtest.picking:chosen``, ``data["colour"]``); ``card`` → an RCS card with an image and a
choice; ``pic`` → an MMS with an image. Everything else gets the demo's fallback reply
("Thanks, we got your message: ...").

:func:`production` runs a gateway with a configured provider (a sandbox on its own port) and
HTTP only, so what arrives stays in the queues.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.app.gateway import GATEWAY, Gateway, create_app
from bot.app.plugins import Plugin
from bot.conversation.context import Context
from bot.conversation.filters import Choice, Keyword
from bot.conversation.router import Router
from bot.conversation.states import State, States
from bot.core.botconfig import BotConfig
from bot.core.config import Settings
from bot.sandbox import Sandbox, SandboxConfig
from bot.sinch.models import RcsCard, RcsChoice
from bot.storage.keys import conversation_key
from bot.storage.redis_server import RedisServer, free_port
from tests.gateway.procutil import eventually

HANDSET = "+61491570156"
OURS = "+61491570157"
"""The demo sandbox's number."""
KEY = conversation_key(OURS, HANDSET)
PLUGIN = "webtest"
TOKEN = "inspector-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "hook-secret"


class Picking(States, name="webtest.picking"):
    choosing = State(timeout=timedelta(hours=1))
    chosen = State()


def web_test_plugin(base_url: str) -> Plugin:
    """The plugin described in the module documentation; images come from ``base_url``."""
    image = f"{base_url}/web/static/favicon.svg"

    def build(_settings: Any) -> Router:
        router = Router(PLUGIN)

        @router.message(Keyword("colour"))
        async def ask(ctx: Context) -> None:
            ctx.goto(Picking.choosing)
            ctx.reply_rcs("Pick one", choices=["Red", "Blue"], fallback_text="Reply RED or BLUE")

        @router.message(Choice())
        async def picked(ctx: Context, postback: str) -> None:
            ctx.data["colour"] = postback
            ctx.goto(Picking.chosen)
            ctx.reply(f"You picked {postback}")

        @router.message(Keyword("card"))
        async def card(ctx: Context) -> None:
            ctx.reply_rcs(
                card=RcsCard(
                    title="Our shop",
                    description="Open 9 to 5",
                    media_url=image,
                    choices=[RcsChoice(text="Book", postback_data="book")],
                ),
                fallback_text="Our shop: open 9 to 5",
            )

        @router.message(Keyword("pic"))
        async def picture(ctx: Context) -> None:
            ctx.reply("Here is a picture", media=[image])

        return router

    return Plugin(PLUGIN, build)


@dataclass
class Demo:
    gateway: Gateway
    url: str


@asynccontextmanager
async def demo_gateway(
    redis_url: str, data_dir: Path, *, step_delay: float = 0.05, **values: Any
) -> AsyncIterator[Demo]:
    """A demo-mode gateway (no provider configured: the in-process sandbox) on a free port,
    running :func:`web_test_plugin`; ``values`` are extra settings. The sandbox is the
    demo's, with receipt steps ``step_delay`` seconds apart (the demo's 0.5 s, sped up)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        _env_file=None,
        redis_url=redis_url,
        host="127.0.0.1",
        port=port,
        sandbox_port=free_port(),
        data_dir=data_dir,
        partitions=2,
        lease_ttl=2.0,
        **values,
    )
    plugin = web_test_plugin(url)
    app = create_app(settings, config=BotConfig(plugins=[PLUGIN]), plugins={PLUGIN: plugin})
    gateway = app[GATEWAY]
    assert gateway.demo and gateway.bot is not None and gateway.sandbox is not None
    gateway.sandbox = Sandbox(gateway.sandbox.config.with_changes(step_delay=step_delay))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        assert not gateway.bot.plugins.problems, gateway.bot.plugins.problems
        await eventually(
            lambda: len(gateway.registry.owned) == settings.partitions,
            what="the partitions are owned",
        )
        yield Demo(gateway, url)
    finally:
        await runner.cleanup()


@asynccontextmanager
async def production(
    redis_server: RedisServer, *, token: str | None
) -> AsyncIterator[tuple[Gateway, str, Sandbox]]:
    """A gateway with a configured provider (the sandbox, on its own port) serving HTTP
    only (no workers: what arrives stays in the inbox and outbox, so depths can be seen)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = SandboxConfig(
        port=0,
        step_delay=0.01,
        time_scale=0.01,
        webhook_url=f"{url}/webhooks/messages?token={SECRET}",
        receipt_url=f"{url}/webhooks/receipts?token={SECRET}",
    )
    async with Sandbox(config) as sandbox:
        values: dict[str, Any] = {
            "redis_url": redis_server.url,
            "base_url": sandbox.url,
            "api_key": sandbox.api_key,
            "api_secret": sandbox.api_secret,
            "webhook_secret": SECRET,
            "port": port,
            "partitions": 2,
        }
        if token is not None:
            values["api_token"] = token
        app = create_app(Settings(_env_file=None, **values), role="web")
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            yield app[GATEWAY], url, sandbox
        finally:
            await runner.cleanup()
