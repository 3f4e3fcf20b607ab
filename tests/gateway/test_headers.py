"""Raw bytes in every request header the gateway process reads never get a 5xx.

Real servers over real sockets: a production gateway (API token, webhook secret and RSA
signature key, the appointments plugin's routes, the inspector) and a zero-configuration
demo gateway with its in-process sandbox provider (the simulator, the open API, the sandbox's
provider and control APIs on their own port). Requests are written byte for byte, so header
values can hold what no HTTP client library would send: bytes that are not UTF-8, UTF-8
encoded surrogates, overlong forms, line separators, a valid value with a stray byte.

aiohttp decodes header values as UTF-8 with ``surrogateescape``; each value reaches the code
that reads it (bearer token, webhook secret, signature headers, ``Date``, ``Content-Type``,
``Content-Length``, ``Host``, the sandbox's Basic and HMAC credentials, ``Account``,
``Content-MD5``) and must be answered like any other wrong value: a 4xx, never a 5xx.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from bot.app.gateway import GATEWAY, create_app
from bot.core.config import Settings
from bot.sandbox import Sandbox, SandboxConfig
from bot.sinch.auth import hmac_headers
from bot.sinch.signatures import SigningKey
from bot.storage.redis_server import RedisServer, free_port
from tests.web.demo import demo_gateway

TOKEN = "api-token-1234"
SECRET = "hook?secret"
"""The webhook secret: its ``?`` is what ``.encode("utf-8", "replace")`` makes of a bad byte."""
HANDSET = "+61491570156"
OURS = "+61491570157"

BAD_BYTES: tuple[bytes, ...] = (
    b"\xff",  # never UTF-8
    b"\xc3\x28",  # a broken two-byte sequence
    b"caf\xe9",  # Latin-1
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xc0\x80",  # an overlong NUL
    b"\xe2\x80\xa8\xc2\x85",  # line separator, next line (valid UTF-8)
    b"\x7f",  # DEL
    b"",
    b"\xff" * 3000,
)


@pytest.fixture(autouse=True)
def _no_ambient_config(no_ambient_config: None) -> None:
    """Every test here runs without ambient settings (see tests/conftest.py)."""


# ---------------------------------------------------------------------- raw HTTP


@dataclass
class Answer:
    status: int
    head: bytes
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(
    port: int, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> Answer:
    """One request written byte for byte (``Connection: close``), its answer read whole."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {target} HTTP/1.1".encode()]
        lines += [name + b": " + value for name, value in headers]
        lines.append(b"Connection: close")
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(30):  # a guard against a hang, not a measure
            data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), data[:300]
    return Answer(int(status_line.split()[1]), head, rest)


@dataclass
class Target:
    """A request that reaches a handler (correct credentials, a real route), whose headers
    are then spoiled one at a time."""

    name: str
    port: int
    method: str
    path: str
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""

    def base_headers(self) -> dict[bytes, bytes]:
        headers = {b"Host": f"127.0.0.1:{self.port}".encode(), **self.headers}
        if self.body or self.method in ("POST", "PUT"):
            headers[b"Content-Length"] = str(len(self.body)).encode()
        return headers

    def variants(self, names: Iterable[bytes]) -> Iterable[tuple[str, list[tuple[bytes, bytes]]]]:
        """``(description, headers)``: every header of ``names`` set to every bad value (the
        header this target sends, or a typical value of it, spoiled; or bare bad bytes)."""
        base = self.base_headers()
        for name in names:
            good = base.get(name) or TYPICAL.get(name, b"x")
            values = [*BAD_BYTES, good + b"\xff", b"\xff" + good, good[:3] + b"\xc3" + good[3:]]
            values += SPECIAL.get(name, [])
            for value in values:
                headers = dict(base)
                headers[name] = value
                yield f"{self.name}: {name.decode()}: {value[:40]!r}", list(headers.items())


