"""The processes a benchmark starts, and what /proc says about them.

:class:`Proc` runs one command in its own session (so a Ctrl-C in the terminal reaches the
benchmark, which stops its children in order) with stdout and stderr in files, and stops it
exactly: SIGTERM to its process group, SIGKILL after a timeout, signalled only while the
leader is not yet reaped (so the group id cannot belong to anyone else). :class:`Procs`
stops every process it started, newest first, whatever happened.

:func:`cpu_seconds` and :func:`rss_bytes` read ``/proc/<pid>/stat`` and
``/proc/<pid>/status`` (Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (its own, not its children's)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def listens(pid: int, port: int) -> bool:
    """Whether ``pid`` holds a listening TCP socket on ``port`` (``/proc/net/tcp``, ``tcp6``,
    and the process's open files)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return True
    return False


class ProcessFailed(RuntimeError):
    """A process exited when it should have been running."""


class Proc:
    """One child process in its own session; see the module documentation."""

    def __init__(
        self, name: str, command: Sequence[str], *, cwd: Path, env: Mapping[str, str], logs: Path
    ) -> None:
        self.name = name
        self.command = list(command)
        self.cwd = cwd
        self.env = dict(env)
        self.out = logs / f"{name}.out"
        self.err = logs / f"{name}.err"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr_tail(self, size: int = 2000) -> str:
        try:
            return self.err.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def check(self) -> None:
        """Raise :class:`ProcessFailed` (with the tail of its stderr) if it has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise ProcessFailed(
                f"{self.name} exited with {self.process.returncode}:\n{self.stderr_tail()}"
            )

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the process group, wait, SIGKILL it after ``timeout``; the exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            # Not reaped yet (running or a zombie): the group id is still this process's.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode


class Procs:
    """Every process of a run: :meth:`start` registers, :meth:`stop_all` stops them all
    (newest first; each is stopped even when an earlier one fails to stop)."""

    def __init__(self, cwd: Path, logs: Path) -> None:
        self.cwd = cwd
        self.logs = logs
        self._started: list[Proc] = []

    def start(self, name: str, command: Sequence[str], env: Mapping[str, str]) -> Proc:
        proc = Proc(name, command, cwd=self.cwd, env=env, logs=self.logs)
        self._started.append(proc)
        return proc.start()

    def stop(self, *procs: Proc, timeout: float = 30.0) -> None:
        for proc in procs:
            proc.stop(timeout)
            if proc in self._started:
                self._started.remove(proc)

    def stop_all(self) -> None:
        while self._started:
            proc = self._started.pop()
            try:
                proc.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {proc.name}: {exc}")


async def wait_http(url: str, proc: Proc | None = None, timeout: float = 30.0) -> None:
    """Wait until ``GET url`` answers 200; fail early if ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            if proc is not None:
                proc.check()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")
            await asyncio.sleep(0.05)
