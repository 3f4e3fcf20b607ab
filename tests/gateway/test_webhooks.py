"""The webhook endpoints against a real Redis, a real aiohttp server and the real sandbox.

Failure table rows covered: 4 (Redis killed and restarted), 8 (the same webhook 2-5 times),
11 (bad signature, stale Date, missing header, wrong token), 12 (malformed, wrong-typed and
oversized bodies), plus "every payload shape the provider sends lands once, in the right
partition".
"""

from __future__ import annotations

import base64
import email.utils
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bot.core.sms import mask_phone
from bot.ingress.admission import Ingress
from bot.ingress.webhook_auth import WebhookAuth, WebhookAuthError
from bot.ingress.webhooks import (
    CALLBACK_PATH,
    MESSAGES_PATH,
    RECEIPTS_PATH,
    WEBHOOK_OPENAPI_PATHS,
    webhook_routes,
)
from bot.sandbox import Sandbox, SandboxConfig
from bot.sinch.models import (
    Channel,
    DeliveryReceipt,
    InboundMessage,
    OutboundMessage,
    RcsChoice,
    RcsMessage,
    WebhookSpec,
)
from bot.sinch.signatures import DATE_HEADER, SIGNATURE_HEADER, SigningKey
from bot.sinch.templates import DR_EVENTS, MO_EVENTS
from bot.storage.events import GW_CONVERSATION, InboxEvent, prepare_rcs, prepare_sms
from bot.storage.keys import PartitionKeys, partition_of
from bot.storage.redis_server import RedisServer, free_port
from bot.storage.store import Store

P = 8
OURS = "+61491570157"
SECRET = "s3cr3t+/= token"
MAX_BODY = 8192
ROUTES = (MESSAGES_PATH, RECEIPTS_PATH, CALLBACK_PATH)
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really").decode()

Gateway = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def sandbox_config(**changes: Any) -> SandboxConfig:
    return SandboxConfig(port=0, step_delay=0.01, time_scale=0.01, **changes)


@pytest.fixture
def make_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    redis: Redis,
) -> Gateway:
    """Start the webhook routes on a real server; returns the test client."""

    async def make(
        auth: WebhookAuth,
        *,
        port: int | None = None,
        client: Redis | None = None,
        max_body: int = MAX_BODY,
    ) -> TestClient[web.Request, web.Application]:
        app = web.Application()
        ingress = Ingress(Store(client or redis), P, dedupe_ttl=600.0)
        app.add_routes(webhook_routes(ingress, auth, max_body=max_body))
        return await aiohttp_client(app, server_kwargs={"port": port} if port else {})

    return make


def open_auth() -> WebhookAuth:
    return WebhookAuth(None, None, 300.0, allow_unauthenticated=True)


def secret_auth() -> WebhookAuth:
    return WebhookAuth(None, SECRET, 300.0, allow_unauthenticated=False)


async def stored(redis: Redis) -> list[InboxEvent]:
    """Every inbox entry of every partition."""
    events = []
    for partition in range(P):
        raw: Any = await redis.xrange(PartitionKeys(partition).inbox)
        for entry_id, fields in raw:
            events.append(InboxEvent.from_fields(entry_id, fields, partition))
    return events


def handset_of_event(event: InboundMessage | DeliveryReceipt) -> str:
    if isinstance(event, InboundMessage):
        return event.source_number
    assert event.recipient is not None
    return event.recipient


def mo_body(reply_id: str = "r-1", handset: str = "+61491570156", **extra: Any) -> bytes:
    body = {"reply_id": reply_id, "source_number": handset, "content": "Y", **extra}
    return json.dumps(body).encode()


def dr_body(report_id: str = "d-1", handset: str = "+61491570156") -> bytes:
    body = {
        "delivery_report_id": report_id,
        "message_id": "m-1",
        "status": "delivered",
        "status_code": "220",
        "source_number": handset,
    }
    return json.dumps(body).encode()


JSON = {"Content-Type": "application/json"}


# ------------------------------------------------------------------ every shape, once


