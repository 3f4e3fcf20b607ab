"""The receipt progression and its pushes to callback_url, with outcomes and push faults."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from bot.sandbox import Sandbox
from bot.sinch.models import parse_receipt

from .conftest import HANDSET, Receiver, SandboxFactory, by_rank, send, sms

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DR_KEYS = {
    "callback_url",
    "delivery_report_id",
    "source_number",
    "date_received",
    "status",
    "delay",
    "billing_units",
    "submitted_date",
    "original_text",
    "message_id",
    "vendor_account_id",
    "error_code",
    "metadata",
}
DELIVERED = [("enroute", "101"), ("submitted", "200"), ("delivered", "220")]


async def _send_and_collect(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver, **fields: Any
) -> tuple[str, list[dict[str, Any]]]:
    [accepted] = await send(
        http, sms(callback_url=receiver.url_for("/cb"), delivery_report=True, **fields)
    )
    await sandbox.wait_idle()
    return accepted["message_id"], receiver.bodies("/cb")


async def test_progression_pushes_the_documented_dr_shape(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    message_id, reports = await _send_and_collect(
        sandbox, http, receiver, content="Hello world!", metadata={"key": "value"}
    )
    assert by_rank(reports) == DELIVERED
    assert len({r["delivery_report_id"] for r in reports}) == 3
    for report in reports:
        assert set(report) == DR_KEYS
        assert report["callback_url"] == receiver.url_for("/cb")
        assert report["source_number"] == HANDSET  # the handset, as the provider says
        assert report["message_id"] == message_id
        assert report["original_text"] == "Hello world!"
        assert report["metadata"] == {"key": "value"}
        assert report["vendor_account_id"] == {
            "vendor_id": "SinchEU",
            "account_id": "SandboxAccount",
        }
        assert report["delay"] == 0
        assert report["billing_units"] == 1
        assert TIMESTAMP.match(report["date_received"])
        assert TIMESTAMP.match(report["submitted_date"])
        receipt = parse_receipt(report)
        assert receipt.message_id == message_id
        assert receipt.event_id == report["delivery_report_id"]
    assert all(r.method == "POST" for r in receiver.requests)
    assert all(r.headers["Content-Type"] == "application/json" for r in receiver.requests)
    [received] = sandbox.handset(HANDSET).received
    assert received["message_id"] == message_id
    assert received["metadata"] == {"key": "value"}


async def test_no_delivery_report_no_pushes(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    [accepted] = await send(http, sms(callback_url=receiver.url_for("/cb")))
    await sandbox.wait_idle()
    assert receiver.requests == []
    assert sandbox.message(accepted["message_id"]).status == "delivered"
    assert (await http.get("/v1/delivery_reports")).json() == {"delivery_reports": []}


async def test_reports_always_when_configured(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(delivery_reports_always=True)
    async with sandbox.client() as client:
        await client.send_sms(HANDSET, "hi", callback_url=receiver.url_for("/cb"))
    await sandbox.wait_idle()
    assert by_rank(receiver.bodies("/cb")) == DELIVERED


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (
            {"status": "failed", "code": 414},
            [("enroute", "101"), ("submitted", "200"), ("failed", "414")],
        ),
        ({"code": 414}, [("enroute", "101"), ("submitted", "200"), ("failed", "414")]),
        ({"status": "failed"}, [("enroute", "101"), ("submitted", "200"), ("failed", "400")]),
        ({"status": "rejected", "code": 412}, [("enroute", "101"), ("rejected", "412")]),
        (
            {"status": "expired", "code": 401},
            [("enroute", "101"), ("submitted", "200"), ("expired", "401")],
        ),
        ({"code": 320}, [("enroute", "101"), ("expired", "320")]),
        ({"code": 305}, [("rejected", "305")]),
        (
            {"status": "delivered", "code": 221},
            [("enroute", "101"), ("submitted", "200"), ("delivered", "221")],
        ),
        ({"status": "submitted"}, [("enroute", "101"), ("submitted", "200")]),
        ({"status": "enroute"}, [("enroute", "101")]),
    ],
)
async def test_outcome_overrides(
    sandbox: Sandbox,
    http: httpx.AsyncClient,
    receiver: Receiver,
    outcome: dict[str, Any],
    expected: list[tuple[str, str]],
) -> None:
    response = await http.post("/_sandbox/outcomes", json={"number": HANDSET, **outcome})
    assert response.status_code == 200
    message_id, reports = await _send_and_collect(sandbox, http, receiver)
    assert by_rank(reports) == expected
    final_status = expected[-1][0]
    assert sandbox.message(message_id).status == final_status
    delivered = final_status == "delivered"
    assert len(sandbox.handset(HANDSET).received) == (1 if delivered else 0)


async def test_outcome_from_python_api_and_clearing(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    sandbox.set_outcome(HANDSET, "failed", 414)
    _, reports = await _send_and_collect(sandbox, http, receiver)
    assert by_rank(reports)[-1] == ("failed", "414")
    assert sandbox.stats()["messages"]["failed"] == 1
    assert (await http.delete(f"/_sandbox/outcomes/{HANDSET}")).status_code == 204
    assert (await http.delete(f"/_sandbox/outcomes/{HANDSET}")).status_code == 404
    await send(http, sms())
    await sandbox.wait_idle()
    assert sandbox.stats()["messages"]["delivered"] == 1


async def test_blacklisted_destination_is_rejected_302(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    response = await http.post("/v1/number_authorisation/mt/blacklist", json={"numbers": [HANDSET]})
    assert response.status_code == 201
    message_id, reports = await _send_and_collect(sandbox, http, receiver)
    assert by_rank(reports) == [("rejected", "302")]
    assert sandbox.message(message_id).status == "rejected"
    assert sandbox.handset(HANDSET).received == []


async def test_callback_push_is_retried_until_it_succeeds(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.fail_next(2, status=503)
    await send(http, sms(callback_url=receiver.url_for("/cb"), delivery_report=True))
    await sandbox.wait_idle()
    ids = [r["delivery_report_id"] for r in receiver.bodies("/cb")]
    assert len(ids) == 5  # two failed attempts, then three successful pushes
    assert len(set(ids)) == 3
    pushes = sandbox.stats()["pushes"]
    assert (pushes["ok"], pushes["retried"], pushes["failed"]) == (3, 2, 0)


async def test_callback_push_gives_up_after_its_attempts(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.always = 500
    await send(http, sms(callback_url=receiver.url_for("/cb"), delivery_report=True))
    await sandbox.wait_idle()
    assert len(receiver.requests) == 3 * 5
    pushes = sandbox.stats()["pushes"]
    assert (pushes["ok"], pushes["retried"], pushes["failed"]) == (0, 12, 3)


async def test_unreachable_callback_url_does_not_break_anything(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    [accepted] = await send(
        http, sms(callback_url="http://127.0.0.1:9/nothing", delivery_report=True)
    )
    await sandbox.wait_idle()
    assert sandbox.message(accepted["message_id"]).status == "delivered"
    assert sandbox.stats()["pushes"]["failed"] == 3


async def test_duplicate_receipts(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    sandbox.set_faults(receipts={"duplicate_rate": 1.0})
    _, reports = await _send_and_collect(sandbox, http, receiver)
    ids = [r["delivery_report_id"] for r in reports]
    assert len(ids) == 6
    assert all(ids.count(i) == 2 for i in ids)
    assert sorted(set(by_rank(reports))) == sorted(DELIVERED)


async def test_out_of_order_receipts_push_the_final_one_first(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    response = await http.post("/_sandbox/faults", json={"receipts": {"out_of_order": True}})
    assert response.status_code == 200
    message_id, reports = await _send_and_collect(sandbox, http, receiver)
    assert reports[0]["status"] == "delivered"
    assert {r["status"] for r in reports[1:]} == {"enroute", "submitted"}
    # The provider's own record keeps the true order.
    assert [h[0] for h in sandbox.message(message_id).history] == [
        "enroute",
        "submitted",
        "delivered",
    ]


async def test_many_messages_each_get_three_reports(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    cb = receiver.url_for("/cb")
    messages = [sms(f"+614915{i:05d}", callback_url=cb, delivery_report=True) for i in range(100)]
    accepted = await send(http, *messages)
    await sandbox.wait_idle()
    reports = receiver.bodies("/cb")
    assert len(reports) == 300
    per_message: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        per_message.setdefault(report["message_id"], []).append(report)
    assert set(per_message) == {m["message_id"] for m in accepted}
    assert all(by_rank(r) == DELIVERED for r in per_message.values())
