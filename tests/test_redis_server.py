"""The embedded redis-server: starts, persists acknowledged writes across SIGKILL, stops;
one live owner per data folder (a second is refused, an orphan is stopped, a stranger's
server is left alone); the supervisor restarts a killed server, and gives up when it cannot.
"""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog

from bot.storage.redis_server import (
    DataFolderInUse,
    RedisServer,
    RedisServerError,
    RedisSupervisor,
    find_redis_server,
    owner_of,
)
from tests.gateway.procutil import REPO_ROOT, eventually


def alive(pid: int) -> bool:
    """A live process (an exited, unreaped one, a zombie, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def gone(pid: int) -> bool:
    """No such process, not even a zombie waiting to be reaped."""
    return not os.path.exists(f"/proc/{pid}")


@contextlib.contextmanager
def killed_at_exit(pids: list[int]) -> Iterator[list[int]]:
    """SIGKILL, at the end of the block, every pid appended to ``pids`` that still runs."""
    try:
        yield pids
    finally:
        for pid in pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


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


OWNER = """
import sys
from bot.storage.redis_server import RedisServer
server = RedisServer(sys.argv[1]).start()
print(server.pid, flush=True)
sys.stdin.read()
"""


def test_an_orphaned_server_on_the_same_data_is_stopped_first(tmp_path: Path) -> None:
    """Its owner was SIGKILLed: the redis-server lives on. The next start on the same data
    folder stops it instead of running two servers on one append-only file."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    with killed_at_exit([owner.pid]) as pids:
        assert owner.stdout is not None
        orphan_pid = int(owner.stdout.readline())
        pids.append(orphan_pid)
        url = (tmp_path / "redis.url").read_text().strip()
        client = redis.Redis.from_url(url)
        client.set("kept", "1")
        client.close()
        owner.kill()  # the owner dies; its redis-server (own session) lives on
        owner.wait()
        assert owner.stdin is not None and owner.stdout is not None
        owner.stdin.close()
        owner.stdout.close()
        assert alive(orphan_pid)
        successor = RedisServer(tmp_path).start()  # a new owner, not knowing the old one
        try:
            assert not alive(orphan_pid)  # the orphan was stopped first
            assert successor.pid != orphan_pid
            assert redis.Redis.from_url(successor.url).get("kept") == b"1"  # its data survived
        finally:
            successor.stop()


def test_a_live_owners_server_is_never_touched(tmp_path: Path) -> None:
    """A second owner of a data folder whose owner lives is refused before it touches
    anything: the first server keeps running, with its pid and URL files."""
    first = RedisServer(tmp_path, owner_url="http://127.0.0.1:8080").start()
    try:
        assert first.pid is not None
        pidfile = (tmp_path / "redis.pid").read_text()
        client = redis.Redis.from_url(first.url)
        client.set("kept", "1")
        assert owner_of(tmp_path) is not None
        second = RedisServer(tmp_path)
        with pytest.raises(DataFolderInUse) as refused:
            second.start()
        assert refused.value.owner.pid == os.getpid()
        assert refused.value.owner.url == "http://127.0.0.1:8080"
        assert f"pid {os.getpid()}" in str(refused.value)
        second.stop()  # never started: a no-op that leaves the first one's files alone
        assert first.running and alive(first.pid)
        assert (tmp_path / "redis.pid").read_text() == pidfile
        assert (tmp_path / "redis.url").read_text().strip() == first.url
        assert client.get("kept") == b"1"
        client.close()
    finally:
        first.stop()
    assert owner_of(tmp_path) is None  # released with the stop
    with RedisServer(tmp_path):  # and the folder can be owned again
        pass


def test_a_stale_pid_file_naming_another_folders_server_is_left_alone(tmp_path: Path) -> None:
    """The pid in a left-over pid file now belongs to a redis-server of another folder (pids
    are reused): it is not ours to stop."""
    stranger = RedisServer(tmp_path / "other").start()
    try:
        assert stranger.pid is not None
        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / "redis.pid").write_text(f"{stranger.pid}\n")
        with RedisServer(mine) as server:
            assert redis.Redis.from_url(server.url).ping()
            assert stranger.running
        assert redis.Redis.from_url(stranger.url).ping()
    finally:
        stranger.stop()


# ---------------------------------------------------------------------- the supervisor


def events(logs: Sequence[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def test_the_supervisor_restarts_a_killed_server_on_its_port_and_data(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path).start()
    supervisor = RedisSupervisor(server, poll=0.05)
    port, first_pid = server.port, server.pid
    assert first_pid is not None
    client = redis.Redis.from_url(server.url)
    try:
        client.xadd("in", {"n": 1})
        with structlog.testing.capture_logs() as logs:
            await supervisor.start()
            os.kill(first_pid, signal.SIGKILL)  # from outside, as the OOM killer would
            await eventually(
                lambda: supervisor.restarts == 1 and server.running, what="the restart"
            )
        assert server.pid != first_pid and server.port == port
        assert gone(first_pid)  # reaped: no zombie left
        assert client.xlen("in") == 1  # the same URL, the data replayed from the AOF
        assert supervisor.state == "running" and supervisor.reason is None
        [exited] = events(logs, "embedded redis-server exited")
        assert exited["pid"] == first_pid and exited["signal"] == "SIGKILL"
        [restarted] = events(logs, "embedded redis-server restarted")
        assert restarted["pid"] == server.pid and restarted["after"] == "killed by SIGKILL"
    finally:
        client.close()
        await supervisor.stop()
        server.stop()
    assert str(supervisor.state) == "stopped" and not server.running  # (mypy narrowed it)


async def test_the_supervisor_gives_up_when_the_server_cannot_start_again(
    tmp_path: Path,
) -> None:
    """The binary is gone: a bounded number of attempts, then the supervisor declares the
    server lost for good."""
    binary = tmp_path / "bin" / "redis-server"
    binary.parent.mkdir()
    binary.symlink_to(find_redis_server())
    server = RedisServer(tmp_path / "data", binary=str(binary)).start()
    supervisor = RedisSupervisor(server, max_restarts=3, backoff=0.01, poll=0.05)
    pid = server.pid
    assert pid is not None
    try:
        with structlog.testing.capture_logs() as logs:
            await supervisor.start()
            binary.unlink()
            os.kill(pid, signal.SIGKILL)
            await eventually(lambda: supervisor.failed, what="the supervisor giving up")
        assert supervisor.reason == "embedded redis-server down and cannot be restarted"
        failures = events(logs, "embedded redis-server restart failed")
        assert [f["attempt"] for f in failures] == [1, 2, 3]
        assert "cannot run" in failures[0]["error"]
        assert [e["log_level"] for e in logs if "cannot be restarted" in e["event"]] == ["critical"]
        assert gone(pid)  # reaped all the same
    finally:
        await supervisor.stop()
        server.stop()
    assert supervisor.failed


def test_a_running_server_publishes_its_url_for_tools(tmp_path: Path) -> None:
    from bot.storage.redis_server import running_url

    assert running_url(tmp_path) is None
    with RedisServer(tmp_path) as server:
        assert running_url(tmp_path) == server.url
    assert running_url(tmp_path) is None