@pytest.mark.cluster
async def test_every_sandbox_shape_lands_once_in_its_partition(
    make_gateway: Gateway, redis: Redis
) -> None:
    gw = await make_gateway(secret_auth())
    base = str(gw.make_url("")).rstrip("/")
    token = quote(SECRET, safe="")
    callback = f"{base}{CALLBACK_PATH}?token={token}"
    config = sandbox_config(
        webhook_url=f"{base}{MESSAGES_PATH}?token={token}",
        receipt_url=f"{base}{RECEIPTS_PATH}?token={token}",
    )
    h_sms, h_mms, h_rcs, h_cold, h_stop = (f"+6149157100{i}" for i in range(5))
    async with Sandbox(config) as sb, sb.client() as client:
        header = {"X-Webhook-Secret": SECRET}
        # Webhooks API: our templates, the sample bodies as JSON and as forms
        await client.subscribe(
            messages_url=f"{base}{MESSAGES_PATH}?via=templates",
            receipts_url=f"{base}{RECEIPTS_PATH}?via=templates",
            headers=header,
        )
        for via, encoding in (("sample", "JSON"), ("form", "FORM_ENCODED")):
            for path, kinds in ((MESSAGES_PATH, MO_EVENTS), (RECEIPTS_PATH, DR_EVENTS)):
                await client.create_webhook(
                    WebhookSpec(
                        url=f"{base}{path}?via={via}",
                        encoding=encoding,
                        events=list(kinds),
                        headers=header,
                    )
                )
        # outbound: SMS from our number, SMS from the shared pool, RCS; all with receipts
        conv_sms = f"{OURS}:{h_sms}"
        sms = prepare_sms(
            OutboundMessage(
                content="Reply Y to confirm",
                destination_number=h_sms,
                source_number=OURS,
                delivery_report=True,
                callback_url=callback,
            ),
            conv_sms,
        )
        pool = prepare_sms(
            OutboundMessage(
                content="Send us a photo",
                destination_number=h_mms,
                delivery_report=True,
                callback_url=callback,
            ),
            f"default:{h_mms}",
        )
        await client.send_messages([OutboundMessage.model_validate(r.body) for r in (sms, pool)])
        rcs = RcsMessage(
            destination_number=h_rcs,
            text="Pick one",
            choices=[RcsChoice(text="Tue"), RcsChoice(text="Wed")],
            callback_url=callback,
            delivery_report=True,
        )
        await client.send_rcs(  # with the metadata prepare_rcs adds
            rcs.model_copy(
                update={"metadata": prepare_rcs(rcs, f"{OURS}:{h_rcs}").body["metadata"]}
            )
        )
        await sb.wait_idle()
        # inbound: SMS reply, MMS reply, RCS reply, unsolicited SMS, opt-out
        sent = [
            await sb.handset(h_sms).send("Y", reply_to="latest"),
            await sb.handset(h_mms).send(
                "", reply_to="latest", media=[{"content_type": "image/png", "content": PNG}]
            ),
            await sb.handset(h_rcs).send("Tue please", rcs=True, reply_to="latest"),
            await sb.handset(h_cold).send("hello?"),
            await sb.handset(h_stop).send("STOP"),
        ]
        await sb.wait_idle()
        reports = {r.report_id: r.message.destination for r in sb.state.unconfirmed_reports(1000)}
        pushes = sb.stats()["pushes"]

    assert pushes["failed"] == 0, pushes  # every push, in every shape, got a 2xx
    expected = {s["reply_id"]: s["source_number"] for s in sent}
    expected[sent[-1]["notification_id"]] = h_stop
    expected.update(reports)
    assert len(reports) == 9  # enroute, submitted, delivered of 3 messages

    events = await stored(redis)
    counts = Counter(e.event.event_id for e in events)
    assert all(n == 1 for n in counts.values()), counts
    assert set(counts) == set(expected)
    for entry in events:
        handset = expected[entry.event.event_id]
        assert handset_of_event(entry.event) == handset
        assert entry.partition == partition_of(handset, P)
    by_id = {e.event.event_id: e for e in events}
    reply = by_id[sent[0]["reply_id"]]
    assert reply.conversation == conv_sms
    mms = by_id[sent[1]["reply_id"]].event
    assert isinstance(mms, InboundMessage) and mms.channel is Channel.MMS and mms.attachments
    rcs_reply = by_id[sent[2]["reply_id"]].event
    assert isinstance(rcs_reply, InboundMessage) and rcs_reply.channel is Channel.RCS
    opt_out = by_id[sent[-1]["notification_id"]].event
    assert isinstance(opt_out, InboundMessage) and opt_out.kind == "opt_out"
    for report_id, handset in reports.items():
        receipt = by_id[report_id]
        assert receipt.kind == "receipt"
        if handset == h_sms:
            assert receipt.conversation == conv_sms  # from the echoed gw_conv


async def test_signed_pushes_are_verified_and_stored(make_gateway: Gateway, redis: Redis) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = sandbox_config(
        signing=True,
        webhook_url=f"{base}{MESSAGES_PATH}",
        receipt_url=f"{base}{RECEIPTS_PATH}",
    )
    async with Sandbox(config) as sb, sb.client() as client:
        assert sb.signing_key is not None
        auth = WebhookAuth(sb.signing_key.public_key_b64, None, 300.0, False)
        await make_gateway(auth, port=port)
        handset = "+61491570201"
        [message] = await client.send_sms(
            handset,
            "Reply Y",
            source_number=OURS,
            delivery_report=True,
            callback_url=f"{base}{CALLBACK_PATH}?ref=a%2Fb",  # a signed, quoted query
        )
        await sb.wait_idle()
        sent = await sb.handset(handset).send("Y", reply_to=message.message_id)
        await sb.wait_idle()
        pushes = sb.stats()["pushes"]
    assert pushes["failed"] == 0 and pushes["ok"] == 2 * 3 + 2, pushes
    counts = Counter(e.event.event_id for e in await stored(redis))
    assert counts[sent["reply_id"]] == 1
    assert len(counts) == 4 and set(counts.values()) == {1}


