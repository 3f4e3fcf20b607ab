"""The management API over real HTTP, against real Redis and the sandbox provider."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bot.api.openapi import (
    ConversationList,
    ConversationView,
    Error,
    MessageView,
    SendResponse,
    SendUnavailable,
    openapi_document,
)
from bot.api.routes import ApiDeps, api_routes
from bot.receipts import records, timeline
from bot.sandbox import Sandbox
from bot.sender.batching import rcs_from_wire
from bot.sender.throttle import Throttle
from bot.sinch.client import SinchClient
from bot.sinch.models import SenderIds
from bot.storage.events import GW_CONVERSATION, GW_ID, OutboundRequest
from bot.storage.keys import PartitionKeys, conversation_key, partition_of
from bot.storage.redis_server import RedisServer
from bot.storage.store import Batch, Store

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
P = 8
H1, H2, H3, OURS = "+61491570156", "+61491570158", "+61491570159", "+61491570157"
MAX_BODY = 4096

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def make_deps(redis: Redis, client: SinchClient | None = None, **changes: Any) -> ApiDeps:
    options: dict[str, Any] = {
        "store": Store(redis),
        "partitions": P,
        "ttl_ms": 3_600_000,
        "timeline_max": 100,
        "max_body": MAX_BODY,
        "default_region": "AU",
        "api_token": TOKEN,
        "client": client,
    }
    options.update(changes)
    return ApiDeps(**options)


async def serve(aiohttp_client: ClientFactory, deps: ApiDeps) -> TestClient[Any, Any]:
    app = web.Application()
    app.add_routes(api_routes(deps))
    return await aiohttp_client(app)


@pytest.fixture
async def api(
    aiohttp_client: ClientFactory, redis: Redis, client: SinchClient
) -> TestClient[Any, Any]:
    return await serve(aiohttp_client, make_deps(redis, client))


async def post(api: TestClient[Any, Any], body: Any, **kwargs: Any) -> tuple[int, Any]:
    response = await api.post("/api/messages", json=body, headers=AUTH, **kwargs)
    return response.status, await response.json()


async def get(api: TestClient[Any, Any], path: str) -> tuple[int, Any]:
    response = await api.get(path, headers=AUTH)
    return response.status, await response.json()


# ------------------------------------------------------------------------------ auth


async def test_bearer_token_is_required(api: TestClient[Any, Any]) -> None:
    response = await api.get("/api/conversations")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await response.json() == {"error": "unauthorized"}
    for header in (f"Basic {TOKEN}", "Bearer", "Bearer  "):
        response = await api.get("/api/conversations", headers={"Authorization": header})
        assert response.status == 401, header
    for header in ("Bearer wrong", f"Bearer {TOKEN}x", f"bearer {TOKEN[:-1]}"):
        response = await api.get("/api/conversations", headers={"Authorization": header})
        assert response.status == 403, header
        assert await response.json() == {"error": "forbidden"}
    response = await api.post("/api/messages", json={"to": H1, "content": "x"})
    assert response.status == 401
    response = await api.get("/api/conversations", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status == 200
    for open_path in ("/healthz", "/readyz", "/api/openapi.json"):
        assert (await api.get(open_path)).status == 200, open_path


async def test_no_token_means_no_auth(aiohttp_client: ClientFactory, redis: Redis) -> None:
    api = await serve(aiohttp_client, make_deps(redis, api_token=None))
    assert (await api.get("/api/conversations")).status == 200
    response = await api.post("/api/messages", json={"to": H1, "content": "hi"})
    assert response.status == 202


# ------------------------------------------------------------------------------ POST validation


def _many(n: int) -> list[str]:
    return [f"+614915{i:05d}" for i in range(n)]


BAD_SENDS: list[tuple[str, Any, int, str]] = [
    ("bad number", {"to": f"{H1}, 12ab", "content": "hi"}, 422, "'12ab' is not a valid"),
    ("bad number in list", {"to": [H1, "+1 555"], "content": "hi"}, 422, "'+1 555'"),
    ("no recipients", {"to": " , ", "content": "hi"}, 422, "at least one"),
    ("101 recipients", {"to": _many(101), "content": "hi"}, 422, "at most 100"),
    ("metadata not strings", {"to": H1, "content": "hi", "metadata": {"a": 1}}, 422, "/metadata/a"),
    (
        "too much metadata",
        {"to": H1, "content": "hi", "metadata": {f"k{i}": "v" for i in range(9)}},
        422,
        "at most 8 pairs",
    ),
    ("reserved metadata", {"to": H1, "content": "hi", "metadata": {GW_ID: "x"}}, 422, GW_ID),
    ("empty metadata key", {"to": H1, "content": "hi", "metadata": {"": "v"}}, 422, "metadata"),
    ("unknown field", {"to": H1, "content": "hi", "colour": "red"}, 422, "/colour"),
    ("no content", {"to": H1}, 422, "content: required"),
    ("empty content", {"to": H1, "content": ""}, 422, "/content"),
    ("bad channel", {"to": H1, "content": "hi", "channel": "fax"}, 422, "/channel"),
    ("media on sms", {"to": H1, "content": "hi", "media": ["https://x.test/a.png"]}, 422, "MMS"),
    (
        "bad media url",
        {"to": H1, "content": "hi", "channel": "mms", "media": ["ftp://x"]},
        422,
        "/media",
    ),
    ("bad from", {"to": H1, "content": "hi", "from": "not a sender!"}, 422, "/source_number"),
    ("bad from number", {"to": H1, "content": "hi", "from": "+999999999"}, 422, "from:"),
    ("rcs without rcs", {"to": H1, "channel": "rcs", "content": "hi"}, 422, "rcs: required"),
    ("rcs on sms", {"to": H1, "content": "hi", "rcs": {"text": "x"}}, 422, "only for channel"),
    (
        "rcs two bodies",
        {"to": H1, "channel": "rcs", "rcs": {"text": "x", "card": {"title": "t"}}},
        422,
        "exactly one",
    ),
    (
        "rcs scheduled",
        {
            "to": H1,
            "channel": "rcs",
            "rcs": {"text": "x"},
            "scheduled": "2030-01-01T00:00:00Z",
        },
        422,
        "scheduled",
    ),
    ("bad schedule", {"to": H1, "content": "hi", "scheduled": "soon"}, 422, "/scheduled"),
    *(
        (
            f"rcs choice url {url!r}",
            {
                "to": H1,
                "channel": "rcs",
                "rcs": {"text": "x", "choices": [{"text": "Go", "url": url}]},
            },
            422,
            "/rcs/choices/0/url: url must be an http(s) URL or a tel: number",
        )
        for url in (
            "javascript:alert(document.domain)",
            "JavaScript:alert(1)",
            " javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox(1)",
            "//evil.example/x",
            "https://x.example/a b",
            "https://x.example/\nSet-Cookie: a=b",
            "tel:",
            "tel:+61 491 570 157",
            "ftp://x.example/a",
        )
    ),
    (
        "rcs card choice javascript",
        {
            "to": H1,
            "channel": "rcs",
            "rcs": {"card": {"title": "t", "choices": [{"text": "Go", "url": "javascript:x"}]}},
        },
        422,
        "/rcs/card/choices/0/url",
    ),
    (
        "rcs carousel media javascript",
        {
            "to": H1,
            "channel": "rcs",
            "rcs": {"carousel": [{"title": "a", "media_url": "javascript:x"}, {"title": "b"}]},
        },
        422,
        "/rcs/carousel/0/media_url",
    ),
    (
        "rcs callback with a space",
        {"to": H1, "channel": "rcs", "rcs": {"text": "x"}, "callback_url": "https://x.test/a b"},
        422,
        "callback_url",
    ),
    (
        "callback with a newline",
        {"to": H1, "content": "hi", "callback_url": "https://x.test/a\r\nb"},
        422,
        "callback_url",
    ),
    ("not an object", [{"to": H1}], 422, "JSON object"),
    ("to of wrong type", {"to": 61491570156, "content": "hi"}, 422, "/to"),
]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [pytest.param(b, s, f, id=name) for name, b, s, f in BAD_SENDS],
)
async def test_bad_sends_are_refused_and_write_nothing(
    api: TestClient[Any, Any], redis: Redis, body: Any, status: int, fragment: str
) -> None:
    got, answer = await post(api, body)
    assert (got, list(answer)) == (status, ["error"])
    assert fragment in answer["error"]
    assert await redis.dbsize() == 0


async def test_bad_bodies_are_refused_and_write_nothing(
    api: TestClient[Any, Any], redis: Redis
) -> None:
    async def send(data: Any, content_type: str | None = "application/json") -> tuple[int, Any]:
        headers = dict(AUTH)
        if content_type:
            headers["Content-Type"] = content_type
        response = await api.post("/api/messages", data=data, headers=headers)
        return response.status, await response.json()

    assert await send(b"{not json") == (400, {"error": "invalid JSON"})
    assert await send(b"\xff\xfe") == (400, {"error": "invalid JSON"})
    assert await send(b"") == (400, {"error": "invalid JSON"})
    assert await send(b"[" * (MAX_BODY - 1)) == (400, {"error": "invalid JSON"})  # too deep
    good = json.dumps({"to": H1, "content": "hi"}).encode()
    assert (await send(good, "text/plain"))[0] == 415
    assert (await send(good, "application/x-www-form-urlencoded"))[0] == 415
    big = json.dumps({"to": H1, "content": "x" * MAX_BODY}).encode()
    assert await send(big) == (413, {"error": "body too large"})

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(MAX_BODY // 1000 + 2):
            yield b" " * 1000

    assert await send(chunks()) == (413, {"error": "body too large"})
    assert await redis.dbsize() == 0


# ------------------------------------------------------------------------------ POST success


@pytest.mark.cluster
async def test_send_queues_one_message_per_recipient_in_its_partition(
    api: TestClient[Any, Any], redis: Redis
) -> None:
    status, answer = await post(
        api,
        {
            "to": f"{H1}, 0491 570 158 ,{H1}",  # national form, a duplicate
            "content": "Your table is ready €",
            "from": "0491 570 157",
            "metadata": {"booking": "42"},
        },
    )
    assert status == 202
    SendResponse.model_validate(answer)
    messages = answer["messages"]
    assert [m["to"] for m in messages] == [H1, H2]
    assert {(m["status"], m["segments"], m["encoding"]) for m in messages} == {
        ("queued", 1, "GSM-7")
    }
    for message in messages:
        conversation = conversation_key(OURS, message["to"])
        assert message["conversation"] == conversation
        partition = partition_of(message["to"], P)
        keys = PartitionKeys(partition)
        [(entry_id, fields)] = await redis.xrange(keys.outbox)
        request = OutboundRequest.from_fields(entry_id, fields, partition)
        assert request.gw_id == message["id"]
        assert request.channel == "sms"
        assert request.body["delivery_report"] is True
        assert request.body["source_number"] == OURS
        assert request.body["metadata"] == {
            "booking": "42",
            GW_ID: message["id"],
            GW_CONVERSATION: conversation,
        }
        record = await records.read(redis, keys, message["id"])
        assert record is not None
        assert (record["status"], record["to"], record["origin"]) == (
            "queued",
            message["to"],
            "api",
        )
        [entry] = await timeline.read(redis, keys, conversation)
        assert (entry["kind"], entry["data"]["gw_id"]) == ("outbound", message["id"])
        assert await redis.zscore(keys.conversations, conversation) is not None
    total = sum([await redis.xlen(PartitionKeys(p).outbox) for p in range(P)])
    assert total == 2


async def test_send_mms_and_rcs(api: TestClient[Any, Any], redis: Redis) -> None:
    status, answer = await post(
        api,
        {
            "to": [H1],
            "channel": "mms",
            "content": "Photo",
            "subject": "Hi",
            "media": ["https://example.com/a.png"],
            "delivery_report": False,
        },
    )
    assert status == 202
    keys = PartitionKeys(partition_of(H1, P))
    [(entry_id, fields)] = await redis.xrange(keys.outbox)
    request = OutboundRequest.from_fields(entry_id, fields, keys.partition)
    assert (request.body["format"], request.body["media"], request.body["delivery_report"]) == (
        "MMS",
        ["https://example.com/a.png"],
        False,
    )
    assert request.conversation == conversation_key(None, H1)

    status, answer = await post(
        api,
        {
            "to": H3,
            "channel": "rcs",
            "content": "Pick a time: 9am or 10am",
            "rcs": {
                "text": "Pick a time",
                "choices": [{"text": "9am", "postback_data": "t9"}, {"text": "10am"}],
            },
        },
    )
    assert status == 202, answer
    keys = PartitionKeys(partition_of(H3, P))
    [(entry_id, fields)] = await redis.xrange(keys.outbox)
    request = OutboundRequest.from_fields(entry_id, fields, keys.partition)
    assert request.channel == "rcs"
    assert request.body["fallback"] == {"format": "SMS", "content": "Pick a time: 9am or 10am"}
    assert request.body["rcs_message"]["choice_message"]["text_message"] == {"text": "Pick a time"}
    assert answer["messages"][0]["id"] == request.gw_id


async def test_rcs_choices_link_to_http_urls_and_call_tel_numbers(
    api: TestClient[Any, Any], redis: Redis, client: SinchClient, sandbox: Sandbox
) -> None:
    choices = [
        {"text": "Site", "url": "https://example.com/book?a=1"},
        {"text": "Call", "url": "tel:+61-491-570-157"},
        {"text": "Yes", "postback_data": "Y"},
    ]
    status, answer = await post(
        api, {"to": H1, "channel": "rcs", "rcs": {"text": "Book?", "choices": choices}}
    )
    assert status == 202, answer
    keys = PartitionKeys(partition_of(H1, P))
    [(entry_id, fields)] = await redis.xrange(keys.outbox)
    request = OutboundRequest.from_fields(entry_id, fields, keys.partition)
    sent = request.body["rcs_message"]["choice_message"]["choices"]
    assert sent == [
        {"url_message": {"title": "Site", "url": "https://example.com/book?a=1"}},
        {"call_message": {"title": "Call", "phone_number": "+61491570157"}},
        {"text_message": {"text": "Yes"}, "postback_data": "Y"},
    ]
    # the provider takes it as it is (the sandbox checks the Conversation-API shape) and the
    # sender can rebuild the message from its outbox entry
    assert rcs_from_wire(request.body).choices[1].url == "tel:+61491570157"
    [message] = await client.send_rcs(rcs_from_wire(request.body))
    assert sandbox.message(message.message_id).request.rcs is not None


# ------------------------------------------------------------------------------ GET message


async def test_get_message_with_provider_status(
    api: TestClient[Any, Any], redis: Redis, client: SinchClient
) -> None:
    _, answer = await post(api, {"to": H1, "content": "hello"})
    gw_id = answer["messages"][0]["id"]
    status, view = await get(api, f"/api/messages/{gw_id}")
    assert status == 200
    MessageView.model_validate(view)
    assert view["record"]["status"] == "queued"
    assert "provider" not in view  # not sent yet: nothing to ask the provider

    # As the sender would: the provider accepted it.
    [sent] = await client.send_sms(H1, "hello")
    keys = PartitionKeys(partition_of(H1, P))
    batch = Batch()
    records.mark_sent(batch, keys, gw_id, sent.message_id, ttl_ms=60_000)
    await batch.commit(Store(redis))
    status, view = await get(api, f"/api/messages/{gw_id}")
    assert status == 200
    MessageView.model_validate(view)
    assert view["partition"] == keys.partition
    assert view["record"]["message_id"] == sent.message_id
    assert view["provider"]["message_id"] == sent.message_id
    assert view["provider"]["destination_number"] == H1

    status, view = await get(api, f"/api/messages/{gw_id}?provider=0")
    assert (status, "provider" in view) == (200, False)
    assert (await get(api, f"/api/messages/{gw_id}?provider=maybe"))[0] == 422


async def test_provider_failure_is_reported_not_raised(
    api: TestClient[Any, Any], redis: Redis
) -> None:
    keys = PartitionKeys(partition_of(H2, P))
    request = OutboundRequest(
        "g-lost", conversation_key(None, H2), "sms", {"destination_number": H2}
    )
    batch = Batch()
    records.create(batch, keys, request, ttl_ms=60_000)
    records.mark_sent(batch, keys, "g-lost", "no-such-message", ttl_ms=60_000)
    await batch.commit(Store(redis))
    status, view = await get(api, "/api/messages/g-lost")
    assert status == 200
    assert "provider" not in view
    assert view["provider_error"].startswith("provider: HTTP 404")


async def test_unknown_messages_are_404(api: TestClient[Any, Any]) -> None:
    for path in (
        "/api/messages/0123456789abcdef",
        "/api/messages/%2A%3F",
        "/api/messages/" + "a" * 101,
    ):
        status, answer = await get(api, path)
        assert (status, answer) == (404, {"error": "no such message"}), path


# ------------------------------------------------------------------------------ conversations


@pytest.mark.cluster
async def test_conversations_newest_first_and_filtered(
    api: TestClient[Any, Any], redis: Redis
) -> None:
    for number in (H1, H2, H3):
        assert (await post(api, {"to": number, "content": "hi", "from": OURS}))[0] == 202
    status, answer = await get(api, "/api/conversations")
    assert status == 200
    ConversationList.model_validate(answer)
    keys = [c["key"] for c in answer["conversations"]]
    assert set(keys) == {conversation_key(OURS, n) for n in (H1, H2, H3)}
    times = [c["last_activity"] for c in answer["conversations"]]
    assert times == sorted(times, reverse=True)

    _, answer = await get(api, "/api/conversations?limit=2")
    assert [c["key"] for c in answer["conversations"]] == keys[:2]
    for q in ("+61 491 570 158", "0491 570 158", "570158"):
        _, answer = await get(api, f"/api/conversations?q={quote(q)}")
        assert [c["key"] for c in answer["conversations"]] == [conversation_key(OURS, H2)], q
    _, answer = await get(api, "/api/conversations?q=70159")
    assert [c["key"] for c in answer["conversations"]] == [conversation_key(OURS, H3)]
    for bad in ("limit=0", "limit=501", "limit=ten", "q=abc", "q=*"):
        status, answer = await get(api, f"/api/conversations?{bad}")
        assert status == 422, bad
        Error.model_validate(answer)


@pytest.mark.cluster
async def test_conversation_view(api: TestClient[Any, Any], redis: Redis) -> None:
    _, answer = await post(api, {"to": H1, "content": "Reply Y", "from": OURS})
    gw_id = answer["messages"][0]["id"]
    conversation = conversation_key(OURS, H1)
    keys = PartitionKeys(partition_of(H1, P))
    batch = Batch().write_versioned(
        keys.session(conversation), 0, {"state": "confirming", "data": json.dumps({"slot": 9})}
    )
    await batch.commit(Store(redis))

    status, view = await get(api, f"/api/conversations/{quote(conversation, safe='')}")
    assert status == 200, view
    ConversationView.model_validate(view)
    assert (view["key"], view["state"], view["data"], view["flows"], view["version"]) == (
        conversation,
        "confirming",  # a session stored before plugins had their own flows
        {"slot": 9},
        {},
        1,
    )
    assert [(e["kind"], e["data"]["gw_id"]) for e in view["timeline"]] == [("outbound", gw_id)]
    assert view["messages"][gw_id]["status"] == "queued"
    assert view["last_activity"] > 0

    _, view = await get(api, f"/api/conversations/{quote(conversation, safe='')}?messages=0")
    assert "messages" not in view
    for missing in (conversation_key(OURS, H3), "nocolon", "x" * 301 + ":1"):
        status, answer = await get(api, f"/api/conversations/{quote(missing, safe='')}")
        assert (status, answer) == (404, {"error": "no such conversation"}), missing
    assert (await get(api, f"/api/conversations/{quote(conversation)}?limit=0"))[0] == 422


# ------------------------------------------------------------------------------ senders


async def test_senders(
    aiohttp_client: ClientFactory, api: TestClient[Any, Any], redis: Redis, sandbox: Sandbox
) -> None:
    status, answer = await get(api, "/api/senders")
    assert status == 200
    senders = SenderIds.model_validate(answer)
    assert OURS in [s.number for s in senders.senders]

    async with SinchClient(api_key="wrong", api_secret="wrong", base_url=sandbox.url) as bad:
        failing = await serve(aiohttp_client, make_deps(redis, bad))
        status, answer = await get(failing, "/api/senders")
    assert status == 502
    assert answer["error"].startswith("provider: HTTP 401")

    unconfigured = await serve(aiohttp_client, make_deps(redis, None))
    status, answer = await get(unconfigured, "/api/senders")
    assert (status, answer) == (503, {"error": "no provider configured"})


@pytest.mark.cluster
async def test_provider_calls_respect_the_shared_throttle(
    aiohttp_client: ClientFactory, redis: Redis, client: SinchClient
) -> None:
    throttle = Throttle(redis, "api-test", calls=1, period=60)
    api = await serve(aiohttp_client, make_deps(redis, client, throttle=throttle))
    assert (await get(api, "/api/senders"))[0] == 200
    response = await api.get("/api/senders", headers=AUTH)
    assert response.status == 503
    assert 1 <= int(response.headers["Retry-After"]) <= 60  # a period after the first answer
    assert (await response.json())["error"].startswith("provider call limit reached")


# ------------------------------------------------------------------------------ health


async def test_readiness_follows_redis(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    redis = Redis.from_url(
        server.url, socket_connect_timeout=0.2, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    ready = {"value": True}

    async def is_ready() -> bool:
        return ready["value"]

    try:
        api = await serve(aiohttp_client, make_deps(redis, ready=is_ready, ready_timeout=2.0))

        async def readyz() -> tuple[int, Any]:
            response = await api.get("/readyz")
            return response.status, await response.json()

        assert await readyz() == (200, {"status": "ok"})
        ready["value"] = False
        assert await readyz() == (503, {"status": "unavailable", "reason": "not ready"})
        ready["value"] = True

        server.kill()
        assert await readyz() == (503, {"status": "unavailable", "reason": "redis unreachable"})
        assert (await api.get("/healthz")).status == 200
        status, answer = await post(api, {"to": [H1, H2], "content": "hi"})
        assert status == 503
        SendUnavailable.model_validate(answer)
        assert {m["status"] for m in answer["messages"]} == {"unknown"}
        status, answer = await get(api, "/api/conversations")
        assert (status, answer) == (503, {"error": "storage unavailable, retry later"})

        server.start()
        assert await readyz() == (200, {"status": "ok"})
        assert (await get(api, "/api/conversations"))[0] == 200
    finally:
        await redis.aclose()
        server.stop()


# ------------------------------------------------------------------------------ OpenAPI


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


async def test_openapi_document(api: TestClient[Any, Any], redis: Redis) -> None:
    response = await api.get("/api/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document == json.loads(json.dumps(openapi_document()))
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] and document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "SINCHBOT_API_TOKEN",
    }
    operations = [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]
    operations += [
        (name, method, op)
        for name, item in document["webhooks"].items()
        for method, op in item.items()
    ]
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    for path, method, op in operations:
        assert method in {"get", "post", "put", "patch", "delete"}, (path, method)
        assert op["responses"], (path, method)
        for code, answer in op["responses"].items():
            assert code[0] in "2345" and answer["description"], (path, method, code)
        for param in op.get("parameters", []):
            assert param["in"] in {"path", "query", "header"}
            if param["in"] == "path":
                assert param["required"] and "{" + param["name"] + "}" in path
        for name in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
            assert any(p["name"] == name for p in op.get("parameters", [])), (path, name)
    # Every route the API registers is documented, with its authentication.
    routes = api_routes(make_deps(redis))
    for route in routes:
        assert isinstance(route, web.RouteDef)
        operation = document["paths"][route.path][route.method.lower()]
        protected = route.path.startswith("/api/") and route.path != "/api/openapi.json"
        assert (operation.get("security") == [{"bearerAuth": []}]) is protected, route.path
    # The webhook endpoints are in, and every reference resolves.
    assert {"/webhooks/messages", "/webhooks/receipts", "/webhooks/callback"} <= set(
        document["paths"]
    )
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    assert "from" in schemas["SendRequest"]["properties"]


def test_extra_paths_are_merged() -> None:
    extra = {"/extra": {"get": {"operationId": "x", "responses": {"200": {"description": "ok"}}}}}
    document = openapi_document(extra, include_webhooks=False)
    assert document["paths"]["/extra"]["get"]["operationId"] == "x"
    assert "/webhooks/messages" not in document["paths"]
    document["paths"].clear()
    assert openapi_document()["paths"]  # every call builds a fresh document
