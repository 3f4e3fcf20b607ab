"""Fault injection: each request fault kind, matching rules, receipt/inbound faults."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from bot.sandbox import Sandbox
from bot.sandbox.faults import FaultRule, Faults, FaultSettings
from bot.sinch.errors import RateLimitedError, ServerError, SinchTimeoutError, SinchTransportError

from .conftest import HANDSET, Receiver, SandboxFactory, send, sms

BODY = {"messages": [sms()]}


async def set_faults(http: httpx.AsyncClient, body: Any) -> dict[str, Any]:
    response = await http.post("/_sandbox/faults", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_error_with_count(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    state = await set_faults(http, [{"endpoint": "POST /v1/messages", "kind": "error", "count": 2}])
    assert state["rules"][0]["remaining"] == 2
    for _ in range(2):
        response = await http.post("/v1/messages", json=BODY)
        assert response.status_code == 500
        assert response.json() == {"message": "Internal server error"}
    assert (await http.post("/v1/messages", json=BODY)).status_code == 202
    assert (await http.get("/_sandbox/faults")).json()["rules"] == []
    assert sandbox.stats()["messages"]["accepted"] == 1
    assert sandbox.stats()["api_calls"]["POST /v1/messages"] == 3


async def test_error_status_and_message(http: httpx.AsyncClient) -> None:
    await set_faults(http, {"kind": "error", "status": 503, "message": "down for maintenance"})
    response = await http.get("/v1/replies")
    assert (response.status_code, response.json()) == (503, {"message": "down for maintenance"})


async def test_rate_limit(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    await set_faults(http, [{"endpoint": "/v1/messages", "kind": "rate_limit", "retry_after": 30}])
    response = await http.post("/v1/messages", json=BODY)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "30"
    assert response.json() == {"message": "Too many requests"}
    async with sandbox.client() as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.send_sms(HANDSET, "hi")
    assert caught.value.retry_after == 30
    assert sandbox.stats()["messages"]["accepted"] == 0
    assert [c["status"] for c in sandbox.stats()["send_calls"]] == [429, 429]


async def test_latency(http: httpx.AsyncClient) -> None:
    await set_faults(http, [{"kind": "latency", "delay": 0.2}, {"kind": "latency", "delay": 0.1}])
    started = time.perf_counter()
    response = await http.get("/v1/replies")
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.29


async def test_timeout_processes_after_the_client_gave_up(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    await set_faults(
        http, [{"endpoint": "POST /v1/messages", "kind": "timeout", "delay": 0.4, "count": 1}]
    )
    with pytest.raises(httpx.ReadTimeout):
        await http.post("/v1/messages", json=BODY, timeout=0.1)
    assert sandbox.stats()["messages"]["accepted"] == 0
    await sandbox.handset(HANDSET).wait_for(1, timeout=3)  # the provider did act on it
    assert sandbox.stats()["messages"]["accepted"] == 1


async def test_timeout_is_a_sinch_timeout_error(sandbox: Sandbox) -> None:
    sandbox.set_faults([{"kind": "timeout", "delay": 0.3}])
    async with sandbox.client(request_timeout=0.1) as client:
        with pytest.raises(SinchTimeoutError):
            await client.replies()


async def test_drop_loses_the_call(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    await set_faults(http, [{"endpoint": "POST /v1/messages", "kind": "drop", "count": 1}])
    with pytest.raises(httpx.TransportError):
        await http.post("/v1/messages", json=BODY)
    await sandbox.wait_idle()
    assert sandbox.stats()["messages"]["accepted"] == 0
    assert (await http.post("/v1/messages", json=BODY)).status_code == 202


async def test_drop_after_accepts_but_never_answers(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    await set_faults(http, [{"endpoint": "POST /v1/messages", "kind": "drop_after", "count": 1}])
    with pytest.raises(httpx.TransportError):
        await http.post("/v1/messages", json=BODY)
    await sandbox.wait_idle()
    assert sandbox.stats()["messages"]["accepted"] == 1
    assert len(sandbox.handset(HANDSET).received) == 1
    [call] = sandbox.stats()["send_calls"]
    assert (call["messages"], call["status"], call["dropped"]) == (1, 202, True)
    # The client's retry makes the duplicate the provider cannot see through.
    await send(http, sms())
    await sandbox.wait_idle()
    assert len(sandbox.handset(HANDSET).received) == 2


async def test_drops_are_sinch_transport_errors(sandbox: Sandbox) -> None:
    sandbox.set_faults([{"kind": "drop_after"}])
    async with sandbox.client() as client:
        with pytest.raises(SinchTransportError):
            await client.send_sms(HANDSET, "hi")
    sandbox.set_faults([{"kind": "error", "status": 502}])
    async with sandbox.client() as client:
        with pytest.raises(ServerError):
            await client.send_sms(HANDSET, "hi")


async def test_rules_match_endpoints_but_never_the_control_api(http: httpx.AsyncClient) -> None:
    await set_faults(
        http,
        [
            {"endpoint": "GET /v1/webhooks", "kind": "error", "status": 500},
            {"endpoint": "/v1/number_authorisation", "kind": "error", "status": 502},
            {"endpoint": "DELETE *", "kind": "error", "status": 503},
        ],
    )
    assert (await http.get("/v1/webhooks/messages")).status_code == 500
    assert (await http.post("/v1/webhooks/messages", json={})).status_code == 400
    assert (await http.get("/v1/number_authorisation/mt/blacklist")).status_code == 502
    assert (await http.post("/v1/number_authorisation/mt/blacklist", json={})).status_code == 502
    assert (await http.delete("/v1/webhooks/messages/x")).status_code == 503
    assert (await http.get("/v1/replies")).status_code == 200
    assert (await http.get("/_sandbox/stats")).status_code == 200
    await set_faults(http, [{"kind": "error"}])
    assert (await http.get("/v1/replies")).status_code == 500
    assert (await http.get("/_sandbox/faults")).status_code == 200
    assert (await http.delete("/_sandbox/faults")).status_code == 204
    assert (await http.get("/v1/replies")).status_code == 200


async def test_rate_is_a_seeded_probability(http: httpx.AsyncClient) -> None:
    async def run() -> list[int]:
        await set_faults(http, {"rules": [{"kind": "error", "rate": 0.5}], "seed": 7})
        return [(await http.get("/v1/replies")).status_code for _ in range(40)]

    first = await run()
    assert first == await run()
    assert 5 < first.count(500) < 35
    await set_faults(http, [{"kind": "error", "rate": 0.0}])
    assert {(await http.get("/v1/replies")).status_code for _ in range(5)} == {200}


@pytest.mark.parametrize(
    "body",
    [
        [{"kind": "explode"}],
        [{"kind": "error", "rate": 2}],
        [{"kind": "error", "count": 0}],
        [{"kind": "error", "endpoint": "v1/messages"}],
        [{"kind": "error", "status": 200}],
        {"receipts": {"duplicate_rate": -1}},
        {"receipts": {"out_of_order": 3}},
        {"rules": "nope"},
        "nope",
    ],
)
async def test_bad_fault_settings_are_400(http: httpx.AsyncClient, body: object) -> None:
    response = await http.post("/_sandbox/faults", json=body)
    assert response.status_code == 400


async def test_inbound_duplicates(
    sandbox: Sandbox, receiver: Receiver, make_sandbox: SandboxFactory
) -> None:
    sandbox = await make_sandbox(webhook_url=receiver.url_for("/mo"))
    sandbox.set_faults(inbound={"duplicate_rate": 1.0})
    result = await sandbox.handset(HANDSET).send("hello")
    await sandbox.wait_idle()
    assert [b["reply_id"] for b in receiver.bodies("/mo")] == [result["reply_id"]] * 2


async def test_initial_faults_from_config_and_reset(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox(faults=[{"kind": "rate_limit", "retry_after": 1}], seed=1)
    async with httpx.AsyncClient(
        base_url=sandbox.url, auth=(sandbox.api_key, sandbox.api_secret)
    ) as http:
        assert (await http.get("/v1/replies")).status_code == 429
        await http.delete("/_sandbox/faults")
        assert (await http.get("/v1/replies")).status_code == 200
        assert (await http.post("/_sandbox/reset")).status_code == 204
        assert (await http.get("/v1/replies")).status_code == 429


def test_rule_matching() -> None:
    rule = FaultRule(endpoint="post /v1/messages", kind="error")
    assert rule.endpoint == "POST /v1/messages"
    assert rule.matches("POST", "/v1/messages")
    assert not rule.matches("GET", "/v1/messages/abc")
    assert not rule.matches("POST", "/v1/messagesX")
    prefix = FaultRule(endpoint="/v1/messages/", kind="error")
    assert prefix.matches("GET", "/v1/messages/abc") and prefix.matches("PUT", "/v1/messages")
    assert FaultRule(kind="drop").matches("GET", "/anything")


def test_select_counts_only_hits() -> None:
    faults = Faults(seed=3)
    faults.set(
        FaultSettings.parse(
            [
                {"endpoint": "/v1/replies", "kind": "error", "count": 1},
                {"kind": "latency", "delay": 0.5},
            ]
        )
    )
    assert faults.select("GET", "/v1/messages/x") == (0.5, None)
    latency, rule = faults.select("GET", "/v1/replies")
    assert latency == 0.5 and rule is not None and rule.kind == "error"
    assert faults.select("GET", "/v1/replies") == (0.5, None)
    assert [r["kind"] for r in faults.to_api()["rules"]] == ["latency"]
