"""Shared fixtures: a real sandbox provider over HTTP and a client bound to it; a watchdog
that turns a hung async test into a failure with every task's stack."""

import asyncio
import inspect
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.sandbox import Sandbox, SandboxConfig
from bot.sinch.client import SinchClient

pytest_plugins = ["tests.redis_fixtures"]


@pytest.fixture
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings come only from the test: no inherited SINCHBOT_* variables, and a fresh
    working folder, so no ``.env`` is read."""
    for name in list(os.environ):
        if name.startswith("SINCHBOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """A fresh sandbox on a free loopback port, with fast receipt steps."""
    async with Sandbox(SandboxConfig(port=0, step_delay=0.01, time_scale=0.01)) as sb:
        yield sb


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[SinchClient]:
    async with SinchClient(
        api_key=sandbox.api_key, api_secret=sandbox.api_secret, base_url=sandbox.url
    ) as c:
        yield c


WATCHDOG_SECONDS = 240.0
"""An async test still running after this long is hung: its tasks' stacks are printed and
the test is cancelled (fails), so CI reports where instead of waiting for its time limit."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.fixturenames.insert(0, "_watchdog")


@pytest.fixture
async def _watchdog(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    name = request.node.name.split("[")[0]

    def fire() -> None:
        print(f"\nWATCHDOG: {request.node.nodeid} hung for {WATCHDOG_SECONDS:g} s", file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            task.print_stack(file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            if task.get_coro().__qualname__.split(".")[-1] == name:  # type: ignore[union-attr]
                task.cancel()

    handle = loop.call_later(WATCHDOG_SECONDS, fire)
    yield
    handle.cancel()
