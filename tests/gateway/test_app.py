"""The assembled gateway in-process: ``create_app`` on a real port, against real Redis and the
sandbox provider over HTTP. A handset message travels webhook → inbox → handler → outbox →
provider → handset, its receipts come back and everything is visible through the API; the
API's own sends reach the handset; production mode refuses what is not authenticated; the
start-up banner tells demo mode from production; a bad ``SINCHBOT_HANDLER`` is a clear
error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from bot.app.gateway import GATEWAY, Gateway, create_app, describe, load_handler
from bot.core.config import Settings
from bot.inbox.engine import GatewayEngineHandler
from bot.inbox.handling import RecordingHandler
from bot.sandbox import HandsetClient, Sandbox, SandboxConfig
from bot.storage.keys import PartitionKeys, conversation_key
from bot.storage.redis_server import RedisServer, free_port
from tests.gateway.process_handlers import TEXTS, Ack, SlowAck, ack_text
from tests.gateway.procutil import eventually, mo_payload
from tests.redis_cluster import LocalCluster

SECRET = "hook-secret"
TOKEN = "api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OURS = "+61491570157"
H1, H2 = "+61491570156", "+61491570158"
P = 4


@pytest.fixture(autouse=True)
def _no_ambient_config(no_ambient_config: None) -> None:
    """Every test here runs without ambient settings (see tests/conftest.py)."""


def settings(**values: Any) -> Settings:
    """Settings from ``values`` alone (fast leases, small partition count)."""
    base: dict[str, Any] = {"partitions": P, "lease_ttl": 2.0}
    return Settings(_env_file=None, **{**base, **values})


def production(redis: RedisServer | str, sandbox: Sandbox, port: int, **values: Any) -> Settings:
    """A production configuration: our Redis (a server, or a URL: a cluster's), the sandbox
    as the provider, a webhook secret and an API token (``values`` override, ``None``
    removes)."""
    options: dict[str, Any] = {
        "redis_url": redis if isinstance(redis, str) else redis.url,
        "base_url": sandbox.url,
        "api_key": sandbox.api_key,
        "api_secret": sandbox.api_secret,
        "webhook_secret": SECRET,
        "api_token": TOKEN,
        "port": port,
        "throttle_calls": 1000,
        "throttle_period": 1.0,
        **values,
    }
    return settings(**{k: v for k, v in options.items() if v is not None})


@asynccontextmanager
async def serving(app: web.Application, port: int) -> AsyncIterator[Gateway]:
    """Run ``app`` on ``127.0.0.1:port`` (its cleanup context starts the gateway first)."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        yield app[GATEWAY]
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def get_json(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with http.get(url, headers=headers) as response:
        return response.status, await response.json()


def received(phone: HandsetClient) -> bool:
    return bool(phone.received)


def kinds(view: dict[str, Any]) -> list[str]:
    return [entry["kind"] for entry in view["timeline"]]


async def inbox_entries(redis: Redis) -> int:
    return sum([await redis.xlen(PartitionKeys(p).inbox) for p in range(P)])


async def inbox_empty(redis: Redis) -> bool:
    return await inbox_entries(redis) == 0


# ---------------------------------------------------------------------- the whole path


@pytest.mark.cluster
async def test_a_handset_message_is_answered_and_its_receipts_show_in_the_api(
    redis: Redis, redis_url: str, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    gw = f"http://127.0.0.1:{port}"
    config = SandboxConfig(
        port=0,
        step_delay=0.01,
        time_scale=0.01,
        webhook_url=f"{gw}/webhooks/messages?token={SECRET}",
        receipt_url=f"{gw}/webhooks/receipts?token={SECRET}",
    )
    async with (
        Sandbox(config) as sb,
        serving(create_app(production(redis_url, sb, port), handler=Ack()), port),
    ):
        status, body = await get_json(http, f"{gw}/readyz")
        assert (status, body["status"]) == (200, "ok")

        await sb.handset(H1).send("hello there")
        phone = sb.handset(H1)
        await eventually(lambda: bool(phone.received), what="the reply at the handset")
        [reply] = phone.received
        assert reply["content"] == ack_text("hello there")
        gw_id = reply["metadata"]["gw_id"]

        key = conversation_key(OURS, H1)
        url = f"{gw}/api/conversations/{quote(key, safe='')}"

        async def delivered() -> bool:
            status, view = await get_json(http, url, AUTH)
            return status == 200 and view["messages"][gw_id]["status"] == "delivered"

        await eventually(delivered, what="the delivered receipt on the message record")
        await sb.wait_idle()
        status, view = await get_json(http, url, AUTH)
        assert status == 200
        assert kinds(view)[:3] == ["inbound", "outbound", "sent"]
        receipts = [e["data"]["status"] for e in view["timeline"] if e["kind"] == "receipt"]
        assert receipts == ["enroute", "submitted", "delivered"]
        assert view["timeline"][0]["data"]["text"] == "hello there"
        assert view["data"][TEXTS] == ["hello there"]  # the handler's session write
        record = view["messages"][gw_id]
        assert record["message_id"] == reply["message_id"]
        assert record["status_code"] == "220"

        status, message = await get_json(http, f"{gw}/api/messages/{gw_id}", AUTH)
        assert status == 200
        assert message["record"]["status"] == "delivered"
        assert message["provider"]["status"] == "delivered"

        status, listing = await get_json(http, f"{gw}/api/conversations", AUTH)
        assert status == 200
        assert [c["key"] for c in listing["conversations"]] == [key]

        # The provider redelivers the same push: answered 200, stored once.
        payload = mo_payload(H1, "again", reply_id="fixed-reply-id")
        for expected in ("accepted", "duplicate", "duplicate"):
            async with http.post(
                f"{gw}/webhooks/messages", json=payload, headers={"X-Webhook-Secret": SECRET}
            ) as response:
                assert (response.status, (await response.json())["status"]) == (200, expected)
        await eventually(lambda: len(phone.received) == 2, what="the second reply")
        await sb.wait_idle()
        await eventually(lambda: inbox_empty(redis), what="an empty inbox")
        assert [m["content"] for m in phone.received] == [ack_text("hello there"), "ack again"]


@pytest.mark.cluster
async def test_an_api_send_reaches_the_handset(
    redis: Redis, redis_url: str, sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    gw = f"http://127.0.0.1:{port}"
    async with serving(create_app(production(redis_url, sandbox, port)), port) as gateway:
        # No handler configured: the conversation engine (with no plugins enabled).
        assert isinstance(gateway.handler, GatewayEngineHandler)
        assert gateway.bot is not None and gateway.bot.plugins.loaded == []
        async with http.post(
            f"{gw}/api/messages",
            json={"to": [H1, H2], "content": "Your table is ready", "from": OURS},
            headers=AUTH,
        ) as response:
            assert response.status == 202
            queued = (await response.json())["messages"]
        assert [m["to"] for m in queued] == [H1, H2]
        for number in (H1, H2):
            phone = sandbox.handset(number)
            await eventually(partial(received, phone), what="the handset")
            [got] = phone.received
            assert got["content"] == "Your table is ready"
            assert got["source_number"] == OURS

        async def sent(gw_id: str) -> bool:
            status, body = await get_json(http, f"{gw}/api/messages/{gw_id}?provider=0", AUTH)
            return status == 200 and body["record"]["status"] == "sent"

        for item in queued:
            await eventually(partial(sent, item["id"]), what="the sent record")
        await sandbox.wait_idle()
        status, body = await get_json(http, f"{gw}/api/messages/{queued[0]['id']}", AUTH)
        assert status == 200
        assert body["record"]["message_id"] == sandbox.handset(H1).received[0]["message_id"]
        assert body["provider"]["status"] == "delivered"  # the provider's own view
        calls = sandbox.stats()["send_calls"]
        assert sum(c["messages"] for c in calls) == 2


# ---------------------------------------------------------------------- production refuses


async def test_production_without_token_or_secret_refuses_api_calls_and_webhooks(
    redis: Redis, redis_server: RedisServer, sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    gw = f"http://127.0.0.1:{port}"
    values = production(redis_server, sandbox, port, api_token=None, webhook_secret=None)
    app = create_app(values)
    gateway = app[GATEWAY]
    assert not gateway.demo
    banner = "\n".join(describe(gateway))
    assert "demo" not in banner
    assert "REFUSING webhooks" in banner
    assert "DISABLED: set SINCHBOT_API_TOKEN" in banner
    async with serving(app, port):
        for path in ("/api/conversations", "/api/messages/abc", "/api/senders"):
            async with http.get(f"{gw}{path}") as response:
                assert response.status == 401
            async with http.get(f"{gw}{path}", headers={"Authorization": "Bearer guess"}) as r:
                assert r.status == 403
        async with http.post(
            f"{gw}/api/messages", json={"to": H1, "content": "hi"}, headers=AUTH
        ) as response:
            assert response.status == 403
        for headers in ({}, {"X-Webhook-Secret": "anything"}):
            async with http.post(
                f"{gw}/webhooks/messages?token=anything", json=mo_payload(H1, "hi"), headers=headers
            ) as response:
                assert response.status in (401, 403)
                assert await response.json() in ({"error": "unauthorized"}, {"error": "forbidden"})
        assert await inbox_entries(redis) == 0
        status, _ = await get_json(http, f"{gw}/readyz")
        assert status == 200
        status, _ = await get_json(http, f"{gw}/healthz")
        assert status == 200
    assert sandbox.stats()["send_calls"] == []


async def test_production_with_credentials_checks_them(
    redis: Redis, redis_server: RedisServer, sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    gw = f"http://127.0.0.1:{port}"
    app = create_app(production(redis_server, sandbox, port))
    banner = "\n".join(describe(app[GATEWAY]))
    assert "demo" not in banner
    assert "bearer SINCHBOT_API_TOKEN" in banner
    async with serving(app, port):
        async with http.get(f"{gw}/api/conversations") as response:
            assert response.status == 401
        async with http.get(f"{gw}/api/conversations", headers={"Authorization": "Bearer x"}) as r:
            assert r.status == 403
        async with http.get(f"{gw}/api/conversations", headers=AUTH) as response:
            assert response.status == 200
        payload = mo_payload(H1, "hi")
        statuses = []
        for url, headers in (
            (f"{gw}/webhooks/messages", {}),
            (f"{gw}/webhooks/messages", {"X-Webhook-Secret": "wrong"}),
            (f"{gw}/webhooks/messages?token=wrong", {}),
        ):
            async with http.post(url, json=payload, headers=headers) as response:
                statuses.append(response.status)
        assert statuses == [401, 403, 403]
        assert await inbox_entries(redis) == 0
        async with http.post(f"{gw}/webhooks/messages?token={SECRET}", json=payload) as r:
            assert r.status == 200
        # The handler (default: record only) runs; nothing is sent.
        key = conversation_key(OURS, H1)

        async def recorded() -> bool:
            status, view = await get_json(
                http, f"{gw}/api/conversations/{quote(key, safe='')}", AUTH
            )
            return status == 200 and kinds(view) == ["inbound"]

        await eventually(recorded, what="the recorded inbound message")
    assert sandbox.stats()["send_calls"] == []


# ---------------------------------------------------------------------- demo mode


async def test_zero_configuration_runs_the_demo_with_an_embedded_redis_and_sandbox(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    gw = f"http://127.0.0.1:{port}"
    app = create_app(settings(port=port, sandbox_port=free_port(), data_dir=tmp_path / "data"))
    gateway = app[GATEWAY]
    assert gateway.demo
    assert isinstance(gateway.handler, GatewayEngineHandler)  # the demo bot
    banner = "\n".join(describe(gateway))
    assert "zero-configuration demo mode" in banner
    assert "accepting unauthenticated webhooks (sandbox demo mode)" in banner
    assert "open (demo mode)" in banner
    async with serving(app, port):
        assert gateway.sandbox is not None and gateway.embedded_redis is not None
        assert gateway.embedded_redis.running
        assert gateway.embedded_redis.data_dir == (tmp_path / "data" / "redis").resolve()
        status, _ = await get_json(http, f"{gw}/readyz")
        assert status == 200
        # The demo booked a sample appointment for its handset: the reminder is waiting.
        demo_phone = gateway.sandbox.handset(H1)
        await eventually(lambda: bool(demo_phone.received), what="the sample reminder")
        assert "Reply Y to confirm" in demo_phone.received[0]["content"]
        # Anyone else gets the demo's answers (here the fallback).
        phone = gateway.sandbox.handset(H2)
        await phone.send("hi")
        await eventually(lambda: bool(phone.received), what="the demo's fallback")
        assert '"hi"' in phone.received[0]["content"]
        key = conversation_key(OURS, H2)
        status, view = await get_json(http, f"{gw}/api/conversations/{quote(key, safe='')}")
        assert status == 200  # the API is open in the demo
        assert kinds(view)[:2] == ["inbound", "outbound"]
        embedded = gateway.embedded_redis
    assert not embedded.running  # stopped with the gateway
    assert list((tmp_path / "data" / "redis").glob("appendonly*"))


async def test_the_demo_on_a_redis_cluster_answers_its_sample_conversation(
    tmp_path: Path, http: aiohttp.ClientSession, redis_cluster: LocalCluster
) -> None:
    """``sinchbot serve`` with only SINCHBOT_REDIS_URL=redis+cluster://…: the demo, its data
    on the cluster; the sample reminder is waiting and a Y confirms it."""
    redis_cluster.flushall()
    port = free_port()
    app = create_app(
        settings(
            port=port,
            sandbox_port=free_port(),
            data_dir=tmp_path / "data",
            redis_url=redis_cluster.url,
            partitions=16,
        )
    )
    gateway = app[GATEWAY]
    assert gateway.demo and gateway.embedded_redis is None
    async with serving(app, port):
        assert gateway.sandbox is not None
        phone = gateway.sandbox.handset(H1)
        await eventually(lambda: bool(phone.received), what="the sample reminder")
        assert "Reply Y to confirm" in phone.received[0]["content"]
        await phone.send("Y")
        await eventually(lambda: len(phone.received) == 2, what="the confirmation")
        assert "is confirmed" in phone.received[1]["content"]


async def test_a_configured_provider_is_never_demo_mode(
    redis_server: RedisServer, sandbox: Sandbox
) -> None:
    # A provider URL without credentials is neither demo nor usable: a clear error.
    with pytest.raises(ValueError, match="SINCHBOT_API_KEY and SINCHBOT_API_SECRET"):
        create_app(settings(redis_url=redis_server.url, base_url=sandbox.url))
    for values in (
        {"api_key": "k", "api_secret": "s"},
        {"base_url": sandbox.url, "api_key": "k", "api_secret": "s", "api_token": TOKEN},
    ):
        app = create_app(settings(redis_url=redis_server.url, **values))
        gateway = app[GATEWAY]
        try:
            assert not gateway.demo
            assert gateway.sandbox is None
            assert isinstance(gateway.handler, GatewayEngineHandler)
            assert "demo" not in "\n".join(describe(gateway))
        finally:
            await gateway.client.aclose()
            await gateway.redis.aclose()


# ---------------------------------------------------------------------- SINCHBOT_HANDLER


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.gateway.process_handlers", "must be 'module:attribute'"),
        ("tests.gateway.no_such_module:Ack", "cannot be loaded"),
        ("tests.gateway.process_handlers:NoSuchHandler", "cannot be loaded"),
        ("tests.gateway.process_handlers:ACK_PREFIX", "has no handle(ctx) method"),
    ],
)
def test_a_bad_handler_setting_is_a_clear_value_error(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="SINCHBOT_HANDLER") as failure:
        load_handler(spec)
    assert message in str(failure.value)
    assert spec in str(failure.value)
    with pytest.raises(ValueError, match="SINCHBOT_HANDLER"):
        create_app(settings(handler=spec, redis_url="redis://127.0.0.1:1/0"))


def test_handlers_load_from_a_class_or_an_instance() -> None:
    assert isinstance(load_handler(None), RecordingHandler)
    assert isinstance(load_handler("tests.gateway.process_handlers:Ack"), Ack)
    slow = load_handler("tests.gateway.process_handlers:SlowAck")
    assert isinstance(slow, SlowAck)
