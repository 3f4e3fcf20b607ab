"""RSA-signed pushes and the signature key API (spec §5)."""

from __future__ import annotations

import httpx
import pytest

from bot.sandbox import Sandbox
from bot.sinch.signatures import SignatureError, load_public_key, verify

from .conftest import HANDSET, Captured, Receiver, SandboxFactory, send, sms

KEYS = "/v1/iam/signature_keys"


async def http_reset(sandbox: Sandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as http:
        assert (await http.post("/_sandbox/reset")).status_code == 204


def check(capture: Captured, public_key_b64: str, key_id: str | None = None) -> None:
    verify(
        load_public_key(public_key_b64),
        method=capture.method,
        path_qs=capture.path_qs,
        headers=capture.headers,
        body=capture.body,
        key_id=key_id,
    )


async def test_configured_signing_signs_every_push(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(signing=True, webhook_url=receiver.url_for("/hook?token=a%20b"))
    async with httpx.AsyncClient(
        base_url=sandbox.url, auth=(sandbox.api_key, sandbox.api_secret)
    ) as http:
        signing = (await http.get("/_sandbox/signing")).json()
        assert signing["enabled"] is True
        assert signing["digest"] == "SHA256"
        await send(http, sms(callback_url=receiver.url_for("/cb"), delivery_report=True))
        await sandbox.wait_idle()
        await sandbox.handset(HANDSET).send("hi", reply_to="latest")
        await sandbox.wait_idle()
    assert len(receiver.requests) == 3 + 3 + 1 + 1  # callback DRs, connector DRs, reply twice
    for capture in receiver.requests:
        assert capture.headers["X-MessageMedia-Key-Id"] == signing["key_id"]
        assert capture.headers["X-MessageMedia-Cipher-Type"] == "RSA"
        check(capture, signing["public_key"], signing["key_id"])
    assert any("?token=a%20b" in c.path_qs for c in receiver.requests)
    await http_reset(sandbox)
    assert sandbox.signing_key is not None and sandbox.signing_key.key_id == signing["key_id"]
    tampered = receiver.requests[0]
    tampered.body = tampered.body.replace(b"enroute", b"delivered").replace(
        b"submitted", b"delivered"
    )
    with pytest.raises(SignatureError):
        check(tampered, signing["public_key"])


async def test_unsigned_by_default(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    assert (await http.get("/_sandbox/signing")).json()["enabled"] is False
    await send(http, sms(callback_url=receiver.url_for("/cb"), delivery_report=True))
    await sandbox.wait_idle()
    assert all("X-MessageMedia-Signature" not in c.headers for c in receiver.requests)


async def test_signature_key_api(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    response = await http.post(KEYS, json={"digest": "SHA224", "cipher": "RSA"})
    assert response.status_code == 201
    key = response.json()
    assert set(key) == {"key_id", "public_key", "cipher", "digest", "created", "enabled"}
    assert (key["cipher"], key["digest"], key["enabled"]) == ("RSA", "SHA224", False)
    key_id = key["key_id"]
    assert (await http.get(f"{KEYS}/enabled")).status_code == 404

    listing = (await http.get(KEYS, params={"page": 1, "page_size": 20})).json()
    assert listing == [{k: v for k, v in key.items() if k != "public_key"}]
    assert (await http.get(f"{KEYS}/{key_id}")).json() == key

    enabled = await http.patch(f"{KEYS}/enabled", json={"key_id": key_id})
    assert enabled.status_code == 200
    assert enabled.json()["enabled"] is True
    assert (await http.get(f"{KEYS}/enabled")).json()["key_id"] == key_id
    assert (await http.get(KEYS)).json()[0]["enabled"] is True

    await send(http, sms(callback_url=receiver.url_for("/cb"), delivery_report=True))
    await sandbox.wait_idle()
    for capture in receiver.requests:
        assert capture.headers["X-MessageMedia-Digest-Type"] == "SHA224"
        check(capture, key["public_key"], key_id)

    assert (await http.delete(f"{KEYS}/enabled")).status_code == 204
    assert (await http.get(f"{KEYS}/enabled")).status_code == 404
    receiver.requests.clear()
    await send(http, sms(callback_url=receiver.url_for("/cb"), delivery_report=True))
    await sandbox.wait_idle()
    assert all("X-MessageMedia-Signature" not in c.headers for c in receiver.requests)

    assert (await http.delete(f"{KEYS}/{key_id}")).status_code == 204
    assert (await http.get(f"{KEYS}/{key_id}")).status_code == 404
    assert (await http.delete(f"{KEYS}/{key_id}")).status_code == 404
    assert (await http.patch(f"{KEYS}/enabled", json={"key_id": key_id})).status_code == 404


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"digest": "MD5", "cipher": "RSA"}, "/digest: [MD5] is invalid"),
        ({"digest": "SHA256", "cipher": "RA"}, "/cipher: [RA] is invalid"),
        ({"cipher": "RSA"}, "/digest: [None] is invalid"),
    ],
)
async def test_bad_keys_are_400(http: httpx.AsyncClient, body: dict[str, str], detail: str) -> None:
    response = await http.post(KEYS, json=body)
    assert response.status_code == 400
    assert detail in response.json()["details"]


async def test_feature_not_enabled_is_403(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox(secure_callbacks=False)
    async with httpx.AsyncClient(
        base_url=sandbox.url, auth=(sandbox.api_key, sandbox.api_secret)
    ) as http:
        response = await http.post(KEYS, json={"digest": "SHA256", "cipher": "RSA"})
        assert response.status_code == 403
        assert response.json() == {"message": "This feature has not been enabled in your account."}
        assert (await http.get(f"{KEYS}/enabled")).status_code == 403
