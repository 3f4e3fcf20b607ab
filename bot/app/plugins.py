"""Plugins: how conversations are added to sinchbot without touching its code.

A plugin is a :class:`Plugin` object, published by a package under the entry-point group
``sinchbot.plugins``::

    # pyproject.toml of the plugin's package
    [project.entry-points."sinchbot.plugins"]
    opening-hours = "sinchbot_opening_hours:plugin"

    # sinchbot_opening_hours/__init__.py
    class Settings(BaseModel):
        text: str = "We are open 9 to 5."

    router = Router("opening-hours")

    @router.message(Keyword("HOURS"))
    async def hours(ctx: Context, settings: Settings) -> None:
        ctx.reply(settings.text)

    plugin = Plugin("opening-hours", router, settings=Settings)

The gateway enables the plugins named by ``SINCHBOT_PLUGINS`` or the config file's
``plugins`` list, in that order, validates each one's settings table (``[plugin.<name>]``)
with its model, and runs their routers after the built-in compliance handler and before
the keyword replies and the fallback. A plugin that cannot be found, imported or
configured is reported in one line and left out; the gateway runs without it. Plugins are
never installed at run time.

A plugin may also add management API routes (``routes``), which get a :class:`PluginHost`:
the gateway's storage, the partition count, the clock, and :meth:`PluginHost.post_command`
to hand work to the conversation's owner.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.conversation.context import Clock, utc_now
from bot.conversation.router import Router
from bot.inbox.commands import post_command
from bot.storage.keys import conversation_key
from bot.storage.store import Store

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

ENTRY_POINT_GROUP: Final = "sinchbot.plugins"
"""The entry-point group plugins are published under."""

RouterFactory = Callable[[Any], Router]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PluginError(Exception):
    """A plugin cannot be used; the message is one line naming the plugin."""


@dataclass(frozen=True)
class Plugin:
    """What a plugin's entry point names.

    Attributes:
        name: The plugin's name, as enabled in ``SINCHBOT_PLUGINS`` and the config file.
        router: Its conversations: a :class:`~bot.conversation.router.Router`, or a
            function that takes the validated settings (or ``None``) and returns one.
            A router given as is gets the settings as its ``settings`` (injected into its
            handlers as ``settings``).
        settings: A pydantic model validating the plugin's ``[plugin.<name>]`` table
            (``None``: the plugin takes no settings, and a table for it is an error).
        routes: Builds the plugin's management API routes from a :class:`PluginHost`.
            Mounted behind the API's bearer token; paths should start with ``/api/``.
        description: One line for listings.
    """

    name: str
    router: Router | RouterFactory
    settings: type[BaseModel] | None = None
    routes: Callable[[PluginHost], Iterable[web.RouteDef]] | None = None
    description: str = ""

    def configure(self, table: Mapping[str, Any] | None) -> Any:
        """The validated settings from ``table`` (``None``: the defaults). Raises
        :class:`PluginError`."""
        if self.settings is None:
            if table:
                raise PluginError(f"plugin {self.name!r} takes no settings")
            return None
        try:
            return self.settings.model_validate(dict(table or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                for e in exc.errors()
            )
            raise PluginError(f"plugin {self.name!r}: invalid settings: {problems}") from None

    def build(self, settings: Any) -> Router:
        """The plugin's router, configured with ``settings``."""
        if isinstance(self.router, Router):
            if settings is not None:
                self.router.settings = settings
            return self.router
        router = self.router(settings)
        if not isinstance(router, Router):
            raise PluginError(f"plugin {self.name!r}: its router factory returned {router!r}")
        return router


@dataclass
class PluginHost:
    """What a plugin's management API routes work with.

    Attributes:
        store: The gateway's Redis (``store.redis`` for reads).
        partitions: The partition count.
        settings: The plugin's validated settings.
        clock: The current time (tests control it).
        guard: Wraps a route handler with the API's authentication and error handling
            (raise :class:`bot.api.routes.ApiError` for a 4xx answer).
        read_json: Reads a request's JSON body within the API's size limit (415, 413,
            400 as :class:`~bot.api.routes.ApiError`).
        default_region: Region for phone numbers written without ``+``.
        extra: Free for the plugin's routes to keep what they share (empty when handed
            over; the gateway never reads it).
    """

    store: Store
    partitions: int
    settings: Any
    guard: Callable[[Handler], Handler]
    read_json: Callable[[web.Request], Awaitable[Any]]
    clock: Clock = utc_now
    default_region: str = "AU"
    extra: dict[str, Any] = field(default_factory=dict)

    async def post_command(
        self, handset: str, name: str, payload: Any = None, *, our_number: str | None = None
    ) -> str:
        """Hand the command ``name`` to the conversation of ``handset`` (with our
        ``our_number``, ``None``: the shared pool); its ``@router.timer(name)`` handler runs
        in order with the conversation's events. Returns the command's id."""
        return await post_command(
            self.store, self.partitions, conversation_key(our_number, handset), name, payload
        )


