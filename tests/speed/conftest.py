"""The speed extra both ways: every async test here runs on asyncio's own loop and on
uvloop's (when installed), and a test taking ``json_library`` runs with the standard
library's JSON and with orjson's (when installed)."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
from collections.abc import Callable, Iterator, Mapping

import pytest

from bot.core import fastjson
from bot.core.aio import new_event_loop

LOOPS = ["asyncio", *(["uvloop"] if importlib.util.find_spec("uvloop") else [])]
LIBRARIES = ["stdlib", *(["orjson"] if importlib.util.find_spec("orjson") else [])]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {name: functools.partial(new_event_loop, name) for name in LOOPS}


@pytest.fixture(params=LIBRARIES)
def json_library(request: pytest.FixtureRequest) -> Iterator[str]:
    """The JSON library of the message path during the test (the previous one after)."""
    previous = fastjson.backend()
    fastjson.use(request.param)
    try:
        yield request.param
    finally:
        fastjson.use(previous)