@pytest.mark.cluster
async def test_sandbox_duplicate_and_out_of_order_pushes_store_once(
    make_gateway: Gateway, redis: Redis
) -> None:
    gw = await make_gateway(open_auth())
    base = str(gw.make_url("")).rstrip("/")
    config = sandbox_config(
        webhook_url=f"{base}{MESSAGES_PATH}", receipt_url=f"{base}{RECEIPTS_PATH}"
    )
    async with Sandbox(config) as sb, sb.client() as client:
        sb.set_faults(
            inbound={"duplicate_rate": 1.0},
            receipts={"duplicate_rate": 1.0, "out_of_order": True},
        )
        handsets = [f"+6149157030{i}" for i in range(3)]
        await client.send_sms(handsets, "Hi", delivery_report=True)
        await sb.wait_idle()
        for handset in handsets:
            await sb.handset(handset).send("Hello back", reply_to="latest")
        await sb.wait_idle()
        pushes = sb.stats()["pushes"]
    assert pushes["ok"] == 2 * (3 * 3 + 3) and pushes["failed"] == 0
    counts = Counter(e.event.event_id for e in await stored(redis))
    assert len(counts) == 3 * 3 + 3 and set(counts.values()) == {1}


# ------------------------------------------------------------------ row 8: the same webhook 2-5 times


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate("SHA256")


@pytest.mark.parametrize("copies", [2, 3, 4, 5])
@pytest.mark.cluster
async def test_the_same_webhook_repeated_is_stored_once(
    make_gateway: Gateway, redis: Redis, key: SigningKey, copies: int
) -> None:
    gw = await make_gateway(WebhookAuth(key.public_key_b64, SECRET, 300.0, False))
    bodies = {
        MESSAGES_PATH: mo_body(f"r-{copies}"),
        RECEIPTS_PATH: dr_body(f"d-{copies}"),
        CALLBACK_PATH: mo_body(f"cb-{copies}", message_id="m-1"),
    }
    for path, body in bodies.items():
        answers = []
        for _ in range(copies):
            headers = {**JSON, **key.headers("POST", path, body)}  # each retry signed anew
            response = await gw.post(path, data=body, headers=headers)
            assert response.status == 200
            answers.append((await response.json())["status"])
        assert answers == ["accepted"] + ["duplicate"] * (copies - 1)
    counts = Counter(e.event.event_id for e in await stored(redis))
    assert counts == Counter({f"r-{copies}": 1, f"d-{copies}": 1, f"cb-{copies}": 1})


# ------------------------------------------------------------------ row 11: authentication


def _date(offset: float = 0.0) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


def _signed(key: SigningKey, path: str, body: bytes, **changes: str | None) -> dict[str, str]:
    headers = {**JSON, **key.headers("POST", path, body)}
    for name, value in changes.items():
        header = name.replace("_", "-")
        if value is None:
            headers.pop(header)
        else:
            headers[header] = value
    return headers


def _auth_cases(key: SigningKey, other: SigningKey) -> list[tuple[str, dict[str, str], int]]:
    body = mo_body()
    path = MESSAGES_PATH
    stale = _date(-3600)
    future = _date(3600)
    return [
        ("no credentials", dict(JSON), 401),
        ("missing signature header", _signed(key, path, body, **{SIGNATURE_HEADER: None}), 401),
        ("missing Date", _signed(key, path, body, Date=None), 401),
        ("missing digest", _signed(key, path, body, **{"X-MessageMedia-Digest-Type": None}), 401),
        ("tampered body", _signed(key, path, body.replace(b'"Y"', b'"N"')), 403),
        ("other path signed", _signed(key, RECEIPTS_PATH, body), 403),
        (
            "stale Date",
            {**JSON, **key.headers("POST", path, body, date=stale)},
            403,
        ),
        (
            "future Date",
            {**JSON, **key.headers("POST", path, body, date=future)},
            403,
        ),
        ("another key", _signed(other, path, body), 403),
        ("garbage signature", _signed(key, path, body, **{SIGNATURE_HEADER: "bm9wZQ=="}), 403),
        (
            "unsupported cipher",
            _signed(key, path, body, **{"X-MessageMedia-Cipher-Type": "EC"}),
            403,
        ),
    ]


async def test_bad_signatures_are_refused_and_nothing_is_stored(
    make_gateway: Gateway, redis: Redis, key: SigningKey
) -> None:
    other = SigningKey.generate("SHA256")
    gw = await make_gateway(WebhookAuth(key.public_key_b64, None, 300.0, False))
    body = mo_body()
    for name, headers, status in _auth_cases(key, other):
        # the tampered case signs other bytes than it sends
        response = await gw.post(MESSAGES_PATH, data=body, headers=headers)
        assert response.status == status, name
        assert await response.json() == {
            "error": "unauthorized" if status == 401 else "forbidden"
        }, name
    assert await redis.dbsize() == 0
    # control: the same request, properly signed, is accepted
    response = await gw.post(MESSAGES_PATH, data=body, headers=_signed(key, MESSAGES_PATH, body))
    assert response.status == 200


