"""The message path with and without the speed extra: on asyncio's loop and uvloop's
(conftest.py), with the standard library's JSON and orjson's, a handset's message goes
webhook → inbox → the engine (compliance, keywords, fallback) → outbox → provider, comes
back as receipts and shows in the API, non-ASCII text intact; a redelivered webhook is a
duplicate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from bot.app.gateway import GATEWAY, Gateway, create_app
from bot.core.config import Settings
from bot.sandbox import Sandbox, SandboxConfig
from bot.storage.keys import PartitionKeys, conversation_key
from bot.storage.redis_server import RedisServer, free_port
from tests.gateway.procutil import eventually, mo_payload

SECRET = "hook-secret"
TOKEN = "api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OURS, HANDSET = "+61491570157", "+61491570156"
P = 2
TEXT = 'Grüße 😀 {from} "quoted" \\ back'


@pytest.fixture(autouse=True)
def _no_ambient_config(no_ambient_config: None) -> None:
    """Every test here runs without ambient settings (see tests/conftest.py)."""


@pytest.fixture
async def gateway(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[str, Sandbox, Gateway]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "bot.toml"
    config.write_text('fallback = "Got: {text}"\n\n[keywords]\nPING = "PONG ✓"\n')
    await redis.flushall()
    sandbox_config = SandboxConfig(
        port=0,
        step_delay=0.01,
        time_scale=0.01,
        webhook_url=f"{url}/webhooks/messages?token={SECRET}",
        receipt_url=f"{url}/webhooks/receipts?token={SECRET}",
    )
    async with Sandbox(sandbox_config) as sandbox:
        settings = Settings(
            _env_file=None,
            partitions=P,
            lease_ttl=2.0,
            redis_url=redis_server.url,
            base_url=sandbox.url,
            api_key=sandbox.api_key,
            api_secret=sandbox.api_secret,
            webhook_secret=SECRET,
            api_token=TOKEN,
            port=port,
            config=config,
            throttle_calls=1000,
            throttle_period=1.0,
        )
        app = create_app(settings)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            yield url, sandbox, app[GATEWAY]
        finally:
            await runner.cleanup()


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, headers=AUTH) as response:
        assert response.status == 200
        return await response.json()


async def test_a_message_is_answered_recorded_and_deduplicated(
    json_library: str, gateway: tuple[str, Sandbox, Gateway], redis: Redis
) -> None:
    url, sandbox, _gw = gateway
    phone = sandbox.handset(HANDSET)
    await phone.send(TEXT)
    await phone.send("ping!")
    await eventually(lambda: len(phone.received) == 2, what="both replies at the handset")
    assert [m["content"] for m in phone.received] == [f"Got: {TEXT}", "PONG ✓"]

    key = conversation_key(OURS, HANDSET)
    view_url = f"{url}/api/conversations/{quote(key, safe='')}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:

        async def delivered() -> bool:
            view = await get_json(http, view_url)
            return [r["status"] for r in view["messages"].values()] == ["delivered"] * 2

        await eventually(delivered, what="both replies delivered")
        view = await get_json(http, view_url)
        inbound = [e["data"]["text"] for e in view["timeline"] if e["kind"] == "inbound"]
        outbound = [e["data"]["text"] for e in view["timeline"] if e["kind"] == "outbound"]
        assert inbound == [TEXT, "ping!"]
        assert outbound == [f"Got: {TEXT}", "PONG ✓"]

        payload = mo_payload(HANDSET, TEXT, reply_id="the-same-push")
        for expected in ("accepted", "duplicate"):
            async with http.post(
                f"{url}/webhooks/messages", json=payload, headers={"X-Webhook-Secret": SECRET}
            ) as response:
                assert response.status == 200
                assert await response.json() == {"status": expected}
                assert response.content_type == "application/json"
        await eventually(lambda: len(phone.received) == 3, what="the third reply")

    async def inbox_empty() -> bool:
        return sum([await redis.xlen(PartitionKeys(p).inbox) for p in range(P)]) == 0

    await eventually(inbox_empty, what="an empty inbox")
    assert len(phone.received) == 3
