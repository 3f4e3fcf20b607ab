"""Real redis-server processes for tests (no fakes): one server and one Redis Cluster per
test session, flushed per test.

A test marked ``@pytest.mark.cluster`` runs twice, on one server (``[single]``) and on a
3-master / 3-replica cluster (``[cluster]``): its ``redis`` client and ``redis_url`` follow
the parameter (``redis_kind``). Unmarked tests run on one server only. The cluster is
started the first time a test asks for it (about two seconds) and shared by the session;
tests that break a cluster (failover, migration) start their own
(:class:`tests.redis_cluster.LocalCluster`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bot.storage.connection import RedisClient, connect
from bot.storage.redis_server import RedisServer
from tests.redis_cluster import LocalCluster

REDIS_KINDS = ("single", "cluster")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster: run the test on one Redis server and on a Redis Cluster (the redis and "
        "redis_url fixtures follow)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker("cluster"):
        metafunc.parametrize("redis_kind", REDIS_KINDS, indirect=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The session's cluster: 3 masters, each with one replica."""
    with LocalCluster(Path(tmp_path_factory.mktemp("cluster"))) as cluster:
        yield cluster


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    """``single`` or ``cluster`` (only tests marked ``cluster`` get both)."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
def redis_url(redis_kind: str, request: pytest.FixtureRequest) -> str:
    """The URL of this test's Redis (``redis+cluster://…`` for the cluster), flushed."""
    if redis_kind == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    client: RedisClient
    if redis_url.startswith("redis+cluster://"):
        client = connect(redis_url, socket_timeout=None, socket_connect_timeout=None)
    else:
        client = Redis.from_url(redis_url, decode_responses=False)
    await client.flushdb()
    yield client
    await client.aclose()


async def info_of_masters(redis: RedisClient, section: str) -> list[dict[str, Any]]:
    """``INFO section`` of the server, or of every master of a cluster."""
    if isinstance(redis, RedisCluster):
        replies = await redis.info(section, target_nodes=RedisCluster.PRIMARIES)
        return list(replies.values())
    return [await redis.info(section)]
