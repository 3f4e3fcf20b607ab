"""Helpers for tests that run the gateway as real subprocesses (``python -m bot serve``).

- :func:`gateway_env` builds a clean environment: every inherited ``SINCHBOT_*`` variable
  dropped, the repository root on ``PYTHONPATH`` (so ``tests.gateway.*`` handlers import from
  any working directory), JSON logs.
- :class:`GatewayProcess` starts one process (stdout and stderr to files in its work
  directory, one pair per start), waits for ``/readyz``, kills it with SIGKILL (its child
  processes too, e.g. an embedded redis-server), stops it with SIGTERM and reads its JSON
  log back.
- :func:`mo_payload` is an inbound message in the shape the connector's MO template renders,
  for tests that play the provider themselves; :func:`eventually` polls a condition without
  blocking the event loop (an in-test sandbox must keep serving meanwhile).

Everything here is async-friendly: waiting never blocks the running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.storage.redis_server import free_port

__all__ = [
    "REPO_ROOT",
    "Answer",
    "GatewayProcess",
    "conversation",
    "descendants",
    "eventually",
    "free_port",
    "gateway_env",
    "mo_payload",
    "post_webhook",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root (where ``bot`` and ``tests`` live)."""

SERVE = (sys.executable, "-m", "bot", "serve")
"""The command that runs a gateway (what ``sinchbot serve`` runs)."""


