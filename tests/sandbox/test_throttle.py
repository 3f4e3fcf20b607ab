"""The scaled call limit: N calls per period per connection, 429 with Retry-After past it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bot.cli import main
from bot.sandbox import Sandbox
from bot.sandbox.config import SandboxConfig
from bot.sandbox.throttle import CallThrottle, parse_throttle
from bot.sinch.errors import RateLimitedError

from .conftest import HANDSET, SandboxFactory, sms

BODY = {"messages": [sms()]}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_window_slides() -> None:
    clock = Clock()
    throttle = CallThrottle(3, 2.0, clock=clock)
    for at in (100.0, 100.5, 101.0):
        clock.now = at
        assert throttle.admit("k") == 0.0
    clock.now = 101.25
    assert throttle.admit("k") == 0.75  # until the call at 100.0 leaves the window
    assert throttle.admit("other") == 0.0  # another connection has its own window
    clock.now = 102.0  # the first call is exactly one period old: out
    assert throttle.admit("k") == 0.0
    assert throttle.admit("k") == 0.5  # the call at 100.5 still fills the window
    assert (throttle.admitted, throttle.refused) == (5, 2)


def test_refused_calls_take_no_place() -> None:
    clock = Clock()
    throttle = CallThrottle(1, 1.0, clock=clock)
    assert throttle.admit("k") == 0.0
    for _ in range(5):
        clock.now += 0.1
        assert throttle.admit("k") > 0
    clock.now = 101.0
    assert throttle.admit("k") == 0.0


def test_retry_after_is_rounded_up_to_the_millisecond() -> None:
    clock = Clock()
    throttle = CallThrottle(1, 1.0, clock=clock)
    throttle.admit("k")
    clock.now += 0.0004
    assert throttle.admit("k") == 1.0
    clock.now += 0.9995
    assert throttle.admit("k") == 0.001


@pytest.mark.parametrize(
    ("text", "parsed"), [("20/2", (20, 2.0)), ("100/60", (100, 60.0)), ("5/0.5", (5, 0.5))]
)
def test_parse(text: str, parsed: tuple[int, float]) -> None:
    assert parse_throttle(text) == parsed


@pytest.mark.parametrize("text", ["20", "0/2", "20/0", "2.5/1", "x/y", "20/inf", "-1/2", "20/"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="CALLS/SECONDS"):
        parse_throttle(text)


@pytest.mark.parametrize("throttle", [(0, 1.0), (1, 0.0), (1, float("inf"))])
def test_config_refuses(throttle: tuple[int, float]) -> None:
    with pytest.raises(ValueError, match="throttle"):
        SandboxConfig(throttle=throttle)


def test_cli_refuses_a_bad_throttle(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "--throttle", "twenty"]) == 2
    assert "CALLS/SECONDS" in capsys.readouterr().err


async def test_past_the_limit_429(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox(throttle=(3, 0.3))
    async with httpx.AsyncClient(
        base_url=sandbox.url, auth=(sandbox.api_key, sandbox.api_secret), timeout=10
    ) as http:
        statuses = [(await http.post("/v1/messages", json=BODY)).status_code for _ in range(3)]
        assert statuses == [202, 202, 202]
        # Every provider call counts, not only sends.
        refused = await http.get("/v1/replies")
        assert refused.status_code == 429
        assert refused.json() == {"message": "Too many requests"}
        assert 0 < float(refused.headers["Retry-After"]) <= 0.3
        # The control API is never limited.
        assert (await http.get("/_sandbox/stats")).status_code == 200
        # A call without valid credentials is refused 401 and not counted.
        assert (await http.get("/v1/replies", auth=("sandbox-key", "wrong"))).status_code == 401
        await asyncio.sleep(float(refused.headers["Retry-After"]))
        assert (await http.post("/v1/messages", json=BODY)).status_code == 202
    stats = sandbox.stats()
    assert [c["status"] for c in stats["send_calls"]] == [202, 202, 202, 202]
    assert stats["messages"]["accepted"] == 4


async def test_a_client_sees_the_limit(make_sandbox: SandboxFactory) -> None:
    sandbox: Sandbox = await make_sandbox(throttle=(1, 60.0))
    async with sandbox.client() as client:
        await client.send_sms(HANDSET, "one")
        with pytest.raises(RateLimitedError) as caught:
            await client.send_sms(HANDSET, "two")
    assert caught.value.retry_after is not None
    assert 59 < caught.value.retry_after <= 60
    assert [c["status"] for c in sandbox.stats()["send_calls"]] == [202, 429]


async def test_sub_accounts_have_their_own_window(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox(throttle=(1, 60.0))
    async with httpx.AsyncClient(
        base_url=sandbox.url, auth=(sandbox.api_key, sandbox.api_secret), timeout=10
    ) as http:
        assert (await http.post("/v1/messages", json=BODY)).status_code == 202
        assert (await http.post("/v1/messages", json=BODY)).status_code == 429
        with_account = await http.post("/v1/messages", json=BODY, headers={"Account": "Sub1"})
        assert with_account.status_code == 202


async def test_no_limit_by_default(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    for _ in range(30):
        assert (await http.get("/v1/replies")).status_code == 200
