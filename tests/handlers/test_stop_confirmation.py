"""The opt-out confirmation reaches the handset, once, from whichever side sends it.

The whole gateway (``create_app`` with the bot assembled from a config file's
``[compliance]`` table, real Redis) against the sandbox provider over real HTTP: a handset
texts ``Stop`` through the sandbox's control API, and the test reads what the handset
received from the same API. The provider blacklists a number that sends an opt-out keyword
(docs/sandbox.md), so a confirmation the gateway sends after that is refused; the gateway
must leave the confirmation to the provider when the provider sends one, and send its own
only where the provider lets it through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from bot.app.gateway import create_app
from bot.core.botconfig import BotConfig
from bot.core.config import Settings
from bot.sandbox import Sandbox, SandboxConfig
from bot.storage.keys import conversation_key
from bot.storage.redis_server import RedisServer, free_port
from handlers.compliance import DEFAULT_STOP_REPLY, HELP_BLOCKED
from tests.gateway.procutil import eventually

OURS = "+61491570157"
H = "+61491570156"
SECRET, TOKEN = "hook-secret", "api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINAL = {"delivered", "rejected", "failed", "expired", "suppressed", "undeliverable"}


@dataclass
class Running:
    """A gateway and its sandbox, both up, and an HTTP session to talk to them."""

    sandbox: Sandbox
    gateway_url: str
    http: aiohttp.ClientSession

    async def text(self, handset: str, content: str) -> None:
        """The handset texts our number (the sandbox's control API)."""
        url = f"{self.sandbox.url}/_sandbox/handsets/{quote(handset)}/messages"
        async with self.http.post(url, json={"content": content}) as response:
            assert response.status == 201, await response.text()

    async def inbox(self, handset: str) -> list[dict[str, Any]]:
        """What the handset received (the sandbox's control API)."""
        url = f"{self.sandbox.url}/_sandbox/handsets/{quote(handset)}/messages"
        async with self.http.get(url) as response:
            assert response.status == 200
            return list(await response.json())

    async def conversation(self, handset: str) -> dict[str, Any]:
        """The conversation's timeline and message records (the management API); empty
        before the gateway has recorded anything of it."""
        key = quote(conversation_key(OURS, handset), safe="")
        async with self.http.get(
            f"{self.gateway_url}/api/conversations/{key}", headers=AUTH
        ) as response:
            if response.status == 404:
                return {"timeline": [], "messages": {}}
            assert response.status == 200
            return dict(await response.json())

    async def api_send(self, to: str, text: str) -> str:
        body = {"to": to, "content": text, "from": OURS}
        async with self.http.post(
            f"{self.gateway_url}/api/messages", json=body, headers=AUTH
        ) as response:
            assert response.status == 202
            return str((await response.json())["messages"][0]["id"])

    async def settled(self, handset: str, optouts: int) -> dict[str, Any]:
        """Wait until ``optouts`` opt-outs are on the timeline (a confirmation the gateway
        sends is queued in the same commit), every message the conversation sent has a
        final status and the sandbox has nothing left to do; the conversation then."""

        async def done() -> bool:
            view = await self.conversation(handset)
            kinds = [e["kind"] for e in view["timeline"]]
            if kinds.count("optout") < optouts:
                return False
            outbound = [e["data"]["gw_id"] for e in view["timeline"] if e["kind"] == "outbound"]
            records = view["messages"]
            return all(records.get(i, {}).get("status") in FINAL for i in outbound)

        await eventually(done, what=f"{optouts} opt-outs handled and every send final")
        await self.sandbox.wait_idle()
        return await self.conversation(handset)


@asynccontextmanager
async def running(
    redis_server: RedisServer,
    compliance: Mapping[str, Any],
    **sandbox: Any,
) -> AsyncIterator[Running]:
    """The gateway (bot assembled from ``[compliance]`` = ``compliance``) and a sandbox
    (``SandboxConfig`` defaults, changed by ``sandbox``) pushing to it."""
    port = free_port()
    gateway_url = f"http://127.0.0.1:{port}"
    config = SandboxConfig(
        port=0,
        step_delay=0.01,
        time_scale=0.01,
        webhook_url=f"{gateway_url}/webhooks/messages?token={SECRET}",
        receipt_url=f"{gateway_url}/webhooks/receipts?token={SECRET}",
        **sandbox,
    )
    async with Sandbox(config) as sb:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            partitions=4,
            lease_ttl=2.0,
            redis_url=redis_server.url,
            base_url=sb.url,
            api_key=sb.api_key,
            api_secret=sb.api_secret,
            webhook_secret=SECRET,
            api_token=TOKEN,
            port=port,
            throttle_calls=1000,
            throttle_period=1.0,
        )
        bot = BotConfig.model_validate({"compliance": dict(compliance)})
        runner = web.AppRunner(create_app(settings, config=bot), handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
                yield Running(sb, gateway_url, http)
        finally:
            await runner.cleanup()


def failed_sends(view: dict[str, Any]) -> list[Any]:
    """Every trace of a send that did not succeed: failed entries, rejected or failed
    receipts, message records that did not end delivered."""
    found: list[Any] = [e for e in view["timeline"] if e["kind"] == "failed"]
    found += [
        e
        for e in view["timeline"]
        if e["kind"] == "receipt" and e["data"]["status"] in ("rejected", "failed")
    ]
    found += [r for r in view["messages"].values() if r.get("status") != "delivered"]
    return found


async def test_with_zero_configuration_the_handset_gets_the_providers_confirmation_once(
    redis: Redis, redis_server: RedisServer, no_ambient_config: None
) -> None:
    async with running(redis_server, {}) as run:
        await run.text(H, "Stop")
        view = await run.settled(H, optouts=2)  # the STOP and the provider's notification

        inbox = await run.inbox(H)
        assert len(inbox) == 1, inbox
        [confirmation] = inbox
        assert confirmation["source_number"] == OURS
        assert confirmation["origin"] == "provider"
        assert confirmation["content"] == run.sandbox.config.opt_out_reply
        assert run.sandbox.messages(H) == []  # the gateway sent nothing to the provider

        optouts = [e["data"] for e in view["timeline"] if e["kind"] == "optout"]
        assert {o["via"] for o in optouts} == {"keyword", "provider"}
        assert all(o["confirmed"] and o["confirmed_by"] == "provider" for o in optouts)
        assert not any(e["kind"] == "outbound" for e in view["timeline"])
        assert failed_sends(view) == []

        # HELP while blacklisted: an answer would be refused, so none goes; the timeline
        # says why instead of recording a failed send.
        await run.text(H, "HELP")

        async def help_noted() -> bool:
            kinds = [e["kind"] for e in (await run.conversation(H))["timeline"]]
            return "help" in kinds

        await eventually(help_noted, what="the unanswered HELP on the timeline")
        view = await run.conversation(H)
        [noted] = [e["data"] for e in view["timeline"] if e["kind"] == "help"]
        assert noted == {"answered": False, "why": HELP_BLOCKED}
        assert not any(e["kind"] == "outbound" for e in view["timeline"])
        assert failed_sends(view) == []

        # A repeated STOP is confirmed by nobody; a later send is held back by the gateway.
        await run.text(H, "STOP")
        held = await run.api_send(H, "Our spring sale starts today")
        view = await run.settled(H, optouts=4)
        assert view["messages"][held]["status"] == "suppressed"
        assert len(await run.inbox(H)) == 1
        assert run.sandbox.messages(H) == []


async def test_an_account_handling_opt_outs_itself_gets_the_gateways_confirmation_once(
    redis: Redis, redis_server: RedisServer, no_ambient_config: None
) -> None:
    async with running(
        redis_server, {"provider_confirms": False}, opt_out_handling="account"
    ) as run:
        await run.text(H, "Stop")
        view = await run.settled(H, optouts=2)

        inbox = await run.inbox(H)
        assert [m["content"] for m in inbox] == [DEFAULT_STOP_REPLY]
        assert inbox[0]["origin"] == "account"
        assert H not in run.sandbox.state.blacklist  # the provider blocks nothing itself

        optouts = [e["data"] for e in view["timeline"] if e["kind"] == "optout"]
        assert optouts and all(o["confirmed_by"] == "gateway" for o in optouts)
        [outbound] = [e["data"] for e in view["timeline"] if e["kind"] == "outbound"]
        assert (outbound["text"], outbound["origin"]) == (DEFAULT_STOP_REPLY, "compliance")
        assert view["messages"][outbound["gw_id"]]["status"] == "delivered"
        assert failed_sends(view) == []

        # The gateway's own suppression is what holds back later sends here.
        await run.text(H, "stop")
        held = await run.api_send(H, "Our spring sale starts today")
        view = await run.settled(H, optouts=4)
        assert view["messages"][held]["status"] == "suppressed"
        assert [m["content"] for m in await run.inbox(H)] == [DEFAULT_STOP_REPLY]