@dataclass(frozen=True)
class LoadedPlugin:
    """An enabled plugin, configured.

    Attributes:
        plugin: The plugin as its entry point (or the caller) gave it.
        settings: Its validated settings (an instance of ``plugin.settings``, or ``None``).
        router: Its router, built with those settings.
    """

    plugin: Plugin
    settings: Any
    router: Router

    @property
    def name(self) -> str:
        """The plugin's name."""
        return self.plugin.name


@dataclass
class PluginLoad:
    """What :func:`load_plugins` made of the enabled names."""

    loaded: list[LoadedPlugin] = field(default_factory=list)
    """The plugins that loaded, in the order given."""
    problems: list[str] = field(default_factory=list)
    """One line per plugin left out."""

    @property
    def routers(self) -> list[Router]:
        """The loaded plugins' routers, in order (what the engine runs after compliance)."""
        return [p.router for p in self.loaded]


def discover() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed plugins' entry points, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _resolve(name: str, entry_point: importlib.metadata.EntryPoint) -> Plugin:
    try:
        target = entry_point.load()
    except Exception as exc:  # a broken plugin must not take the gateway down
        raise PluginError(
            f"plugin {name!r} failed to import ({entry_point.value}): "
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from None
    if callable(target) and not isinstance(target, Plugin):
        try:
            target = target()
        except Exception as exc:
            raise PluginError(
                f"plugin {name!r}: {entry_point.value}() failed: {type(exc).__name__}: {exc}"
            ) from None
    if not isinstance(target, Plugin):
        raise PluginError(
            f"plugin {name!r}: {entry_point.value} is not a bot.plugins.Plugin "
            f"(got {type(target).__name__})"
        )
    return target


def load_plugins(
    names: Sequence[str],
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    available: Mapping[str, importlib.metadata.EntryPoint | Plugin] | None = None,
) -> PluginLoad:
    """Load, configure and build the plugins ``names``, in order.

    Args:
        names: The enabled plugins.
        tables: The settings tables by plugin name: the config file's ``[plugin]`` table,
            ``{"feedback": {"business": "Acme Dental"}}``. (Not the whole config file:
            :class:`bot.testing.BotTester` takes that, ``config={"plugin": {"feedback":
            {...}}}``.) A plugin without an entry is configured with its defaults.
        available: Plugins given directly (tests do), found before the installed
            entry points of the same name.

    ::

        load = load_plugins(["feedback"], {"feedback": {"nudge_after": "soon"}})
        load.problems  # ["plugin 'feedback': invalid settings: nudge_after: ..."]

    Problems (unknown name, import error, invalid settings, a duplicate) are collected in
    :attr:`PluginLoad.problems`, one line each (the caller reports them); the other
    plugins load.
    """
    found: dict[str, importlib.metadata.EntryPoint | Plugin] = {
        **discover(),
        **(available or {}),
    }
    tables = tables or {}
    result = PluginLoad()
    seen: set[str] = set()
    for name in names:
        try:
            if name in seen:
                raise PluginError(f"plugin {name!r} is enabled twice")
            seen.add(name)
            source = found.get(name)
            if source is None:
                known = ", ".join(sorted(found)) or "none installed"
                raise PluginError(f"plugin {name!r} is not installed (available: {known})")
            plugin = source if isinstance(source, Plugin) else _resolve(name, source)
            settings = plugin.configure(tables.get(name))
            router = plugin.build(settings)
            if router.parent is not None:
                raise PluginError(f"plugin {name!r}: its router is included in another router")
        except PluginError as exc:
            result.problems.append(str(exc))
            continue
        result.loaded.append(LoadedPlugin(plugin, settings, router))
    return result


def parse_names(text: str | None) -> list[str] | None:
    """``SINCHBOT_PLUGINS``'s names (comma- or space-separated; ``none``: no plugins);
    ``None`` when unset."""
    if text is None:
        return None
    names = [part for part in text.replace(",", " ").split() if part]
    return [] if [n.lower() for n in names] == ["none"] else names
