"""Polling: the oldest 100 unconfirmed replies / delivery reports until they are confirmed."""

from __future__ import annotations

import httpx
import pytest

from bot.sandbox import Sandbox
from bot.sinch.models import parse_inbound, parse_receipt

from .conftest import HANDSET, OUR_NUMBER, by_rank, send, sms


async def test_delivery_reports_until_confirmed(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    [accepted] = await send(http, sms(delivery_report=True, metadata={"k": "v"}))
    await send(http, sms("+61491570158"))  # no report requested
    await sandbox.wait_idle()
    reports = (await http.get("/v1/delivery_reports")).json()["delivery_reports"]
    assert by_rank(reports) == [("enroute", "101"), ("submitted", "200"), ("delivered", "220")]
    assert {r["message_id"] for r in reports} == {accepted["message_id"]}
    assert all(parse_receipt(r).metadata == {"k": "v"} for r in reports)
    again = (await http.get("/v1/delivery_reports")).json()["delivery_reports"]
    assert again == reports

    ids = [r["delivery_report_id"] for r in reports]
    response = await http.post(
        "/v1/delivery_reports/confirmed", json={"delivery_report_ids": ids[:2]}
    )
    assert response.status_code == 202
    assert response.headers["Content-Type"].startswith("text/plain")
    left = (await http.get("/v1/delivery_reports")).json()["delivery_reports"]
    assert [r["delivery_report_id"] for r in left] == ids[2:]
    await http.post("/v1/delivery_reports/confirmed", json={"delivery_report_ids": ids})
    assert (await http.get("/v1/delivery_reports")).json() == {"delivery_reports": []}


async def test_replies_until_confirmed(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    [accepted] = await send(http, sms(source_number=OUR_NUMBER, metadata={"conv": "42"}))
    await sandbox.wait_idle()
    handset = sandbox.handset(HANDSET)
    first = await handset.send("Yes please", reply_to=accepted["message_id"])
    await handset.send("And another thing", reply_to=None)
    replies = (await http.get("/v1/replies")).json()["replies"]
    assert [r["reply_id"] for r in replies] == [first["reply_id"], replies[1]["reply_id"]]
    reply = replies[0]
    assert set(reply) == {
        "metadata",
        "message_id",
        "reply_id",
        "date_received",
        "destination_number",
        "source_number",
        "vendor_account_id",
        "content",
    }
    assert reply["message_id"] == accepted["message_id"]
    assert reply["metadata"] == {"conv": "42"}
    assert (reply["source_number"], reply["destination_number"]) == (HANDSET, OUR_NUMBER)
    assert parse_inbound(reply).reply_id == first["reply_id"]
    assert "message_id" not in replies[1]

    response = await http.post("/v1/replies/confirmed", json={"reply_ids": [first["reply_id"]]})
    assert response.status_code == 202
    left = (await http.get("/v1/replies")).json()["replies"]
    assert [r["content"] for r in left] == ["And another thing"]


async def test_at_most_100_oldest_are_returned(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    handset = sandbox.handset(HANDSET)
    sent = [await handset.send(f"message {i}") for i in range(130)]
    replies = (await http.get("/v1/replies")).json()["replies"]
    assert [r["reply_id"] for r in replies] == [s["reply_id"] for s in sent[:100]]
    await http.post(
        "/v1/replies/confirmed", json={"reply_ids": [s["reply_id"] for s in sent[:100]]}
    )
    replies = (await http.get("/v1/replies")).json()["replies"]
    assert [r["reply_id"] for r in replies] == [s["reply_id"] for s in sent[100:]]


@pytest.mark.parametrize("path", ["/v1/replies/confirmed", "/v1/delivery_reports/confirmed"])
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reply_ids": []},
        {"delivery_report_ids": []},
        {"reply_ids": "abc", "delivery_report_ids": "abc"},
        {"reply_ids": [1], "delivery_report_ids": [1]},
        {"reply_ids": ["x"] * 101, "delivery_report_ids": ["x"] * 101},
        [],
    ],
)
async def test_bad_confirmations_are_400(http: httpx.AsyncClient, path: str, body: object) -> None:
    response = await http.post(path, json=body)
    assert response.status_code == 400
    assert "message" in response.json()


async def test_confirming_unknown_ids_is_fine(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/replies/confirmed", json={"reply_ids": ["nope"]})
    assert response.status_code == 202
