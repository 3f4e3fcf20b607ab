"""Sender IDs, numbers, account, credits, blacklist: the read-mostly parts of the API."""

from __future__ import annotations

import httpx
import pytest

from bot.sandbox import Sandbox
from bot.sinch.models import BlacklistPage, DedicatedAssignmentPage, SenderAddressPage, SenderIds

from .conftest import HANDSET, OTHER_HANDSET, OUR_NUMBER, SandboxFactory

NUMBERS = [OUR_NUMBER, "+61491570159", "+447700900123"]
BLACKLIST = "/v1/number_authorisation/mt/blacklist"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/int-crm/integrations/account/sender-id",
        "/v1/int-power-automate/v1/int-crm/integrations/account/sender-id",
    ],
)
async def test_connector_sender_ids(make_sandbox: SandboxFactory, path: str) -> None:
    sandbox = await make_sandbox(numbers=NUMBERS)
    async with httpx.AsyncClient(
        base_url=sandbox.url, auth=(sandbox.api_key, sandbox.api_secret)
    ) as http:
        body = (await http.get(path)).json()
    senders = SenderIds.model_validate(body)
    assert senders.pagination.total_count == 3
    assert senders.default_sender is not None and senders.default_sender.number == OUR_NUMBER
    assert [s.number for s in senders.senders] == NUMBERS
    assert [s.is_default for s in senders.senders] == [True, False, False]
    assert (senders.account_id, senders.vendor_id) == ("SandboxAccount", "SinchEU")
    assert set(body["senders"][0]) == {
        "display_type",
        "is_default",
        "label",
        "mms_capable",
        "number",
        "display_name",
        "number_id",
        "source_type",
        "type",
        "number_status",
    }
    assert set(body["pagination"]) == {"page", "page_size", "total_count", "page_count"}


async def test_client_sender_ids_and_account(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    async with sandbox.client() as client:
        senders = await client.sender_ids()
    assert [s.number for s in senders.senders] == [OUR_NUMBER]
    account = (
        await http.get("/v1/int-crm/integrations/account", headers={"Account": "Sub1"})
    ).json()
    assert account["account_id"] == "Sub1"
    assert account["vendor_id"] == "SinchEU"


async def test_sender_addresses_token_pagination(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox(numbers=NUMBERS)
    async with sandbox.client() as client:
        seen: list[str] = []
        token = None
        pages = 0
        while True:
            page = await client.sender_addresses(page_size=2, token=token)
            assert isinstance(page, SenderAddressPage)
            seen.extend(a.sender_address for a in page.data)
            pages += 1
            token = page.pagination.next_token
            if token is None:
                break
        assert (seen, pages) == (NUMBERS, 2)
        uk = (await client.sender_addresses()).data[2]
        assert (uk.destination_countries, uk.display_status, uk.usage_type) == (
            ["GB"],
            "APPROVED",
            "DEDICATED",
        )
        dedicated = await client.dedicated_numbers()
    assert isinstance(dedicated, DedicatedAssignmentPage)
    assert [d.number.phone_number for d in dedicated.data] == NUMBERS
    assert all(d.number.mms_capable for d in dedicated.data)
    async with httpx.AsyncClient(
        base_url=sandbox.url, auth=(sandbox.api_key, sandbox.api_secret)
    ) as http:
        filtered = (
            await http.get(
                "/v1/messaging/numbers/sender_address/addresses",
                params={"sender_address": NUMBERS[1]},
            )
        ).json()
        assert [a["sender_address"] for a in filtered["data"]] == [NUMBERS[1]]
        assert (
            await http.get("/v1/messaging/numbers/sender_address/addresses?token=zz")
        ).status_code == 400
        assert (
            await http.get("/v1/messaging/numbers/dedicated/assignments?page_size=1000")
        ).status_code == 400


async def test_credits(http: httpx.AsyncClient) -> None:
    body = (await http.get("/v1/messaging/credits")).json()
    assert body["credits"] == 1_000_000


async def test_blacklist_api(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    response = await http.post(BLACKLIST, json={"numbers": [HANDSET, OTHER_HANDSET]})
    assert response.status_code == 201
    assert response.json() == {"uri": BLACKLIST, "numbers": [HANDSET, OTHER_HANDSET]}
    assert (await http.post(BLACKLIST, json={"numbers": [HANDSET]})).status_code == 200
    page = BlacklistPage.model_validate((await http.get(BLACKLIST)).json())
    assert page.numbers == [HANDSET, OTHER_HANDSET]
    auth = (await http.get(f"/v1/number_authorisation/is_authorised/{HANDSET},{OUR_NUMBER}")).json()
    assert auth["numbers"] == [
        {"number": HANDSET, "authorised": False},
        {"number": OUR_NUMBER, "authorised": True},
    ]
    async with sandbox.client() as client:
        result = await client.is_authorised([OTHER_HANDSET])
        assert [a.authorised for a in result] == [False]
        await client.blacklist_remove(OTHER_HANDSET)
    assert (await http.delete(f"{BLACKLIST}/%2B61491570156")).status_code == 200
    assert (await http.delete(f"{BLACKLIST}/{HANDSET}")).status_code == 404
    assert (await http.get(BLACKLIST)).json()["numbers"] == []


async def test_blacklist_pages_of_100(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    numbers = [f"+614915{i:05d}" for i in range(150)]
    for i in range(0, 150, 10):
        await http.post(BLACKLIST, json={"numbers": numbers[i : i + 10]})
    first = (await http.get(BLACKLIST)).json()
    assert first["numbers"] == numbers[:100]
    token = first["pagination"]["next_token"]
    second = (await http.get(BLACKLIST, params={"token": token})).json()
    assert second["numbers"] == numbers[100:]
    assert second["pagination"]["next_token"] is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"numbers": []},
        {"numbers": [HANDSET] * 11},
        {"numbers": ["61491570156"]},
        {"numbers": [5]},
        [],
    ],
)
async def test_bad_blacklist_additions(http: httpx.AsyncClient, body: object) -> None:
    response = await http.post(BLACKLIST, json=body)
    assert response.status_code == 400
    assert (await http.get(BLACKLIST)).json()["numbers"] == []


async def test_bad_authorisation_query(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/number_authorisation/is_authorised/0491,abc")).status_code == 400