@pytest.mark.parametrize(
    ("where", "status"),
    [
        ("nothing", 401),
        ("wrong-token", 403),
        ("wrong-header", 403),
        ("empty-token", 403),
        ("non-ascii-token", 403),
        ("token", 200),
        ("header", 200),
    ],
)
async def test_shared_secret_by_header_or_token(
    make_gateway: Gateway, redis: Redis, where: str, status: int
) -> None:
    gw = await make_gateway(secret_auth())
    headers = dict(JSON)
    query = ""
    if where == "token":
        query = "?token=" + quote(SECRET, safe="")
    elif where == "wrong-token":
        query = "?token=guess"
    elif where == "empty-token":
        query = "?token="
    elif where == "non-ascii-token":
        query = "?token=" + quote("sécret", safe="")
    elif where == "header":
        headers["X-Webhook-Secret"] = SECRET
    elif where == "wrong-header":
        headers["X-Webhook-Secret"] = SECRET + "x"
    response = await gw.post(CALLBACK_PATH + query, data=mo_body(), headers=headers)
    assert response.status == status
    if status == 200:
        assert len(await stored(redis)) == 1
    else:
        assert await response.json() == {"error": "unauthorized" if status == 401 else "forbidden"}
        assert await redis.dbsize() == 0


async def test_without_credentials_only_the_sandbox_mode_is_open(
    make_gateway: Gateway, redis: Redis
) -> None:
    closed = await make_gateway(WebhookAuth(None, None, 300.0, allow_unauthenticated=False))
    response = await closed.post(MESSAGES_PATH, data=mo_body(), headers=JSON)
    assert response.status == 401
    assert await redis.dbsize() == 0
    opened = await make_gateway(open_auth())
    response = await opened.post(MESSAGES_PATH, data=mo_body(), headers=JSON)
    assert response.status == 200


def test_auth_with_both_credentials_accepts_either(key: SigningKey) -> None:
    auth = WebhookAuth(key.public_key_b64, SECRET, 300.0, allow_unauthenticated=True)
    assert auth.configured and not auth.open
    body = mo_body()
    path = CALLBACK_PATH + "?token=x"
    signed = key.headers("POST", path, body)
    auth.verify(path, "POST", signed, body, {"token": "x"})  # signature alone
    auth.verify(path, "POST", {}, body, {"token": SECRET})  # token alone
    auth.verify(path, "POST", {"x-webhook-secret": SECRET}, body, {})  # header, any case
    # a bad signature is not rescued by nothing, but is by the right secret
    bad = {**signed, SIGNATURE_HEADER: signed[SIGNATURE_HEADER][::-1]}
    with pytest.raises(WebhookAuthError) as info:
        auth.verify(path, "POST", bad, body, {})
    assert info.value.status == 403
    assert SECRET not in info.value.reason and signed[SIGNATURE_HEADER] not in info.value.reason
    auth.verify(path, "POST", bad, body, {"token": SECRET})
    # nothing at all: 401 (with credentials configured, allow_unauthenticated does not apply)
    with pytest.raises(WebhookAuthError) as info:
        auth.verify(path, "POST", {DATE_HEADER: _date()}, body, {})
    assert info.value.status == 401
    with pytest.raises(WebhookAuthError) as info:
        auth.verify(path, "POST", {}, body, {"token": "wrong"})
    assert info.value.status == 403
    assert "wrong" not in info.value.reason.replace("secret: wrong token", "")


def test_auth_checks_date_freshness_with_the_configured_skew(key: SigningKey) -> None:
    auth = WebhookAuth(key.public_key_b64, None, max_skew=30.0, allow_unauthenticated=False)
    body = mo_body()
    headers = key.headers("POST", MESSAGES_PATH, body, date=_date(-20))
    auth.verify(MESSAGES_PATH, "POST", headers, body, {})
    headers = key.headers("POST", MESSAGES_PATH, body, date=_date(-60))
    with pytest.raises(WebhookAuthError) as info:
        auth.verify(MESSAGES_PATH, "POST", headers, body, {})
    assert info.value.status == 403 and "stale" in info.value.reason


def test_auth_refuses_a_key_that_is_not_one() -> None:
    with pytest.raises(ValueError, match="public key"):
        WebhookAuth("bm90IGEga2V5", None, 300.0, False)


# ------------------------------------------------------------------ row 12: bad input


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1000):
        yield data[start : start + 1000]


