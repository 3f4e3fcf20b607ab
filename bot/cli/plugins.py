"""``sinchbot plugins``: the installed plugins, which are enabled, and whether they load.

The ENABLED column says ``#N`` for an enabled plugin, its place in the order the enabled
plugins are tried (``#1`` first: after the built-in compliance handler, before the keyword
replies and the fallback), and ``no`` for one installed but not enabled.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bot.app.assembly import enabled_plugins
from bot.app.plugins import discover, load_plugins
from bot.cli.base import EXIT_ERROR, EXIT_OK, command, table
from bot.core.botconfig import load_config
from bot.core.config import load_settings
from bot.demo.provider import is_zero_config

ORDER_NOTE = (
    "#N: enabled, tried N-th (after compliance, before the keyword replies and the fallback)"
)
"""The line under the listing that says what ``#1``, ``#2``... mean."""


def _plugins(args: argparse.Namespace) -> int:
    settings = load_settings()
    config = load_config(settings.config)
    enabled = enabled_plugins(settings, config, demo=is_zero_config(settings))
    installed = discover()
    # Load every installed plugin (enabled or not) to report what would go wrong.
    load = load_plugins(sorted(set(installed) | set(enabled)), config.plugin)
    problems = {line.split("'")[1]: line for line in load.problems if "'" in line}
    loaded = {p.name: p for p in load.loaded}
    rows: list[dict[str, Any]] = []
    for name in sorted(set(installed) | set(enabled)):
        entry = installed.get(name)
        position = enabled.index(name) + 1 if name in enabled else None
        rows.append(
            {
                "name": name,
                "enabled": position is not None,
                "order": position,
                "source": entry.value if entry is not None else None,
                "loads": name in loaded,
                "description": loaded[name].plugin.description if name in loaded else "",
                "problem": problems.get(name),
            }
        )
    if args.json:
        print(json.dumps({"enabled": enabled, "plugins": rows}, indent=2))
    else:
        lines = table(
            ["PLUGIN", "ENABLED", "STATUS", "DESCRIPTION"],
            [
                [
                    r["name"],
                    f"#{r['order']}" if r["enabled"] else "no",
                    "ok" if r["loads"] else "ERROR",
                    r["description"] or "",
                ]
                for r in rows
            ],
        )
        for line in lines:
            print(line)
        if enabled:
            print(ORDER_NOTE)
        for row in rows:
            if row["problem"]:
                print(f"error: {row['problem']}")
    broken = any(r["enabled"] and not r["loads"] for r in rows)
    return EXIT_ERROR if broken else EXIT_OK


def _add_plugins(commands: Any) -> None:
    parser = command(
        commands,
        "plugins",
        help="list installed plugins, which are enabled, and whether they load",
        description=(
            "Plugins are packages publishing the 'sinchbot.plugins' entry point. The enabled\n"
            "ones come from SINCHBOT_PLUGINS, else the 'plugins' list of SINCHBOT_CONFIG.\n"
            "ENABLED is #N for an enabled plugin, its place in the order the plugins are\n"
            "tried (#1 first, after compliance; the keyword replies and the fallback come\n"
            "after the last), and no for one installed but not enabled.\n"
            "Exit status 1 when an enabled plugin cannot be loaded or configured."
        ),
        examples=["sinchbot plugins", "SINCHBOT_PLUGINS=appointments sinchbot plugins --json"],
        provider=False,
    )
    parser.add_argument("--json", action="store_true", help="print the listing as JSON")
    parser.set_defaults(handler=_plugins)
