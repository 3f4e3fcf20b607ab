"""SinchClient over real HTTP against the sandbox: every operation, and every failure."""

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.sandbox import Sandbox
from bot.sinch.client import SinchClient
from bot.sinch.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    SinchTimeoutError,
    SinchTransportError,
)
from bot.sinch.models import (
    Channel,
    DeliveryReceipt,
    DeliveryStatus,
    InboundMessage,
    MessageStatus,
    RcsCard,
    RcsChoice,
    RcsMessage,
    WebhookEvent,
    WebhookSpec,
    parse_event,
    parse_inbound,
    parse_receipt,
)

A, B = "+61491570156", "+61491570158"


async def control(sandbox: Sandbox, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(base_url=sandbox.url) as http:
        response = await http.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None


async def set_faults(sandbox: Sandbox, *rules: dict[str, Any]) -> None:
    await control(sandbox, "POST", "/_sandbox/faults", {"rules": list(rules)})


async def stats(sandbox: Sandbox) -> dict[str, Any]:
    result: dict[str, Any] = await control(sandbox, "GET", "/_sandbox/stats")
    return result


# ------------------------------------------------------------------ sending


async def test_send_sms_reaches_every_handset_and_progresses_to_delivered(
    client: SinchClient, sandbox: Sandbox
) -> None:
    sent = await client.send_sms(
        f"{A} {B}", "Your table is ready", delivery_report=True, metadata={"gw_id": "x1"}
    )
    assert [m.destination_number for m in sent] == [A, B]
    assert all(m.status is MessageStatus.QUEUED and len(m.message_id) == 36 for m in sent)
    await sandbox.wait_idle()
    for message in sent:
        status = await client.message_status(message.message_id)
        assert status.status is MessageStatus.DELIVERED
        assert status.metadata == {"gw_id": "x1"}
    for number in (A, B):
        received = sandbox.handset(number).received
        assert [m["content"] for m in received] == ["Your table is ready"]
        assert received[0]["metadata"] == {"gw_id": "x1"}


async def test_250_recipients_take_three_calls(client: SinchClient, sandbox: Sandbox) -> None:
    numbers = [f"+614915{i:05d}" for i in range(250)]
    sent = await client.send_sms(numbers, "hello")
    assert len({m.message_id for m in sent}) == 250
    counts = await stats(sandbox)
    assert counts["api_calls"]["POST /v1/messages"] == 3
    assert [c["messages"] for c in counts["send_calls"]] == [100, 100, 50]


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
async def test_hmac_auth(sandbox: Sandbox, algorithm: str) -> None:
    async with SinchClient(
        api_key=sandbox.api_key,
        api_secret=sandbox.api_secret,
        base_url=sandbox.url,
        auth="hmac",
        hmac_algorithm=algorithm,  # type: ignore[arg-type]
    ) as c:
        sent = await c.send_sms(A, "signed")
        assert (await c.message_status(sent[0].message_id)).content == "signed"


@pytest.mark.parametrize("auth", ["basic", "hmac"])
async def test_wrong_credentials(sandbox: Sandbox, auth: str) -> None:
    async with SinchClient(
        api_key=sandbox.api_key, api_secret="wrong", base_url=sandbox.url, auth=auth
    ) as c:
        with pytest.raises(AuthenticationError) as info:
            await c.send_sms(A, "hi")
    assert info.value.status_code == 401
    assert info.value.message == "Invalid authentication credentials"
    assert sandbox.handset(A).received == []


async def test_provider_validation_rejects_the_whole_call(
    client: SinchClient, sandbox: Sandbox
) -> None:
    body = {
        "messages": [
            {"content": "ok", "destination_number": A},
            {"content": "bad", "destination_number": "12"},
        ]
    }
    with pytest.raises(InvalidRequestError) as info:
        await client.request("POST", "/v1/messages", body=body)
    assert info.value.status_code == 400
    assert info.value.details
    assert info.value.details[0].startswith("/messages/1/destination_number")
    await sandbox.wait_idle()
    assert sandbox.handset(A).received == []


async def test_status_and_cancel(client: SinchClient, sandbox: Sandbox) -> None:
    with pytest.raises(NotFoundError):
        await client.message_status("6b1f64d2-0000-4000-8000-000000000000")
    later = datetime.now(UTC) + timedelta(hours=1)
    scheduled = (await client.send_sms(A, "later", scheduled=later))[0]
    assert (await client.message_status(scheduled.message_id)).status is MessageStatus.SCHEDULED
    await client.cancel_message(scheduled.message_id)
    assert (await client.message_status(scheduled.message_id)).status is MessageStatus.CANCELLED
    now = (await client.send_sms(A, "now"))[0]
    with pytest.raises(InvalidRequestError):
        await client.cancel_message(now.message_id)
    with pytest.raises(NotFoundError):
        await client.cancel_message("6b1f64d2-0000-4000-8000-000000000000")


async def test_mms(client: SinchClient, sandbox: Sandbox) -> None:
    sent = await client.send_mms(A, "Your ticket", ["https://example.com/t.png"], subject="Ticket")
    await sandbox.wait_idle()
    got = sandbox.handset(A).received[-1]
    assert (got["format"], got["media"], got["subject"]) == (
        "MMS",
        ["https://example.com/t.png"],
        "Ticket",
    )
    assert (await client.message_status(sent[0].message_id)).format == "MMS"


async def test_rcs_and_fallback(client: SinchClient, sandbox: Sandbox) -> None:
    message = RcsMessage(
        destination_number=A,
        text="Tue 10:00 OK?",
        choices=[RcsChoice(text="Yes", postback_data="Y"), RcsChoice(text="No", postback_data="N")],
        fallback_text="Tue 10:00. Reply Y or N",
    )
    card = RcsMessage(destination_number=A, card=RcsCard(title="Dr Smith", description="Tue 10:00"))
    await client.send_rcs([message, card])
    await sandbox.wait_idle()
    got = sandbox.handset(A).received
    assert got[0]["rcs"]["choice_message"]["choices"][0]["postback_data"] == "Y"
    assert got[1]["rcs"]["card_message"]["title"] == "Dr Smith"
    await control(sandbox, "PUT", f"/_sandbox/handsets/{B}", {"rcs": False})
    await client.send_rcs(message.model_copy(update={"destination_number": B}))
    await sandbox.wait_idle()
    fallback = sandbox.handset(B).received[-1]
    assert (fallback["format"], fallback["content"]) == ("SMS", "Tue 10:00. Reply Y or N")


async def test_senders(client: SinchClient, sandbox: Sandbox) -> None:
    ids = await client.sender_ids()
    assert ids.default_sender is not None
    assert ids.default_sender.number == "+61491570157"
    assert ids.senders[0].is_default
    assert ids.pagination.total_count >= 1
    addresses = await client.sender_addresses()
    assert any(a.sender_address == "+61491570157" for a in addresses.data)
    numbers = await client.dedicated_numbers()
    assert numbers.data[0].number.phone_number == "+61491570157"


# ------------------------------------------------------------------ polling


async def test_reply_polling_carries_the_original_message(
    client: SinchClient, sandbox: Sandbox
) -> None:
    sent = (await client.send_sms(A, "Reply Y to confirm", metadata={"appointment": "42"}))[0]
    await sandbox.wait_idle()
    await sandbox.handset(A).send("Y", reply_to=sent.message_id)
    await sandbox.handset(B).send("unsolicited hello")
    replies = await client.replies()
    by_source = {r.source_number: r for r in replies}
    assert by_source[A].message_id == sent.message_id
    assert by_source[A].metadata == {"appointment": "42"}
    assert by_source[A].content == "Y"
    assert by_source[B].message_id is None
    assert await client.replies() != []  # same items until confirmed
    await client.confirm_replies([r.reply_id for r in replies if r.reply_id])
    assert await client.replies() == []


async def test_delivery_report_polling(client: SinchClient, sandbox: Sandbox) -> None:
    sent = (await client.send_sms(A, "hi", delivery_report=True))[0]
    await sandbox.wait_idle()
    reports = await client.delivery_reports()
    mine = [r for r in reports if r.message_id == sent.message_id]
    assert [r.status for r in mine] == [
        DeliveryStatus.ENROUTE,
        DeliveryStatus.SUBMITTED,
        DeliveryStatus.DELIVERED,
    ]
    assert [r.status_code for r in mine] == [101, 200, 220]
    await client.confirm_delivery_reports(
        [r.delivery_report_id for r in reports if r.delivery_report_id]
    )
    assert await client.delivery_reports() == []


# ------------------------------------------------------------------ webhooks


async def test_webhook_crud(client: SinchClient) -> None:
    spec = WebhookSpec(url="https://example.com/hook", events=[WebhookEvent.RECEIVED_SMS])
    created = await client.create_webhook(spec)
    with pytest.raises(ConflictError):
        await client.create_webhook(spec)
    assert [w.id for w in await client.all_webhooks()] == [created.id]
    updated = await client.update_webhook(created.id, url="https://example.com/other")
    assert updated.url == "https://example.com/other"
    await client.delete_webhook(created.id)
    assert await client.all_webhooks() == []
    with pytest.raises(NotFoundError):
        await client.delete_webhook(created.id)
    with pytest.raises(InvalidRequestError):
        await client.request(
            "POST", "/v1/webhooks/messages", body={"url": "https://x.test", "events": []}
        )


class Receiver:
    """A real HTTP server that records what the provider pushes to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(json.loads(await request.read()))
        self.headers.append(dict(request.headers))
        self.arrived.set()
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield recv, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_subscribe_registers_templates_that_parse(
    client: SinchClient, sandbox: Sandbox, receiver: tuple[Receiver, str]
) -> None:
    recv, url = receiver
    hooks = await client.subscribe(
        messages_url=f"{url}/webhooks/messages",
        receipts_url=f"{url}/webhooks/receipts",
        headers={"X-Webhook-Secret": "s3cret"},
    )
    assert len(hooks) == 2
    sent = (await client.send_sms(A, "Reply Y", delivery_report=True, metadata={"gw_id": "g1"}))[0]
    await sandbox.wait_idle()
    await sandbox.handset(A).send("Y", reply_to=sent.message_id)
    await sandbox.handset(A).send("STOP")
    await sandbox.wait_idle()
    assert all(h.get("X-Webhook-Secret") == "s3cret" for h in recv.headers)
    events = [parse_event(b) for b in recv.bodies]
    receipts = [e for e in events if isinstance(e, DeliveryReceipt)]
    inbound = [e for e in events if isinstance(e, InboundMessage)]
    assert [r.status_code for r in receipts] == [101, 200, 220]
    assert all(r.delivery_report_id and r.metadata == {"gw_id": "g1"} for r in receipts)
    reply = next(m for m in inbound if m.content == "Y")
    assert (reply.reply_id is not None, reply.message_id, reply.metadata) == (
        True,
        sent.message_id,
        {"gw_id": "g1"},
    )
    assert reply.channel is Channel.SMS
    opt_outs = [m for m in inbound if m.kind == "opt_out"]
    assert len(opt_outs) == 1
    assert opt_outs[0].source_number == A
    assert opt_outs[0].event_id != reply.event_id
    assert parse_inbound(recv.bodies[-1]).source_number == A
    assert parse_receipt(next(b for b in recv.bodies if "delivery_report_id" in b)).recipient == A


async def test_callback_url_pushes_receipts_and_replies(
    client: SinchClient, sandbox: Sandbox, receiver: tuple[Receiver, str]
) -> None:
    recv, url = receiver
    sent = (
        await client.send_sms(
            A, "hi", delivery_report=True, callback_url=f"{url}/webhooks/callback?token=t"
        )
    )[0]
    await sandbox.wait_idle()
    await sandbox.handset(A).send("hello back", reply_to=sent.message_id)
    await sandbox.wait_idle()
    events = [parse_event(b) for b in recv.bodies]
    assert [e.status for e in events if isinstance(e, DeliveryReceipt)] == [
        "enroute",
        "submitted",
        "delivered",
    ]
    replies = [e for e in events if isinstance(e, InboundMessage)]
    assert [(r.content, r.message_id) for r in replies] == [("hello back", sent.message_id)]


# ------------------------------------------------------------------ blacklist


async def test_blacklist(client: SinchClient, sandbox: Sandbox) -> None:
    await client.blacklist_add([A])
    assert A in (await client.blacklist()).numbers
    assert [(n.number, n.authorised) for n in await client.is_authorised([A, B])] == [
        (A, False),
        (B, True),
    ]
    sent = (await client.send_sms(A, "blocked", delivery_report=True))[0]
    await sandbox.wait_idle()
    status = await client.message_status(sent.message_id)
    assert status.status is MessageStatus.REJECTED
    await client.blacklist_remove(A)
    assert A not in (await client.blacklist()).numbers
    with pytest.raises(NotFoundError):
        await client.blacklist_remove(A)


async def test_handset_stop_blacklists(client: SinchClient, sandbox: Sandbox) -> None:
    await sandbox.handset(B).send(" stop ")
    assert B in (await client.blacklist()).numbers


# ------------------------------------------------------------------ faults


async def test_429_with_retry_after(client: SinchClient, sandbox: Sandbox) -> None:
    await set_faults(
        sandbox,
        {"endpoint": "POST /v1/messages", "kind": "rate_limit", "retry_after": 7, "count": 1},
    )
    with pytest.raises(RateLimitedError) as info:
        await client.send_sms(A, "hi")
    assert info.value.retry_after == 7
    await client.send_sms(A, "hi")  # the fault was for one call only


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx(client: SinchClient, sandbox: Sandbox, status: int) -> None:
    await set_faults(sandbox, {"endpoint": "*", "kind": "error", "status": status, "count": 1})
    with pytest.raises(ServerError) as info:
        await client.sender_ids()
    assert info.value.status_code == status


async def test_timeout_is_an_unknown_outcome(sandbox: Sandbox) -> None:
    await set_faults(
        sandbox, {"endpoint": "POST /v1/messages", "kind": "timeout", "delay": 2, "count": 1}
    )
    async with SinchClient(
        api_key=sandbox.api_key,
        api_secret=sandbox.api_secret,
        base_url=sandbox.url,
        request_timeout=0.3,
    ) as c:
        with pytest.raises(SinchTimeoutError, match="unknown"):
            await c.send_sms(A, "hi")


async def test_dropped_connections(client: SinchClient, sandbox: Sandbox) -> None:
    await set_faults(sandbox, {"endpoint": "POST /v1/messages", "kind": "drop", "count": 1})
    with pytest.raises(SinchTransportError):
        await client.send_sms(A, "dropped before")
    await set_faults(sandbox, {"endpoint": "POST /v1/messages", "kind": "drop_after", "count": 1})
    with pytest.raises(SinchTransportError):
        await client.send_sms(A, "dropped after")
    await sandbox.wait_idle()
    # "202 then dropped": the provider accepted it although the client saw an error.
    assert [m["content"] for m in sandbox.handset(A).received] == ["dropped after"]


async def test_unreachable_provider() -> None:
    async with SinchClient(
        api_key="k", api_secret="s", base_url="http://127.0.0.1:9", connect_timeout=1
    ) as c:
        with pytest.raises(SinchTransportError, match=r"127\.0\.0\.1:9"):
            await c.sender_ids()