BAD_INPUT: list[tuple[str, str, bytes, dict[str, str], int, str | None]] = [
    ("oversized", MESSAGES_PATH, b"{" + b" " * MAX_BODY + b"}", JSON, 413, "body too large"),
    ("text/plain", MESSAGES_PATH, mo_body(), {"Content-Type": "text/plain"}, 415, None),
    ("xml", RECEIPTS_PATH, b"<payload/>", {"Content-Type": "application/xml"}, 415, None),
    ("no content type", MESSAGES_PATH, mo_body(), {}, 415, None),
    ("bad charset", MESSAGES_PATH, mo_body(), {"Content-Type": "application/json; charset=nope"}, 415, None),
    ("malformed", MESSAGES_PATH, b'{"reply_id": "r', JSON, 400, "invalid JSON"),
    ("empty", CALLBACK_PATH, b"", JSON, 400, "invalid JSON"),
    ("not utf-8", MESSAGES_PATH, b'{"content": "\xff\xfe"}', JSON, 400, "invalid JSON"),
    ("deep", MESSAGES_PATH, b"[" * 1500 + b"]" * 1500, JSON, 400, "invalid JSON"),
    ("huge int", MESSAGES_PATH, b'{"a": ' + b"9" * 4400 + b"}", JSON, 400, "invalid JSON"),
    ("bad form", MESSAGES_PATH, b"content=\xff", {"Content-Type": "application/x-www-form-urlencoded"}, 400, "invalid form body"),
    ("array", MESSAGES_PATH, b"[]", JSON, 422, "payload must be a JSON object"),
    ("string", RECEIPTS_PATH, b'"hi"', JSON, 422, "payload must be a JSON object"),
    ("null", CALLBACK_PATH, b"null", JSON, 422, "payload must be a JSON object"),
    ("no source", MESSAGES_PATH, b'{"content": "hi"}', JSON, 422, None),
    ("no content", MESSAGES_PATH, b'{"source_number": "+61491570156"}', JSON, 422, None),
    ("receipt without status", RECEIPTS_PATH, b'{"message_id": "m"}', JSON, 422, None),
    ("receipt without id", RECEIPTS_PATH, b'{"status": "delivered"}', JSON, 422, None),
    ("wrong types", RECEIPTS_PATH, b'{"message_id": "m", "status": null, "status_code": ["220"]}', JSON, 422, None),
    ("rcs nonsense", MESSAGES_PATH, b'{"source_number": "+61491570156", "contact_message": {"x": 1}}', JSON, 422, None),
    ("rcs wrong type", CALLBACK_PATH, b'{"reply_id": "r", "source_number": "+61491570156", "contact_message": {"text_message": ["hi"]}}', JSON, 422, None),
]  # fmt: skip


async def test_bad_input_gets_a_short_4xx_and_writes_nothing(
    make_gateway: Gateway, redis: Redis
) -> None:
    gw = await make_gateway(open_auth())
    for name, path, body, headers, status, message in BAD_INPUT:
        response = await gw.post(path, data=body, headers=headers)
        assert response.status == status, name
        answer = await response.json()
        assert set(answer) == {"error"} and len(answer["error"]) <= 200, name
        if message is not None:
            assert answer["error"] == message, name
    # a chunked body (no Content-Length) over the limit is cut off after max_body + 1 bytes
    response = await gw.post(MESSAGES_PATH, data=_chunks(b"x" * (MAX_BODY * 3)), headers=JSON)
    assert response.status == 413
    assert await redis.dbsize() == 0


async def test_parser_errors_of_any_kind_never_become_a_5xx(
    make_gateway: Gateway, redis: Redis
) -> None:
    gw = await make_gateway(open_auth())
    # "²".isdigit() is true but int("²") fails: a ValueError that is not a PayloadError
    body = json.loads(dr_body("d-odd"))
    body["billing_units"] = "²"
    response = await gw.post(RECEIPTS_PATH, data=json.dumps(body), headers=JSON)
    assert response.status in (200, 422)
    if response.status == 422:
        assert await response.json() == {"error": "invalid payload"}
        assert await redis.dbsize() == 0


# Every shape the parsers accept, as the provider (or the sandbox) sends it, valid.
_H = "+61491570601"
_META = {GW_CONVERSATION: f"{OURS}:{_H}", "k": "v"}
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "mo template": (
        MESSAGES_PATH,
        {
            "content": "Y",
            "message_id": "m-1",
            "type": "SMS",
            "reply_id": "shape-mo-tpl",
            "date_received": "2024-05-01T09:30:00.000Z",
            "source_address": _H,
            "destination_address": OURS,
            "attachments": [],
            "metadata": [{"metadata_key": k, "metadata_value": v} for k, v in _META.items()],
        },
    ),
    "mo sample": (
        MESSAGES_PATH,
        {
            "account_id": "acct",
            "reply_id": "shape-mo-sample",
            "destination_number": OURS,
            "source_number": _H,
            "date_received": "2024-05-01T09:30:00.000Z",
            "content": "Y",
            "metadata": _META,
        },
    ),
    "mms sample": (
        MESSAGES_PATH,
        {
            "reply_id": "shape-mms",
            "source_number": _H,
            "destination_number": OURS,
            "attachments": [{"content_type": "image/png", "content": PNG, "original_name": "a"}],
        },
    ),
    "rcs template": (
        MESSAGES_PATH,
        {
            "reply_id": "shape-rcs",
            "source_address": _H,
            "type": "RCS",
            "contact_message": {"choice_response_message": {"postback_data": "Tue"}},
        },
    ),
    "opt-out sample": (
        MESSAGES_PATH,
        {"notification_id": "shape-stop", "source_number": _H, "content": "STOP"},
    ),
    "reply push": (
        CALLBACK_PATH,
        {
            "metadata": _META,
            "message_id": "m-1",
            "reply_id": "shape-reply",
            "date_received": "2024-05-01T09:30:00.000Z",
            "destination_number": OURS,
            "source_number": _H,
            "vendor_account_id": {"vendor_id": "v", "account_id": "a"},
            "content": "Y",
        },
    ),
    "dr template": (
        RECEIPTS_PATH,
        {
            "delivery_report_id": "shape-dr-tpl",
            "status_code": "220",
            "status": "delivered",
            "type": "SMS",
            "message_id": "m-1",
            "source_address": _H,
            "content": "Reply Y",
            "attachments": [],
            "metadata": [
                {"metadata_key": GW_CONVERSATION, "metadata_value": _META[GW_CONVERSATION]}
            ],
        },
    ),
    "dr push": (
        CALLBACK_PATH,
        {
            "delivery_report_id": "shape-dr-push",
            "source_number": _H,
            "status": "delivered",
            "delay": 0,
            "billing_units": 1,
            "original_text": "Reply Y",
            "message_id": "m-1",
            "vendor_account_id": {"vendor_id": "v", "account_id": "a"},
            "error_code": "220",
            "metadata": _META,
        },
    ),
}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
FORM_JSON_FIELDS = ("metadata", "attachments", "vendor_account_id", "contact_message")
LONG = "9" * 20_000


