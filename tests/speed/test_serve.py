"""``sinchbot serve`` on one port several times over: SO_REUSEPORT, and ``--processes N``
(N gateways sharing the port and the partitions, stopped together by one signal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from bot.storage.redis_server import RedisServer, free_port

pytestmark = pytest.mark.slow


def listeners(port: int) -> int:
    """Listening TCP sockets on ``port`` (``/proc/net/tcp``)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def environment(tmp_path: Path, redis_url: str | None, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINCHBOT_")}
    env.update(
        SINCHBOT_PORT=str(port),
        SINCHBOT_BASE_URL=f"http://127.0.0.1:{free_port()}",  # never called
        SINCHBOT_API_KEY="key",
        SINCHBOT_API_SECRET="secret",
        SINCHBOT_WEBHOOK_SECRET="hook-secret",
        SINCHBOT_API_TOKEN="api-token",
        SINCHBOT_PARTITIONS="4",
        SINCHBOT_DATA_DIR=str(tmp_path / "data"),
        SINCHBOT_LOG_FORMAT="json",
    )
    if redis_url:
        env["SINCHBOT_REDIS_URL"] = redis_url
    return env


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout  # only against a hang
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen")
        time.sleep(0.1)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreading is Linux's"
)
def test_processes_share_one_port_and_stop_together(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    port = free_port()
    redis.Redis.from_url(redis_server.url).flushall()  # no other test's partition count
    env = environment(tmp_path, redis_server.url, port)
    parent = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--processes", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: (listeners(port) == 2 and ready(port)) or parent.poll() is not None,
            "two gateways listening",
        )
        assert parent.poll() is None, parent.communicate()[1].decode()[-2000:]
        # A third, separate `sinchbot serve` joins the same port too.
        extra = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--role", "web"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: listeners(port) == 3, "a third gateway on the same port")
        finally:
            extra.send_signal(signal.SIGTERM)
            assert extra.wait(timeout=60) == 0
        parent.send_signal(signal.SIGTERM)
        out, err = parent.communicate(timeout=90)
        assert parent.returncode == 0, err.decode()[-2000:]
        assert listeners(port) == 0
        banner = out.decode()
        assert banner.count("sinchbot gateway on") == 2
        assert banner.count("event loop") == 2
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_processes_need_a_shared_redis(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve", "--processes", "2"],
        env=environment(tmp_path, None, free_port()),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert b"--processes needs SINCHBOT_REDIS_URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
