"""Shared fixtures: a real sandbox provider over HTTP and a client bound to it."""

from collections.abc import AsyncIterator

import pytest

from bot.sandbox import Sandbox, SandboxConfig
from bot.sinch.client import SinchClient

pytest_plugins = ["tests.redis_fixtures"]


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
