"""``sinchbot serve``: run the gateway until SIGTERM or Ctrl-C, then drain and exit 0."""

from __future__ import annotations

import sys
from typing import TextIO

from aiohttp import web

from bot.config import Settings
from bot.gateway.app import GATEWAY, Role, create_app, describe
from bot.logs import configure


def run(settings: Settings, *, role: Role = "all", out: TextIO | None = None) -> int:
    """Serve until a signal; resources start before the port opens and stop after it closes."""
    configure(settings.log_level, settings.log_format)
    out = out or sys.stdout
    app = create_app(settings, role=role)
    gateway = app[GATEWAY]

    async def announce(_app: web.Application) -> None:
        # Runs after the gateway's resources started (cleanup contexts run first).
        for line in describe(gateway):
            print(line, file=out, flush=True)

    app.on_startup.append(announce)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=30.0,
        handle_signals=True,
    )
    return 0
