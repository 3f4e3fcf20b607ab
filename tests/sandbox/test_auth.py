"""Authentication: Basic and both HMAC variants on every provider route, none on /_sandbox."""

from __future__ import annotations

import json

import httpx
import pytest

from bot.sandbox import Sandbox
from bot.sinch.auth import basic_header, hmac_headers

from .conftest import HANDSET, SandboxFactory, sms

UNAUTHORISED = {"message": "Invalid authentication credentials"}


async def test_basic_credentials_are_accepted(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/replies")
    assert response.status_code == 200
    assert response.json() == {"replies": []}


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        basic_header("sandbox-key", "wrong-secret"),
        basic_header("unknown-key", "sandbox-secret"),
        "Basic not-base64!!",
        "Bearer sandbox-secret",
        'hmac username="sandbox-key", algorithm="hmac-sha256", headers="Date request-line", signature="x"',
    ],
)
async def test_bad_credentials_get_401_with_the_providers_body(
    sandbox: Sandbox, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.post("/v1/messages", json={"messages": [sms()]}, headers=headers)
    assert response.status_code == 401
    assert response.json() == UNAUTHORISED
    assert sandbox.stats()["messages"]["accepted"] == 0


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
async def test_hmac_signed_send_is_accepted(sandbox: Sandbox, algorithm: str) -> None:
    body = json.dumps({"messages": [sms()]}).encode()
    headers = hmac_headers(
        sandbox.api_key,
        sandbox.api_secret,
        method="POST",
        path_qs="/v1/messages",
        body=body,
        algorithm=algorithm,  # type: ignore[arg-type]
    )
    headers["Content-Type"] = "application/json"
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.post("/v1/messages", content=body, headers=headers)
    assert response.status_code == 202, response.text
    md5_header = "Content-MD5" if algorithm == "sha256" else "x-Content-MD5"
    assert md5_header in headers


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
async def test_hmac_signed_get_with_query_string(sandbox: Sandbox, algorithm: str) -> None:
    path_qs = "/v1/webhooks/messages?page=0&page_size=5"
    headers = hmac_headers(
        sandbox.api_key,
        sandbox.api_secret,
        method="GET",
        path_qs=path_qs,
        body=b"",
        algorithm=algorithm,  # type: ignore[arg-type]
    )
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.get(path_qs, headers=headers)
    assert response.status_code == 200
    assert response.json()["pageSize"] == 5


async def test_hmac_with_a_tampered_body_is_rejected(sandbox: Sandbox) -> None:
    body = json.dumps({"messages": [sms()]}).encode()
    headers = hmac_headers(
        sandbox.api_key, sandbox.api_secret, method="POST", path_qs="/v1/messages", body=body
    )
    tampered = body.replace(b"Hello", b"Hellx")
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.post("/v1/messages", content=tampered, headers=headers)
    assert response.status_code == 401
    assert response.json() == UNAUTHORISED


async def test_hmac_signed_for_another_path_is_rejected(sandbox: Sandbox) -> None:
    headers = hmac_headers(
        sandbox.api_key, sandbox.api_secret, method="GET", path_qs="/v1/replies", body=b""
    )
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.get("/v1/delivery_reports", headers=headers)
    assert response.status_code == 401


async def test_several_api_keys(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox(credentials={"key-a": "secret-a", "key-b": "secret-b"})
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        for key, secret in (("key-a", "secret-a"), ("key-b", "secret-b")):
            response = await client.get("/v1/replies", auth=(key, secret))
            assert response.status_code == 200
        response = await client.get("/v1/replies", auth=("key-a", "secret-b"))
        assert response.status_code == 401


async def test_control_api_needs_no_credentials(sandbox: Sandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.get("/_sandbox/stats")
    assert response.status_code == 200


async def test_account_header_is_recorded_and_used_as_account_id(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        "/v1/messages",
        json={"messages": [sms(delivery_report=True)]},
        headers={"Account": "SubAccount7"},
    )
    assert response.status_code == 202
    message_id = response.json()["messages"][0]["message_id"]
    await sandbox.wait_idle()
    assert sandbox.message(message_id).account == "SubAccount7"
    assert sandbox.stats()["accounts"] == {"SubAccount7": 1}
    reports = (await http.get("/v1/delivery_reports")).json()["delivery_reports"]
    assert {r["vendor_account_id"]["account_id"] for r in reports} == {"SubAccount7"}
    debug = (await http.get(f"/_sandbox/messages/{message_id}")).json()
    assert debug["account"] == "SubAccount7"
    assert debug["destination_number"] == HANDSET
