"""Assembling the bot: which routers run, in which order, configured from what.

The engine tries its routers in this order, and the first matching handler wins:

1. ``compliance`` (handlers/compliance.py): opt-out, opt-in and HELP, ahead of everything;
2. the enabled plugins, in the configured order;
3. ``keywords`` (handlers/keywords.py): keyword auto-replies from the config file, then the
   fallback reply for a message nothing else handled.

A message no handler matched goes through the same routers once more for their fallback
handlers (``@router.message(..., fallback=True)``): the plugins' own first (the
appointments plugin's "did not understand"), then the fallback reply, which is one. So a
plugin's "anything else" never hides a keyword of ``autoreply`` or of the config file.

The enabled plugins are ``SINCHBOT_PLUGINS``, else the config file's ``plugins``, else, in
the zero-configuration demo only, :data:`DEMO_PLUGINS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from bot.app.plugins import Plugin, PluginLoad, load_plugins, parse_names
from bot.conversation.context import Clock, utc_now
from bot.conversation.engine import Engine
from bot.core.botconfig import BotConfig
from bot.core.config import ConfigError, Settings
from bot.inbox.engine import GatewayEngineHandler
from bot.sinch.client import SinchClient
from bot.storage.connection import RedisClient
from handlers import compliance, keywords

__all__ = ["DEMO_FALLBACK", "DEMO_PLUGINS", "Bot", "assemble", "enabled_plugins"]

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)

DEMO_PLUGINS: Final = ("appointments", "autoreply")
"""What the zero-configuration demo runs when no plugins are configured."""
DEMO_FALLBACK: Final = "Thanks, we got your message: {text}"
"""The demo's reply to a message nothing else handled."""


@dataclass
class Bot:
    """The assembled conversation engine and where its parts came from."""

    engine: Engine
    handler: GatewayEngineHandler
    plugins: PluginLoad
    config: BotConfig


def enabled_plugins(settings: Settings, config: BotConfig, *, demo: bool) -> list[str]:
    """The plugins to run, in order (see the module documentation)."""
    names = parse_names(settings.plugins)
    if names is None:
        names = config.plugins
    if names is None:
        names = list(DEMO_PLUGINS) if demo else []
    return names


def section(model: type[M], name: str, values: Mapping[str, Any]) -> M:
    """Validate the config file's table ``name`` with ``model``; :class:`ConfigError` in
    one line otherwise."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join([name, *(str(p) for p in e['loc'])])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"SINCHBOT_CONFIG: {problems}") from None


def assemble(
    settings: Settings,
    config: BotConfig,
    *,
    demo: bool,
    provider: SinchClient | None,
    redis: RedisClient,
    clock: Clock = utc_now,
    available: Mapping[str, Plugin] | None = None,
) -> Bot:
    """Build the engine for ``settings`` and ``config``.

    Args:
        provider: Used by the opt-in handler to remove a number from the provider's
            blacklist.
        redis: Where suppression is read.
        available: Plugins to choose from instead of the installed entry points (tests).

    Raises:
        ConfigError: a built-in handler's table is invalid. (A plugin's problems do not
            raise: the plugin is left out and :attr:`PluginLoad.problems` says why.)
    """
    names = enabled_plugins(settings, config, demo=demo)
    loaded = load_plugins(names, config.plugin, available=available)
    compliance_settings = section(compliance.ComplianceSettings, "compliance", config.compliance)
    fallback = config.fallback
    if fallback is None and demo:
        fallback = DEMO_FALLBACK
    keyword_settings = section(
        keywords.KeywordSettings, "keywords", {"keywords": config.keywords, "fallback": fallback}
    )
    engine = Engine(
        compliance.build_router(compliance_settings, provider=provider, redis=redis),
        *loaded.routers,
        keywords.build_router(keyword_settings),
        segment_budget=config.segment_budget,
        clock=clock,
    )
    for problem in loaded.problems:
        log.error("plugin left out", error=problem)
    log.info(
        "bot assembled",
        plugins=[p.name for p in loaded.loaded],
        left_out=len(loaded.problems),
    )
    return Bot(engine, GatewayEngineHandler(engine), loaded, config)
