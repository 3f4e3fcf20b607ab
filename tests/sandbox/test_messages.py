"""POST /v1/messages validation and acceptance, GET status, cancelling scheduled messages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bot.sandbox import Sandbox
from bot.sandbox.schemas import PARSE_ERROR
from bot.sinch.models import format_timestamp

from .conftest import HANDSET, OUR_NUMBER, SandboxFactory, send, sms

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
NOT_FOUND = {"message": "Resource not found."}


async def test_send_one_message_echoes_it_with_an_id(http: httpx.AsyncClient) -> None:
    message = sms(
        content="My first message",
        source_number=OUR_NUMBER,
        source_number_type="INTERNATIONAL",
        callback_url="https://my.callback.url.com",
        delivery_report=True,
        metadata={"key1": "value1"},
    )
    [accepted] = await send(http, message)
    assert UUID.match(accepted.pop("message_id"))
    assert accepted == {**message, "format": "SMS", "status": "queued"}


async def test_send_100_messages_in_one_call(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    messages = [sms(f"+614915{i:05d}", f"Message {i}") for i in range(100)]
    accepted = await send(http, *messages)
    assert len({m["message_id"] for m in accepted}) == 100
    assert [m["destination_number"] for m in accepted] == [
        m["destination_number"] for m in messages
    ]
    await sandbox.wait_idle()
    assert sandbox.handset("+61491500042").received[0]["content"] == "Message 42"
    stats = sandbox.stats()
    assert stats["messages"]["accepted"] == 100
    assert stats["messages"]["delivered"] == 100
    assert stats["send_calls"][-1]["messages"] == 100


async def test_101_messages_are_rejected(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    messages = [sms(f"+614915{i:05d}") for i in range(101)]
    response = await http.post("/v1/messages", json={"messages": messages})
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == PARSE_ERROR
    assert body["details"] == ["/messages: at most 100 messages can be sent in one request"]
    assert sandbox.stats()["messages"]["accepted"] == 0


async def test_one_bad_message_rejects_the_whole_call(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    messages = [sms(f"+614915{i:05d}") for i in range(60)]
    messages[57]["destination_number"] = "0491570156"
    response = await http.post("/v1/messages", json={"messages": messages})
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == PARSE_ERROR
    assert len(body["details"]) == 1
    assert body["details"][0].startswith("/messages/57/destination_number: ")
    await sandbox.wait_idle()
    stats = sandbox.stats()
    assert stats["messages"]["accepted"] == 0
    assert stats["messages"]["rejected_calls"] == 1
    assert stats["send_calls"][-1] | {"time": 0} == {
        "time": 0,
        "path": "/v1/messages",
        "messages": 0,
        "status": 400,
        "dropped": False,
    }
    assert sandbox.handset("+61491500000").received == []
    assert sandbox.messages() == []


async def test_every_bad_message_is_reported(http: httpx.AsyncClient) -> None:
    messages = [
        sms(),
        sms(content=""),
        sms(media=["https://example.com/a.png"]),
        {"destination_number": HANDSET},
        sms(metadata={f"k{i}": "v" for i in range(11)}),
        sms(content="x" * 5001),
        sms(colour="blue"),
        "not an object",
        sms(callback_url="ftp://example.com"),
        sms(scheduled="not a date"),
    ]
    response = await http.post("/v1/messages", json={"messages": messages})
    assert response.status_code == 400
    pointers = sorted({d.split(":")[0].split("/")[2] for d in response.json()["details"]}, key=int)
    assert pointers == [str(i) for i in range(1, 10)]
    details = "\n".join(response.json()["details"])
    assert "/messages/2: media needs format MMS" in details
    assert "/messages/3/content: Field required" in details
    assert "/messages/6/colour: Extra inputs are not permitted" in details


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[]", b'{"messages": []}', b'{"messages": {}}', b'"text"', b"\xff\xfe"],
)
async def test_malformed_bodies_get_the_providers_400(
    sandbox: Sandbox, http: httpx.AsyncClient, body: bytes
) -> None:
    response = await http.post(
        "/v1/messages", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["message"] == PARSE_ERROR
    assert response.json()["details"]
    assert sandbox.stats()["messages"]["accepted"] == 0


async def test_get_message_status(make_sandbox: SandboxFactory) -> None:
    slow = await make_sandbox(step_delay=0.05, time_scale=1.0)
    async with httpx.AsyncClient(base_url=slow.url, auth=(slow.api_key, slow.api_secret)) as http:
        [accepted] = await send(http, sms(metadata={"a": "b"}))
        response = await http.get(f"/v1/messages/{accepted['message_id']}")
        assert response.status_code == 200
        assert response.json() == accepted  # still queued, same object
        await slow.wait_idle()
        status = (await http.get(f"/v1/messages/{accepted['message_id']}")).json()
        assert status == {**accepted, "status": "delivered"}
        assert [h[0] for h in slow.message(accepted["message_id"]).history] == [
            "enroute",
            "submitted",
            "delivered",
        ]


async def test_unknown_message_is_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/messages/877c19ef-fa2e-4cec-827a-e1df9b5509f7")
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    response = await http.put("/v1/messages/nope", json={"status": "cancelled"})
    assert response.status_code == 404


async def test_scheduled_message_can_be_cancelled(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    [accepted] = await send(http, sms(scheduled=format_timestamp(later)))
    assert accepted["status"] == "queued"
    assert accepted["scheduled"] == format_timestamp(later)
    url = f"/v1/messages/{accepted['message_id']}"
    assert (await http.get(url)).json()["status"] == "scheduled"

    response = await http.put(url, json={"status": "cancelled"})
    assert response.status_code == 200
    assert response.content == b""
    assert (await http.get(url)).json()["status"] == "cancelled"
    assert (await http.put(url, json={"status": "cancelled"})).status_code == 400
    await sandbox.wait_idle()
    assert sandbox.handset(HANDSET).received == []
    assert sandbox.stats()["messages"]["cancelled"] == 1


async def test_only_scheduled_messages_can_be_cancelled(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    [accepted] = await send(http, sms())
    await sandbox.wait_idle()
    url = f"/v1/messages/{accepted['message_id']}"
    response = await http.put(url, json={"status": "cancelled"})
    assert response.status_code == 400
    assert "scheduled" in response.json()["message"]
    for body in ({"status": "delivered"}, {}, [], {"status": "cancelled", "x": 1}):
        assert (await http.put(url, json=body)).status_code == 400
    assert (await http.get(url)).json()["status"] == "delivered"


async def test_scheduled_message_goes_out_at_its_time(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    soon = datetime.now(UTC) + timedelta(milliseconds=150)
    [accepted] = await send(http, sms(scheduled=soon.isoformat()))
    await sandbox.wait_idle()
    assert sandbox.handset(HANDSET).received == []
    received = await sandbox.handset(HANDSET).wait_for(1, timeout=3)
    assert received[0]["message_id"] == accepted["message_id"]
    await sandbox.wait_idle()
    assert sandbox.message(accepted["message_id"]).status == "delivered"


async def test_expired_message_is_not_delivered(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    [accepted] = await send(
        http, sms(message_expiry_timestamp=format_timestamp(past), delivery_report=True)
    )
    await sandbox.wait_idle()
    message = sandbox.message(accepted["message_id"])
    assert (message.status, message.status_code) == ("expired", 320)
    assert sandbox.handset(HANDSET).received == []
    assert sandbox.stats()["messages"]["expired"] == 1


async def test_billing_units_and_credits(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    before = (await http.get("/v1/messaging/credits")).json()["credits"]
    accepted = await send(http, sms(content="a" * 161), sms(content="ж" * 71), sms(content="hi"))
    assert [sandbox.message(m["message_id"]).billing_units for m in accepted] == [2, 2, 1]
    after = (await http.get("/v1/messaging/credits")).json()["credits"]
    assert before - after == 5


async def test_default_sender_is_the_first_account_number(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    await send(http, sms(), sms("+61491570158", source_number="MyBrand"))
    await sandbox.wait_idle()
    assert sandbox.handset(HANDSET).received[0]["source_number"] == OUR_NUMBER
    assert sandbox.handset("+61491570158").received[0]["source_number"] == "MyBrand"
