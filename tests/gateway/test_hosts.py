"""The open demo answers only to its own hosts (DNS rebinding), over real HTTP against a real
demo gateway; outside the demo, any host unless SINCHBOT_ALLOWED_HOSTS is set."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from bot.app.gateway import create_app
from bot.app.hosts import MISDIRECTED, allowed_names, host_allowed, host_name
from bot.core.config import ConfigError, Settings, load_settings
from bot.sandbox import Sandbox, SandboxConfig
from bot.storage.redis_server import RedisServer, free_port
from tests.gateway.test_headers import Answer, raw_request
from tests.web.demo import demo_gateway

HANDSET = "+61491570156"


@pytest.fixture(autouse=True)
def _no_ambient_config(no_ambient_config: None) -> None:
    """Every test here runs without ambient settings (see tests/conftest.py)."""


async def request(
    port: int, method: str, path: str, host: bytes | None, body: Any = None
) -> Answer:
    headers = [] if host is None else [(b"Host", host)]
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        headers += [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(data))]
    return await raw_request(port, method, path, headers, data)


def mo(reply_id: str) -> dict[str, str]:
    return {"reply_id": reply_id, "source_number": HANDSET, "content": "hi"}


async def test_the_demo_refuses_other_hosts_and_does_nothing_for_them(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with demo_gateway(
        redis_server.url,
        tmp_path / "data",
        public_url="https://demo.example.org:8443",
        allowed_hosts="Laptop.Local, bot.internal.",
    ) as demo:
        port = int(demo.url.rsplit(":", 1)[1])
        for host in (b"evil.example", b"evil.example:%d" % port, b"127.0.0.1.nip.io", b"x\xff"):
            for method, path, body in (
                ("GET", "/api/conversations", None),
                ("POST", "/api/messages", {"to": HANDSET, "content": "rebound"}),
                ("GET", "/simulator/api/info", None),
                ("POST", "/webhooks/messages", mo("rebound")),
                ("GET", "/inspector/api/stats", None),
                ("GET", "/simulator", None),
            ):
                answer = await request(port, method, path, host, body)
                assert answer.status == 421, (host, path, answer)
                assert answer.json() == {"error": MISDIRECTED}
        # nothing was stored or queued: the same webhook is new, no send was recorded
        answer = await request(port, "GET", "/api/conversations", b"localhost")
        assert answer.status == 200 and answer.json() == {"conversations": []}
        answer = await request(port, "POST", "/webhooks/messages", b"127.0.0.1", mo("rebound"))
        assert answer.json() == {"status": "accepted"}
        for host in (
            b"127.0.0.1:%d" % port,
            b"localhost:%d" % port,
            b"LOCALHOST.",
            b"app.localhost",
            b"[::1]:%d" % port,
            b"192.168.1.20:%d" % port,  # an address: not a rebinding
            b"demo.example.org:8443",  # SINCHBOT_PUBLIC_URL
            b"laptop.local:%d" % port,  # SINCHBOT_ALLOWED_HOSTS
            b"bot.internal",
        ):
            answer = await request(port, "GET", "/api/conversations", host)
            assert answer.status == 200, (host, answer)


@asynccontextmanager
async def production(redis_server: RedisServer, **values: Any) -> AsyncIterator[int]:
    port = free_port()
    async with Sandbox(SandboxConfig(port=0)) as sandbox:
        settings = Settings(
            _env_file=None,
            redis_url=redis_server.url,
            base_url=sandbox.url,
            api_key=sandbox.api_key,
            api_secret=sandbox.api_secret,
            api_token="token-1234",
            port=port,
            partitions=2,
            **values,
        )
        runner = web.AppRunner(create_app(settings, role="web"), handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            yield port
        finally:
            await runner.cleanup()


async def test_outside_the_demo_any_host_unless_allowed_hosts_is_set(
    redis: Redis, redis_server: RedisServer
) -> None:
    async with production(redis_server) as port:
        for host in (b"gateway.example.com", b"10.0.0.7:8080", b"anything"):
            assert (await request(port, "GET", "/healthz", host)).status == 200
    async with production(redis_server, allowed_hosts="gateway.example.com") as port:
        assert (await request(port, "GET", "/healthz", b"gateway.example.com")).status == 200
        assert (await request(port, "GET", "/healthz", b"10.0.0.7:8080")).status == 200
        assert (await request(port, "GET", "/healthz", b"other.example.com")).status == 421


def test_host_names_and_the_allowed_set() -> None:
    assert host_name("Example.COM.:8080") == "example.com"
    assert host_name("[::1]:80") == "::1"
    assert host_name("127.0.0.1") == "127.0.0.1"
    for bad in ("", ":80", "a:b:c", "[::1", "a b", "http://x", "a/b"):
        assert host_name(bad) is None, bad
    settings = Settings(
        _env_file=None, host="box.lan", public_url="http://Public.Example:9", allowed_hosts=""
    )
    assert allowed_names(settings) == {"box.lan", "public.example"}
    names = allowed_names(settings)
    assert host_allowed("box.lan:8080", names)
    assert not host_allowed("lan", names)
    assert not host_allowed("localhost.evil.example", names)
    assert host_allowed("anything.example", frozenset({"*"}))


def test_allowed_hosts_setting_is_checked() -> None:
    assert load_settings(_env_file=None, allowed_hosts=" A.example , b ,").allowed_host_list == [
        "a.example",
        "b",
    ]
    assert load_settings(_env_file=None, allowed_hosts="*").allowed_host_list == ["*"]
    for bad in ("http://a.example", "a.example:8080", "a b", "a/b", "-a"):
        with pytest.raises(ConfigError, match="SINCHBOT_ALLOWED_HOSTS"):
            load_settings(_env_file=None, allowed_hosts=bad)
