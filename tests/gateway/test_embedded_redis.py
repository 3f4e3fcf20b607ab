"""The embedded Redis of ``sinchbot serve`` (zero configuration), for real processes.

- A ``kill -9`` of the embedded redis-server: the gateway restarts it on the same port and
  data, the next webhook is accepted by the same gateway process, and every webhook
  acknowledged before and after is in the conversation.
- When it cannot be restarted (its binary is gone): ``/healthz`` fails with the reason, so a
  supervisor restarts the gateway.
- A second ``sinchbot serve`` on the same data folder fails at once, naming the running
  gateway, and leaves that gateway's redis-server alone.

Each test kills every process it started (the gateways with their children, and any
redis-server left on its data folder) in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.storage.keys import conversation_key
from bot.storage.redis_server import find_redis_server
from tests.gateway.procutil import (
    SERVE,
    GatewayProcess,
    conversation,
    eventually,
    free_port,
    gateway_env,
    mo_payload,
    post_webhook,
)

pytestmark = pytest.mark.slow

OURS = "+61491570157"  # the demo's number
HANDSET = "+61491570158"  # not the demo's handset (its sample reminder is waiting)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """``SINCHBOT_DATA_DIR`` of the test, in memory (``/dev/shm``) when it can be: on a busy
    disk a ``kill -9`` of Redis can lose acknowledged writes while an AOF fsync stalls
    (docs/operations.md, "Redis"), and these tests are about the restart, not the disk.
    Whatever redis-server still runs on it afterwards is killed."""
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="sinchbot-data-", dir=shm)) if shm.is_dir() else tmp_path
    try:
        yield base
    finally:
        pid = redis_pid(base)
        if pid is not None and _is_redis_of(pid, base / "redis"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def redis_pid(data_dir: Path) -> int | None:
    """The embedded redis-server's pid, from its pid file."""
    try:
        return int((data_dir / "redis" / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _is_redis_of(pid: int, folder: Path) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/cwd") == str(folder.resolve())
    except OSError:
        return False


def alive(pid: int) -> bool:
    """A live process (a zombie, exited and not reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def gone(pid: int) -> bool:
    """No such process, not even a zombie."""
    return not os.path.exists(f"/proc/{pid}")


def serve_command() -> list[str]:
    """``sinchbot serve``: the installed script when there is one."""
    script = shutil.which("sinchbot", path=str(Path(sys.executable).parent))
    return [script, "serve"] if script else list(SERVE)


def demo(name: str, workdir: Path, data_dir: Path, **settings: object) -> GatewayProcess:
    """A zero-configuration gateway (embedded Redis, sandbox provider) on ``data_dir``."""
    env = gateway_env(data_dir=data_dir, sandbox_port=free_port(), **settings)
    return GatewayProcess(name, workdir, env, command=serve_command())


async def status(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def inbound_texts(http: aiohttp.ClientSession, g: GatewayProcess) -> list[str]:
    view = await conversation(http, g.url, conversation_key(OURS, HANDSET)) or {}
    return [e["data"]["text"] for e in view.get("timeline", []) if e["kind"] == "inbound"]


async def test_a_killed_embedded_redis_is_restarted_and_nothing_acknowledged_is_lost(
    tmp_path: Path, data_dir: Path, http: aiohttp.ClientSession
) -> None:
    g = demo("G", tmp_path, data_dir)
    try:
        g.start()
        await g.wait_ready()
        gateway_pid = g.pid
        acknowledged: list[str] = []

        async def post(text: str) -> int:
            answer = await post_webhook(http, g.url, mo_payload(HANDSET, text))
            if answer.status == 200:
                acknowledged.append(text)
            return answer.status

        for n in range(5):
            assert await post(f"before {n}") == 200
        killed = redis_pid(data_dir)
        assert killed is not None and alive(killed)
        os.kill(killed, signal.SIGKILL)

        # The provider retries what was not acknowledged; the same gateway takes it.
        payload = mo_payload(HANDSET, "next")

        async def accepted() -> bool:
            answer = await post_webhook(http, g.url, payload)
            assert answer.status in (200, 503), answer
            return answer.status == 200

        await eventually(accepted, timeout=30, interval=0.1, what="the next webhook accepted")
        acknowledged.append("next")
        for n in range(5):
            assert await post(f"after {n}") == 200

        async def all_there() -> bool:
            return sorted(await inbound_texts(http, g)) == sorted(acknowledged)

        try:
            await eventually(all_there, timeout=30, interval=0.2, what="every webhook stored")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: stored {await inbound_texts(http, g)}, acknowledged {acknowledged}"
            ) from None
        assert g.running and g.pid == gateway_pid  # no restart of the gateway
        restarted = redis_pid(data_dir)
        assert restarted is not None and restarted != killed and alive(restarted)
        assert gone(killed)  # reaped, not left a zombie
        [exited] = g.events("embedded redis-server exited")
        assert exited["pid"] == killed and exited["signal"] == "SIGKILL"
        # The new server answers webhooks a moment before the supervisor's thread sees it
        # answer (the thread competes for the GIL with the loop serving them): its report
        # may come after the data path has already recovered.
        await eventually(
            lambda: bool(g.events("embedded redis-server restarted")),
            timeout=10,
            what="the supervisor's restart report",
        )
        [restart] = g.events("embedded redis-server restarted")
        assert restart["pid"] == restarted
        assert await status(http, f"{g.url}/healthz") == (200, {"status": "ok"})
        assert (await status(http, f"{g.url}/readyz"))[0] == 200
    finally:
        g.close()


async def test_healthz_fails_when_the_embedded_redis_cannot_be_restarted(
    tmp_path: Path, data_dir: Path, http: aiohttp.ClientSession
) -> None:
    """The redis-server binary is gone when the server dies: the restarts fail, the
    supervisor gives up, and the liveness check says the gateway cannot recover."""
    binaries = tmp_path / "bin"
    binaries.mkdir()
    (binaries / "redis-server").symlink_to(find_redis_server())
    g = demo("G", tmp_path, data_dir)
    g.env["PATH"] = f"{binaries}{os.pathsep}{g.env.get('PATH', '')}"
    try:
        g.start()
        await g.wait_ready()
        pid = redis_pid(data_dir)
        assert pid is not None and alive(pid)
        assert await status(http, f"{g.url}/healthz") == (200, {"status": "ok"})
        (binaries / "redis-server").unlink()
        os.kill(pid, signal.SIGKILL)

        async def unhealthy() -> bool:
            return (await status(http, f"{g.url}/healthz"))[0] == 503

        await eventually(unhealthy, timeout=60, interval=0.2, what="/healthz failing")
        assert await status(http, f"{g.url}/healthz") == (
            503,
            {
                "status": "unavailable",
                "reason": "embedded redis-server down and cannot be restarted",
            },
        )
        assert (await status(http, f"{g.url}/readyz"))[0] == 503
        assert g.running  # still answering, for its supervisor to see and restart it
        assert gone(pid)
        failures = g.events("embedded redis-server restart failed")
        assert failures and all("cannot run" in f["error"] for f in failures)
        [gave_up] = [r for r in g.logs() if "cannot be restarted" in str(r.get("event"))]
        assert gave_up["level"] == "critical"
    finally:
        g.close()


async def test_a_second_serve_on_the_same_data_fails_fast_and_leaves_the_first_alone(
    tmp_path: Path, data_dir: Path, http: aiohttp.ClientSession
) -> None:
    """The README's second command with the demo running: same folder, same sandbox port."""
    first = demo("first", tmp_path, data_dir)
    second = GatewayProcess("second", tmp_path, first.env, command=serve_command())
    try:
        first.start()
        await first.wait_ready()
        before = redis_pid(data_dir)
        assert before is not None and alive(before)

        second.start()
        code = await second.wait_exit(timeout=30)
        assert code != 0
        lines = second.stderr().strip().splitlines()
        assert len(lines) == 1, lines
        assert f"another sinchbot gateway (pid {first.pid}, {first.url})" in lines[0]
        assert f"stop it (kill {first.pid}) or set SINCHBOT_DATA_DIR" in lines[0]
        assert str(data_dir) in lines[0]

        assert redis_pid(data_dir) == before and alive(before)  # untouched
        answer = await post_webhook(http, first.url, mo_payload(HANDSET, "still here"))
        assert answer.status == 200

        async def stored() -> bool:
            return "still here" in await inbound_texts(http, first)

        await eventually(stored, what="the webhook stored")
        assert await status(http, f"{first.url}/healthz") == (200, {"status": "ok"})
        assert first.events("embedded redis-server exited") == []
    finally:
        second.close()
        first.close()
