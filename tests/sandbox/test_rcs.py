"""RCS sends on the connector's paths, fallback to SMS, and RCS inbound (text, choice taps)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bot.sandbox import Sandbox
from bot.sandbox.config import DEFAULT_RCS_PATHS
from bot.sinch.models import Channel, RcsCard, RcsChoice, RcsMessage, parse_inbound, parse_receipt
from bot.sinch.templates import DR_TEMPLATE, MO_TEMPLATE

from .conftest import HANDSET, Receiver, by_rank

CHOICES = [RcsChoice(text="Yes", postback_data="yes"), RcsChoice(text="No", postback_data="no")]


async def _send_rcs(
    http: httpx.AsyncClient, *messages: RcsMessage, path: str = DEFAULT_RCS_PATHS[0]
) -> list[dict[str, Any]]:
    response = await http.post(path, json={"messages": [m.to_api() for m in messages]})
    assert response.status_code == 202, response.text
    return list(response.json()["messages"])


async def test_rcs_text_reaches_an_rcs_handset(sandbox: Sandbox, receiver: Receiver) -> None:
    async with sandbox.client() as client:
        await client.subscribe(receipts_url=receiver.url_for("/dr"))
        [sent] = await client.send_rcs(
            RcsMessage(
                destination_number=HANDSET,
                text="Pick one",
                choices=CHOICES,
                fallback_text="Reply YES or NO",
                delivery_report=True,
            )
        )
    assert sent.status == "queued"
    await sandbox.wait_idle()
    [received] = sandbox.handset(HANDSET).received
    assert received["format"] == "RCS"
    assert received["content"] == "Pick one"
    assert received["rcs"]["choice_message"]["choices"][0]["postback_data"] == "yes"
    receipts = [parse_receipt(b) for b in receiver.bodies("/dr")]
    assert {r.format for r in receipts} == {"RCS"}
    assert sandbox.stats()["messages"]["rcs"] == 1


@pytest.mark.parametrize("path", DEFAULT_RCS_PATHS)
async def test_both_connector_paths_and_every_body(
    sandbox: Sandbox, http: httpx.AsyncClient, path: str
) -> None:
    messages = [
        RcsMessage(destination_number=HANDSET, text="plain"),
        RcsMessage(
            destination_number=HANDSET,
            card=RcsCard(
                title="Card", description="d", media_url="https://x.example/a.png", choices=CHOICES
            ),
        ),
        RcsMessage(
            destination_number=HANDSET,
            carousel=[RcsCard(title="A"), RcsCard(title="B")],
            choices=CHOICES,
        ),
    ]
    accepted = await _send_rcs(http, *messages, path=path)
    assert [m["format"] for m in accepted] == ["RCS"] * 3
    assert accepted[1]["rcs_message"]["card_message"]["title"] == "Card"
    await sandbox.wait_idle()
    contents = sorted(m["content"] for m in sandbox.handset(HANDSET).received)
    assert contents == ["A | B", "Card - d", "plain"]


async def test_bare_rcs_object_is_accepted(http: httpx.AsyncClient) -> None:
    body = RcsMessage(destination_number=HANDSET, text="hi").to_api()
    response = await http.post(DEFAULT_RCS_PATHS[1], json=body)
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("rcs_message", "pointer"),
    [
        (
            {"text_message": {"text": "a"}, "card_message": {"title": "b"}},
            "/messages/0/rcs_message",
        ),
        ({}, "/messages/0/rcs_message"),
        ({"text_message": {"text": ""}}, "/messages/0/rcs_message/text_message/text"),
        (
            {"carousel_message": {"cards": [{"title": "only one"}]}},
            "/messages/0/rcs_message/carousel_message/cards",
        ),
        (
            {"choice_message": {"text_message": {"text": "x"}, "choices": []}},
            "/messages/0/rcs_message/choice_message/choices",
        ),
        ({"card_message": {}}, "/messages/0/rcs_message/card_message"),
        ({"video_message": {"url": "https://x"}}, "/messages/0/rcs_message/video_message"),
    ],
)
async def test_invalid_rcs_is_rejected(
    sandbox: Sandbox, http: httpx.AsyncClient, rcs_message: dict[str, Any], pointer: str
) -> None:
    body = {
        "messages": [{"destination_number": HANDSET, "format": "RCS", "rcs_message": rcs_message}]
    }
    response = await http.post(DEFAULT_RCS_PATHS[0], json=body)
    assert response.status_code == 400
    assert any(d.startswith(pointer + ":") for d in response.json()["details"]), response.json()
    assert sandbox.stats()["messages"]["accepted"] == 0


async def test_non_rcs_handset_gets_the_fallback_sms(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    response = await http.put(f"/_sandbox/handsets/{HANDSET}", json={"rcs": False})
    assert response.json()["rcs"] is False
    [accepted] = await _send_rcs(
        http, RcsMessage(destination_number=HANDSET, text="rich", fallback_text="plain fallback")
    )
    await sandbox.wait_idle()
    [received] = sandbox.handset(HANDSET).received
    assert (received["format"], received["content"], received["rcs"]) == (
        "SMS",
        "plain fallback",
        None,
    )
    message = sandbox.message(accepted["message_id"])
    assert (message.status, message.delivered_as) == ("delivered", "SMS")
    assert sandbox.stats()["messages"]["rcs_fallback"] == 1
    assert (await http.put(f"/_sandbox/handsets/{HANDSET}", json={"rcs": "no"})).status_code == 400


async def test_non_rcs_handset_without_fallback_fails_413(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    sandbox.handset(HANDSET).rcs = False
    await _send_rcs(http, RcsMessage(destination_number=HANDSET, text="rich", delivery_report=True))
    await sandbox.wait_idle()
    reports = (await http.get("/v1/delivery_reports")).json()["delivery_reports"]
    assert by_rank(reports) == [("enroute", "101"), ("submitted", "200"), ("failed", "413")]
    assert sandbox.handset(HANDSET).received == []


async def test_rcs_choice_tap_and_text_inbound(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await http.post(
        "/v1/webhooks/messages",
        json={
            "url": receiver.url_for("/mo"),
            "method": "POST",
            "encoding": "JSON",
            "events": ["RECEIVED_SMS"],
            "template": MO_TEMPLATE,
        },
    )
    [accepted] = await _send_rcs(
        http,
        RcsMessage(
            destination_number=HANDSET, text="Pick", choices=CHOICES, metadata={"flow": "survey"}
        ),
    )
    await sandbox.wait_idle()
    response = await http.post(
        f"/_sandbox/handsets/{HANDSET}/messages",
        json={"choice": {"message_id": accepted["message_id"], "postback_data": "yes"}},
    )
    assert response.status_code == 201
    tap = response.json()
    assert (tap["format"], tap["message_id"], tap["metadata"]) == (
        "RCS",
        accepted["message_id"],
        {"flow": "survey"},
    )
    await sandbox.handset(HANDSET).send("free text", rcs=True)
    await sandbox.wait_idle()

    choice_body, text_body = receiver.bodies("/mo")
    assert choice_body["contact_message"] == {
        "choice_response_message": {"message_id": accepted["message_id"], "postback_data": "yes"}
    }
    choice = parse_inbound(choice_body)
    assert choice.channel is Channel.RCS
    assert choice.choice is not None and choice.choice.postback_data == "yes"
    assert choice.message_id == accepted["message_id"]
    assert choice.metadata == {"flow": "survey"}
    text = parse_inbound(text_body)
    assert (text.channel, text.content) == (Channel.RCS, "free text")
    assert text_body["contact_message"] == {"text_message": {"text": "free text"}}


async def test_rcs_dr_template_type(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await http.post(
        "/v1/webhooks/deliveryreports",
        json={
            "url": receiver.url_for("/dr"),
            "method": "POST",
            "encoding": "JSON",
            "template": DR_TEMPLATE,
        },
    )
    await _send_rcs(http, RcsMessage(destination_number=HANDSET, text="x", delivery_report=True))
    await sandbox.wait_idle()
    assert {b["type"] for b in receiver.bodies("/dr")} == {"RCS"}
