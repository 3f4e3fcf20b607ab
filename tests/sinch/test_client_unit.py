"""Narrow unit tests of SinchClient's request mapping (httpx.MockTransport).

Everything the client does over the wire is tested for real against the sandbox in
test_client.py; these cover what a fake provider cannot easily produce on demand.
"""

import json
from collections.abc import Callable
from email.utils import formatdate
from time import time

import httpx
import pytest

from bot.core.sms import InvalidPhoneNumber
from bot.sinch.auth import verify
from bot.sinch.client import SinchClient, chunks, split_recipients
from bot.sinch.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    SinchAPIError,
    SinchTimeoutError,
    SinchTransportError,
)

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kw: object) -> SinchClient:
    return SinchClient(
        api_key="k",
        api_secret="s",
        base_url="https://api.test",
        transport=httpx.MockTransport(handler),
        **kw,  # type: ignore[arg-type]
    )


def echo_send(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(
        202,
        json={
            "messages": [
                {**m, "message_id": f"id-{m['destination_number']}", "status": "queued"}
                for m in body["messages"]
            ]
        },
    )


def test_split_recipients() -> None:
    assert split_recipients("+61491570156  +61491570157,+61491570156") == [
        "+61491570156",
        "+61491570157",
    ]
    assert split_recipients(["a", " ", "b", "a"]) == ["a", "b"]
    assert [len(c) for c in chunks(list(range(250)))] == [100, 100, 50]


async def test_more_than_100_recipients_take_several_calls_in_order() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(len(json.loads(request.content)["messages"]))
        return echo_send(request)

    numbers = [f"+614915{i:05d}" for i in range(250)]
    async with client(handler) as c:
        sent = await c.send_sms(" ".join(numbers), "hi", delivery_report=True, metadata={"a": "b"})
    assert calls == [100, 100, 50]
    assert [m.destination_number for m in sent] == numbers
    assert sent[0].metadata == {"a": "b"}


async def test_national_numbers_are_normalised_and_bad_ones_fail_before_any_call() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.extend(m["destination_number"] for m in json.loads(request.content)["messages"])
        return echo_send(request)

    async with client(handler) as c:
        # In a string, spaces separate recipients (the connector's convention); a list keeps
        # a number written with spaces whole.
        await c.send_sms(["0491 570 156"], "hi")
        with pytest.raises(InvalidPhoneNumber):
            await c.send_sms("+61491570157 12ab", "hi")
        with pytest.raises(ValueError, match="at least one recipient"):
            await c.send_sms(" ", "hi")
    assert seen == ["+61491570156"]


async def test_account_header_user_agent_and_hmac() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Account"] == "sub-1"
        assert request.headers["User-Agent"].startswith("sinchbot/")
        ok = verify(
            request.headers,
            method=request.method,
            path_qs=request.url.raw_path.decode(),
            body=request.content,
            credentials={"k": "s"},
        )
        assert ok == "k"
        assert request.headers["Authorization"].startswith("hmac ")
        return echo_send(request)

    async with client(handler, auth="hmac", hmac_algorithm="sha1", account="sub-1") as c:
        await c.send_sms("+61491570156", "hi")


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            400,
            {
                "message": "Request failed to parse correctly.",
                "details": ["/messages/0/content: bad"],
            },
            InvalidRequestError,
        ),
        (422, {"message": "TLS"}, InvalidRequestError),
        (401, {"message": "Invalid authentication credentials"}, AuthenticationError),
        (403, {"message": "Invalid authentication credentials"}, AuthenticationError),
        (
            403,
            {"message": "This feature has not been enabled in your account."},
            PermissionDeniedError,
        ),
        (404, {"message": "Resource not found."}, NotFoundError),
        (
            409,
            {"message": "A webhook with the given url and method already exists."},
            ConflictError,
        ),
        (429, None, RateLimitedError),
        (500, "<html>oops</html>", ServerError),
        (503, None, ServerError),
        (418, None, SinchAPIError),
    ],
)
async def test_error_mapping(status: int, body: object, error: type[SinchAPIError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, dict):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=body or "")

    async with client(handler) as c:
        with pytest.raises(error) as info:
            await c.message_status("abc")
    assert type(info.value) is error
    assert info.value.status_code == status
    assert str(info.value).startswith(f"HTTP {status}: ")
    if status == 400:
        assert info.value.details == ["/messages/0/content: bad"]
        assert "/messages/0/content: bad" in str(info.value)


@pytest.mark.parametrize(
    ("header", "expected"), [("30", 30.0), ("0.5", 0.5), ("soon", None), (None, None)]
)
async def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, headers={"Retry-After": header} if header else {}, json={"message": "slow down"}
        )

    async with client(handler) as c:
        with pytest.raises(RateLimitedError) as info:
            await c.sender_ids()
    assert info.value.retry_after == expected


async def test_retry_after_http_date() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": formatdate(time() + 60, usegmt=True)})

    async with client(handler) as c:
        with pytest.raises(RateLimitedError) as info:
            await c.sender_ids()
    assert info.value.retry_after is not None and 55 <= info.value.retry_after <= 61


@pytest.mark.parametrize(
    ("exc", "error", "words"),
    [
        (httpx.ReadTimeout("timed out"), SinchTimeoutError, "outcome is unknown"),
        (httpx.ConnectTimeout("timed out"), SinchTimeoutError, "outcome is unknown"),
        (httpx.ConnectError("refused"), SinchTransportError, "api.test"),
        (httpx.RemoteProtocolError("dropped"), SinchTransportError, "dropped"),
    ],
)
async def test_transport_failures(exc: Exception, error: type[Exception], words: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with client(handler) as c:
        with pytest.raises(error, match=words):
            await c.send_sms("+61491570156", "hi")


async def test_empty_and_text_bodies() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("confirmed"):
            return httpx.Response(202, text="Accepted", headers={"Content-Type": "text/plain"})
        return httpx.Response(200)

    async with client(handler) as c:
        await c.confirm_replies([f"r{i}" for i in range(150)])
        await c.cancel_message("id/with slash")


async def test_path_parameters_are_quoted() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"message_id": "x", "status": "queued"})

    async with client(handler) as c:
        await c.message_status("../v1/webhooks")
    assert paths == ["/v1/messages/..%2Fv1%2Fwebhooks"]
