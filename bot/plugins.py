"""The plugin entry point's public names: what a plugin package exposes under the
``sinchbot.plugins`` entry-point group (a :class:`Plugin`) and what its API routes are
handed (a :class:`PluginHost`). They live in :mod:`bot.app.plugins`, with the loader."""

from bot.app.plugins import (
    ENTRY_POINT_GROUP,
    LoadedPlugin,
    Plugin,
    PluginError,
    PluginHost,
    PluginLoad,
    discover,
    load_plugins,
    parse_names,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "LoadedPlugin",
    "Plugin",
    "PluginError",
    "PluginHost",
    "PluginLoad",
    "discover",
    "load_plugins",
    "parse_names",
]