def gateway_env(**settings: object) -> dict[str, str]:
    """The environment of a gateway subprocess: ours without any ``SINCHBOT_*`` variable,
    plus ``settings`` as ``SINCHBOT_<NAME>`` (``redis_url=...`` → ``SINCHBOT_REDIS_URL``;
    ``None`` values are left out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINCHBOT_")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env["SINCHBOT_LOG_FORMAT"] = "json"
    for name, value in settings.items():
        if value is not None:
            env[f"SINCHBOT_{name.upper()}"] = str(value)
    return env


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> float:
    """Poll ``check`` until it holds; returns the seconds it took. ``timeout`` only guards
    against a hang (the assertion is about *whether*, never *how fast*)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return loop.time() - start
        if loop.time() - start > timeout:
            raise AssertionError(f"{what} not reached within {timeout:.0f} s")
        await asyncio.sleep(interval)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc``); empty when unknown."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(child) for child in f.read().split())
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first."""
    result: list[int] = []
    todo = _children(pid)
    while todo:
        child = todo.pop(0)
        if child not in result:
            result.append(child)
            todo.extend(_children(child))
    return result


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


class GatewayProcess:
    """One gateway subprocess, restartable (each start gets fresh log files).

    Args:
        name: a label for files and messages (``"A"``, ``"B"``...).
        workdir: working directory (and where the logs go; an embedded Redis, if any, puts
            its data under ``.sinchbot`` here).
        env: the environment (see :func:`gateway_env`); ``SINCHBOT_PORT`` is set from
            ``port``.
        port: the port to listen on (default: a free one, kept across restarts).
        command: the command to run (default ``python -m bot serve``).
        args: extra command-line arguments (``--role worker``...).
    """

    def __init__(
        self,
        name: str,
        workdir: Path,
        env: Mapping[str, str],
        *,
        port: int | None = None,
        command: Sequence[str] = SERVE,
        args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.port = port or free_port()
        self.env = {**env, "SINCHBOT_PORT": str(self.port)}
        self.command = [*command, *args]
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.started_at = 0.0
        self._children: set[int] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process else None

    def _log_path(self, run: int, stream: str) -> Path:
        return self.workdir / f"gateway-{self.name}-{run}.{stream}"

    def start(self, **env: str) -> GatewayProcess:
        """Start the process (again), with ``env`` added to its environment for this run."""
        if self.running:
            raise RuntimeError(f"gateway {self.name} is already running")
        self.runs += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (
            open(self._log_path(self.runs, "out"), "wb") as out,
            open(self._log_path(self.runs, "err"), "wb") as err,
        ):
            self.process = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env={**self.env, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # our Ctrl-C is not the gateway's signal
            )
        self.started_at = time.monotonic()
        return self

    async def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait until ``GET /readyz`` answers 200; returns the seconds since the start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                self._remember_children()
                if not self.running:
                    raise AssertionError(
                        f"gateway {self.name} exited with {self.returncode} before it was "
                        f"ready:\n{self.stderr()[-3000:]}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return time.monotonic() - self.started_at
                if loop.time() > deadline:
                    raise AssertionError(
                        f"gateway {self.name} not ready after {timeout:.0f} s:\n"
                        f"{self.stderr()[-3000:]}"
                    )
                await asyncio.sleep(0.05)

    def _remember_children(self) -> None:
        if self.process is not None and self.running:
            self._children.update(descendants(self.process.pid))

    def kill(self) -> None:
        """SIGKILL the process and everything it started (a crash; nothing is flushed)."""
        if self.process is None:
            return
        self._remember_children()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for child in sorted(self._children):
            if _alive(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        self._children.clear()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to the process (not to its children)."""
        self._remember_children()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    async def wait_exit(self, timeout: float = 40.0) -> int:
        """Wait for the process to exit; returns its exit status (SIGKILL after ``timeout``,
        then the assertion fails)."""
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.process.poll() is None:
            if loop.time() > deadline:
                self.kill()
                raise AssertionError(f"gateway {self.name} did not exit within {timeout:.0f} s")
            await asyncio.sleep(0.05)
        return self.process.returncode

    async def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM (graceful stop: drain, exit 0) and wait; returns the exit status."""
        self.signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    def close(self) -> None:
        """For ``finally``: make sure nothing of this gateway runs any more."""
        self.kill()

    # ------------------------------------------------------------------ output

    def stdout(self, run: int | None = None) -> str:
        """What the process printed on stdout (the banner), for one run (default: last)."""
        return self._read(run or self.runs, "out")

    def stderr(self, run: int | None = None) -> str:
        """The raw log of one run (default: the last)."""
        return self._read(run or self.runs, "err")

    def _read(self, run: int, stream: str) -> str:
        path = self._log_path(run, stream)
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, run: int | None = None) -> list[dict[str, Any]]:
        """The JSON log records of one run (default: every run), in order; lines that are
        not JSON (a crash point's message, a traceback) are skipped."""
        runs = [run] if run is not None else range(1, self.runs + 1)
        records: list[dict[str, Any]] = []
        for number in runs:
            for line in self.stderr(number).splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        records.append(json.loads(line))
        return records

    def events(self, event: str, run: int | None = None) -> list[dict[str, Any]]:
        """Log records whose message is ``event``."""
        return [r for r in self.logs(run) if r.get("event") == event]

    def story(self, limit: int = 60) -> str:
        """The log without the per-webhook lines, one line per record (for a failure
        message: what the process went through)."""
        noise = {"webhook accepted", "webhook duplicate"}
        lines = [
            f"{r.get('timestamp', '')[11:23]} {r.get('level', '')} {r.get('event')} "
            + " ".join(
                f"{k}={v}"
                for k, v in r.items()
                if k not in ("timestamp", "level", "event", "logger")
            )[:300]
            for r in self.logs()
            if r.get("event") not in noise
        ]
        return "\n".join(lines[-limit:])


# ---------------------------------------------------------------------- provider side


def mo_payload(
    handset: str, text: str, ours: str = "+61491570157", *, reply_id: str | None = None
) -> dict[str, Any]:
    """An inbound SMS as the connector's MO template renders it (what the provider pushes)."""
    return {
        "content": text,
        "type": "SMS",
        "reply_id": reply_id or str(uuid.uuid4()),
        "date_received": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "source_address": handset,
        "destination_address": ours,
        "attachments": [],
        "metadata": [],
    }


@dataclass(frozen=True)
class Answer:
    """What a webhook POST got back; ``status`` 0: no answer (refused, dropped, timed out)."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def outcome(self) -> str | None:
        """The webhook's ``status`` field (``accepted`` / ``duplicate``), if any."""
        return self.body.get("status") if isinstance(self.body, dict) else None


async def post_webhook(
    session: aiohttp.ClientSession,
    base_url: str,
    payload: Mapping[str, Any],
    *,
    secret: str | None = None,
    path: str = "/webhooks/messages",
) -> Answer:
    """POST a webhook as the provider does (the secret in ``X-Webhook-Secret``)."""
    headers = {"X-Webhook-Secret": secret} if secret else {}
    try:
        async with session.post(f"{base_url}{path}", json=payload, headers=headers) as response:
            try:
                body = await response.json()
            except (aiohttp.ContentTypeError, ValueError):
                body = None
            return Answer(response.status, body, dict(response.headers))
    except (aiohttp.ClientError, TimeoutError):
        return Answer(0)


async def conversation(
    session: aiohttp.ClientSession,
    base_url: str,
    key: str,
    *,
    token: str | None = None,
    limit: int = 1000,
) -> dict[str, Any] | None:
    """``GET /api/conversations/{key}`` with up to ``limit`` timeline entries (``None`` on
    404)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{base_url}/api/conversations/{quote(key, safe='')}?limit={limit}"
    async with session.get(url, headers=headers) as response:
        if response.status == 404:
            return None
        assert response.status == 200, f"{response.status}: {await response.text()}"
        data: dict[str, Any] = await response.json()
        return data