def _junk(shape: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """The shape spoiled one field at a time (``name, value, payload``): wrong types, junk
    numbers, oversized values."""
    numbers = [k for k in shape if k.startswith(("source_", "destination_"))]
    ids = [k for k in shape if k in ("reply_id", "notification_id", "message_id")]
    ids += [k for k in shape if k == "delivery_report_id"]
    texts = [k for k in shape if k in ("content", "original_text")]
    variants: list[tuple[str, Any, dict[str, Any]]] = []

    def spoil(name: str, value: Any) -> None:
        variants.append((name, value, {**shape, name: value}))

    for name in numbers:
        for value in (
            [],
            {},
            ["+61491570156"],
            61491570601,
            LONG,
            "not a number!",
            "+6149157",
            "[]",
            "+61 491 570 601",
        ):
            spoil(name, value)
    for name in ids:
        for value in ([], {"a": 1}, 7, "x" * 101, "line\nbreak"):
            spoil(name, value)
    for name in texts:
        for value in ([], {}, 5, "x" * 5001):
            spoil(name, value)
    for value in (
        "junk",
        [1],
        {"k": []},
        {"k": "x" * 257},
        {"": "v"},
        {f"k{i}": "v" for i in range(11)},
        {GW_CONVERSATION: "default:[]"},
        {GW_CONVERSATION: f"{{}}:{_H}"},
    ):
        spoil("metadata", value)
    if "delivery_report_id" not in shape:  # receipts read no attachments or RCS content
        for value in ("junk", [1], {"content": PNG}):
            spoil("attachments", value)
        rcs = {"text_message": {"text": []}}, {"choice_response_message": {"postback_data": [1]}}
        for value in ("junk", [], *rcs):
            spoil("contact_message", value)
    for name in ("date_received", "type"):
        spoil(name, [])
    spoil("vendor_account_id", "junk")
    if "vendor_account_id" not in shape:  # else the top-level account_id is not read
        spoil("account_id", [])
    if "status" in shape:
        for value in ([], {}, "x" * 101):
            spoil("status", value)
        spoil("status_code", ["220"])
        spoil("billing_units", [1])
    return variants


def _form(payload: dict[str, Any]) -> str:
    return urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in payload.items()})


async def test_junk_fields_in_every_shape_get_422_and_store_nothing(
    make_gateway: Gateway, redis: Redis
) -> None:
    gw = await make_gateway(open_auth(), max_body=64 * 1024)  # the default: 20 kB fits
    checked = 0
    for shape_name, (path, shape) in SHAPES.items():
        for name, value, payload in _junk(shape):
            encodings = [("json", json.dumps(payload), JSON)]
            # A form's fields are strings ("5", "[]" are fine texts and ids), but for the
            # structured ones, sent as JSON; a junk number is junk in any encoding.
            number = name.startswith(("source_", "destination_")) and not isinstance(value, int)
            if isinstance(value, str) or name in FORM_JSON_FIELDS or number:
                encodings.append(("form", _form(payload), FORM))
            for encoding, body, headers in encodings:
                response = await gw.post(path, data=body, headers=headers)
                where = f"{shape_name} ({encoding}): {name}={str(value)[:30]!r}"
                assert response.status == 422, (where, await response.text())
                answer = await response.json()
                assert set(answer) == {"error"} and len(answer["error"]) <= 200, where
                checked += 1
    assert checked > 500
    assert await redis.dbsize() == 0
    # the shapes themselves are fine, in JSON and as forms
    for shape_name, (path, shape) in SHAPES.items():
        response = await gw.post(path, data=json.dumps(shape), headers=JSON)
        assert response.status == 200, (shape_name, await response.text())
        response = await gw.post(path, data=_form(shape), headers=FORM)
        assert response.status == 200, (shape_name, await response.text())
    conversations = {e.conversation for e in await stored(redis)}
    assert conversations == {f"{OURS}:{_H}", f"default:{_H}"}, conversations


async def test_checks_run_in_order_size_auth_type_syntax_shape(
    make_gateway: Gateway, redis: Redis
) -> None:
    gw = await make_gateway(secret_auth())
    too_big = b"x" * (MAX_BODY + 1)
    assert (await gw.post(MESSAGES_PATH, data=too_big, headers=JSON)).status == 413
    assert (await gw.post(MESSAGES_PATH, data=b"{", headers=JSON)).status == 401
    good = {"X-Webhook-Secret": SECRET}
    plain = {**good, "Content-Type": "text/plain"}
    assert (await gw.post(MESSAGES_PATH, data=b"{", headers=plain)).status == 415
    assert (await gw.post(MESSAGES_PATH, data=b"{", headers={**good, **JSON})).status == 400
    assert (await gw.post(MESSAGES_PATH, data=b"[]", headers={**good, **JSON})).status == 422
    assert await redis.dbsize() == 0
    exactly = mo_body() + b" " * (MAX_BODY - len(mo_body()))  # the limit itself is fine
    assert (await gw.post(MESSAGES_PATH, data=exactly, headers={**good, **JSON})).status == 200


