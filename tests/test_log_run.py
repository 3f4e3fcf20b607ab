"""The log of a whole run: a real ``sinchbot serve`` process in production mode (JSON logs at
DEBUG, the appointments plugin) against an in-test sandbox, driven through conversations,
an API send, an appointment answered, a STOP and a failed delivery. Its whole log is then
read back: every line is JSON, no phone number appears in full (E.164 or digits only), the
masked forms do, no credential value appears, and every line logged while an event was
handled carries the event's conversation and partition.

And in-process: the event context is bound per event and reset after it, so what one event's
handler binds never reaches the next event's lines."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from redis.asyncio import Redis

from bot.conversation import Context, Router
from bot.core.logs import add_secret, configure, forget_secrets
from bot.sandbox import Sandbox, SandboxConfig
from bot.storage.keys import PartitionKeys, conversation_key, partition_of
from bot.storage.redis_server import RedisServer
from bot.testing import BotTester
from tests.gateway.procutil import (
    GatewayProcess,
    conversation,
    eventually,
    free_port,
    gateway_env,
)

KEY = "LogRunApiKey3141"
SECRET = "LogRunApiSecret-2718-281828"
WEBHOOK_SECRET = "LogRunWebhookSecret-1618"
TOKEN = "LogRunApiToken-5772-156649"
OURS = "+61491570157"
ALICE, BOB, CARO, DAN = "+61491570156", "+61491570158", "+61491570159", "+61491570160"
HANDSETS = (ALICE, BOB, CARO, DAN)
P = 4
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MASKED_CONVERSATION = re.compile(r"^(default|\+\*{8}\d{3}):\+\*{8}\d{3}$")
HANDLING_LOGGERS = ("bot.conversation.", "plugins.appointments.flow", "handlers.")
"""Loggers that only ever log while an event is handled."""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def api(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers=AUTH) as response:
        return response.status, await response.json(content_type=None)


async def record_status(http: aiohttp.ClientSession, base: str, gw_id: str) -> str:
    status, body = await api(http, "GET", f"{base}/api/messages/{gw_id}?provider=false")
    return str(body["record"].get("status")) if status == 200 else ""


async def drained(redis: Redis) -> bool:
    pipe = redis.pipeline(transaction=False)
    for p in range(P):
        pipe.xlen(PartitionKeys(p).inbox)
        pipe.xlen(PartitionKeys(p).outbox)
    return not any(await pipe.execute())


async def test_a_full_runs_log_is_json_masked_and_free_of_secrets(
    redis: Redis, redis_server: RedisServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    gateway_port = free_port()
    hook = f"http://127.0.0.1:{gateway_port}/webhooks/%s?token={WEBHOOK_SECRET}"
    config = tmp_path / "sinchbot.toml"
    config.write_text(
        f'fallback = "Thanks, we got: {{text}}"\n[plugin.appointments]\nfrom_number = "{OURS}"\n'
    )
    async with Sandbox(
        SandboxConfig(
            port=0,
            credentials={KEY: SECRET},
            numbers=(OURS,),
            step_delay=0.01,
            time_scale=0.05,
            webhook_url=hook % "messages",
            receipt_url=hook % "receipts",
            delivery_reports_always=True,
        )
    ) as sb:
        env = gateway_env(
            redis_url=redis_server.url,
            base_url=sb.url,
            api_key=KEY,
            api_secret=SECRET,
            webhook_secret=WEBHOOK_SECRET,
            api_token=TOKEN,
            partitions=P,
            lease_ttl=1.5,
            throttle_calls=200,
            throttle_period=1.0,
            plugins="appointments",
            config=config,
            data_dir=tmp_path / "data",
            log_level="DEBUG",
            log_format="json",
        )
        gateway = GatewayProcess("A", tmp_path, env, port=gateway_port)
        base = gateway.url
        try:
            gateway.start()
            await gateway.wait_ready()
            alice, bob = sb.handset(ALICE), sb.handset(BOB)

            # Two handsets write in; the fallback answers each.
            await alice.send("hello from alice", to=OURS)
            await bob.send("hello from bob", to=OURS)
            await eventually(lambda: bool(alice.received and bob.received), what="two answers")

            # An API send with the token.
            status, body = await api(
                http, "POST", f"{base}/api/messages", {"to": CARO, "content": "Your order shipped"}
            )
            assert status == 202, body

            # An appointment: reminded at once (it starts within remind_before), answered Y.
            starts_at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
            status, body = await api(
                http,
                "POST",
                f"{base}/api/appointments",
                {"phone": ALICE, "name": "Sam", "starts_at": starts_at},
            )
            assert status == 201, body
            appointment = body["id"]
            await eventually(lambda: len(alice.received) >= 2, what="the reminder")
            await alice.send("Y", to=OURS, reply_to=alice.received[-1]["message_id"])

            async def confirmed() -> bool:
                status, doc = await api(http, "GET", f"{base}/api/appointments/{appointment}")
                return status == 200 and doc["status"] == "confirmed"

            await eventually(confirmed, what="the appointment confirmed")

            # STOP, then a send to the opted-out handset: suppressed by the sender.
            await bob.send("STOP", to=OURS)
            optouts = PartitionKeys(partition_of(BOB, P)).optout
            await eventually(lambda: redis.hexists(optouts, BOB), what="the opt-out recorded")
            status, body = await api(
                http, "POST", f"{base}/api/messages", {"to": BOB, "content": "Big sale!"}
            )
            assert status == 202, body
            suppressed = body["messages"][0]["id"]

            # A delivery that fails at the handset.
            sb.set_outcome(DAN, "failed")
            status, body = await api(
                http, "POST", f"{base}/api/messages", {"to": DAN, "content": "Are you there?"}
            )
            assert status == 202, body
            failed = body["messages"][0]["id"]

            async def settled() -> bool:
                return (
                    await record_status(http, base, suppressed) == "suppressed"
                    and await record_status(http, base, failed) == "failed"
                    and await drained(redis)
                )

            await eventually(settled, what="the suppressed and failed sends recorded")
            await sb.wait_idle()
            await eventually(lambda: drained(redis), what="every stream drained")
            timeline = await conversation(
                http, base, conversation_key(None, DAN), token=TOKEN, limit=100
            )
            assert timeline is not None
            assert "failed" in {e["data"].get("status") for e in timeline["timeline"]}
            assert await gateway.terminate() == 0
        finally:
            gateway.close()

    log_text = gateway.stderr()
    everything = log_text + gateway.stdout()
    lines = [line for line in log_text.splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON log line: {line[:300]}")
        assert isinstance(record, dict), line[:300]
        records.append(record)
    assert len(records) > 50  # DEBUG: a real run logs plenty

    # No phone number in full, in any form; each masked form does appear.
    for number in (OURS, *HANDSETS):
        digits = number.lstrip("+")
        for form in (number, digits, digits[2:], "0" + digits[2:]):
            assert form not in everything, f"{form} appears in the log"
        assert f"+********{number[-3:]}" in log_text, f"{number} never appears masked"

    # No credential, in any form.
    basic = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    for secret in (KEY, SECRET, WEBHOOK_SECRET, TOKEN, basic):
        assert secret not in everything, "a credential appears in the log"

    # Every line logged while an event was handled carries its context.
    handling = [r for r in records if r.get("event") == "handling"]
    assert len(handling) >= 6  # messages, the appointment's command, Y, STOP, receipts...
    during = [r for r in records if str(r.get("logger", "")).startswith(HANDLING_LOGGERS)]
    assert {r["logger"] for r in during} >= {"bot.conversation.engine"}
    for record in during:
        assert MASKED_CONVERSATION.match(record.get("conversation", "")), record
        assert isinstance(record.get("partition"), int), record
        assert record.get("entry"), record
        assert record.get("event_id") or record.get("timer"), record
    assert {r["partition"] for r in handling} <= set(range(P))
    assert any(r.get("event") == "appointment outcome" for r in during)

    # Lines outside the handling of an event carry none of its context.
    for record in records:
        if record.get("logger") in ("bot.ingress.webhooks", "bot.api.routes"):
            assert "entry" not in record and "event_kind" not in record, record
    # The sender's lines say which partitions and messages they are about.
    held = [r for r in records if r.get("event") == "messages to opted-out handsets not sent"]
    assert held, "the suppressed send was not logged"
    assert held[0]["gw_ids"] == [suppressed]
    assert held[0]["partitions"] and "conversation" not in held[0]


# ---------------------------------------------------------------------- in-process


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The process's log as JSON lines in a buffer; the default configuration after."""
    out = io.StringIO()
    configure("DEBUG", "json", stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def chatty_router() -> Router:
    router = Router("chatty")
    log = structlog.get_logger("plugins.chatty")

    @router.message()
    async def chat(ctx: Context) -> None:
        assert ctx.message is not None
        if ctx.message.content == "bind":
            # A handler binding context and never unbinding it.
            structlog.contextvars.bind_contextvars(leaked="yes")
        log.info("plugin says", said=ctx.message.content)
        ctx.reply(f"you said {ctx.message.content}")

    return router


async def test_the_event_context_is_bound_per_event_and_never_leaks(
    redis_server: RedisServer, json_log: io.StringIO
) -> None:
    async with BotTester(
        plugins=[chatty_router()], redis_url=redis_server.url, partitions=1
    ) as bot:
        first, second = bot.phone(ALICE), bot.phone(BOB)
        await first.send("bind", reply_to=None)
        await first.expect_reply("you said bind")
        await second.send("after", reply_to=None)
        await second.expect_reply("you said after")
        await bot.settle()
    records = [json.loads(line) for line in json_log.getvalue().splitlines() if line]
    said = {r["said"]: r for r in records if r.get("event") == "plugin says"}
    assert said["bind"]["conversation"] == "+********157:+********156"
    assert said["bind"]["leaked"] == "yes"
    after = said["after"]
    assert after["conversation"] == "+********157:+********158"
    assert after["partition"] == 0
    assert after["event_kind"] == "message"
    assert after["entry"] != said["bind"]["entry"]
    assert after["event_id"] != said["bind"]["event_id"]
    # Nothing the first event's handler bound reaches any later line.
    later = records[records.index(said["bind"]) + 1 :]
    assert later
    assert not [r for r in later if "leaked" in r]


class _Model:
    def __str__(self) -> str:
        return "Model(to=+61491570156)"


def test_secrets_in_text_urls_keys_and_objects_are_redacted(json_log: io.StringIO) -> None:
    add_secret("Registered-Secret-Value", None, "short")
    try:
        structlog.get_logger("t").warning(
            "calling https://example.com/hook?token=abc123&x=1 with Registered-Secret-Value",
            url="redis://:redis-pass@127.0.0.1:6379/0",
            header="Authorization: Bearer abcdef0123456789",
            by_number={"+61491570156": "opted out"},
            model=_Model(),
            raw=b"from 61491570158",
            short="short is not scrubbed",
        )
    finally:
        forget_secrets()
    text = json_log.getvalue()
    for leaked in ("abc123", "Registered-Secret-Value", "redis-pass", "abcdef0123456789"):
        assert leaked not in text
    for number in ("491570156", "491570158"):
        assert number not in text
    (record,) = [json.loads(line) for line in text.splitlines()]
    assert record["event"] == (
        "calling https://example.com/hook?token=[redacted]&x=1 with [redacted]"
    )
    assert record["url"] == "redis://:[redacted]@127.0.0.1:6379/0"
    assert record["header"] == "Authorization: Bearer [redacted]"
    assert record["by_number"] == {"+********156": "opted out"}
    assert record["model"] == "Model(to=+********156)"
    assert record["raw"] == "from ********158"
    assert record["short"] == "short is not scrubbed"