TYPICAL: dict[bytes, bytes] = {
    b"Authorization": f"Bearer {TOKEN}".encode(),
    b"X-Webhook-Secret": SECRET.encode(),
    b"Date": email.utils.formatdate(usegmt=True).encode(),
    b"Content-Type": b"application/json; charset=utf-8",
    b"Content-Length": b"2",
    b"X-MessageMedia-Signature": base64.b64encode(b"x" * 256),
    b"X-MessageMedia-Digest-Type": b"SHA256",
    b"X-MessageMedia-Cipher-Type": b"RSA",
    b"X-MessageMedia-Key-Id": b"4a4f7d8a-0000-4000-8000-000000000000",
    b"X-Forwarded-For": b"127.0.0.1",
    b"X-Forwarded-Host": b"127.0.0.1",
    b"X-Forwarded-Proto": b"https",
    b"Forwarded": b"for=127.0.0.1;proto=https",
    b"Account": b"acct-1",
    b"Content-MD5": b"1B2M2Y8AsgTpgAmY7PhCfg==",
    b"x-Content-MD5": b"1B2M2Y8AsgTpgAmY7PhCfg==",
}


def _basic(credentials: bytes) -> bytes:
    return b"Basic " + base64.b64encode(credentials)


_HMAC = b'hmac username="sandbox-key", algorithm="hmac-sha256", headers="Date request-line", '
SPECIAL: dict[bytes, list[bytes]] = {
    b"Authorization": [
        b"Bearer T\xff",
        b"Bearer " + TOKEN.encode() + b"\xff",
        b"Bearer " + TOKEN.encode()[:-1] + b"\xc3\xa9",
        b"bearer \xe2\x80\xa8",
        _basic(b"sandbox-key:sandbox-s\xc3\xa9cret"),  # valid UTF-8, not ASCII
        _basic(b"sandbox-key:\xff"),
        _basic(b"\xff:\xff"),
        _HMAC + b'signature="\xff"',
        _HMAC + b'signature="s\xc3\xa9"',
        b'hmac username="\xc3\xa9", algorithm="hmac-sha256", headers="Date request-line", '
        b'signature="x"',
    ],
    b"X-Webhook-Secret": [SECRET.replace("?", "\udcff").encode("utf-8", "surrogateescape")],
    b"Content-Type": [
        b"application/json; charset=\xff",
        b"application/json; charset=utf-8\xff",
        b"application/x-www-form-urlencoded; charset=\xc3\xa9",
        b"\xff/\xff",
        b'application/json; charset="utf-8',
    ],
    b"Content-Length": [b"1\xff", b"\xd9\xa1", b"-1", b"99999999999999999999"],
    b"Host": [b"127.0.0.1:\xff", b"[\xff]:80", b"\xff:8080", b"xn--\xff", b"[::1"],
}

GENERIC_HEADERS: tuple[bytes, ...] = (
    b"Host",
    b"Authorization",
    b"Content-Type",
    b"Content-Length",
    b"Date",
    b"X-Forwarded-For",
    b"X-Forwarded-Host",
    b"X-Forwarded-Proto",
    b"Forwarded",
)
WEBHOOK_HEADERS: tuple[bytes, ...] = (
    *GENERIC_HEADERS,
    b"X-Webhook-Secret",
    b"X-MessageMedia-Signature",
    b"X-MessageMedia-Digest-Type",
    b"X-MessageMedia-Cipher-Type",
    b"X-MessageMedia-Key-Id",
)
SANDBOX_HEADERS: tuple[bytes, ...] = (
    *GENERIC_HEADERS,
    b"Account",
    b"Content-MD5",
    b"x-Content-MD5",
)


async def assert_no_5xx(targets: Sequence[tuple[Target, Sequence[bytes]]]) -> int:
    """Send every variant of every target (a few at a time); fail on any 5xx."""
    failures: list[str] = []
    limit = asyncio.Semaphore(8)
    count = 0

    async def one(target: Target, what: str, headers: list[tuple[bytes, bytes]]) -> None:
        async with limit:
            answer = await raw_request(
                target.port, target.method, target.path, headers, target.body
            )
        if answer.status >= 500:
            failures.append(f"{what} → {answer.status} {answer.body[:200]!r}")

    jobs = []
    for target, names in targets:
        for what, headers in target.variants(names):
            jobs.append(one(target, what, headers))
            count += 1
    await asyncio.gather(*jobs)
    assert not failures, f"{len(failures)} of {count} requests got a 5xx:\n" + "\n".join(
        failures[:40]
    )
    return count


# ---------------------------------------------------------------------- gateways


@dataclass
class Production:
    port: int
    key: SigningKey
    sandbox: Sandbox