async def test_json_charset_and_form_encodings(make_gateway: Gateway, redis: Redis) -> None:
    gw = await make_gateway(open_auth())
    handset = "+61491570401"
    latin = json.dumps({"reply_id": "lat", "source_number": handset, "content": "café"})
    response = await gw.post(
        MESSAGES_PATH,
        data=latin.encode("latin-1"),
        headers={"Content-Type": "application/json; charset=ISO-8859-1"},
    )
    assert response.status == 200
    form = urlencode(
        {
            "reply_id": "frm",
            "source_number": handset,
            "content": '["not", "a", "list"]',  # a text that looks like JSON stays text
            "metadata": json.dumps({GW_CONVERSATION: f"{OURS}:{handset}", "k": "v"}),
        }
    )
    form_type = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    response = await gw.post(MESSAGES_PATH, data=form, headers=form_type)
    assert response.status == 200
    # a FORM_ENCODED webhook with a JSON template sends JSON under the form type
    response = await gw.post(MESSAGES_PATH, data=mo_body("tpl", handset), headers=form_type)
    assert response.status == 200
    by_id = {e.event.event_id: e.event for e in await stored(redis)}
    latin_event = by_id["lat"]
    form_event = by_id["frm"]
    assert isinstance(latin_event, InboundMessage) and latin_event.content == "café"
    assert isinstance(form_event, InboundMessage)
    assert form_event.content == '["not", "a", "list"]'
    assert form_event.metadata == {GW_CONVERSATION: f"{OURS}:{handset}", "k": "v"}
    assert "tpl" in by_id


async def test_lone_surrogates_are_replaced_not_refused(
    make_gateway: Gateway, redis: Redis
) -> None:
    gw = await make_gateway(open_auth())
    handset = "+61491570402"
    body = {"reply_id": "sur\ud800", "source_number": handset, "content": "broken \ud83d emoji"}
    response = await gw.post(MESSAGES_PATH, data=json.dumps(body), headers=JSON)
    assert response.status == 200
    utf16 = json.dumps({**body, "reply_id": "utf16"}).encode("utf-16")
    response = await gw.post(MESSAGES_PATH, data=utf16, headers=JSON)
    assert response.status == 200
    form = urlencode(
        {"reply_id": "f", "source_number": handset, "content": "x", "metadata": '{"k": "\\udc00"}'}
    )
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await gw.post(MESSAGES_PATH, data=form, headers=form_type)).status == 200
    by_id = {e.event.event_id: e.event for e in await stored(redis)}
    assert set(by_id) == {"sur\ufffd", "utf16", "f"}
    event = by_id["utf16"]
    assert isinstance(event, InboundMessage) and event.content == "broken \ufffd emoji"
    assert by_id["f"].metadata == {"k": "\ufffd"}


async def test_a_receipt_posted_to_the_messages_url_stays_a_receipt(
    make_gateway: Gateway, redis: Redis
) -> None:
    gw = await make_gateway(open_auth())
    response = await gw.post(MESSAGES_PATH, data=dr_body("d-mis"), headers=JSON)
    assert response.status == 200
    [entry] = await stored(redis)
    assert isinstance(entry.event, DeliveryReceipt) and entry.kind == "receipt"


# ------------------------------------------------------------------ row 4: Redis killed


