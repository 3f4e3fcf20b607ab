"""The Redis connection factory: one server or a cluster, by the URL's scheme (nothing
connects here; the cluster itself is exercised by the tests marked ``cluster``)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from bot.storage.connection import ClusterClient, connect, is_cluster, is_cluster_url, seed_nodes


def test_plain_urls_open_one_server() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@example.com:6380/2"):
        client = connect(url)
        assert isinstance(client, Redis)
        assert not is_cluster(client)
        assert not is_cluster_url(url)


def test_cluster_urls_open_a_cluster_client_with_every_seed() -> None:
    url = "redis+cluster://:secret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002,node4"
    assert is_cluster_url(url)
    assert is_cluster_url("REDISS+CLUSTER://h:1")
    assert seed_nodes(url) == [
        ("10.0.0.1", 7000),
        ("10.0.0.2", 7001),
        ("::1", 7002),
        ("node4", 6379),
    ]
    client = connect(url)
    assert isinstance(client, ClusterClient)
    assert is_cluster(client)
    assert sorted(node.port for node in client.startup_nodes) == [6379, 7000, 7001, 7002]
    assert client.get_connection_kwargs()["password"] == "secret"


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://", "redis+cluster://:pw@", "redis+cluster://host:port", "redis://h:1"],
)
def test_bad_cluster_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names what is wrong
        seed_nodes(url)


def test_a_cluster_has_one_database() -> None:
    with pytest.raises(Exception, match="db"):
        connect("redis+cluster://127.0.0.1:7000/3")
