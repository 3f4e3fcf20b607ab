"""The embedded redis-server: starts, persists acknowledged writes across SIGKILL, stops."""

from pathlib import Path

import pytest
import redis

from bot.gateway.redis_server import RedisServer, RedisServerError, find_redis_server


def test_find_binary() -> None:
    assert Path(find_redis_server()).name == "redis-server"


def test_acknowledged_stream_writes_survive_sigkill(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "data").start()
    try:
        client = redis.Redis.from_url(server.url)
        pipe = client.pipeline(transaction=False)
        for i in range(2000):
            pipe.xadd("in:{p:1}", {"n": i})
        pipe.execute()
        client.xgroup_create("in:{p:1}", "workers", id="0")
        client.xreadgroup("workers", "w1", {"in:{p:1}": ">"}, count=5)
        client.close()
        server.kill()
        assert not server.running
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.xlen("in:{p:1}") == 2000
        assert client.xpending("in:{p:1}", "workers")["pending"] == 5
        client.close()
    finally:
        server.stop()
    assert not server.running


def test_context_manager_and_clean_stop(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        assert redis.Redis.from_url(server.url).ping()
    assert not server.running
    assert (tmp_path / "redis.log").exists()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "a") as first:
        second = RedisServer(tmp_path / "b", port=first.port)
        with pytest.raises(RedisServerError, match=r"exited|did not answer"):
            second.start(timeout=5)


def test_an_orphaned_server_on_the_same_data_is_stopped_first(tmp_path: Path) -> None:
    """Its owner was SIGKILLed: the redis-server lives on. The next start on the same data
    folder stops it instead of running two servers on one append-only file."""
    orphan = RedisServer(tmp_path).start()
    assert orphan.process is not None
    orphan_pid = orphan.process.pid
    client = redis.Redis.from_url(orphan.url)
    client.set("kept", "1")
    client.close()
    successor = RedisServer(tmp_path).start()  # a new owner, not knowing the old one
    try:
        orphan.process.wait(timeout=10)  # the orphan was told to stop
        assert not Path(f"/proc/{orphan_pid}").exists() or orphan.process.returncode is not None
        assert redis.Redis.from_url(successor.url).get("kept") == b"1"  # its data survived
    finally:
        successor.stop()


def test_a_running_server_publishes_its_url_for_tools(tmp_path: Path) -> None:
    from bot.gateway.redis_server import running_url

    assert running_url(tmp_path) is None
    with RedisServer(tmp_path) as server:
        assert running_url(tmp_path) == server.url
    assert running_url(tmp_path) is None
