"""``GET /metrics`` of a real gateway (BotTester: real Redis, the sandbox over HTTP): a
conversation shows up as inbound, outbound, batch, receipt and latency figures; a duplicate
webhook, a provider error, a slow provider, a raising plugin and a dead letter each move
their metric; the depths come from Redis, and a scrape without Redis still answers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.app.gateway import Gateway, describe
from bot.app.metrics import CONTENT_TYPE
from bot.conversation import Context, Keyword, Router
from bot.core.config import Settings
from bot.storage.redis_server import RedisServer, free_port
from bot.testing import BotTester
from tests.gateway.procutil import eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def has(samples: Samples, name: str) -> bool:
    return any(n == name for n, _ in samples)


async def scrape(bot: BotTester) -> Samples:
    assert bot._http is not None
    async with bot._http.get(f"{bot.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE
        return scrape_text(await response.text())


async def until(
    bot: BotTester, check: Callable[[Samples], bool], what: str, timeout: float = 15.0
) -> Samples:
    """Scrape until ``check`` holds; the last scrape."""
    seen: Samples = {}

    async def ok() -> bool:
        nonlocal seen
        seen = await scrape(bot)
        return check(seen)

    await eventually(ok, timeout=timeout, interval=0.05, what=what)
    return seen


def echo_router() -> Router:
    router = Router("echo")

    @router.message()
    async def echo(ctx: Context) -> None:
        assert ctx.message is not None
        ctx.reply(f"echo: {ctx.message.content}")

    return router


def boom_router() -> Router:
    router = Router("boom")

    @router.message(Keyword("boom"))
    async def explode() -> None:
        raise RuntimeError("the plugin broke")

    return router


def bot_for(redis_server: RedisServer, **settings: Any) -> BotTester:
    return BotTester(
        plugins=[boom_router(), echo_router()],
        redis_url=redis_server.url,
        settings={"max_deliveries": 2, **settings},
    )


async def test_a_conversation_shows_in_the_metrics(redis_server: RedisServer) -> None:
    async with bot_for(redis_server) as bot:
        start = await scrape(bot)
        assert value(start, "sinchbot_handler_errors_total", router="boom") == 0
        assert value(start, "sinchbot_owned_partitions") == bot.partitions
        assert value(start, "sinchbot_redis_up") == 1
        assert value(start, "sinchbot_inbox_turns_overdue_total") == 0
        assert value(start, "sinchbot_outbox_depth") == 0

        phone = bot.phone("+61491570156")
        # Every inbound push arrives twice: the second copy is a duplicate.
        bot.sandbox.set_faults(inbound={"duplicate_rate": 1.0})
        await phone.send("hello", reply_to=None)
        await phone.expect_reply("^echo: hello$")
        await bot.settle()
        bot.sandbox.clear_faults()

        seen = await until(
            bot,
            lambda s: value(s, "sinchbot_receipts_total", status="delivered") >= 1,
            "the delivered receipt counted",
        )
        assert value(seen, "sinchbot_inbound_events_total", kind="message", result="accepted") == 1
        assert value(seen, "sinchbot_inbound_events_total", kind="message", result="duplicate") == 1
        assert value(seen, "sinchbot_inbound_events_total", kind="receipt", result="accepted") >= 1
        assert value(seen, "sinchbot_events_handled_total", kind="message") == 1
        assert value(seen, "sinchbot_outbound_messages_total", outcome="queued") == 1
        assert value(seen, "sinchbot_outbound_messages_total", outcome="sent") == 1
        assert value(seen, "sinchbot_provider_calls_total") == 1
        assert value(seen, "sinchbot_send_batch_size_count") == 1
        assert value(seen, "sinchbot_send_batch_size_sum") == 1
        assert value(seen, "sinchbot_send_batch_size_bucket", le="1.0") == 1

        # Sends through the management API count as queued too.
        status, _ = await bot.api(
            "POST", "/api/messages", json={"to": ["+61491570158", "+61491570159"], "content": "hi"}
        )
        assert status == 202
        after = await scrape(bot)
        assert value(after, "sinchbot_outbound_messages_total", outcome="queued") == 3
        assert value(seen, "sinchbot_handler_seconds_count", kind="message") == 1
        assert value(seen, "sinchbot_handler_seconds_count", kind="receipt") >= 1
        assert value(seen, "sinchbot_handler_seconds_sum", kind="message") > 0
        assert value(seen, "sinchbot_handler_errors_total") == 0
        assert value(seen, "sinchbot_inbox_depth") == 0
        assert value(seen, "sinchbot_outbox_depth") == 0
        assert value(seen, "sinchbot_dlq_depth") == 0


async def test_provider_trouble_shows_as_retries_and_outbox_depth(
    redis_server: RedisServer,
) -> None:
    async with bot_for(redis_server) as bot:
        phone = bot.phone("+61491570156")
        # One 500 (retried), and every call slow: the reply waits in the outbox meanwhile.
        bot.sandbox.set_faults(
            [
                {"endpoint": "POST /v1/messages", "kind": "error", "status": 500, "count": 1},
                {"endpoint": "POST /v1/messages", "kind": "latency", "delay": 0.5},
            ]
        )
        await phone.send("slow", reply_to=None)
        await until(
            bot, lambda s: value(s, "sinchbot_outbox_depth") >= 1, "the reply waiting in the outbox"
        )
        await phone.expect_reply("^echo: slow$", timeout=20)
        bot.sandbox.clear_faults()
        seen = await until(
            bot,
            lambda s: (
                value(s, "sinchbot_outbox_depth") == 0
                and value(s, "sinchbot_outbound_messages_total", outcome="sent") == 1
            ),
            "the outbox drained",
        )
        assert value(seen, "sinchbot_send_retries_total", cause="server_error") == 1
        assert value(seen, "sinchbot_send_retries_total", cause="timeout") == 0
        assert value(seen, "sinchbot_provider_calls_total") == 2
        assert value(seen, "sinchbot_throttle_wait_seconds_total") >= 0


async def test_a_raising_plugin_is_counted_by_router_and_dead_lettered(
    redis_server: RedisServer,
) -> None:
    async with bot_for(redis_server) as bot:
        phone = bot.phone("+61491570158")
        await phone.send("boom", reply_to=None)
        seen = await until(
            bot, lambda s: value(s, "sinchbot_dlq_depth") == 1, "the poison message dead-lettered"
        )
        # max_deliveries=2: two attempts, both raised in the "boom" router.
        assert value(seen, "sinchbot_handler_errors_total", router="boom") == 2
        assert value(seen, "sinchbot_handler_errors_total", router="echo") == 0
        assert value(seen, "sinchbot_handler_errors_total", router="compliance") == 0
        assert value(seen, "sinchbot_inbox_handler_failures_total") == 2
        assert value(seen, "sinchbot_dead_letters_total", source="inbox") == 1
        assert value(seen, "sinchbot_events_handled_total", kind="message") == 0
        # The partition goes on: the next message is answered.
        await phone.send("still there?", reply_to=None)
        await phone.expect_reply("^echo: still there")


async def test_a_scrape_without_redis_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("SINCHBOT_"):
            monkeypatch.delenv(name)
    port = free_port()
    gateway = Gateway(
        Settings(
            _env_file=None,
            redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nobody listens there
            base_url="http://127.0.0.1:9",
            api_key="key-for-metrics-test",
            api_secret="secret-for-metrics-test",
            partitions=3,
            data_dir=tmp_path,
        )
    )
    assert f"  metrics:   {gateway.settings.gateway_url}/metrics" in describe(gateway)
    app = web.Application()
    app.add_routes([gateway.metrics.route()])
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            assert response.status == 200
            seen = scrape_text(await response.text())
    finally:
        await runner.cleanup()
        await gateway.client.aclose()
        await gateway.redis.aclose()
    assert value(seen, "sinchbot_redis_up") == 0
    assert not has(seen, "sinchbot_inbox_depth")
    assert not has(seen, "sinchbot_dlq_depth")
    # The in-memory figures are all there, at zero.
    assert value(seen, "sinchbot_provider_calls_total") == 0
    assert value(seen, "sinchbot_inbound_events_total", kind="message", result="accepted") == 0
    assert value(seen, "sinchbot_owned_partitions") == 0
    assert value(seen, "sinchbot_worker", role="all") == 1