async def test_redis_down_answers_503_and_nothing_accepted_is_lost(
    make_gateway: Gateway, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = Redis.from_url(server.url, retry=Retry(NoBackoff(), 1))
    try:
        gw = await make_gateway(open_auth(), client=client)
        assert (await gw.post(MESSAGES_PATH, data=mo_body("before"), headers=JSON)).status == 200
        server.kill()
        for body in (mo_body("during"), mo_body("before"), dr_body("dr-during")):
            response = await gw.post(MESSAGES_PATH, data=body, headers=JSON)
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert await response.json() == {"error": "temporarily unavailable"}
        server.start()  # same port and data: the AOF is replayed
        answers = []
        for body in (mo_body("during"), mo_body("before"), dr_body("dr-during")):
            response = await gw.post(MESSAGES_PATH, data=body, headers=JSON)
            assert response.status == 200
            answers.append((await response.json())["status"])
        assert answers == ["accepted", "duplicate", "accepted"]
        ids = []
        for partition in range(P):
            raw: Any = await client.xrange(PartitionKeys(partition).inbox)
            for _entry_id, fields in raw:
                ids.append(InboxEvent.from_fields("0-0", fields, partition).event.event_id)
        assert sorted(ids) == ["before", "dr-during", "during"]
    finally:
        await client.aclose()
        server.stop()


# ------------------------------------------------------------------ logs


async def test_logs_name_the_event_but_no_secret_or_full_number(
    make_gateway: Gateway, key: SigningKey
) -> None:
    gw = await make_gateway(WebhookAuth(key.public_key_b64, SECRET, 300.0, False))
    handset = "+61491570556"
    body = mo_body("r-log", handset, destination_number=OURS)
    path = MESSAGES_PATH + "?token=" + quote(SECRET, safe="")
    signed = _signed(key, path, body)
    with structlog.testing.capture_logs() as logs:
        assert (await gw.post(path, data=body, headers=signed)).status == 200
        assert (await gw.post(path, data=body, headers=signed)).status == 200
        forged = key.headers("POST", path, b"other bytes")[SIGNATURE_HEADER]
        bad = {**signed, SIGNATURE_HEADER: forged}
        assert (await gw.post(MESSAGES_PATH + "?token=no", data=body, headers=bad)).status == 403
    text = repr(logs)
    for secret in (SECRET, quote(SECRET, safe=""), signed[SIGNATURE_HEADER], forged, handset):
        assert secret not in text
    accepted = next(e for e in logs if e["event"] == "webhook accepted")
    assert accepted["event_id"] == "r-log"
    assert accepted["conversation"] == f"{OURS}:{mask_phone(handset)}"
    assert accepted["partition"] == partition_of(handset, P)
    assert any(e["event"] == "webhook duplicate" for e in logs)
    refused = next(e for e in logs if e["event"] == "webhook refused")
    assert refused["status"] == 403 and "bad signature" in refused["reason"]


# ------------------------------------------------------------------ fuzzing: never a 5xx

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.text(st.characters(categories=["Cs", "Cc", "So"]), max_size=3)  # lone surrogates
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KNOWN_KEYS = (
    "reply_id", "notification_id", "delivery_report_id", "message_id", "source_number",
    "source_address", "destination_number", "destination_address", "content", "status",
    "status_code", "error_code", "billing_units", "metadata", "attachments",
    "contact_message", "format", "type", "date_received", "submitted_date",
    "vendor_account_id", "event", "original_text",
)  # fmt: skip
field_values = (
    json_values
    | st.sampled_from(["+61491570156", "delivered", "DELIVERED", "220", "MMS", "RCS", ""])
    | st.text(st.characters(categories=["Nd", "No"]), max_size=3)  # "²", "٣": digits?
    | st.fixed_dictionaries(
        {}, optional={"text_message": json_values, "choice_response_message": json_values}
    )
)
VALID: tuple[dict[str, Any], ...] = (
    {"reply_id": "r", "source_number": "+61491570156", "content": "Y"},
    {"delivery_report_id": "d", "message_id": "m", "status": "delivered", "source_number": "+61491570156"},
    {"reply_id": "r", "source_address": "+61491570156", "contact_message": {"text_message": {"text": "hi"}}},
    {"notification_id": "n", "source_number": "+61491570156", "content": "STOP"},
)  # fmt: skip
payloads = st.one_of(
    st.fixed_dictionaries({}, optional=dict.fromkeys(KNOWN_KEYS, field_values)),
    # near-valid payloads: a real shape with a few fields replaced, to reach deep paths
    st.builds(
        lambda base, changes: {**base, **changes},
        st.sampled_from(VALID),
        st.dictionaries(
            st.sampled_from(KNOWN_KEYS),
            field_values | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),
            max_size=3,
        ),
    ),
)
bodies = st.one_of(
    payloads.map(lambda p: json.dumps(p).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    payloads.map(
        lambda p: urlencode(
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in p.items()},
            errors="surrogatepass",  # a lone surrogate becomes invalid UTF-8 on the wire
        )
    ).map(str.encode),
    st.binary(max_size=200),
)
content_types = st.sampled_from(
    ["application/json"] * 4 + ["application/x-www-form-urlencoded"] * 2 + ["text/plain", ""]
)


@pytest.fixture
async def open_gateway(make_gateway: Gateway) -> TestClient[web.Request, web.Application]:
    return await make_gateway(open_auth())


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(ROUTES), body=bodies, content_type=content_types)
async def test_random_bodies_never_get_a_5xx(
    open_gateway: TestClient[web.Request, web.Application],
    path: str,
    body: bytes,
    content_type: str,
) -> None:
    gw = open_gateway  # one server for every example
    headers = {"Content-Type": content_type} if content_type else {}
    response = await gw.post(path, data=body, headers=headers)
    assert response.status < 500, await response.text()
    answer = await response.json()
    if response.status == 200:
        assert answer["status"] in ("accepted", "duplicate")
    else:
        assert response.status in (400, 413, 415, 422) and set(answer) == {"error"}


# ------------------------------------------------------------------ OpenAPI fragment


def test_openapi_fragment_documents_every_answer() -> None:
    assert set(WEBHOOK_OPENAPI_PATHS) == set(ROUTES)
    json.dumps(WEBHOOK_OPENAPI_PATHS)  # plain JSON data
    for path, item in WEBHOOK_OPENAPI_PATHS.items():
        operation = item["post"]
        assert operation["operationId"]
        assert set(operation["responses"]) == {
            "200", "400", "401", "403", "413", "415", "422", "503"
        }, path  # fmt: skip
        content = operation["requestBody"]["content"]
        assert set(content) == {"application/json", "application/x-www-form-urlencoded"}
        assert "Retry-After" in operation["responses"]["503"]["headers"]
        assert "$ref" not in json.dumps(item)
