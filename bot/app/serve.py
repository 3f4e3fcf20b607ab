"""``sinchbot serve``: run the gateway until SIGTERM or Ctrl-C, then drain and exit 0.

With an embedded Redis, one gateway owns a data folder: a second ``serve`` on the same
``SINCHBOT_DATA_DIR`` fails before it starts anything, naming the running one.

The port is opened with ``SO_REUSEPORT`` (``SINCHBOT_REUSE_PORT``, on by default where the
system has it), so several gateways of one deployment on one machine listen on the same port
and the kernel spreads the connections over them: :func:`run_many` (``sinchbot serve
--processes N``) starts N of them, which then share the partitions like any processes on one
Redis. The event loop is uvloop's and the JSON orjson's when they are installed
(``sinchbot[speed]``; ``SINCHBOT_EVENT_LOOP``, ``SINCHBOT_JSON_LIBRARY``).
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from aiohttp import web

from bot.app.gateway import GATEWAY, Role, create_app, describe
from bot.core import fastjson
from bot.core.aio import loop_name, new_event_loop
from bot.core.config import Settings
from bot.core.logs import configure
from bot.storage.redis_server import DataFolderInUse, Owner, owner_of


class GatewayRunning(OSError):
    """Another live gateway owns the data folder (its embedded Redis)."""


def running_elsewhere(settings: Settings, owner: Owner) -> GatewayRunning:
    """The one-line refusal: who runs, and how to stop it or go elsewhere."""
    folder = settings.data_dir
    kill = f"kill {owner.pid}" if owner.pid is not None else "its process"
    if owner.url:
        who = f"pid {owner.pid}, {owner.url}" if owner.pid is not None else owner.url
        return GatewayRunning(
            f"another sinchbot gateway ({who}) is running with data in {folder}; "
            f"stop it ({kill}) or set SINCHBOT_DATA_DIR"
        )
    who = f"pid {owner.pid}" if owner.pid is not None else "another process"
    return GatewayRunning(
        f"the embedded Redis data in {folder} is in use by {who}; "
        f"stop it ({kill}) or set SINCHBOT_DATA_DIR"
    )


def check_data_folder(settings: Settings) -> None:
    """Raise :class:`GatewayRunning` if another live process owns the embedded Redis's data
    folder (nothing to check with ``SINCHBOT_REDIS_URL``)."""
    if settings.redis_url:
        return
    owner = owner_of(settings.data_dir / "redis")
    if owner is not None:
        raise running_elsewhere(settings, owner)


def run(settings: Settings, *, role: Role = "all", out: TextIO | None = None) -> int:
    """Serve until a signal; resources start before the port opens and stop after it closes.

    Raises:
        GatewayRunning: another gateway owns the data folder (checked first, and again,
            race-free, when the embedded Redis takes the folder's lock).
    """
    configure(settings.log_level, settings.log_format, cache=True)
    check_data_folder(settings)
    out = out or sys.stdout
    json_library = fastjson.use(settings.json_library)
    loop = new_event_loop(settings.event_loop)
    app = create_app(settings, role=role)
    gateway = app[GATEWAY]

    async def announce(_app: web.Application) -> None:
        # Runs after the gateway's resources started (cleanup contexts run first).
        for line in describe(gateway):
            print(line, file=out, flush=True)
        print(f"  event loop {loop_name(loop)}, JSON {json_library}", file=out, flush=True)
        freeze_startup_objects()

    app.on_startup.append(announce)
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            print=None,
            access_log=None,
            shutdown_timeout=30.0,
            handle_signals=True,
            reuse_port=settings.reuse_port and hasattr(socket, "SO_REUSEPORT"),
            loop=loop,
        )
    except DataFolderInUse as exc:  # another serve took the folder since the check
        raise running_elsewhere(settings, exc.owner) from None
    return 0


def freeze_startup_objects() -> None:
    """Tune the cyclic garbage collector for a long-running gateway, once it started.

    ``gc.freeze()`` keeps what start-up built (modules, models, routers, the app: most of
    the heap) out of every later collection's scan; a young generation of 10,000 objects
    instead of 700 makes the collections under load far fewer and cheaper in all. Measured
    in the benchmark's quick run (one process, about 10,000 messages): 0.95 s → 0.14 s of
    collections, the largest full one 110 ms → 47 ms (the one at start-up), gateway CPU
    848 → 755 µs a message. Objects created later are collected as usual.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_many(
    settings: Settings,
    processes: int,
    *,
    role: Role = "all",
    command: Sequence[str] = (sys.executable, "-m", "bot", "serve"),
) -> int:
    """Run ``processes`` gateways on one port (``SO_REUSEPORT``) until a signal, each a
    ``sinchbot serve`` of its own (``command``) with this one's settings.

    SIGINT and SIGTERM are passed on to every process, which drains and exits; if one exits
    by itself, the others are stopped too (a process manager restarts the whole). Returns 0
    when every process exited 0 after a signal, else the first non-zero exit code.

    Raises:
        ValueError: the processes could not share a port or a Redis: an embedded Redis
            (set ``SINCHBOT_REDIS_URL``), port 0, or ``SINCHBOT_REUSE_PORT`` off.
    """
    if processes < 1:
        raise ValueError("--processes must be at least 1")
    if processes > 1:
        if not settings.redis_url:
            raise ValueError(
                "--processes needs SINCHBOT_REDIS_URL: the processes share one Redis "
                "(the embedded one belongs to a single gateway)"
            )
        if settings.port == 0:
            raise ValueError("--processes needs a fixed port (SINCHBOT_PORT), not 0")
        if not settings.reuse_port or not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("--processes needs SO_REUSEPORT (SINCHBOT_REUSE_PORT on, Linux)")
    env = {
        **os.environ,
        "SINCHBOT_HOST": settings.host,
        "SINCHBOT_PORT": str(settings.port),
        "SINCHBOT_REUSE_PORT": "true",
    }
    if settings.handler:
        env["SINCHBOT_HANDLER"] = settings.handler
    children: list[subprocess.Popen[bytes]] = []
    signalled = stopped = False

    def stop_all() -> None:
        # Once: a second signal would cut a gateway's drain short.
        nonlocal stopped
        if stopped:
            return
        stopped = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal signalled
        signalled = True
        stop_all()

    previous = {signum: signal.signal(signum, on_signal) for signum in _STOP_SIGNALS}
    try:
        for _ in range(processes):
            # A session of its own: a Ctrl-C reaches this process only, which passes it on.
            children.append(
                subprocess.Popen([*command, "--role", role], env=env, start_new_session=True)
            )
        while not signalled and all(child.poll() is None for child in children):
            time.sleep(0.2)
        stop_all()  # after a signal, or when one exited by itself
        codes = [child.wait() for child in children]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    failed = [code for code in codes if code != 0]
    if failed:
        return failed[0]
    return 0 if signalled else 1  # a gateway is not supposed to exit by itself