@asynccontextmanager
async def production_gateway(redis_server: RedisServer) -> AsyncIterator[Production]:
    """Every credential configured, HTTP only (what arrives stays queued), the appointments
    plugin's routes, a sandbox provider on its own port."""
    key = SigningKey.generate()
    port = free_port()
    async with Sandbox(SandboxConfig(port=0, step_delay=0.01, time_scale=0.01)) as sandbox:
        settings = Settings(
            _env_file=None,
            redis_url=redis_server.url,
            base_url=sandbox.url,
            api_key=sandbox.api_key,
            api_secret=sandbox.api_secret,
            webhook_secret=SECRET,
            webhook_public_key=key.public_key_b64,
            api_token=TOKEN,
            port=port,
            partitions=2,
            plugins="appointments",
        )
        app = create_app(settings, role="web")
        assert app[GATEWAY].bot is not None
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            yield Production(port, key, sandbox)
        finally:
            await runner.cleanup()


JSON = {b"Content-Type": b"application/json"}
BEARER = {b"Authorization": f"Bearer {TOKEN}".encode()}


def mo(reply_id: str) -> bytes:
    return json.dumps({"reply_id": reply_id, "source_number": HANDSET, "content": "Y"}).encode()


def production_targets(gw: Production) -> list[tuple[Target, Sequence[bytes]]]:
    port = gw.port
    dr = json.dumps(
        {
            "delivery_report_id": "fuzz-dr",
            "message_id": "m-1",
            "status": "delivered",
            "source_number": HANDSET,
        }
    ).encode()
    signed = {
        name.encode(): value.encode()
        for name, value in gw.key.headers("POST", "/webhooks/receipts", dr).items()
    }
    appointment = json.dumps({"phone": "not a phone", "name": "A", "starts_at": "x"}).encode()
    send = json.dumps({"to": HANDSET, "content": "hello"}).encode()
    api = [
        Target("api list", port, "GET", "/api/conversations", BEARER),
        Target("api send", port, "POST", "/api/messages", {**BEARER, **JSON}, send),
        Target("api message", port, "GET", "/api/messages/abc?provider=0", BEARER),
        Target("api senders", port, "GET", "/api/senders", BEARER),
        Target("appointments", port, "GET", "/api/appointments", BEARER),
        Target("appointment", port, "POST", "/api/appointments", {**BEARER, **JSON}, appointment),
        Target("inspector stats", port, "GET", "/inspector/api/stats", BEARER),
        Target("inspector list", port, "GET", "/inspector/api/conversations", BEARER),
        Target("inspector page", port, "GET", "/inspector"),
        Target("static", port, "GET", "/web/static/web.js"),
        Target("metrics", port, "GET", "/metrics"),
        Target("healthz", port, "GET", "/healthz"),
        Target("readyz", port, "GET", "/readyz"),
        Target("openapi", port, "GET", "/api/openapi.json"),
        Target("not found", port, "GET", "/nowhere"),
    ]
    hooks = [
        Target(
            "webhook secret",
            port,
            "POST",
            "/webhooks/messages",
            {b"X-Webhook-Secret": SECRET.encode(), **JSON},
            mo("fuzz-mo"),
        ),
        Target("webhook signed", port, "POST", "/webhooks/receipts", {**signed, **JSON}, dr),
        Target(
            "webhook token",
            port,
            "POST",
            "/webhooks/callback?token=hook%3Fsecret",
            {b"Content-Type": b"application/x-www-form-urlencoded"},
            f"reply_id=fuzz-cb&source_number=%2B{HANDSET[1:]}&content=Y".encode(),
        ),
    ]
    return [(t, GENERIC_HEADERS) for t in api] + [(t, WEBHOOK_HEADERS) for t in hooks]


