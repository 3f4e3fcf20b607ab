"""The control API and the Python API: stats, reset, messages, outcomes, idle, serve()."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest

from bot.sandbox import Sandbox, SandboxConfig, serve
from bot.sandbox.server import HandsetClient

from .conftest import HANDSET, OTHER_HANDSET, OUR_NUMBER, Receiver, send, sms


async def test_stats_count_calls_messages_and_pushes(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await send(
        http, sms(callback_url=receiver.url_for("/cb"), delivery_report=True), sms(OTHER_HANDSET)
    )
    await send(http, sms())
    await http.post("/v1/messages", json={"messages": []})
    await http.get("/v1/replies")
    await http.get("/v1/messages/unknown")
    await http.get("/v1/nothing/here")
    await sandbox.wait_idle()
    await sandbox.handset(HANDSET).send("hi", reply_to="latest")
    await sandbox.wait_idle()
    stats = (await http.get("/_sandbox/stats")).json()
    assert stats["api_calls"] == {
        "POST /v1/messages": 3,
        "GET /v1/replies": 1,
        "GET /v1/messages/{message_id}": 1,
        "GET (unmatched)": 1,
    }
    messages = stats["messages"]
    assert (messages["accepted"], messages["rejected_calls"], messages["delivered"]) == (3, 1, 3)
    assert (messages["inbound"], messages["billing_units"]) == (1, 3)
    assert (stats["pushes"]["ok"], stats["pushes"]["failed"], stats["pushes"]["retried"]) == (
        3,
        0,
        0,
    )
    assert [(c["messages"], c["status"]) for c in stats["send_calls"]] == [
        (2, 202),
        (1, 202),
        (0, 400),
    ]
    times = [c["time"] for c in stats["send_calls"]]
    assert times == sorted(times)
    assert stats["pending"] == {"work": 0, "queued_pushes": 0}
    assert sandbox.stats()["messages"]["accepted"] == 3


async def test_reset_forgets_everything(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    await send(http, sms())
    await http.post(
        "/v1/webhooks/messages", json={"url": "https://a.example", "events": ["RECEIVED_SMS"]}
    )
    await http.post("/v1/number_authorisation/mt/blacklist", json={"numbers": [OTHER_HANDSET]})
    await http.post("/_sandbox/outcomes", json={"number": HANDSET, "status": "failed"})
    await sandbox.handset(HANDSET).send("hi")
    assert (await http.post("/_sandbox/reset")).status_code == 204
    await sandbox.wait_idle()
    assert sandbox.messages() == []
    assert sandbox.handset(HANDSET).received == []
    assert (await http.get("/v1/webhooks/messages")).json()["pageData"] == []
    assert (await http.get("/v1/number_authorisation/mt/blacklist")).json()["numbers"] == []
    assert (await http.get("/_sandbox/outcomes")).json() == {}
    assert (await http.get("/v1/replies")).json() == {"replies": []}
    assert sandbox.stats()["messages"]["accepted"] == 0
    await send(http, sms())
    await sandbox.wait_idle()
    assert sandbox.stats()["messages"]["delivered"] == 1


async def test_debug_message_listing(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    accepted = await send(http, sms(), sms(OTHER_HANDSET), sms())
    await sandbox.wait_idle()
    listing = (await http.get("/_sandbox/messages")).json()
    assert [m["message_id"] for m in listing] == [m["message_id"] for m in accepted]
    assert [h["status"] for h in listing[0]["history"]] == ["enroute", "submitted", "delivered"]
    assert listing[0]["source"] == OUR_NUMBER
    only = (await http.get("/_sandbox/messages", params={"destination": OTHER_HANDSET})).json()
    assert [m["message_id"] for m in only] == [accepted[1]["message_id"]]
    last = (await http.get("/_sandbox/messages", params={"limit": 1})).json()
    assert [m["message_id"] for m in last] == [accepted[2]["message_id"]]
    assert (await http.get("/_sandbox/messages/nope")).status_code == 404


async def test_outcome_api(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/_sandbox/outcomes",
        json=[{"number": HANDSET, "code": 414}, {"number": OTHER_HANDSET, "status": "EXPIRED"}],
    )
    assert response.status_code == 200
    assert (await http.get("/_sandbox/outcomes")).json() == {
        HANDSET: {"status": "failed", "code": 414},
        OTHER_HANDSET: {"status": "expired", "code": 401},
    }
    for bad in (
        {"number": HANDSET},
        {"number": "0400", "code": 414},
        {"number": HANDSET, "status": "lost"},
    ):
        assert (await http.post("/_sandbox/outcomes", json=bad)).status_code == 400
    assert (await http.delete("/_sandbox/outcomes")).status_code == 204
    assert (await http.get("/_sandbox/outcomes")).json() == {}


async def test_idle_endpoint(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    await send(http, sms())
    response = await http.get("/_sandbox/idle", params={"timeout": 5})
    assert response.json() == {"idle": True}
    assert sandbox.handset(HANDSET).received
    assert (await http.get("/_sandbox/idle", params={"timeout": "x"})).status_code == 400


async def test_idle_endpoint_times_out(
    sandbox: Sandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.always = 500
    sandbox.delivery.pending.add()  # something that never finishes
    response = await http.get("/_sandbox/idle", params={"timeout": 0.05})
    assert (response.status_code, response.json()) == (408, {"idle": False})
    sandbox.delivery.pending.done()


async def test_info(http: httpx.AsyncClient) -> None:
    info = (await http.get("/_sandbox")).json()
    assert info["numbers"] == [OUR_NUMBER]
    assert info["api_keys"] == ["sandbox-key"]
    assert "sandbox-secret" not in str(info)


async def test_python_api(sandbox: Sandbox) -> None:
    assert sandbox.url.startswith("http://127.0.0.1:")
    assert (sandbox.api_key, sandbox.api_secret) == ("sandbox-key", "sandbox-secret")
    handset = sandbox.handset(HANDSET)
    assert isinstance(handset, HandsetClient)
    assert handset.last is None
    handset.rcs = False
    assert sandbox.state.handsets[HANDSET].rcs is False
    async with sandbox.client(auth="hmac") as client:
        [sent] = await client.send_sms(HANDSET, "hi")
    await handset.wait_for(1)
    assert handset.last is not None and handset.last["message_id"] == sent.message_id
    with pytest.raises(TimeoutError):
        await handset.wait_for(2, timeout=0.05)
    sandbox.set_faults([{"kind": "error"}])
    assert sandbox.faults.active
    sandbox.clear_faults()
    assert not sandbox.faults.active
    sandbox.set_outcome(HANDSET, code=414)
    assert sandbox.state.outcomes[HANDSET].code == 414
    sandbox.clear_outcomes()
    sandbox.reset()
    assert sandbox.messages() == []


async def test_a_stopped_sandbox_stays_stopped() -> None:
    sandbox = Sandbox()
    await sandbox.start()
    await sandbox.stop()
    await sandbox.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        await sandbox.start()


async def test_keyword_overrides_and_wildcard_host() -> None:
    async with Sandbox(SandboxConfig(step_delay=0), host="0.0.0.0") as sandbox:
        assert sandbox.url.startswith("http://127.0.0.1:")
        assert sandbox.config.step_delay == 0
        async with httpx.AsyncClient() as http:
            assert (await http.get(sandbox.url + "/_sandbox/stats")).status_code == 200


async def test_serve_prints_one_line_and_runs_until_cancelled() -> None:
    printed = asyncio.Event()

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            printed.set()
            return super().write(text)

    out = Out()
    task = asyncio.create_task(serve(SandboxConfig(credentials={"k": "s"}), out=out))
    async with asyncio.timeout(5):
        await printed.wait()
    line = out.getvalue()
    assert line.count("\n") == 1
    assert "api key: k" in line and "api secret: s" in line
    url = line.split()[3]
    async with httpx.AsyncClient() as http:
        assert (await http.get(url + "/v1/replies", auth=("k", "s"))).status_code == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url + "/v1/replies")


def test_config_validation() -> None:
    for bad in (
        {"numbers": []},
        {"numbers": ["0400"]},
        {"credentials": {}},
        {"step_delay": -1},
        {"rcs_paths": ["x"]},
        {"callback_attempts": 0},
    ):
        with pytest.raises(ValueError, match=r"number|key|negative|path|at least"):
            SandboxConfig(**bad)  # type: ignore[arg-type]
    config = SandboxConfig(webhook_url="http://a/mo")
    assert config.effective_receipt_url == "http://a/mo"
    assert config.with_changes(receipt_url="http://a/dr").effective_receipt_url == "http://a/dr"
    assert SandboxConfig(time_scale=0.5).scaled(3) == 1.5
