"""Fixtures for the sandbox tests: a sandbox on a real socket, an HTTP client for it, and a
receiver (a small aiohttp server on 127.0.0.1) that records every push the sandbox makes."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.sandbox import Sandbox, SandboxConfig

HANDSET = "+61491570156"
OTHER_HANDSET = "+61491570158"
OUR_NUMBER = "+61491570157"

FAST = {"step_delay": 0.5, "time_scale": 0.01}
"""Receipt steps of 5 ms, callback retries from 5 ms, webhook retry_delay 5 s → 50 ms."""


@dataclass
class Captured:
    """One request the receiver got."""

    method: str
    path: str
    path_qs: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Records pushes; answers 200 unless told to fail."""

    def __init__(self) -> None:
        self.requests: list[Captured] = []
        self.failures: deque[int] = deque()
        self.always: int | None = None
        self.url = ""

    def url_for(self, path: str = "/hook") -> str:
        return self.url + path

    def fail_next(self, count: int, status: int = 500) -> None:
        self.failures.extend([status] * count)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            Captured(
                method=request.method,
                path=request.path,
                path_qs=request.raw_path,
                headers=dict(request.headers),
                body=await request.read(),
            )
        )
        if self.always is not None:
            return web.Response(status=self.always)
        if self.failures:
            return web.Response(status=self.failures.popleft())
        return web.Response(status=200, text="ok")

    def at(self, path: str) -> list[Captured]:
        return [r for r in self.requests if r.path == path]

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r.json() for r in self.requests if path is None or r.path == path]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield rec
    await runner.cleanup()


SandboxFactory = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def make_sandbox() -> AsyncIterator[SandboxFactory]:
    """Start sandboxes with config changes (``await make_sandbox(signing=True)``)."""
    started: list[Sandbox] = []

    async def make(**changes: Any) -> Sandbox:
        sandbox = Sandbox(SandboxConfig(**{**FAST, **changes}))
        await sandbox.start()
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        await sandbox.stop()


@pytest.fixture
async def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    return await make_sandbox()


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client with Basic credentials for the sandbox."""
    async with httpx.AsyncClient(
        base_url=sandbox.url, auth=(sandbox.api_key, sandbox.api_secret), timeout=10
    ) as client:
        yield client


def sms(destination: str = HANDSET, content: str = "Hello", **fields: Any) -> dict[str, Any]:
    """One message of ``POST /v1/messages``."""
    return {"content": content, "destination_number": destination, **fields}


async def send(http: httpx.AsyncClient, *messages: dict[str, Any]) -> list[dict[str, Any]]:
    """Send messages, assert 202, return the accepted message objects."""
    response = await http.post("/v1/messages", json={"messages": list(messages)})
    assert response.status_code == 202, response.text
    accepted: list[dict[str, Any]] = response.json()["messages"]
    return accepted


RANK = {"enroute": 1, "submitted": 2}


def by_rank(reports: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(status, code) pairs of delivery reports in progress order."""
    ordered = sorted(reports, key=lambda r: (RANK.get(r["status"], 3), r["date_received"]))
    return [(r["status"], r.get("error_code") or r.get("status_code")) for r in ordered]
