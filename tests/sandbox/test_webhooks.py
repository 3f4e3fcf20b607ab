"""The Webhooks Management API (CRUD) and the pushes to registered webhooks."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from bot.sandbox import Sandbox
from bot.sinch.models import DeliveryReceipt, InboundMessage, parse_inbound, parse_receipt
from bot.sinch.templates import DR_EVENTS, DR_TEMPLATE, MO_EVENTS, MO_TEMPLATE

from .conftest import HANDSET, OUR_NUMBER, Receiver, by_rank, send, sms

CONNECTOR_HEADERS = {"Platform": "PowerAutomate"}


def webhook(url: str, **fields: Any) -> dict[str, Any]:
    return {"url": url, "method": "POST", "encoding": "JSON", "events": ["RECEIVED_SMS"], **fields}


async def test_create_list_update_delete(http: httpx.AsyncClient) -> None:
    spec = webhook(
        "https://webhook.com",
        events=["ENROUTE_DR", "DELIVERED_DR"],
        headers={"Account": "DeveloperPortal7000"},
        template='{"id":"$mtId","status":"$statusCode"}',
        read_timeout=5000,
        retries=3,
        retry_delay=30,
    )
    response = await http.post("/v1/webhooks/messages", json=spec)
    assert response.status_code == 201
    created = response.json()
    webhook_id = created.pop("id")
    assert created == spec

    listing = (await http.get("/v1/webhooks/messages", params={"page": 0, "page_size": 10})).json()
    assert listing == {"page": 0, "pageSize": 10, "pageData": [{"id": webhook_id, **spec}]}

    response = await http.patch(
        f"/v1/webhooks/messages/{webhook_id}", json={"events": ["FAILED_DR"], "template": None}
    )
    assert response.status_code == 200
    assert response.json() == {"id": webhook_id, **spec, "events": ["FAILED_DR"]}

    assert (await http.delete(f"/v1/webhooks/messages/{webhook_id}")).status_code == 204
    assert (await http.delete(f"/v1/webhooks/messages/{webhook_id}")).status_code == 404
    assert (await http.get("/v1/webhooks/messages")).json()["pageData"] == []


async def test_pages_are_zero_based(http: httpx.AsyncClient) -> None:
    ids = []
    for i in range(3):
        response = await http.post("/v1/webhooks/messages", json=webhook(f"https://h{i}.example"))
        ids.append(response.json()["id"])
    pages = [
        [
            w["id"]
            for w in (await http.get(f"/v1/webhooks/messages?page={p}&page_size=2")).json()[
                "pageData"
            ]
        ]
        for p in range(3)
    ]
    assert pages == [ids[:2], ids[2:], []]
    for params in ("page=-1", "page=x", "page_size=0"):
        assert (await http.get(f"/v1/webhooks/messages?{params}")).status_code == 400


async def test_same_url_and_method_conflicts(http: httpx.AsyncClient) -> None:
    assert (
        await http.post("/v1/webhooks/messages", json=webhook("https://a.example"))
    ).status_code == 201
    response = await http.post("/v1/webhooks/messages", json=webhook("https://a.example"))
    assert response.status_code == 409
    assert response.json() == {"message": "A webhook with the given url and method already exists."}
    other = await http.post(
        "/v1/webhooks/messages", json=webhook("https://a.example", method="PUT")
    )
    assert other.status_code == 201
    patched = await http.patch(
        f"/v1/webhooks/messages/{other.json()['id']}", json={"method": "POST"}
    )
    assert patched.status_code == 409


@pytest.mark.parametrize(
    "changes",
    [
        {"url": "not a url"},
        {"url": None},
        {"events": []},
        {"events": None},
        {"events": ["NOT_AN_EVENT"]},
        {"encoding": None},
        {"encoding": "YAML"},
        {"method": None},
        {"method": "HEAD"},
        {"headers": {"Content-Type": "text/plain"}},
        {"read_timeout": 60001},
        {"retries": 6},
        {"retry_delay": 4},
        {"template": "#if($x) never closed"},
        {"template": "#set($x = 1)"},
        {"colour": "blue"},
    ],
)
async def test_invalid_webhooks_are_400(http: httpx.AsyncClient, changes: dict[str, Any]) -> None:
    response = await http.post(
        "/v1/webhooks/messages", json={**webhook("https://a.example"), **changes}
    )
    assert response.status_code == 400
    assert response.json()["message"]
    assert (await http.get("/v1/webhooks/messages")).json()["pageData"] == []


async def test_bad_patch_and_unknown_ids(http: httpx.AsyncClient) -> None:
    assert (
        await http.patch("/v1/webhooks/messages/nope", json={"url": "https://b.example"})
    ).status_code == 404
    webhook_id = (
        await http.post("/v1/webhooks/messages", json=webhook("https://a.example"))
    ).json()["id"]
    for body in ({}, {"url": None}, [], {"url": "nope"}):
        assert (
            await http.patch(f"/v1/webhooks/messages/{webhook_id}", json=body)
        ).status_code == 400


async def test_connector_subscriptions_default_their_events(http: httpx.AsyncClient) -> None:
    body = {
        "url": "https://logic.example/mo",
        "method": "POST",
        "encoding": "JSON",
        "headers": CONNECTOR_HEADERS,
        "template": MO_TEMPLATE,
    }
    created = (await http.post("/v1/webhooks/messages", json=body)).json()
    assert created["events"] == [e.value for e in MO_EVENTS]
    body = {**body, "url": "https://logic.example/dr", "template": DR_TEMPLATE}
    response = await http.post("/v1/webhooks/deliveryreports", json=body)
    assert response.status_code == 201
    assert response.json()["events"] == [e.value for e in DR_EVENTS]
    assert (
        await http.delete(f"/v1/webhooks/deliveryreports/{response.json()['id']}")
    ).status_code == 204


async def test_connector_templates_render_parseable_json(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    async with sandbox.client() as client:
        await client.subscribe(
            messages_url=receiver.url_for("/mo"),
            receipts_url=receiver.url_for("/dr"),
            headers=CONNECTOR_HEADERS,
        )
        [sent] = await client.send_sms(
            HANDSET,
            'Say "yes" \\ no',
            source_number=OUR_NUMBER,
            delivery_report=True,
            metadata={"conv": '4"2'},
        )
    await sandbox.wait_idle()
    reply = await sandbox.handset(HANDSET).send("Yes ✓ please", reply_to="latest")
    await sandbox.wait_idle()

    receipts = [parse_receipt(r.json()) for r in receiver.at("/dr")]
    assert [(r.status, r.status_code) for r in sorted(receipts, key=_rank)] == [
        ("enroute", 101),
        ("submitted", 200),
        ("delivered", 220),
    ]
    for receipt, raw in zip(receipts, receiver.at("/dr"), strict=True):
        assert receipt.message_id == sent.message_id
        assert receipt.recipient == HANDSET
        assert receipt.content == 'Say "yes" \\ no'
        assert receipt.metadata == {"conv": '4"2'}
        assert receipt.event_id == raw.json()["delivery_report_id"]
        assert raw.headers["Platform"] == "PowerAutomate"

    [mo] = [parse_inbound(r.json()) for r in receiver.at("/mo")]
    assert isinstance(mo, InboundMessage)
    assert mo.reply_id == reply["reply_id"] == mo.event_id
    assert mo.message_id == sent.message_id
    assert mo.content == "Yes ✓ please"
    assert mo.metadata == {"conv": '4"2'}
    assert (mo.source_number, mo.destination_number) == (HANDSET, OUR_NUMBER)


def _rank(receipt: DeliveryReceipt) -> int:
    return {"enroute": 1, "submitted": 2}.get(str(receipt.status), 3)


async def test_events_select_what_a_webhook_gets(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await http.post(
        "/v1/webhooks/messages",
        json=webhook(
            receiver.url_for("/delivered"),
            events=["DELIVERED_DR"],
            template="$drId $status $statusCode",
        ),
    )
    await http.post(
        "/v1/webhooks/messages",
        json=webhook(receiver.url_for("/mo"), events=["RECEIVED_SMS"], template="$moContent"),
    )
    await send(http, sms(delivery_report=True))
    await sandbox.wait_idle()
    await sandbox.handset(HANDSET).send("hello")
    await sandbox.wait_idle()
    [delivered] = receiver.at("/delivered")
    assert delivered.body.decode().endswith(" delivered 220")
    assert [r.body for r in receiver.at("/mo")] == [b"hello"]


async def test_webhook_without_template_gets_the_sample_shapes(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await http.post(
        "/v1/webhooks/messages",
        json=webhook(receiver.url_for("/all"), events=["RECEIVED_SMS", "DELIVERED_DR"]),
    )
    [accepted] = await send(
        http, sms(delivery_report=True, metadata={"myKey": "myValue"}, source_number=OUR_NUMBER)
    )
    await sandbox.wait_idle()
    reply = await sandbox.handset(HANDSET).send("Hello Derpina", reply_to="latest")
    await sandbox.wait_idle()
    dr, mo = receiver.bodies("/all")
    assert set(dr) == {
        "delivery_report_id",
        "source_number",
        "date_received",
        "status",
        "delay",
        "submitted_date",
        "message_id",
        "original_text",
        "vendor_account_id",
        "error_code",
        "metadata",
    }
    assert (dr["status"], dr["error_code"], dr["delay"]) == ("delivered", "220", "0")
    assert mo == {
        "account_id": "SandboxAccount",
        "reply_id": reply["reply_id"],
        "destination_number": OUR_NUMBER,
        "source_number": HANDSET,
        "date_received": mo["date_received"],
        "message_id": accepted["message_id"],
        "content": "Hello Derpina",
        "metadata": {"myKey": "myValue"},
    }


async def test_method_encoding_headers_and_custom_template(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await http.post(
        "/v1/webhooks/messages",
        json=webhook(
            receiver.url_for("/form"),
            method="PUT",
            encoding="FORM_ENCODED",
            events=["DELIVERED_DR"],
            headers={"X-Secret": "s3cret"},
            template="id=$mtId&conv=$metadata.get('conv')&missing=$!metadata.get('nope')",
        ),
    )
    await http.post(
        "/v1/webhooks/messages",
        json=webhook(receiver.url_for("/get"), method="GET", events=["DELIVERED_DR"]),
    )
    [accepted] = await send(http, sms(delivery_report=True, metadata={"conv": "42"}))
    await sandbox.wait_idle()
    [form] = receiver.at("/form")
    assert form.method == "PUT"
    assert form.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form.headers["X-Secret"] == "s3cret"
    assert parse_qs(form.body.decode()) == {"id": [accepted["message_id"]], "conv": ["42"]}
    [get] = receiver.at("/get")
    assert get.method == "GET"
    assert get.body == b""
    query = parse_qs(get.path_qs.split("?", 1)[1])
    assert query["message_id"] == [accepted["message_id"]]
    assert query["status"] == ["delivered"]


async def test_webhook_retries_with_retry_count(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await http.post(
        "/v1/webhooks/messages",
        json=webhook(
            receiver.url_for("/retry"),
            events=["RECEIVED_SMS"],
            template='{"retry":$retryCount,"reply":"$moId"}',
            retries=2,
            retry_delay=5,
        ),
    )
    receiver.fail_next(2)
    await sandbox.handset(HANDSET).send("hi")
    await sandbox.wait_idle()
    bodies = receiver.bodies("/retry")
    assert [b["retry"] for b in bodies] == [0, 1, 2]
    assert len({b["reply"] for b in bodies}) == 1
    assert sandbox.stats()["pushes"]["retried"] == 2

    receiver.always = 500
    await sandbox.handset(HANDSET).send("again")
    await sandbox.wait_idle()
    assert len(receiver.bodies("/retry")) == 6
    assert sandbox.stats()["pushes"]["failed"] == 1


async def test_receipts_of_many_messages_to_one_webhook(
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
    accepted = await send(http, *[sms(f"+614915{i:05d}", delivery_report=True) for i in range(20)])
    await sandbox.wait_idle()
    receipts = [parse_receipt(b) for b in receiver.bodies("/dr")]
    assert len(receipts) == 60
    assert {r.message_id for r in receipts} == {m["message_id"] for m in accepted}
    assert by_rank(
        [
            {"status": str(r.status), "status_code": str(r.status_code), "date_received": ""}
            for r in receipts
            if r.message_id == accepted[0]["message_id"]
        ]
    ) == [("enroute", "101"), ("submitted", "200"), ("delivered", "220")]
