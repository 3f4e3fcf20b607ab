"""Handsets sending: reply correlation, unsolicited messages, opt-out, MMS attachments."""

from __future__ import annotations

import base64

import httpx
import pytest

from bot.sandbox import Sandbox, SandboxConfig
from bot.sinch.client import SinchClient
from bot.sinch.models import Channel, parse_event, parse_inbound
from bot.sinch.templates import MO_TEMPLATE

from .conftest import HANDSET, OTHER_HANDSET, OUR_NUMBER, Receiver, SandboxFactory, send, sms

SECOND_NUMBER = "+61491570159"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


async def test_reply_to_a_message_id_carries_its_id_and_metadata(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    [accepted] = await send(
        http,
        sms(
            source_number=OUR_NUMBER, callback_url=receiver.url_for("/cb"), metadata={"conv": "42"}
        ),
    )
    await sandbox.wait_idle()
    response = await http.post(
        f"/_sandbox/handsets/{HANDSET}/messages",
        json={"content": "Yes please", "reply_to": accepted["message_id"]},
    )
    assert response.status_code == 201
    result = response.json()
    assert result["message_id"] == accepted["message_id"]
    assert result["metadata"] == {"conv": "42"}
    assert result["notification_id"] is None
    await sandbox.wait_idle()
    [push] = receiver.bodies("/cb")  # delivery_report was not requested: only the reply
    assert push["reply_id"] == result["reply_id"]
    assert push["message_id"] == accepted["message_id"]
    assert push["metadata"] == {"conv": "42"}
    assert push["callback_url"] == receiver.url_for("/cb")
    assert (push["source_number"], push["destination_number"]) == (HANDSET, OUR_NUMBER)
    assert push["content"] == "Yes please"
    assert parse_event(push).event_id == result["reply_id"]  # an inbound, not a receipt


async def test_reply_without_original_source_number_has_no_destination(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    await send(http, sms())
    await sandbox.wait_idle()
    await sandbox.handset(HANDSET).send("hi", reply_to="latest")
    [reply] = (await http.get("/v1/replies")).json()["replies"]
    assert "destination_number" not in reply
    assert "message_id" in reply


async def test_latest_correlates_per_sending_number(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox(numbers=[OUR_NUMBER, SECOND_NUMBER])
    async with sandbox.client() as client:
        [first] = await client.send_sms(HANDSET, "from one", metadata={"n": "1"})
        [second] = await client.send_sms(HANDSET, "from two", source_number=SECOND_NUMBER)
        [third] = await client.send_sms(HANDSET, "one again", metadata={"n": "3"})
    await sandbox.wait_idle()
    handset = sandbox.handset(HANDSET)
    to_default = await handset.send("a", reply_to="latest")
    to_second = await handset.send("b", reply_to="latest", to=SECOND_NUMBER)
    assert (to_default["message_id"], to_default["metadata"]) == (third.message_id, {"n": "3"})
    assert to_second["message_id"] == second.message_id
    assert to_second["destination_number"] == SECOND_NUMBER
    assert first.message_id not in (to_default["message_id"], to_second["message_id"])


async def test_a_handset_message_answers_the_latest_message_by_default(
    sandbox: Sandbox, client: SinchClient
) -> None:
    [sent] = await client.send_sms(HANDSET, "Reply Y", metadata={"k": "v"})
    await sandbox.wait_idle()
    result = await sandbox.handset(HANDSET).send("Y")  # as the provider correlates replies
    assert (result["message_id"], result["metadata"]) == (sent.message_id, {"k": "v"})


async def test_unsolicited_message_has_no_original(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await send(http, sms(callback_url=receiver.url_for("/cb")))
    await sandbox.wait_idle()
    result = await sandbox.handset(HANDSET).send("Hello?", reply_to=None)
    assert (result["message_id"], result["metadata"]) == (None, None)
    assert result["destination_number"] == OUR_NUMBER
    await sandbox.wait_idle()
    assert receiver.requests == []  # no callback_url to push to
    [reply] = (await http.get("/v1/replies")).json()["replies"]
    assert "message_id" not in reply
    assert reply["destination_number"] == OUR_NUMBER
    # "latest" without any message from that number is unsolicited too
    result = await sandbox.handset(OTHER_HANDSET).send("hi", reply_to="latest")
    assert result["message_id"] is None


async def test_bad_reply_targets(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    url = f"/_sandbox/handsets/{HANDSET}/messages"
    response = await http.post(url, json={"content": "x", "reply_to": "no-such-id"})
    assert response.status_code == 404
    [accepted] = await send(http, sms(OTHER_HANDSET))
    response = await http.post(url, json={"content": "x", "reply_to": accepted["message_id"]})
    assert response.status_code == 400
    assert "was not sent to" in response.json()["message"]


@pytest.mark.parametrize(
    ("number", "body"),
    [
        ("0491570156", {"content": "x"}),
        (HANDSET, {}),
        (HANDSET, {"content": ""}),
        (HANDSET, {"content": "x", "colour": "blue"}),
        (HANDSET, {"content": "x", "to": "nope"}),
        (HANDSET, {"media": [{"content_type": "image/png", "content": "***not base64***"}]}),
        (HANDSET, {"content": "x", "media": "nope"}),
        (HANDSET, {"choice": {"postback_data": ""}}),
        (HANDSET, ["content"]),
    ],
)
async def test_bad_handset_sends_are_400(
    sandbox: Sandbox, http: httpx.AsyncClient, number: str, body: object
) -> None:
    response = await http.post(f"/_sandbox/handsets/{number}/messages", json=body)
    assert response.status_code == 400
    assert response.json()["message"]
    assert sandbox.stats()["messages"]["inbound"] == 0


@pytest.mark.parametrize("keyword", ["STOP", " stop ", "Unsubscribe", "optout", "QUIT\n"])
async def test_opt_out_blacklists_and_notifies(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver, keyword: str
) -> None:
    for events, path in ((["OPT_OUT_SMS"], "/optout"), (["RECEIVED_SMS"], "/mo")):
        await http.post(
            "/v1/webhooks/messages",
            json={
                "url": receiver.url_for(path),
                "method": "POST",
                "encoding": "JSON",
                "events": events,
            },
        )
    [accepted] = await send(http, sms(source_number=OUR_NUMBER))
    await sandbox.wait_idle()
    result = await sandbox.handset(HANDSET).send(keyword, reply_to="latest")
    assert result["notification_id"]
    await sandbox.wait_idle()

    [notification] = receiver.bodies("/optout")
    assert notification["notification_id"] == result["notification_id"]
    assert "reply_id" not in notification
    assert notification["content"] == keyword
    assert notification["message_id"] == accepted["message_id"]
    assert parse_inbound(notification).kind == "opt_out"
    [reply] = receiver.bodies("/mo")
    assert reply["reply_id"] == result["reply_id"]

    auth = (await http.get(f"/v1/number_authorisation/is_authorised/{HANDSET}")).json()
    assert auth["numbers"] == [{"number": HANDSET, "authorised": False}]
    [later] = await send(http, sms())
    await sandbox.wait_idle()
    message = sandbox.message(later["message_id"])
    assert (message.status, message.status_code) == ("rejected", 302)
    assert sandbox.stats()["messages"]["opt_outs"] == 1


async def test_the_provider_confirms_an_opt_out_once_from_the_number_it_went_to(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    [accepted] = await send(http, sms(source_number=SECOND_NUMBER, content="Reminder"))
    await sandbox.wait_idle()
    phone = sandbox.handset(HANDSET)
    await phone.send("Stop", reply_to="latest", to=SECOND_NUMBER)
    received = (await http.get(f"/_sandbox/handsets/{HANDSET}/messages")).json()
    assert [(m["content"], m["source_number"], m["origin"]) for m in received] == [
        ("Reminder", SECOND_NUMBER, "account"),
        (sandbox.config.opt_out_reply, SECOND_NUMBER, "provider"),
    ]
    confirmation = received[1]
    assert confirmation["message_id"] != accepted["message_id"]
    assert (await http.get(f"/v1/messages/{confirmation['message_id']}")).status_code == 404
    assert [m.message_id for m in sandbox.messages(HANDSET)] == [accepted["message_id"]]

    # Already blacklisted: a repeated keyword is not confirmed again, and the handset's
    # next reply still correlates with the account's message, not with the confirmation.
    again = await phone.send("STOP", reply_to="latest", to=SECOND_NUMBER)
    assert again["notification_id"] and again["message_id"] == accepted["message_id"]
    assert len(phone.received) == 2
    stats = sandbox.stats()["messages"]
    assert (stats["opt_outs"], stats["opt_out_confirmations"]) == (2, 1)

    # Taken off the blacklist (the API), a new opt-out is confirmed again.
    assert (
        await http.delete(f"/v1/number_authorisation/mt/blacklist/{HANDSET}")
    ).status_code == 200
    await phone.send("quit")
    assert [m["origin"] for m in phone.received] == ["account", "provider", "provider"]


async def test_opt_out_handling_blacklist_only_and_by_the_account(
    make_sandbox: SandboxFactory,
) -> None:
    quiet = await make_sandbox(opt_out_handling="blacklist", opt_out_reply="Bye.")
    result = await quiet.handset(HANDSET).send("STOP")
    assert result["notification_id"] and HANDSET in quiet.state.blacklist
    assert quiet.handset(HANDSET).received == []

    own = await make_sandbox(opt_out_handling="account")
    result = await own.handset(HANDSET).send("STOP")
    assert result["notification_id"]  # still notified: the account acts on it
    assert HANDSET not in own.state.blacklist and own.handset(HANDSET).received == []
    async with own.client() as client:
        await client.blacklist_add([OTHER_HANDSET])  # kept, but it blocks nothing
        await client.send_sms(HANDSET, "You have been unsubscribed.")
        await client.send_sms(OTHER_HANDSET, "Hello")
    await own.wait_idle()
    assert [m.status for m in own.messages()] == ["delivered", "delivered"]
    assert OTHER_HANDSET in own.state.blacklist

    for bad in ({"opt_out_handling": "carrier"}, {"opt_out_reply": " "}):
        with pytest.raises(ValueError, match="opt_out"):
            SandboxConfig(**bad)


@pytest.mark.parametrize("content", ["stop please", "STOP!", "Don't stop", "STOPP"])
async def test_not_an_opt_out(sandbox: Sandbox, content: str) -> None:
    result = await sandbox.handset(HANDSET).send(content)
    assert result["notification_id"] is None
    assert HANDSET not in sandbox.state.blacklist


async def test_opt_out_reaches_the_connector_webhook_twice(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(webhook_url=receiver.url_for("/mo"))
    result = await sandbox.handset(HANDSET).send("STOP")
    await sandbox.wait_idle()
    parsed = sorted((parse_inbound(b) for b in receiver.bodies("/mo")), key=lambda m: m.kind)
    assert [(m.kind, m.event_id) for m in parsed] == [
        ("message", result["reply_id"]),
        ("opt_out", result["notification_id"]),
    ]


async def test_mms_inbound_attachments(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    for path, template in (("/connector", MO_TEMPLATE), ("/sample", None)):
        spec = {
            "url": receiver.url_for(path),
            "method": "POST",
            "encoding": "JSON",
            "events": ["RECEIVED_MMS"],
        }
        if template:
            spec["template"] = template
        assert (await http.post("/v1/webhooks/messages", json=spec)).status_code == 201
    response = await http.post(
        f"/_sandbox/handsets/{HANDSET}/messages",
        json={
            "content": "look",
            "media": [{"content_type": "image/png", "content": PNG, "name": "cat.png"}],
        },
    )
    assert response.status_code == 201
    assert response.json()["format"] == "MMS"
    await sandbox.wait_idle()
    [connector] = receiver.bodies("/connector")
    assert connector["attachments"] == [
        {"attachment_type": "image/png", "attachment_content": PNG, "attachment_name": "cat.png"}
    ]
    message = parse_inbound(connector)
    assert message.channel is Channel.MMS
    assert message.attachments[0].content == PNG
    [sample] = receiver.bodies("/sample")
    assert sample["attachments"] == [
        {"content_type": "image/png", "content": PNG, "original_name": "cat.png"}
    ]
    assert "content" not in sample
    [reply] = (await http.get("/v1/replies")).json()["replies"]
    assert reply["format"] == "MMS"
    assert reply["attachments"][0]["content"] == PNG


async def test_what_a_handset_sent_and_received(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    await send(http, sms(content="one"), sms(content="two"))
    await sandbox.wait_idle()
    await sandbox.handset(HANDSET).send("three")
    received = (await http.get(f"/_sandbox/handsets/{HANDSET}/messages")).json()
    assert sorted(m["content"] for m in received) == ["one", "two"]
    assert set(received[0]) == {
        "message_id",
        "content",
        "format",
        "source_number",
        "metadata",
        "media",
        "subject",
        "rcs",
        "time",
        "origin",
    }
    assert {m["origin"] for m in received} == {"account"}
    later = (await http.get(f"/_sandbox/handsets/{HANDSET}/messages?offset=1")).json()
    assert later == received[1:]
    sent = (await http.get(f"/_sandbox/handsets/{HANDSET}/sent")).json()
    assert [m["content"] for m in sent] == ["three"]
    handsets = (await http.get("/_sandbox/handsets")).json()
    assert handsets == [{"number": HANDSET, "rcs": True, "received": 2, "sent": 1}]
    assert (await http.get("/_sandbox/handsets/+61400000000/messages")).json() == []