def demo_targets(port: int, sandbox_port: int) -> list[tuple[Target, Sequence[bytes]]]:
    handset = "/simulator/api/handsets/%2B61491570156"
    not_ours = json.dumps({"content": "x", "to": "+61400000000"}).encode()
    gateway = [
        Target("demo api list", port, "GET", "/api/conversations"),
        Target("demo api send", port, "POST", "/api/messages", JSON, b'{"to": "x"}'),
        Target("simulator page", port, "GET", "/simulator"),
        Target("simulator info", port, "GET", "/simulator/api/info"),
        Target("simulator view", port, "GET", handset),
        Target("simulator rcs", port, "PUT", handset, JSON, b'{"rcs": true}'),
        Target("simulator send", port, "POST", handset + "/messages", JSON, not_ours),
        Target("demo webhook", port, "POST", "/webhooks/messages", JSON, mo("demo-mo")),
        Target("demo inspector", port, "GET", "/inspector/api/stats"),
    ]
    basic = {b"Authorization": _basic(b"sandbox-key:sandbox-secret")}
    signed = {
        name.encode(): value.encode()
        for name, value in hmac_headers(
            "sandbox-key", "sandbox-secret", method="GET", path_qs="/v1/replies", body=b""
        ).items()
    }
    bad_send = json.dumps({"messages": [{"content": "x", "destination_number": "1"}]}).encode()
    sandbox = [
        Target("sandbox send", sandbox_port, "POST", "/v1/messages", {**basic, **JSON}, bad_send),
        Target("sandbox message", sandbox_port, "GET", "/v1/messages/none", basic),
        Target("sandbox reports", sandbox_port, "GET", "/v1/delivery_reports", basic),
        Target("sandbox hmac", sandbox_port, "GET", "/v1/replies", signed),
        Target("sandbox senders", sandbox_port, "GET", "/v1/int-crm/integrations/account", basic),
        Target(
            "sandbox handset",
            sandbox_port,
            "POST",
            "/_sandbox/handsets/%2B61491570156/messages",
            JSON,
            b'{"content": "x", "to": "+61400000000"}',
        ),
        Target("sandbox stats", sandbox_port, "GET", "/_sandbox/stats"),
    ]
    return [(t, GENERIC_HEADERS) for t in gateway] + [(t, SANDBOX_HEADERS) for t in sandbox]


# ---------------------------------------------------------------------- tests


async def test_a_non_utf8_bearer_token_is_a_401_on_the_api_and_the_inspector(
    redis: Redis, redis_server: RedisServer
) -> None:
    async with production_gateway(redis_server) as gw:
        for path in ("/api/conversations", "/inspector/api/stats", "/api/appointments"):
            for value in (b"Bearer T\xff", b"Bearer " + TOKEN.encode() + b"\xed\xa0\x80"):
                headers = [(b"Host", b"127.0.0.1"), (b"Authorization", value)]
                answer = await raw_request(gw.port, "GET", path, headers, b"")
                assert answer.status == 401, (path, value, answer)
                assert answer.json() == {"error": "unauthorized"}
            # the right token, as UTF-8 bytes, is still the right token
            headers = [(b"Host", b"127.0.0.1"), (b"Authorization", f"Bearer {TOKEN}".encode())]
            assert (await raw_request(gw.port, "GET", path, headers, b"")).status == 200


async def test_a_bad_byte_never_matches_the_webhook_secret(
    redis: Redis, redis_server: RedisServer
) -> None:
    async with production_gateway(redis_server) as gw:
        # "hook\xffsecret" is not "hook?secret" (what a lossy decoding would compare)
        forged = SECRET.replace("?", "\udcff").encode("utf-8", "surrogateescape")

        async def push(secret: bytes) -> Answer:
            body = mo("r-1")
            headers = [
                (b"Host", b"127.0.0.1"),
                (b"Content-Type", b"application/json"),
                (b"Content-Length", str(len(body)).encode()),
                (b"X-Webhook-Secret", secret),
            ]
            return await raw_request(gw.port, "POST", "/webhooks/messages", headers, body)

        assert (await push(forged)).status == 403
        assert await redis.dbsize() == 0
        assert (await push(SECRET.encode())).status == 200


async def test_raw_bytes_in_any_header_of_the_production_gateway_never_get_a_5xx(
    redis: Redis, redis_server: RedisServer
) -> None:
    async with production_gateway(redis_server) as gw:
        assert await assert_no_5xx(production_targets(gw)) > 2000


async def test_raw_bytes_in_any_header_of_the_demo_and_its_sandbox_never_get_a_5xx(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with demo_gateway(redis_server.url, tmp_path / "data") as demo:
        sandbox = demo.gateway.sandbox
        assert sandbox is not None
        port = int(demo.url.rsplit(":", 1)[1])
        sandbox_port = int(sandbox.url.rsplit(":", 1)[1])
        assert await assert_no_5xx(demo_targets(port, sandbox_port)) > 1000
