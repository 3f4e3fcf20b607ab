"""The Power Automate connector's internal send paths, as aliases of POST /v1/messages."""

from __future__ import annotations

import httpx
import pytest

from bot.sandbox import Sandbox
from bot.sandbox.schemas import PARSE_ERROR

from .conftest import HANDSET, OTHER_HANDSET, OUR_NUMBER, Receiver

SEND = "/v1/int-power-automate/send-message"
MMS = "/v1/int-power-automate/send-mms"


async def test_send_message_splits_recipients_and_defaults_reports_on(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    response = await http.post(
        SEND,
        json={
            "to": f"{HANDSET} {OTHER_HANDSET}",
            "message": "Hello from the flow",
            "source_number": OUR_NUMBER,
            "callback_url": receiver.url_for("/cb"),
            "metadata": [{"metadata_key": "flow", "metadata_value": "onboarding"}],
        },
    )
    assert response.status_code == 202
    messages = response.json()["messages"]
    assert [m["destination_number"] for m in messages] == [HANDSET, OTHER_HANDSET]
    assert all(m["status"] == "queued" and m["delivery_report"] is True for m in messages)
    assert messages[0]["metadata"] == {"flow": "onboarding"}
    assert messages[0]["content"] == "Hello from the flow"
    await sandbox.wait_idle()
    assert len(receiver.bodies("/cb")) == 6
    status = (await http.get(f"/v1/messages/{messages[0]['message_id']}")).json()
    assert status["status"] == "delivered"
    assert sandbox.stats()["send_calls"][-1]["path"] == SEND


async def test_send_message_with_a_list_and_reports_off(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        SEND, json={"to": [HANDSET], "message": "x", "delivery_report": False}
    )
    assert response.status_code == 202
    await sandbox.wait_idle()
    assert (await http.get("/v1/delivery_reports")).json() == {"delivery_reports": []}


async def test_send_mms(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    response = await http.post(
        MMS,
        json={
            "to": HANDSET,
            "message": "see this",
            "media": ["https://x.example/cat.png"],
            "subject": "Cat",
        },
    )
    assert response.status_code == 202
    [message] = response.json()["messages"]
    assert (message["format"], message["media"], message["subject"]) == (
        "MMS",
        ["https://x.example/cat.png"],
        "Cat",
    )
    await sandbox.wait_idle()
    [received] = sandbox.handset(HANDSET).received
    assert (received["format"], received["media"], received["subject"]) == (
        "MMS",
        ["https://x.example/cat.png"],
        "Cat",
    )


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        (SEND, {"message": "x"}, "/to: Field required"),
        (SEND, {"to": HANDSET}, "/message: Field required"),
        (SEND, {"to": "", "message": "x"}, "/to: at least one recipient is required"),
        (SEND, {"to": f"{HANDSET} 0400", "message": "x"}, "/messages/1/destination_number:"),
        (SEND, {"to": [HANDSET] * 101, "message": "x"}, "/to: at most 100 recipients per request"),
        (SEND, {"to": HANDSET, "message": ""}, "/messages/0/content:"),
        (MMS, {"to": HANDSET, "message": "x", "media": ["ftp://nope"]}, "/messages/0/media:"),
    ],
)
async def test_bad_connector_sends(
    sandbox: Sandbox, http: httpx.AsyncClient, path: str, body: dict[str, object], detail: str
) -> None:
    response = await http.post(path, json=body)
    assert response.status_code == 400
    assert response.json()["message"] == PARSE_ERROR
    assert any(d.startswith(detail) for d in response.json()["details"]), response.json()
    assert sandbox.stats()["messages"]["accepted"] == 0
