"""``sinchbot serve``: run the gateway until SIGTERM or Ctrl-C, then drain and exit 0.

With an embedded Redis, one gateway owns a data folder: a second ``serve`` on the same
``SINCHBOT_DATA_DIR`` fails before it starts anything, naming the running one.
"""

from __future__ import annotations

import sys
from typing import TextIO

from aiohttp import web

from bot.app.gateway import GATEWAY, Role, create_app, describe
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
    configure(settings.log_level, settings.log_format)
    check_data_folder(settings)
    out = out or sys.stdout
    app = create_app(settings, role=role)
    gateway = app[GATEWAY]

    async def announce(_app: web.Application) -> None:
        # Runs after the gateway's resources started (cleanup contexts run first).
        for line in describe(gateway):
            print(line, file=out, flush=True)

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
        )
    except DataFolderInUse as exc:  # another serve took the folder since the check
        raise running_elsewhere(settings, exc.owner) from None
    return 0
